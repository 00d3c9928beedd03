"""DDP scaling: one training case's clips/s on 1 process and on N, one process per device.

Each process builds the same model (same seed), wraps it in DistributedDataParallel and trains
on its own random batch (a per-rank seed), so the gradients differ and the all-reduce does real
work. Efficiency = clips/s on N processes / (N x clips/s on one). NCCL on GPUs, gloo on the CPU
(where it only checks the machinery: the processes share the cores).

    python -m benchmarks.ddp_scaling --case vivit_b_fe --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from benchmarks.common import print_result, synchronize
from benchmarks.training_step import build_case


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, world: int, port: int, args: argparse.Namespace, results: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, args.threads // world))
        torch.manual_seed(0)  # the same initial weights on every rank
        case_args = argparse.Namespace(case=args.case, impl="videogen", batch=args.batch)
        case = build_case(case_args, device)
        torch.manual_seed(1 + rank)  # each rank its own batch
        inputs = tuple(torch.randn_like(x) if x.is_floating_point() else x for x in case.inputs)
        model = DistributedDataParallel(case.model.to(device), device_ids=[rank] if cuda else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        dtype = getattr(torch, args.dtype)

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = case.loss(model(*inputs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()
        synchronize(device)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        dist.barrier()
        seconds = (time.perf_counter() - start) / args.steps
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        results.put({"rank": rank, "seconds": seconds, "clips": case.clips, "checksum": checksum})
    finally:
        dist.destroy_process_group()


def run(args: argparse.Namespace, world: int) -> dict:
    """Seconds per step and clips/s over all `world` processes, and each rank's weight sum."""
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(target=worker, args=(rank, world, port, args, results))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=args.timeout) for _ in range(world)]
    for process in processes:
        process.join()
    if any(process.exitcode for process in processes):
        raise RuntimeError(
            f"a DDP benchmark process failed (exit codes {[p.exitcode for p in processes]})"
        )
    seconds = max(report["seconds"] for report in reports)
    clips = sum(report["clips"] for report in reports)
    checksums = [report["checksum"] for report in sorted(reports, key=lambda r: r["rank"])]
    return {"seconds_per_step": seconds, "clips_per_s": clips / seconds, "checksums": checksums}


def measure(args: argparse.Namespace) -> dict:
    """One process, then `args.world`, and the scaling efficiency."""
    single = run(args, 1)
    many = run(args, args.world)
    return {
        "world": args.world,
        "single_clips_per_s": single["clips_per_s"],
        "clips_per_s": many["clips_per_s"],
        "efficiency": many["clips_per_s"] / (args.world * single["clips_per_s"]),
        "checksums": many["checksums"],
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="vivit_b_fe")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--world", type=int, default=0, help="0: every GPU")
    parser.add_argument("--batch", type=int, default=0, help="per process; 0: the case's default")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    if not args.world:
        args.world = torch.cuda.device_count() if args.device == "cuda" else 2
    return args


def main(argv: list[str] | None = None) -> None:
    print_result(measure(parse(argv)))


if __name__ == "__main__":
    main()
