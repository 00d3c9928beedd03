"""Shared measuring tools: timing, FLOP counting, the matmul peak, isolated child processes.

Every figure the benchmarks report is a ratio against a reference measured in the same run on
the same device, dtype and thread count, so that a slower or busier machine moves both sides.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

# A child process prints exactly one line starting with this, followed by its JSON result.
RESULT_PREFIX = "BENCHMARK_RESULT "


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(
    fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3
) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    return interleaved_seconds_per_call({"fn": fn}, device, warmup, repeats)["fn"]


def interleaved_seconds_per_call(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int = 1, repeats: int = 3
) -> dict[str, float]:
    """Median wall time of each of `fns`, calling them in turn (A B, then B A, ...) after
    `warmup` untimed calls of each: on a shared machine whose speed drifts by 10% within a
    minute, back-to-back calls see the same machine, where runs one after the other do not."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for index in range(repeats):
        for name in names if index % 2 == 0 else reversed(names):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(spent)[len(spent) // 2] for name, spent in times.items()}


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """A convolution's backward pass: the forward's FLOPs once for the input gradient and once
    for the weight gradient, whichever are asked for.

    torch's own formula computes the weight gradient as a convolution of the input with the
    output gradient without the groups, which overcounts a grouped convolution by its group
    count (a depthwise 3x3 over 2112 channels, in VPTR's conv FFN, by 2112x).
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of `fn` (matmuls, convolutions, attention), as
    counted by torch's FlopCounterMode; a multiply-add counts as 2."""
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """The FLOP/s of a plain square matmul: the practical ceiling MFU is measured against.

    The best of several sizes, since small matrices under-use a GPU and large ones take long
    on a CPU.
    """
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (1024, 2048, 3072)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = seconds_per_call(lambda a=a, b=b: a @ b, device, warmup=2, repeats=repeats)
        best = max(best, 2 * n**3 / seconds)
    return best


class PeakMemory:
    """Peak memory of the code run inside the context, in MiB.

    On CUDA the allocator's peak; on the CPU the growth of the process's peak resident set,
    which is only meaningful in a fresh process (see `run_child`).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mib = (peak - self.base) / 2**20


def run_child(
    module: str, args: Sequence[str], timeout: float = 1800, source: Path | None = None
) -> dict:
    """Run `python -m module args` in a fresh process and return the result it printed.

    Each measured configuration gets its own process, so that its peak memory and its
    torch.compile caches are its own. `source` (a `src` folder of another checkout) makes the
    child import that checkout's `videogen` instead of this one's.
    """
    env = None
    if source is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.getcwd()])}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    raise RuntimeError(
        f"benchmark child `{module} {' '.join(args)}` exited with {proc.returncode} and no "
        "result:\n" + "\n".join(tail)
    )


def print_result(result: dict) -> None:
    """How a child process hands its result to `run_child`."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, str]:
    """What the figures were measured on."""
    import pytorch_lightning
    import timm

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores"
    return {
        "date": datetime.date.today().isoformat(),
        "device": f"{device.type}: {machine}",
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "pytorch-lightning": pytorch_lightning.__version__,
    }


@dataclass
class Table:
    """A markdown table with a title and a note on how to read it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
