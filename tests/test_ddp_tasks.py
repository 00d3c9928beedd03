"""Every task under DDP: two gloo processes on the CPU (`trainer=ddp_cpu`) through the real CLI.

Each run adds tests/rank_state.py's RankStateDump, which writes what every rank ends with, so
the tests can check that the ranks agree parameter for parameter, that the GAN tasks (several
backward passes per step) train, and that decisions one rank would take alone (skip a
non-finite update, stop at the bad-video limit, an empty batch) are taken by all ranks
together. A hang fails the run's timeout instead of blocking the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DistributedSampler

from tests.conftest import REPO_ROOT, cli_env, config_names
from tests.test_video_data import write_kinetics
from tests.video_files import TINY_VIDEO_OVERRIDES, truncate
from videogen.errors import ConfigError
from videogen.utils.build import build_task, build_trainer

# Two training steps per rank (8 clips, batch 2 per rank), one validation batch; the default
# callbacks stay (the VPTR autoencoder run's best.ckpt feeds FAR and NAR).
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "test_after_fit=false",
]
SYNTHETIC = ["data.train_size=8", "data.val_size=4", "data.test_size=4", "data.batch_size=2"]
# The paper-size configs run as their laptop-size versions; vit_b16 keeps its timm model name
# (and stochastic depth) with explicit small dimensions, which win over the name's.
TINY = {
    "vivit": "vivit_tiny",
    "vptr_ae": "vptr_ae_tiny",
    "vptr_far": "vptr_far_tiny",
    "vptr_nar": "vptr_nar_tiny",
    "vid2vid": "vid2vid_tiny",
    "latte": "latte_tiny",
    "uvit": "uvit_tiny",
    "vgan": "vgan_tiny",
}
OVERRIDES = {
    "vit_b16": [
        "model.net.patch_size=8",
        "model.net.embed_dim=48",
        "model.net.depth=2",
        "model.net.num_heads=3",
        "model.net.mlp_ratio=2.0",
    ],
}
# U-ViT trains with the same task as Latte (DiffusionTask), which latte_tiny runs; the per-frame
# ViT with the same task and shared layers as ViViT (ClassificationTask), which vivit_tiny runs
# (vit_b16 stays: its network is timm's; vit still trains under DDP in the unreadable-batch test).
SAME_TASK_AS_ANOTHER_RUN = {"uvit_tiny", "vit"}
RUNS = sorted({TINY.get(name, name) for name in config_names("model")} - SAME_TASK_AS_ANOTHER_RUN)
# Tasks with several players: each backward pass leaves some parameters out.
GAN_RUNS = {"vptr_ae_tiny", "vid2vid_tiny", "vgan_tiny"}
# BatchNorm running statistics: without sync batchnorm (GPUs only) each rank updates its own
# from its own batches; DDP broadcasts rank zero's at the start of every training step.
PER_RANK_BUFFERS = ("running_mean", "running_var")


def run_videogen(
    run_dir: Path, *overrides: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m videogen <overrides>` with rank states dumped under run_dir/ranks.

    The run gets its own process group, killed whole if it outlives `timeout` (the rank that
    Lightning started would otherwise outlive a hung rank zero): a hang is a failed test.
    """
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small shared CPU
    command = [
        sys.executable,
        "-m",
        "videogen",
        *FAST,
        f"hydra.run.dir={run_dir}",
        "+callbacks.rank_state._target_=tests.rank_state.RankStateDump",
        f"+callbacks.rank_state.dirpath={run_dir / 'ranks'}",
        *overrides,
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the run hung (killed after {timeout} s)\nstderr:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def train(run_dir: Path, *overrides: str) -> Path:
    result = run_videogen(run_dir, *overrides)
    assert result.returncode == 0, (
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    )
    return run_dir


def rank_states(run_dir: Path, ranks: int = 2) -> list[dict[str, Any]]:
    return [torch.load(run_dir / "ranks" / f"rank{r}.pt", weights_only=False) for r in range(ranks)]


def initial_state(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "ranks" / "init.pt", weights_only=False)


def assert_ranks_agree(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Every tensor of the two ranks' state dicts is equal (BatchNorm running statistics aside)."""
    assert first["state"].keys() == second["state"].keys()
    for name, value in first["state"].items():
        if not name.endswith(PER_RANK_BUFFERS):
            assert torch.equal(value, second["state"][name]), f"{name} differs between ranks"


def assert_trained(init: dict[str, Any], final: dict[str, Any]) -> None:
    """Each top-level part with trainable parameters (network, discriminators) moved."""
    trainable = init["trainable"]
    for part in sorted({name.split(".")[0] for name in trainable}):
        names = [name for name in trainable if name.split(".")[0] == part]
        moved = [n for n in names if not torch.equal(init["state"][n], final["state"][n])]
        assert moved, f"no parameter of {part} changed in training"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """ddp_run(model) -> the folder of a `trainer=ddp_cpu` run of that model config, run once.
    VPTR FAR / NAR run on the checkpoint of the vptr_ae_tiny run."""
    runs: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in runs:
            overrides = [f"model={model}", "trainer=ddp_cpu", *SYNTHETIC, *OVERRIDES.get(model, [])]
            if model in ("vptr_far_tiny", "vptr_nar_tiny"):
                autoencoder = get("vptr_ae_tiny") / "checkpoints" / "best.ckpt"
                overrides.append(f"model.autoencoder_ckpt={autoencoder}")
            runs[model] = train(tmp_path_factory.mktemp(model), *overrides)
        return runs[model]

    return get


def test_every_model_config_is_covered_by_a_small_run() -> None:
    # Each paper-size config stands in the runs as its laptop-size version, which exists.
    assert set(TINY.values()) | SAME_TASK_AS_ANOTHER_RUN <= set(config_names("model"))
    assert not set(TINY) & set(RUNS), "a paper-size config would run at full size"


@pytest.mark.parametrize("model", RUNS)
def test_every_model_trains_under_ddp_with_the_same_weights_on_both_ranks(
    ddp_run: Callable[[str], Path], model: str
) -> None:
    run_dir = ddp_run(model)
    first, second = rank_states(run_dir)
    assert first["world_size"] == second["world_size"] == 2
    assert_ranks_agree(first, second)
    init = initial_state(run_dir)
    assert_trained(init, first)
    # The GAN tasks search for unused parameters (their players' backward passes each leave
    # the others' out); every other task uses all of its parameters and skips the search.
    assert first["find_unused_parameters"] is (model in GAN_RUNS)
    assert first["losses"] and all(
        torch.isfinite(torch.tensor(value)) for step in first["losses"] for value in step.values()
    )
    if model in ("vptr_far_tiny", "vptr_nar_tiny"):
        # The frozen stage-1 autoencoder, BatchNorm statistics included, did not move.
        frozen = [name for name in init["state"] if name.startswith("autoencoder.")]
        assert frozen and not any(name in init["trainable"] for name in frozen)
        for name in frozen:
            assert torch.equal(init["state"][name], first["state"][name]), name


def test_vid2vid_on_two_processes_matches_one_process_with_twice_the_batch(
    ddp_run: Callable[[str], Path], tmp_path: Path
) -> None:
    """2 processes x batch 2 give the losses of 1 process x batch 4, step after step.

    The two runs train on the same clips at each step (one permutation dealt across ranks) and
    DDP averages the two ranks' gradients. vid2vid normalises with instance norm only (its
    generator and both discriminators), so no statistic depends on how the batch is split, and
    every loss is a mean over the batch's elements: the mean of the ranks' losses is the whole
    batch's loss, and the averaged gradient is the whole batch's gradient. (A BatchNorm model,
    like the VPTR autoencoder on the CPU without sync batchnorm, would not match: each rank
    would normalise with its own half-batch's statistics.)
    """
    two = rank_states(ddp_run("vid2vid_tiny"))
    one = train(
        tmp_path / "one",
        "model=vid2vid_tiny",
        "trainer=cpu",
        *SYNTHETIC,
        "data.batch_size=4",
    )
    (single,) = rank_states(one, ranks=1)
    assert len(single["losses"]) == len(two[0]["losses"]) == len(two[1]["losses"]) == 2
    for step, expected in enumerate(single["losses"]):
        assert {"train/loss_g", "train/d_image", "train/d_video"} <= expected.keys()
        for name, value in expected.items():
            mean = (two[0]["losses"][step][name] + two[1]["losses"][step][name]) / 2
            assert mean == pytest.approx(value, rel=1e-4, abs=1e-6), (step, name)


def test_a_non_finite_loss_on_one_rank_skips_the_update_on_both(tmp_path: Path) -> None:
    run_dir = train(
        tmp_path,
        "model=vid2vid_tiny",
        "trainer=ddp_cpu",
        *SYNTHETIC,
        "+callbacks.poison._target_=tests.rank_state.NonFiniteLossOnce",
        "+callbacks.poison.rank=1",
        "+callbacks.poison.method=generator_losses",
    )
    first, second = rank_states(run_dir)
    # Rank 1's generator loss of the first step was NaN: both ranks skipped that chunk's
    # updates (G, D_I, D_V) and made the second step's.
    assert first["skipped_steps"] == second["skipped_steps"] == 1
    assert_ranks_agree(first, second)
    assert_trained(initial_state(run_dir), first)
    log = (run_dir / "train.log").read_text()
    assert "Skipped an update with a non-finite loss on at least one rank (1 so far)" in log


# --------------------------------------------------------------------------- unreadable videos


def kinetics_with_bad_videos(
    root: Path, bad: dict[int, list[int]], model: str = "vit"
) -> list[str]:
    """A 12-video Kinetics (3 classes x 4; two training steps of 2 clips per rank and a third
    one) whose training videos at the given (rank -> positions in that rank's epoch order)
    are truncated; returns the overrides that train on it."""
    from videogen.data.kinetics import KineticsDataModule

    write_kinetics(root, "csv_flat", per_class=4)
    samples = KineticsDataModule(str(root), num_classes=3).samples("train")
    for rank, positions in bad.items():
        # The training order of tasks run with seed 42: ResumableSampler's permutation, dealt
        # across 2 ranks (videogen.data.base.VideoDataModule.shuffling_sampler).
        order = list(
            DistributedSampler(
                range(len(samples)),
                num_replicas=2,
                rank=rank,
                shuffle=True,
                seed=42,
                drop_last=True,
            )
        )
        for position in positions:
            truncate(Path(samples[order[position]].path))
    return [
        "data=kinetics",
        f"data.root={root}",
        "data.num_classes=3",
        *TINY_VIDEO_OVERRIDES,
        f"model={model}",
        "trainer=ddp_cpu",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        # 1 of the 12 videos on each rank is within max_bad_fraction=0.1 (1.2 videos); the
        # run's 2 are not.
        pytest.param({0: [0], 1: [1]}, id="over-only-in-total"),
        # Both on rank 0: the other rank must stop with it, not wait for it.
        pytest.param({0: [0, 1]}, id="all-on-one-rank"),
    ],
)
def test_the_bad_video_limit_counts_all_ranks_and_stops_them_together(
    tmp_path: Path, bad: dict[int, list[int]]
) -> None:
    overrides = kinetics_with_bad_videos(tmp_path / "k400", bad)
    result = run_videogen(tmp_path / "run", *overrides, "data.max_bad_fraction=0.1", timeout=240)
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    # Both ranks stop at the first batch with the same sentence; each prints it (the two
    # prints may share a line), and nothing else is reported as an error.
    sentence = (
        "error: 2 of 12 train videos could not be read (more than data.max_bad_fraction=0.1); "
        "fix or remove them, or raise that limit."
    )
    assert sentence in result.stderr
    assert result.stderr.count("error: ") == result.stderr.count(sentence)


@pytest.mark.parametrize("model", ["vit", "vptr_ae_tiny"])
def test_a_rank_whose_whole_batch_is_unreadable_still_steps_with_the_others(
    tmp_path: Path, model: str
) -> None:
    # Both clips of rank 1's first batch are unreadable; rank 0's batch is whole. A classifier
    # on rank 1 joins rank 0's gradient all-reduce with zeros; a GAN task (several backward
    # passes) skips that batch on both ranks. Either way no rank waits for the other.
    overrides = kinetics_with_bad_videos(tmp_path / "k400", {1: [0, 1]}, model)
    run_dir = train(tmp_path / "run", *overrides, "data.max_bad_fraction=0.5")
    first, second = rank_states(run_dir)
    assert_ranks_agree(first, second)
    assert_trained(initial_state(run_dir), first)
    assert len(first["losses"]) == len(second["losses"]) == 3


# --------------------------------------------------------------------------- trainer building


@pytest.mark.parametrize(("model", "searches"), [("vptr_ae_tiny", True), ("vit", False)])
def test_the_ddp_strategy_searches_for_unused_parameters_as_the_task_needs(
    compose_train, model: str, searches: bool
) -> None:
    cfg = compose_train("trainer=ddp_cpu", f"model={model}")
    trainer = build_trainer(cfg, [], [], task=build_task(cfg))
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is searches
    # Named by a string (or picked by `auto`), the strategy follows the task too.
    cfg = compose_train(
        "trainer=cpu", "trainer.devices=2", "trainer.strategy=ddp", f"model={model}"
    )
    trainer = build_trainer(cfg, [], [], task=build_task(cfg))
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is searches


def test_turning_the_search_off_for_a_gan_task_is_one_sentence(compose_train) -> None:
    cfg = compose_train(
        "trainer=ddp_cpu", "model=vid2vid_tiny", "trainer.strategy.find_unused_parameters=false"
    )
    with pytest.raises(ConfigError, match="DDP must look for unused parameters"):
        build_trainer(cfg, [], [], task=build_task(cfg))


def test_sync_batchnorm_is_turned_off_on_the_cpu_with_a_note(
    compose_train, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_train("trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true")
    with caplog.at_level("INFO"):
        trainer = build_trainer(cfg, [], [], task=build_task(cfg))
    assert trainer.strategy._layer_sync is None
    assert "trainer.sync_batchnorm is off" in caplog.text
