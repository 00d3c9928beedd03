"""VPTR-NAR vs VPTR-FAR inference time for 10 future frames at paper size, in one process.

Both predictors run on the same paper-size autoencoder (1 channel, 64x64 -> 8x8x528) and the
same 10 context frames, eval mode, no gradients. FAR predicts one frame per pass and decodes /
re-encodes each prediction before feeding it back; NAR predicts all 10 frames in one pass.
Prints seconds per batch for each and the FAR/NAR ratio (the paper reports NAR 12.75x faster
on an RTX 3090).

    python -m benchmarks.vptr_inference                       # CPU, batch 1
    python -m benchmarks.vptr_inference --device cuda --batch 8
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Table, fmt, seconds_per_call
from videogen.models.vptr.autoencoder import VPTRAutoencoder
from videogen.models.vptr.far import VPTRFAR
from videogen.models.vptr.nar import VPTRNAR


def table(device: str = "cpu", batch: int = 1, repeats: int = 3) -> Table:
    """Seconds per batch of FAR and NAR for 10 -> 10 frames at paper size, and their ratio."""
    torch.manual_seed(0)
    dev = torch.device(device)
    context, future = 10, 10
    autoencoder = VPTRAutoencoder(1, (64, 64)).to(dev).eval()
    far = VPTRFAR(trained_frames=context + future).to(dev).eval()
    nar = VPTRNAR(context_frames=context, future_frames=future).to(dev).eval()
    frames = torch.rand(batch, context, 1, 64, 64, device=dev)

    def refine(features: torch.Tensor) -> torch.Tensor:
        return autoencoder.encode(autoencoder.decode(features))

    @torch.no_grad()
    def run(model: torch.nn.Module) -> torch.Tensor:
        features = model.predict(autoencoder.encode(frames), future, refine=refine)
        return autoencoder.decode(features)

    far_s = seconds_per_call(lambda: run(far), dev, repeats=repeats)
    nar_s = seconds_per_call(lambda: run(nar), dev, repeats=repeats)
    return Table(
        "VPTR inference: NAR vs FAR, 10 future frames at paper size",
        ["model", "s / batch", "NAR speed-up"],
        [
            ["VPTR-FAR (decode / re-encode feedback)", fmt(far_s, 3), ""],
            ["VPTR-NAR (one pass)", fmt(nar_s, 3), f"**{far_s / nar_s:.2f}x**"],
        ],
        f"Batch {batch}, 1 channel 64x64, 10 context frames, eval mode, no gradients, the "
        "autoencoder included. The paper reports NAR 12.75x faster than FAR on an RTX 3090.",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(table(args.device, args.batch, args.repeats).markdown())


if __name__ == "__main__":
    main()
