"""The measuring tools the benchmarks rest on count and report what they claim to.

No timing is asserted here (speed is the benchmarks' job); these check FLOP counting, the
child-process protocol, the reference models' shapes and the profile-table reader.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import common, training_step
from benchmarks.profiles import top_ops


def test_flop_count_of_a_linear_layer_is_two_per_multiply_add() -> None:
    layer = nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64)
    assert common.count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32


def test_flop_count_includes_the_backward_pass() -> None:
    layer = nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, requires_grad=True)
    forward = common.count_flops(lambda: layer(x))
    step = common.count_flops(lambda: layer(x).sum().backward())
    assert step == 3 * forward  # grad wrt the input and wrt the weight: two more matmuls


def test_grouped_convolution_backward_costs_twice_its_forward() -> None:
    # torch's own formula ignores the groups in the weight gradient (64x too much here).
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=64)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    forward = common.count_flops(lambda: conv(x))
    assert forward == 2 * 2 * 64 * 9 * 16 * 16
    assert common.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_child_result_comes_back_and_a_failing_child_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child prints what `print_result` prints, without importing torch (fast).
    (tmp_path / "bench_child.py").write_text(
        "import sys\n"
        "if sys.argv[1] == 'ok':\n"
        f"    print('noise'); print({common.RESULT_PREFIX!r} + '{{\"x\": 1.5}}')\n"
        "else:\n    raise SystemExit('bad dims given')\n"
    )
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{repo}")
    assert common.run_child("bench_child", ["ok"]) == {"x": 1.5}
    with pytest.raises(RuntimeError, match="bad dims given"):
        common.run_child("bench_child", ["fail"])


@pytest.mark.parametrize("case", ["vivit_m1", "vivit_fdp"])
def test_timm_reference_has_the_same_width_depth_and_tokens_as_ours(case: str) -> None:
    dims = dict(training_step.CPU_DIMS, batch=1, frames=4, image=32, depth=2)
    ours = training_step.vivit_case(case, "videogen", dims, torch.device("cpu"))
    reference = training_step.vivit_case(case, "timm", dims, torch.device("cpu"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Same layers and sizes; Model 4 has no CLS token, so one vector and one position fewer.
    assert abs(count(ours.model) - count(reference.model)) <= 2 * dims["dim"]
    assert reference.model(*reference.inputs).shape == ours.model(*ours.inputs).shape


def test_profile_reader_returns_the_leading_operators(tmp_path: Path) -> None:
    table = torch.profiler.profile()
    layer = nn.Linear(256, 256)
    with table:
        layer(torch.randn(512, 256)).relu().sum().backward()
    path = tmp_path / "step.txt"
    path.write_text(
        "# header line\n" + table.key_averages().table(sort_by="self_cpu_time_total", row_limit=5)
    )
    ops = top_ops(path, count=2)
    assert len(ops) == 2
    assert all(name.startswith(("aten::", "autograd::")) for name, _ in ops)
    assert all(share.endswith("%") for _, share in ops)


def test_the_latte_spatial_path_has_diffusers_dit_dims() -> None:
    """Same output shapes and parameter counts within 1%, once diffusers' per-block timestep and
    label embedders are tied into one (its DiT blocks each embed t and y again; DiT shares one)."""
    from benchmarks.diffusion import DIT, SpatialPath, diffusers_dit

    ours, theirs = SpatialPath(), diffusers_dit()
    embedders = {id(block.norm1.emb) for block in theirs.transformer_blocks}
    assert len(embedders) == 1
    theirs_count = sum(p.numel() for p in theirs.parameters())
    assert ours.used_parameters() == pytest.approx(theirs_count, rel=0.01)
    x = torch.randn(2, DIT["channels"], DIT["size"], DIT["size"])
    t, labels = torch.tensor([1, 500]), torch.tensor([0, 7])
    with torch.no_grad():
        assert ours(x, t, labels).shape == theirs(x, timestep=t, class_labels=labels).sample.shape


def test_interleaved_timing_alternates_the_order_and_reports_each_median() -> None:
    """A B, then B A, ...: a drift in the machine's speed falls on both sides; one slow call
    does not move a median of three."""
    from benchmarks.common import interleaved_seconds_per_call

    calls: list[str] = []
    slow_once = iter([0.3])

    def side(name: str, pause: float) -> Callable[[], None]:
        def call() -> None:
            calls.append(name)
            time.sleep(pause if name != "b" or len(calls) != 4 else next(slow_once))

        return call

    seconds = interleaved_seconds_per_call(
        {"a": side("a", 0.02), "b": side("b", 0.0)}, torch.device("cpu"), warmup=1, repeats=3
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert seconds["a"] == pytest.approx(0.02, abs=0.015)
    assert seconds["b"] < 0.015


def test_ddp_benchmark_synchronises_the_ranks() -> None:
    """Two gloo processes on different batches end with the same weights: the all-reduce ran
    (without it each rank's AdamW step would follow its own gradients)."""
    from benchmarks import ddp_scaling

    args = ddp_scaling.parse(["--case", "vit", "--device", "cpu", "--dtype", "float32"])
    args.warmup, args.steps, args.batch, args.timeout = 0, 1, 2, 300
    result = ddp_scaling.run(args, 2)
    first, second = result["checksums"]
    assert first == pytest.approx(second, rel=1e-9)
    assert result["clips_per_s"] > 0


def test_the_training_section_without_its_peer_library_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import importlib.util

    from benchmarks.__main__ import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "vit_pytorch" else real_find_spec(name, *args),
    )
    with pytest.raises(SystemExit) as stop:
        main(["--only", "training", "--output", str(tmp_path / "unused.md")])
    assert stop.value.code == 2
    assert (
        "vit-pytorch, which is not installed: pip install -e '.[bench]'" in capsys.readouterr().err
    )
    assert not (tmp_path / "unused.md").exists()


def test_gpu_script_refuses_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device here; run it on a GPU machine"):
        gpu.main(["--out", "unused.md"])


def test_gpu_script_reports_each_part_and_survives_a_failing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked on the CPU: the results file holds the header and every part's outcome, a
    part that raises is reported as failed and the next part still runs."""
    from benchmarks import gpu

    def broken(*args: object, **kwargs: object) -> common.Table:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gpu, "training_table", broken)
    monkeypatch.setattr(gpu, "matmul_peak_flops", lambda device, dtype: 1e12)
    monkeypatch.setattr(gpu, "ddp_table", lambda: common.Table("DDP scaling", ["GPUs"], [["0"]]))
    out = tmp_path / "RESULTS-gpu.md"
    gpu.main(["--device", "cpu", "--out", str(out), "--parts", "training,ddp"])
    text = out.read_text()
    assert "matmul peak (bf16)" in text
    assert "## training\n\nfailed: RuntimeError: out of memory" in text
    assert "### DDP scaling" in text and "Total:" in text


def test_vgan_paper_case_trains_both_networks() -> None:
    case = training_step.paper_case("vgan", 1, torch.device("cpu"))
    case.loss(case.model(*case.inputs)).backward()
    for net in (case.model.generator, case.model.discriminator):
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert case.inputs[1].shape == (1, 32, 3, 64, 64)
