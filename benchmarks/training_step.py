"""Training-step speed, peak memory and MFU of our models against peer implementations.

A training step is forward, loss, backward and an AdamW step, the same optimiser on both sides.
Each (case, compiled?) pair runs in its own process (`run_child`), with identical dims, batch,
dtype, device and thread count on both sides. Pairs:

- ViViT Model 2 (factorised encoder) and Model 3 (factorised self-attention) vs vit-pytorch's
  `ViViT` (`pip install -e '.[bench]'`);
- ViViT Model 1 (joint space-time) and Model 4 (factorised dot-product) vs a stack of timm
  `Block`s over the same tokens (joint attention, the layer Model 1 is made of);
- our per-frame ViT (`FrameViT`) vs timm's `VisionTransformer` run on the frames directly;
- at paper sizes, for MFU only: ViViT-B/16x2 factorised encoder, VPTR-FAR and VPTR-NAR (with
  the frozen autoencoder's encode / decode inside the step, as in training).

MFU = FLOPs of one step (torch's FlopCounterMode) / step time / peak FLOP/s of a plain
matmul of the same dtype on the same device, measured in the same run.

    python -m benchmarks.training_step --case vivit_fe --impl videogen   # one child, prints JSON
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    PeakMemory,
    Table,
    count_flops,
    fmt,
    print_result,
    run_child,
    seconds_per_call,
)
from videogen.models.vgan import REAL
from videogen.tasks.base import to_channels_last, use_fused_optimizer
from videogen.tasks.vgan import VganTask, softmax_gan_loss

# Small dims that run in seconds on 2 CPU cores; a GPU run scales them up (see `DIMS`).
CPU_DIMS = dict(
    batch=4, frames=8, image=112, patch=16, tubelet=2, dim=384, depth=4, temporal=2, heads=6
)
GPU_DIMS = dict(
    batch=16, frames=16, image=224, patch=16, tubelet=2, dim=768, depth=12, temporal=4, heads=12
)
CLASSES = 400

VIVIT_VARIANTS = {
    "vivit_m1": "spatio_temporal",
    "vivit_fe": "factorised_encoder",
    "vivit_fsa": "factorised_self_attention",
    "vivit_fdp": "factorised_dot_product",
}


@dataclass
class Case:
    """One model with its inputs and the loss its training step minimises."""

    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    loss: Callable[[torch.Tensor], torch.Tensor]
    clips: int  # clips (or frames, for image models) per step


def classification(model: nn.Module, video: torch.Tensor, clips: int) -> Case:
    labels = torch.randint(0, CLASSES, (clips,), device=video.device)
    return Case(model, (video,), lambda logits: F.cross_entropy(logits.float(), labels), clips)


def our_vivit(variant: str, d: dict, **overrides) -> nn.Module:
    from videogen.models.vivit import ViViT

    return ViViT(
        CLASSES,
        d["frames"],
        d["image"],
        variant=variant,
        tubelet_size=(d["tubelet"], d["patch"], d["patch"]),
        embed_dim=d["dim"],
        depth=d["depth"],
        num_heads=d["heads"],
        temporal_depth=d["temporal"],
        **overrides,
    )


def their_vivit(variant: str, d: dict) -> nn.Module:
    from vit_pytorch.vivit import ViViT as TheirViViT

    m3 = variant == "factorised_self_attention"
    return TheirViViT(
        image_size=d["image"],
        image_patch_size=d["patch"],
        frames=d["frames"],
        frame_patch_size=d["tubelet"],
        num_classes=CLASSES,
        dim=d["dim"],
        spatial_depth=d["depth"],
        # Their Model 3 takes the block count as both depths and asserts they are equal.
        temporal_depth=d["depth"] if m3 else d["temporal"],
        heads=d["heads"],
        dim_head=d["dim"] // d["heads"],
        mlp_dim=4 * d["dim"],
        pool="mean" if m3 else "cls",  # ours: Model 3 pools, Model 2 has CLS tokens
        variant=variant.replace("factorised", "factorized"),
    )


class TimmJointEncoder(nn.Module):
    """Reference for Models 1 and 4: tubelet tokens, CLS, positions and timm `Block`s with joint
    attention over all space-time tokens."""

    def __init__(self, d: dict) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        t, p = d["tubelet"], d["patch"]
        tokens = (d["frames"] // t) * (d["image"] // p) ** 2
        self.embed = nn.Conv3d(3, d["dim"], (t, p, p), stride=(t, p, p))
        self.cls = nn.Parameter(torch.zeros(1, 1, d["dim"]))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, d["dim"]))
        self.blocks = nn.Sequential(
            *(Block(d["dim"], d["heads"], qkv_bias=True) for _ in range(d["depth"]))
        )
        self.norm = nn.LayerNorm(d["dim"], eps=1e-6)
        self.head = nn.Linear(d["dim"], CLASSES)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.embed(video.transpose(1, 2)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class TimmFrameClassifier(nn.Module):
    """Reference for our FrameViT: timm's VisionTransformer on every frame, logits averaged."""

    def __init__(self, d: dict) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(
            img_size=d["image"],
            patch_size=d["patch"],
            embed_dim=d["dim"],
            depth=d["depth"],
            num_heads=d["heads"],
            num_classes=CLASSES,
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch = video.shape[0]
        return self.vit(video.flatten(0, 1)).unflatten(0, (batch, -1)).mean(dim=1)


def vit_case(impl: str, d: dict, device: torch.device) -> Case:
    if impl == "videogen":
        from videogen.models.vit import FrameViT

        model = FrameViT(
            CLASSES,
            d["image"],
            patch_size=d["patch"],
            embed_dim=d["dim"],
            depth=d["depth"],
            num_heads=d["heads"],
        )
    else:
        model = TimmFrameClassifier(d)
    video = torch.randn(d["batch"], d["frames"], 3, d["image"], d["image"], device=device)
    return classification(model, video, d["batch"])


def vivit_case(name: str, impl: str, d: dict, device: torch.device) -> Case:
    variant = VIVIT_VARIANTS[name]
    video = torch.randn(d["batch"], d["frames"], 3, d["image"], d["image"], device=device)
    if impl == "videogen":
        return classification(our_vivit(variant, d), video, d["batch"])
    if impl == "vit-pytorch":
        # theirs takes (B, C, T, H, W)
        return classification(
            their_vivit(variant, d), video.transpose(1, 2).contiguous(), d["batch"]
        )
    return classification(TimmJointEncoder(d), video, d["batch"])


class VPTRTrainingStep(nn.Module):
    """VPTR stage 2 as trained: frozen encoder, transformer, frozen decoder, pixel MSE."""

    def __init__(self, kind: str, context: int = 10, future: int = 10) -> None:
        super().__init__()
        from videogen.models.vptr.autoencoder import VPTRAutoencoder
        from videogen.models.vptr.far import VPTRFAR
        from videogen.models.vptr.nar import VPTRNAR

        self.autoencoder = VPTRAutoencoder(1, (64, 64)).requires_grad_(False).eval()
        self.kind, self.context, self.future = kind, context, future
        if kind == "far":
            self.net = VPTRFAR(trained_frames=context + future)
        else:
            self.net = VPTRNAR(context_frames=context, future_frames=future)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.autoencoder.encode(frames)
        if self.kind == "far":  # teacher forcing: output t predicts frame t + 1
            predicted, target = self.net(features[:, :-1]), frames[:, 1:]
        else:
            predicted = self.net(features[:, : self.context], self.future)
            target = frames[:, self.context :]
        return F.mse_loss(self.autoencoder.decode(predicted), target)


class AutoencoderTrainingStep(nn.Module):
    """VPTR stage 1 at paper size: reconstruct every frame, MSE (no discriminator)."""

    def __init__(self) -> None:
        super().__init__()
        from videogen.models.vptr.autoencoder import VPTRAutoencoder

        self.net = VPTRAutoencoder(1, (64, 64))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.net(frames), frames)


class GeneratorTrainingStep(nn.Module):
    """vid2vid's sequential generator over a few frames (labels to frames, flow and warping)."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        from videogen.models.vid2vid.generator import SequentialGenerator

        self.net = SequentialGenerator(
            classes, base_channels=32, num_res_blocks=4, num_local_res_blocks=1
        )

    def forward(self, segmentation: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        outputs = self.net.rollout(self.net.semantic_input(segmentation))
        fake = torch.stack([out.frame for out in outputs], 1)
        return F.l1_loss(fake, real)


class LatteTrainingStep(nn.Module):
    """Latte-S/2 (or `size`) as trained: noising, the class-conditional network, the hybrid
    loss."""

    def __init__(self, size: str = "S") -> None:
        # Imported here: the revisions benchmark runs this file against older checkouts.
        from videogen.models.diffusion import GaussianDiffusion, Latte

        super().__init__()
        self.net = Latte(16, 32, 4, 2, size=size, num_classes=101, learn_sigma=True)
        self.process = GaussianDiffusion(learn_sigma=True)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = self.process.sample_timesteps(latents.shape[0], latents.device)
        noise = torch.randn_like(latents)
        x_t = self.process.add_noise(latents, noise, t)
        output = self.net(x_t, t, labels)
        return self.process.training_loss(output, latents, noise, t, x_t)["loss"].mean()


class VganTrainingStep(nn.Module):
    """One VGAN iteration's arithmetic at the paper's size (32 x 64 x 64 clips, z in R^100):
    D on real and on generated clips, G through D. One loss and one backward stand in for the
    alternating updates (the same forward and backward passes, not the same gradients)."""

    def __init__(self) -> None:
        from videogen.models.vgan.discriminator import ClipDiscriminator
        from videogen.models.vgan.generator import TwoStreamGenerator

        super().__init__()
        self.generator = TwoStreamGenerator()
        self.discriminator = ClipDiscriminator()

    def forward(self, z: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake = self.generator(z).video
        d_loss = VganTask.discriminator_loss(
            self.discriminator(real), self.discriminator(fake.detach())
        )
        return d_loss + softmax_gan_loss(self.discriminator(fake), REAL)


def paper_case(name: str, batch: int, device: torch.device) -> Case:
    if name in ("latte_s", "latte_xl"):  # Latte-S/2 or XL/2 on 16 x 4 x 32 x 32 latents
        batch = max(batch, 2)  # (16 frames at 256 x 256 through the SD VAE)
        latents = torch.randn(batch, 16, 4, 32, 32, device=device)
        labels = torch.randint(0, 101, (batch,), device=device)
        size = name.removeprefix("latte_").upper()
        return Case(LatteTrainingStep(size), (latents, labels), lambda loss: loss, batch)
    if name == "vgan":  # the paper's VGAN, 32 frames of 64x64
        z = torch.randn(batch, 100, device=device)
        real = torch.rand(batch, 32, 3, 64, 64, device=device) * 2 - 1
        return Case(VganTrainingStep(), (z, real), lambda loss: loss, batch)
    if name == "vivit_b_fe":  # ViViT-B/16x2, factorised encoder, 32 frames at 224 (K400 setting)
        d = dict(frames=32, image=224, patch=16, tubelet=2, dim=768, depth=12, temporal=4, heads=12)
        video = torch.randn(batch, 32, 3, 224, 224, device=device)
        return classification(our_vivit("factorised_encoder", d), video, batch)
    if name == "vid2vid":  # 4 frames of 19-class maps at 64x128
        segmentation = torch.randint(0, 19, (batch, 4, 64, 128), device=device)
        real = torch.rand(batch, 4, 3, 64, 128, device=device) * 2 - 1
        return Case(GeneratorTrainingStep(), (segmentation, real), lambda loss: loss, batch)
    frames = torch.rand(batch, 20, 1, 64, 64, device=device)
    if name == "vptr_ae":  # every frame of a 20-frame clip, 1 channel, 64x64
        return Case(AutoencoderTrainingStep(), (frames,), lambda loss: loss, batch)
    kind = name.removeprefix("vptr_")  # 1 channel, 64x64, 10 -> 10 frames
    return Case(VPTRTrainingStep(kind), (frames,), lambda loss: loss, batch)


def build_case(args: argparse.Namespace, device: torch.device) -> Case:
    dims = dict(GPU_DIMS if device.type == "cuda" else CPU_DIMS)
    if args.batch:
        dims["batch"] = args.batch
    if args.case == "vit":
        return vit_case(args.impl, dims, device)
    if args.case in VIVIT_VARIANTS:
        return vivit_case(args.case, args.impl, dims, device)
    return paper_case(args.case, args.batch or (8 if device.type == "cuda" else 1), device)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Clips/s, FLOP/s and peak memory of `args.steps` training steps after warm-up."""
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    case = build_case(args, device)
    model = case.model.to(device)
    if args.channels_last:
        model = to_channels_last(model)
    params = [p for p in model.parameters() if p.requires_grad]
    # The same choice as training (fused on CUDA), for both sides.
    fused = use_fused_optimizer(torch.optim.AdamW, None, device)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused or None)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step(module: nn.Module) -> None:
        with autocast:
            loss = case.loss(module(*case.inputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # FLOPs are counted on the eager model: the compiled one does the same arithmetic.
    flops = count_flops(lambda: step(model))
    run = torch.compile(model) if args.compile else model
    with PeakMemory(device) as memory:
        seconds = seconds_per_call(
            lambda: step(run), device, warmup=args.warmup, repeats=args.steps
        )
    return {
        "clips_per_s": case.clips / seconds,
        "seconds_per_step": seconds,
        "flops_per_step": flops,
        "flops_per_s": flops / seconds,
        "peak_mib": memory.mib,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True)
    parser.add_argument("--impl", default="videogen", help="videogen, vit-pytorch or timm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=0, help="0: the case's default")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_result(measure(args))


if __name__ == "__main__":
    main()


# ----- the parent side: pairs, ratios, tables ---------------------------------------------------
PEERS = [
    ("vivit_fe", "ViViT Model 2 (factorised encoder)", "vit-pytorch"),
    ("vivit_fsa", "ViViT Model 3 (factorised self-attention)", "vit-pytorch"),
    ("vivit_m1", "ViViT Model 1 (joint space-time)", "timm"),
    ("vivit_fdp", "ViViT Model 4 (factorised dot-product)", "timm"),
    ("vit", "ViT per frame", "timm"),
]
REFERENCE_NAMES = {
    "vit-pytorch": "vit-pytorch ViViT",
    "timm": "timm Blocks, joint attention",
}
PAPER_SIZES = [
    ("vivit_b_fe", "ViViT-B/16x2 FE, 32x224x224"),
    ("vptr_far", "VPTR-FAR, 1x64x64, 10->10"),
    ("vptr_nar", "VPTR-NAR, 1x64x64, 10->10"),
]


def child(case: str, impl: str, common: list[str], *extra: str) -> dict:
    return run_child("benchmarks.training_step", ["--case", case, "--impl", impl, *common, *extra])


def best_of_rounds(
    case: str, peer: str, common: list[str], rounds: int, *extra: str
) -> tuple[dict, dict]:
    """Our and the peer's fastest of `rounds` runs, alternating which side goes first, so that
    a drift in the machine's speed (another process, clocks) falls on both sides alike."""
    runs: dict[str, list[dict]] = {"videogen": [], peer: []}
    for round_index in range(rounds):
        order = ["videogen", peer] if round_index % 2 == 0 else [peer, "videogen"]
        for impl in order:
            runs[impl].append(child(case, impl, common, *extra))
    fastest = {impl: max(results, key=lambda r: r["clips_per_s"]) for impl, results in runs.items()}
    return fastest["videogen"], fastest[peer]


def peer_table(
    title: str,
    common: list[str],
    peak: float,
    cases: list[tuple[str, str, str]],
    rounds: int,
    *extra: str,
) -> Table:
    rows = []
    for case, label, peer in cases:
        ours, theirs = best_of_rounds(case, peer, common, rounds, *extra)
        reference = "timm VisionTransformer" if case == "vit" else REFERENCE_NAMES[peer]
        rows.append(
            [
                label,
                reference,
                fmt(ours["clips_per_s"]),
                fmt(theirs["clips_per_s"]),
                f"**{ours['clips_per_s'] / theirs['clips_per_s']:.2f}x**",
                f"{ours['peak_mib']:.0f} / {theirs['peak_mib']:.0f}",
                fmt(ours["peak_mib"] / max(theirs["peak_mib"], 1e-9)),
                f"{100 * ours['flops_per_s'] / peak:.1f}% / {100 * theirs['flops_per_s'] / peak:.1f}%",
            ]
        )
        print(f"  {label}: {rows[-1][4]} clips/s vs {reference}", flush=True)
    return Table(
        title,
        [
            "model",
            "reference",
            "ours clips/s",
            "ref clips/s",
            "speed ratio",
            "peak MiB ours / ref",
            "memory ratio",
            "MFU ours / ref",
        ],
        rows,
        f"Each side's fastest of {rounds} runs in fresh processes, alternating which goes first. "
        "Speed ratio > 1: ours is faster. Memory ratio < 1: ours uses less (CPU: growth of the "
        "process's peak resident set during the steps).",
    )


def paper_table(common: list[str], peak: float) -> Table:
    rows = []
    for case, label in PAPER_SIZES:
        r = child(case, "videogen", common, "--warmup", "1", "--steps", "2")
        rows.append(
            [
                label,
                fmt(r["params_m"], 1),
                fmt(r["flops_per_step"] / 1e9, 1),
                fmt(r["seconds_per_step"], 3),
                fmt(r["flops_per_s"] / 1e12, 3),
                f"**{100 * r['flops_per_s'] / peak:.1f}%**",
            ]
        )
        print(f"  {label}: MFU {rows[-1][-1]}", flush=True)
    return Table(
        "MFU at paper sizes (training step)",
        ["model", "params M", "GFLOP / step", "s / step", "TFLOP/s", "MFU"],
        rows,
        f"Peak: a plain matmul of the same dtype on this device, {peak / 1e12:.3f} TFLOP/s. "
        "Batch 1 on the CPU, 8 on a GPU.",
    )


def tables(device: str, dtype: str, threads: int, peak: float, quick: bool) -> list[Table]:
    """All training-step tables: peers eager, peers compiled (Models 2, 3), paper-size MFU."""
    common = ["--device", device, "--dtype", dtype, "--threads", str(threads)]
    # Eager runs take seconds, so more rounds; a compiled run pays minutes of compilation.
    eager_rounds, rounds = (1, 1) if quick else (5, 3)
    if quick:
        common += ["--warmup", "1", "--steps", "2"]
    result = [peer_table("Training step vs peers, eager", common, peak, PEERS, eager_rounds)]
    compiled = [p for p in PEERS if p[0] in ("vivit_fe", "vivit_fsa")]
    result.append(
        peer_table(
            "Training step vs vit-pytorch, both torch.compile'd",
            common,
            peak,
            compiled,
            rounds,
            "--compile",
        )
    )
    result.append(paper_table(common, peak))
    return result
