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
import time

import torch

from videogen.models.vptr.autoencoder import VPTRAutoencoder
from videogen.models.vptr.far import VPTRFAR
from videogen.models.vptr.nar import VPTRNAR


def seconds_per_call(fn, repeats: int, device: str) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--future", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    autoencoder = VPTRAutoencoder(1, (64, 64)).to(args.device).eval()
    far = VPTRFAR(trained_frames=args.context + args.future).to(args.device).eval()
    nar = VPTRNAR(context_frames=args.context, future_frames=args.future).to(args.device).eval()
    frames = torch.rand(args.batch, args.context, 1, 64, 64, device=args.device)

    @torch.no_grad()
    def refine(features: torch.Tensor) -> torch.Tensor:
        return autoencoder.encode(autoencoder.decode(features))

    @torch.no_grad()
    def run(model: torch.nn.Module) -> torch.Tensor:
        features = model.predict(autoencoder.encode(frames), args.future, refine=refine)
        return autoencoder.decode(features)

    far_s = seconds_per_call(lambda: run(far), args.repeats, args.device)
    nar_s = seconds_per_call(lambda: run(nar), args.repeats, args.device)
    print(
        f"device {args.device}, batch {args.batch}, {args.context} -> {args.future} frames, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"VPTR-FAR: {far_s:.3f} s per batch")
    print(f"VPTR-NAR: {nar_s:.3f} s per batch")
    print(f"NAR speed-up over FAR: {far_s / nar_s:.2f}x (paper, RTX 3090: 12.75x)")


if __name__ == "__main__":
    main()
