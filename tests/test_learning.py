"""The models learn what they should: ViViT uses time, a per-frame ViT cannot.

The synthetic label is the direction of motion of the main shape, which moves in a straight
line (it is kept away from the walls), so no single frame shows it and the same clip played
backwards moves the opposite way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_ok, run_cli
from videogen.utils.build import build_datamodule, build_task


@pytest.fixture(scope="module")
def default_vivit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the defaults of `python -m videogen` (vivit_tiny, 2 epochs of 40960 synthetic
    clips): the classifier under test below, and the judge of the generative recipes."""
    run_dir = tmp_path_factory.mktemp("default_vivit")
    result = run_cli(
        "videogen", "trainer=cpu", f"hydra.run.dir={run_dir}", cwd=run_dir, timeout=900
    )
    assert_ok(result)
    return run_dir


@pytest.mark.slow
def test_default_vivit_learns_the_direction_of_motion(default_vivit_run: Path) -> None:
    """It reached test/acc 0.971 with torch 2.14.1 and with 2.15.0 on a 2-core AMD EPYC (0.977 with
    one thread); the threshold keeps a margin for other CPUs and library versions (the earlier
    3-epoch recipe of 16384 clips scored 0.87 to 0.93 and sat on its 0.90 threshold)."""
    metrics = json.loads((default_vivit_run / "metrics.json").read_text())
    print(f"default vivit_tiny: test/acc={metrics['test/acc']:.4f}")
    assert metrics["test/acc"] >= 0.95


@pytest.mark.slow
def test_latte_recipe_draws_the_direction_of_motion_it_is_asked_for(
    default_vivit_run: Path, tmp_path: Path
) -> None:
    """`experiment=latte_synthetic`, judged by the default ViViT run: the class of a clip is the
    direction its shape moves, so the judge agrees with the conditioning class only when the
    shape moves that way. It reached test/judge_acc 0.97 (DDIM 50, guidance 3) with torch 2.14.1
    on a 2-core AMD EPYC in 14 minutes; chance is 0.125."""
    judge = default_vivit_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        "videogen",
        "experiment=latte_synthetic",
        f"model.judge_ckpt={judge}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=1800,
    )
    assert_ok(result)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    print(f"latte_synthetic: test/judge_acc={metrics['test/judge_acc']:.4f}")
    assert metrics["test/judge_acc"] >= 0.8


def test_per_frame_vit_cannot_tell_a_clip_from_its_reversal(
    compose_train: Callable, one_intra_op_thread: None
) -> None:
    """Per-frame logits averaged over time are the same for a clip and the clip played backwards,
    whose label is the opposite direction: whatever its weights, the ViT is wrong on at least
    one clip of every such pair, so it can never pass 50% on a reversal-balanced set. ViViT,
    given the same clips, answers differently."""
    cfg = compose_train("data.test_size=8")
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)
    video = batch["video"]
    reversed_video = video.flip(dims=[1])
    vit = build_task(compose_train("model=vit")).eval()
    vivit = build_task(cfg).eval()
    with torch.no_grad():
        vit_forward, vit_backward = vit(video), vit(reversed_video)
        vivit_forward, vivit_backward = vivit(video), vivit(reversed_video)
    assert (vit_forward[1:] - vit_forward[0]).abs().max() > 1e-3  # it does look at the frames
    torch.testing.assert_close(vit_forward, vit_backward, rtol=1e-4, atol=1e-5)
    assert (vivit_forward - vivit_backward).abs().max() > 1e-3
