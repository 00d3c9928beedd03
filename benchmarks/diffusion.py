"""Video diffusion: the Latte training step's MFU, DDIM vs DDPM sampling time, and the Latte
spatial path against diffusers' DiT.

- Training step: Latte-S/2 (class-conditional, learned variance, the hybrid loss) on VAE-sized
  latents, through `benchmarks.training_step --case latte_s` (FLOPs counted, matmul peak MFU).
- Sampling: the same tiny model sampled with DDIM over 50 steps and with DDPM over all 1000;
  the ratio of wall times (the network call dominates both).
- Spatial path vs `diffusers.DiTTransformer2DModel` at identical dims on the frames of a clip:
  our patch embedding, adaLN-Zero blocks and output layer (what Latte runs within each frame)
  against diffusers' DiT, same inputs, same parameter count (diffusers' per-block embedders
  tied into one), the two sides' steps taken in turn in one process.
- Latent cache: training steps/s of Latte-S/2 on 16 frames of 128x128 when each step encodes
  the clip with an SD-sized VAE (random weights) against drawing it from cached moments
  (`data.latents`); reading the data is left out of both (the VAE is what the cache removes).

    python -m benchmarks --only diffusion
    python -m benchmarks.diffusion --part dit --steps 8     # one child, prints JSON
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.common import (
    Table,
    count_flops,
    fmt,
    interleaved_seconds_per_call,
    print_result,
    run_child,
    seconds_per_call,
)
from videogen.models.diffusion import GaussianDiffusion, Latte
from videogen.models.layers import sincos_2d, unpatchify

# DiT-S/2-like frames: 8 latent frames of 4 x 32 x 32 per clip, 12 blocks of width 384.
DIT = dict(frames=8, channels=4, size=32, patch=2, depth=12, dim=384, heads=6, classes=101)


class SpatialPath(nn.Module):
    """Latte's within-frame computation as a DiT over frames (B*T, C, H, W): its patch
    embedding, spatial blocks and conditioned output layer (the temporal blocks are left out)."""

    def __init__(self) -> None:
        super().__init__()
        d = DIT
        latte = Latte(
            1,
            d["size"],
            d["channels"],
            d["patch"],
            size=None,
            embed_dim=d["dim"],
            depth=2 * d["depth"],
            num_heads=d["heads"],
            num_classes=d["classes"],
        )
        self.latte = latte
        self.spatial = nn.ModuleList(
            block
            for block, kind in zip(latte.blocks, latte.block_kinds, strict=True)
            if kind == "spatial"
        )

    def used_parameters(self) -> int:
        latte = self.latte
        parts = [
            latte.patch_embed,
            latte.t_embedder,
            latte.y_embedder,
            self.spatial,
            latte.final_layer,
        ]
        return sum(p.numel() for part in parts for p in part.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        latte = self.latte
        video = x.unsqueeze(1)  # each frame a one-frame clip
        tokens = latte.patch_embed(video).flatten(1, 2)
        rows = x.shape[-1] // DIT["patch"]
        tokens = tokens + sincos_2d(rows, rows, tokens.shape[-1]).to(tokens).flatten(0, 1)
        timestep, label = latte.condition(t, labels)
        cond = timestep + label
        for block in self.spatial:
            tokens = block(tokens, cond=cond)
        out = latte.final_layer(tokens, cond)
        return unpatchify(out, latte.patch, (1, rows, rows))[:, 0]


def diffusers_dit() -> nn.Module:
    """diffusers' DiT at `DIT`'s dims, its per-block conditioning embedders tied into one.

    diffusers gives every block its own timestep and label embedder (3.1M parameters here);
    DiT's code, like Latte, has one. Tied to the first block's, the parameter counts agree;
    each block still runs the embedder on its B rows, a negligible cost.
    """
    from diffusers import DiTTransformer2DModel

    d = DIT
    model = DiTTransformer2DModel(
        num_attention_heads=d["heads"],
        attention_head_dim=d["dim"] // d["heads"],
        in_channels=d["channels"],
        out_channels=2 * d["channels"],
        num_layers=d["depth"],
        sample_size=d["size"],
        patch_size=d["patch"],
        num_embeds_ada_norm=d["classes"],
    )
    shared = model.transformer_blocks[0].norm1.emb
    for block in model.transformer_blocks[1:]:
        block.norm1.emb = shared
    return model


def dit_child(batch: int, repeats: int) -> dict[str, dict]:
    """Per side: training-step time, FLOPs, parameters and output shape on `batch` clips'
    frames. Both sides live in this process and their steps alternate (see
    `interleaved_seconds_per_call`)."""
    torch.manual_seed(0)
    d = DIT
    frames = batch * d["frames"]
    x = torch.randn(frames, d["channels"], d["size"], d["size"])
    t = torch.randint(0, 1000, (frames,))
    labels = torch.randint(0, d["classes"], (frames,))
    ours, theirs = SpatialPath(), diffusers_dit()
    sides = {
        "videogen": (ours, lambda: ours(x, t, labels), ours.used_parameters()),
        "diffusers": (
            theirs,
            lambda: theirs(x, timestep=t, class_labels=labels).sample,
            sum(p.numel() for p in theirs.parameters()),
        ),
    }

    def training_step(model: nn.Module, forward: Callable[[], torch.Tensor]) -> Callable:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

        def step() -> None:
            loss = forward().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    steps = {name: training_step(model, forward) for name, (model, forward, _) in sides.items()}
    seconds = interleaved_seconds_per_call(steps, torch.device("cpu"), repeats=repeats)
    return {
        name: {
            "seconds": seconds[name],
            "flops": count_flops(steps[name]),
            "params": params,
            "shape": list(forward().shape),
        }
        for name, (_, forward, params) in sides.items()
    }


def sampling_child(steps: int) -> dict[str, float]:
    """Wall time of sampling 2 clips of a tiny Latte with DDIM over 50 steps and DDPM over 1000."""
    torch.manual_seed(0)
    model = Latte(8, 16, 4, 2, size=None, embed_dim=64, depth=4, num_heads=4, num_classes=8).eval()
    process = GaussianDiffusion(learn_sigma=True)
    labels = torch.tensor([1, 2])
    times = {}
    for name, sampler, count in (("ddim50", "ddim", 50), ("ddpm1000", "ddpm", 1000)):
        start = time.perf_counter()
        with torch.no_grad():
            process.sample(
                model,
                (2, 8, 4, 16, 16),
                labels,
                sampler=sampler,
                steps=count,
                null_label=model.null_label,
                generator=torch.Generator().manual_seed(0),
            )
        times[name] = time.perf_counter() - start
    return times


# Stable Diffusion's VAE architecture (sd-vae-ft-ema's config.json), random weights.
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)


def cache_child(source: str, steps: int) -> dict[str, float]:
    """Seconds per Latte-S/2 training step on one clip of 16 x 128 x 128, its latents from the
    VAE encoder (`videos`) or drawn from moments computed beforehand (`cache`)."""
    from videogen.tasks.frozen_vae import FrozenVAE

    torch.manual_seed(0)
    vae = FrozenVAE(SD_VAE, chunk_size=16)
    net = Latte(16, 16, 4, 2, size="S", num_classes=101, learn_sigma=True)
    process = GaussianDiffusion(learn_sigma=True, channel_dim=2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    video = torch.rand(1, 16, 3, 128, 128) * 2 - 1
    moments = vae.moments(video)
    labels = torch.tensor([3])

    def step() -> None:
        x0 = vae.encode(video) if source == "videos" else vae.sample(moments)
        t = process.sample_timesteps(1, x0.device)
        noise = torch.randn_like(x0)
        x_t = process.add_noise(x0, noise, t)
        loss = process.training_loss(net(x_t, t, labels), x0, noise, t, x_t)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {"seconds": seconds_per_call(step, torch.device("cpu"), warmup=1, repeats=steps)}


def cache_table(common: list[str], quick: bool) -> Table:
    steps = "2" if quick else "3"
    seconds = {
        source: run_child(
            "benchmarks.diffusion",
            ["--part", "cache", "--source", source, "--steps", steps, *common],
        )["seconds"]
        for source in ("cache", "videos")
    }
    ratio = seconds["videos"] / seconds["cache"]
    print(f"  latent cache vs VAE per step: {ratio:.1f}x", flush=True)
    return Table(
        "Latent cache: training steps from cached moments vs encoding with the VAE each step",
        ["case", "from videos s / step", "from the cache s / step", "speed-up"],
        [
            [
                "Latte-S/2, 1 clip of 16 x 128 x 128, SD-sized VAE (random weights)",
                fmt(seconds["videos"], 2),
                fmt(seconds["cache"], 2),
                f"**{ratio:.1f}x**",
            ]
        ],
        "Each side in its own process; data reading excluded from both.",
    )


def tables(device: str, threads: int, peak: float, quick: bool) -> list[Table]:
    """The diffusion tables (CPU figures; the GPU script runs the training step on a GPU)."""
    common = ["--threads", str(threads)]
    steps = "2" if quick else "4"
    train = run_child(
        "benchmarks.training_step",
        ["--case", "latte_s", "--device", device, "--warmup", "1", "--steps", steps, *common],
    )
    mfu = train["flops_per_s"] / peak
    print(f"  Latte-S/2 training step: MFU {100 * mfu:.1f}%", flush=True)
    training = Table(
        "Latte training step (MFU)",
        ["model", "params M", "GFLOP / step", "s / step", "MFU"],
        [
            [
                "Latte-S/2, 101 classes, learned variance, batch 2 x 16 x 4 x 32 x 32 latents",
                fmt(train["params_m"], 1),
                fmt(train["flops_per_step"] / 1e9, 1),
                fmt(train["seconds_per_step"], 3),
                f"**{100 * mfu:.1f}%**",
            ]
        ],
        f"Peak: a plain float32 matmul on this device, {peak / 1e12:.3f} TFLOP/s. The step is "
        "forward, the hybrid loss (MSE + VLB), backward and AdamW.",
    )
    sampling = run_child("benchmarks.diffusion", ["--part", "sampling", *common])
    ratio = sampling["ddpm1000"] / sampling["ddim50"]
    print(f"  DDIM-50 vs DDPM-1000: {ratio:.1f}x", flush=True)
    sample_table = Table(
        "Sampling time: DDIM 50 steps vs DDPM 1000 steps",
        ["model", "DDIM-50 s", "DDPM-1000 s", "speed-up"],
        [
            [
                "tiny Latte (width 64, 4 blocks), 2 clips of 8 x 4 x 16 x 16",
                fmt(sampling["ddim50"], 2),
                fmt(sampling["ddpm1000"], 2),
                f"**{ratio:.1f}x**",
            ]
        ],
        "One run each, in one process.",
    )
    repeats = "3" if quick else "8"
    runs = run_child("benchmarks.diffusion", ["--part", "dit", "--steps", repeats, *common])
    ours, theirs = runs["videogen"], runs["diffusers"]
    speed = theirs["seconds"] / ours["seconds"]
    print(f"  Latte spatial path vs diffusers DiT: {speed:.2f}x", flush=True)
    dit_table = Table(
        "Latte spatial path vs diffusers DiTTransformer2DModel (training step)",
        [
            "dims",
            "ours s / step",
            "diffusers s / step",
            "speed ratio",
            "params ours / diffusers",
            "output shapes",
        ],
        [
            [
                f"12 blocks, width 384, 6 heads, patch 2, {DIT['frames']} frames of 4 x 32 x 32",
                fmt(ours["seconds"], 3),
                fmt(theirs["seconds"], 3),
                f"**{speed:.2f}x**",
                f"{ours['params'] / 1e6:.2f}M / {theirs['params'] / 1e6:.2f}M",
                "equal"
                if ours["shape"] == theirs["shape"]
                else f"{ours['shape']} vs {theirs['shape']}",
            ]
        ],
        f"Median of {repeats} training steps a side, both in one process, taken in turn "
        "(A B, B A, ...). diffusers' per-block conditioning embedders are tied into one, as "
        "in DiT's code. Speed ratio > 1: ours is faster.",
    )
    return [training, sample_table, dit_table, cache_table(common, quick)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["dit", "sampling", "cache"], required=True)
    parser.add_argument("--source", default="cache", choices=["cache", "videos"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "dit":
        print_result(dit_child(args.batch, args.steps))
    elif args.part == "cache":
        print_result(cache_child(args.source, args.steps))
    else:
        print_result(sampling_child(args.steps))


if __name__ == "__main__":
    main()
