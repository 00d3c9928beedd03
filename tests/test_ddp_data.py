"""With two DDP processes (gloo, CPU), each video is seen exactly once per epoch across ranks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO_ROOT, cli_env
from tests.test_video_data import write_kinetics

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pytorch_lightning as pl
    import torch
    from videogen.data.kinetics import KineticsDataModule

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = {"train": [], "val": []}

        def training_step(self, batch, batch_idx):
            self.seen["train"] += batch["video_index"].tolist()
            return (self.weight * batch["video"].mean()).sum()

        def validation_step(self, batch, batch_idx):
            self.seen["val"] += batch["video_index"].tolist()

        def on_fit_end(self):
            with open(f"{sys.argv[2]}/rank{self.global_rank}.json", "w") as handle:
                json.dump(self.seen, handle)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if __name__ == "__main__":
        dm = KineticsDataModule(sys.argv[1], num_classes=3, num_frames=2, frame_stride=1, height=16, width=16,
                                short_side=20, batch_size=2, num_workers=0)
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        trainer.fit(Recorder(), datamodule=dm)
    """
)


def test_each_video_is_seen_once_per_epoch_across_two_ranks(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    write_kinetics(root, "csv_flat", per_class=4)  # 12 train and 12 val videos: 6 per rank
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = cli_env()
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for split in ("train", "val"):
        first, second = ranks[0][split], ranks[1][split]
        assert len(first) == len(second) == 6, (split, first, second)
        assert sorted(first + second) == list(range(12)), f"{split}: every video once across ranks"
