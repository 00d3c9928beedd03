"""Training-step throughput and peak memory of our ViViT Models 2 and 3 vs vit-pytorch's ViViT.

Both sides get identical dims (width, depth, heads, head dim, MLP, tubelet, frames, image
size), the same batch, dtype, device and thread count. Each (implementation, variant) runs in
its own process so that peak memory is its own. Prints clips/s and peak memory, and our/their
ratios (> 1 means ours is faster; < 1 means ours uses less memory).

    python -m benchmarks.vivit_throughput                 # CPU, small dims
    python -m benchmarks.vivit_throughput --device cuda --dtype bfloat16 --image-size 224 --frames 32 --dim 768 --depth 12 --heads 12 --batch 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

VARIANTS = {
    "factorised_encoder": "factorized_encoder",
    "factorised_self_attention": "factorized_self_attention",
}


def build(impl: str, variant: str, args: argparse.Namespace) -> torch.nn.Module:
    if impl == "videogen":
        from videogen.models.vivit import ViViT

        return ViViT(
            args.classes,
            args.frames,
            args.image_size,
            variant=variant,
            tubelet_size=(args.tubelet, args.patch, args.patch),
            embed_dim=args.dim,
            depth=args.depth,
            num_heads=args.heads,
            temporal_depth=args.temporal_depth,
        )
    from vit_pytorch.vivit import ViViT as TheirViViT

    return TheirViViT(
        image_size=args.image_size,
        image_patch_size=args.patch,
        frames=args.frames,
        frame_patch_size=args.tubelet,
        num_classes=args.classes,
        dim=args.dim,
        spatial_depth=args.depth,
        # Their Model 3 takes the block count as both depths and asserts they are equal.
        temporal_depth=args.depth
        if variant == "factorised_self_attention"
        else args.temporal_depth,
        heads=args.heads,
        dim_head=args.dim // args.heads,
        mlp_dim=4 * args.dim,
        variant=VARIANTS[variant],
    )


def measure(impl: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Time `args.steps` training steps (forward, loss, backward, AdamW) after warm-up."""
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build(impl, variant, args).to(device)
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.randn(args.batch, args.frames, 3, args.image_size, args.image_size, device=device)
    if impl == "vit-pytorch":
        video = video.transpose(1, 2).contiguous()  # theirs takes (B, C, T, H, W)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(model(video).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # growth of the process's peak resident memory over the model + data baseline
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {
        "clips_per_s": args.steps * args.batch / seconds,
        "peak_mb": peak_mb,
        "params_m": params,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--tubelet", type=int, default=2)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--temporal-depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "VARIANT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.one:  # child process: measure one configuration and print it as JSON
        print(json.dumps(measure(args.one[0], args.one[1], args)))
        return
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    print(
        f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}"
    )
    print(
        f"dims: {args.frames}x{args.image_size}px, tubelet {args.tubelet}x{args.patch}x{args.patch}, "
        f"width {args.dim}, depth {args.depth}+{args.temporal_depth}, heads {args.heads}, batch {args.batch}"
    )
    print(f"{'variant':28} {'impl':12} {'params M':>9} {'clips/s':>9} {'peak MB':>9}")
    for variant in VARIANTS:
        results = {}
        for impl in ("videogen", "vit-pytorch"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.vivit_throughput",
                    *forwarded,
                    "--one",
                    impl,
                    variant,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[impl]
            print(
                f"{variant:28} {impl:12} {r['params_m']:9.2f} {r['clips_per_s']:9.2f} {r['peak_mb']:9.0f}"
            )
        ours, theirs = results["videogen"], results["vit-pytorch"]
        print(
            f"{variant:28} {'ratio':12} {'':9} {ours['clips_per_s'] / theirs['clips_per_s']:8.2f}x "
            f"{ours['peak_mb'] / max(theirs['peak_mb'], 1e-9):8.2f}x"
        )


if __name__ == "__main__":
    main()
