"""Speed options: fused Adam(W) and pinned memory on CUDA, the default precision, channels-last
conv weights, activation checkpointing, and graph-break-free compilation of the transformers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import videogen.tasks.base as task_base
from videogen.config import default_precision
from videogen.data.base import use_pin_memory
from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.models.layers import (
    Block,
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
)
from videogen.models.vit import FrameViT
from videogen.models.vivit import VARIANTS, ViViT
from videogen.models.vptr.far import VPTRFAR
from videogen.models.vptr.nar import VPTRNAR
from videogen.models.vptr.vidhrformer import VidHRFormerBlock, VidHRFormerDecoderBlock
from videogen.tasks.base import (
    VideoTask,
    to_channels_last,
    use_channels_last,
    use_fused_optimizer,
)
from videogen.tasks.classification import ClassificationTask
from videogen.tasks.prediction import AutoencoderTask
from videogen.tasks.synthesis import SynthesisTask

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
LINEAR = {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2}
# Tiny VPTR transformers: 16-d features on a 4x4 map, 2x2 windows, with dropout and drop path
# so that checkpointing has random state to replay.
TINY_VPTR = dict(
    feature_dim=16,
    feature_size=(4, 4),
    num_heads=2,
    window_size=2,
    drop_rate=0.1,
    drop_path_rate=0.1,
)
TINY_AE = {
    "_target_": "videogen.models.vptr.autoencoder.VPTRAutoencoder",
    "in_channels": 3,
    "img_size": [16, 16],
    "base_channels": 8,
    "feature_dim": 16,
    "num_downsampling": 2,
    "num_res_blocks": 1,
}
TINY_PATCH_D = {
    "_target_": "videogen.models.vptr.autoencoder.PatchDiscriminator",
    "in_channels": 3,
    "base_channels": 8,
    "num_layers": 2,
}


# --------------------------------------------------------------------------- fused optimiser


def test_adam_and_adamw_are_fused_on_cuda_only_unless_the_config_chooses() -> None:
    for optimizer_cls in (torch.optim.Adam, torch.optim.AdamW):
        assert use_fused_optimizer(optimizer_cls, ADAMW, CUDA)
        assert not use_fused_optimizer(optimizer_cls, ADAMW, CPU)
    assert not use_fused_optimizer(torch.optim.SGD, {"lr": 0.1}, CUDA)
    assert not use_fused_optimizer(torch.optim.AdamW, {**ADAMW, "fused": False}, CUDA)
    assert not use_fused_optimizer(torch.optim.AdamW, {**ADAMW, "foreach": True}, CUDA)
    assert use_fused_optimizer(torch.optim.AdamW, {**ADAMW, "fused": None}, CUDA)


def test_build_optimizer_passes_fused_when_the_decision_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = VideoTask(net=LINEAR, optimizer=ADAMW, lr_scheduler=None)
    optimizer, _ = task.build_optimizer(list(task.named_parameters()))
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults["fused"]
    assert optimizer.defaults["lr"] == ADAMW["lr"]

    decisions = []

    def decide(optimizer_cls: type, config: dict, device: torch.device) -> bool:
        decisions.append((optimizer_cls, device.type))
        return True

    monkeypatch.setattr(task_base, "use_fused_optimizer", decide)
    optimizer, _ = task.build_optimizer(list(task.named_parameters()))
    assert decisions == [(torch.optim.AdamW, "cpu")]  # the class behind the partial, the device
    assert optimizer.defaults["fused"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adamw_over_cuda_parameters_is_fused() -> None:
    task = VideoTask(net=LINEAR, optimizer=ADAMW, lr_scheduler=None).cuda()
    optimizer, _ = task.build_optimizer(list(task.named_parameters()))
    assert optimizer.defaults["fused"] is True


# --------------------------------------------------------------------------- pinned memory


def test_pin_memory_null_follows_the_device_and_explicit_values_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert use_pin_memory(None, CUDA) and not use_pin_memory(None, CPU)
    assert use_pin_memory(True, CPU) and not use_pin_memory(False, CUDA)
    for available in (True, False):  # no device known: whether CUDA is available
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert use_pin_memory(None) is available
        assert use_pin_memory(False) is False


@pytest.mark.parametrize(
    ("option", "device", "pinned"),
    [(None, CUDA, True), (None, CPU, False), (False, CUDA, False), (True, CPU, True)],
)
def test_loaders_pin_memory_as_resolved_for_the_trainers_device(
    option: bool | None, device: torch.device, pinned: bool
) -> None:
    datamodule = SyntheticVideoDataModule(
        num_frames=2, height=8, width=8, train_size=2, val_size=2, test_size=2, pin_memory=option
    )
    datamodule.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=device), world_size=1, num_nodes=1
    )
    assert datamodule.val_dataloader().pin_memory is pinned


def test_data_configs_default_to_automatic_pinning(compose_train) -> None:
    for data in ("synthetic", "kinetics", "ssv2", "cityscapes", "moving_mnist"):
        assert compose_train(f"data={data}").data.pin_memory is None, data


# --------------------------------------------------------------------------- precision


def test_default_precision_is_bf16_mixed_on_a_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_precision("gpu") == default_precision("cuda") == "bf16-mixed"
    assert default_precision("cpu") == default_precision("mps") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_precision("auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native_bf16, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True, b=native_bf16: b
        )
        assert default_precision("auto") == expected


def test_composed_trainer_precision(compose_train) -> None:
    assert compose_train("trainer=cpu").trainer.precision == "32-true"
    assert compose_train("trainer=gpu").trainer.precision == "bf16-mixed"
    # The default follows the accelerator, including one set on the command line...
    assert compose_train("trainer.accelerator=gpu").trainer.precision == "bf16-mixed"
    assert compose_train().trainer.precision == default_precision("auto")
    # ...and an explicit precision wins.
    assert compose_train("trainer.precision=16-mixed").trainer.precision == "16-mixed"
    assert (
        compose_train("trainer=cpu", "trainer.precision=bf16-mixed").trainer.precision
        == "bf16-mixed"
    )


# --------------------------------------------------------------------------- channels_last


def conv_weights(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


def is_channels_last(tensor: torch.Tensor) -> bool:
    """Laid out channels-last and not also the default way (as 1x1 kernels are in both)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_channels_last_converts_2d_conv_weights_only_and_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1),  # 5D weight: must be left alone, not refused
        nn.Flatten(1, 2),
        nn.Conv2d(4 * 4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
        nn.Conv2d(4, 2, 3),
    ).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 4, 8, 8)
    params_before = list(model.parameters())

    assert to_channels_last(model) is model
    assert list(model.parameters()) == params_before  # same objects: optimisers unaffected
    assert len(conv_weights(model)) == 3 and all(map(is_channels_last, conv_weights(model)))
    assert not any(map(is_channels_last, conv_weights(reference)))
    assert model[0].weight.is_contiguous()  # the Conv3d weight, as it was
    out = model(x)
    assert is_channels_last(out)  # activations follow the weights
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-5)
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_channels_last_option_defaults_to_cuda_only() -> None:
    assert use_channels_last(None, CUDA) and not use_channels_last(None, CPU)
    assert use_channels_last(True, CPU) and not use_channels_last(False, CUDA)


def autoencoder_task(channels_last: bool | None) -> AutoencoderTask:
    torch.manual_seed(0)
    return AutoencoderTask(
        net=TINY_AE, discriminator=TINY_PATCH_D, optimizer=ADAMW, channels_last=channels_last
    )


def test_task_setup_converts_the_networks_when_asked() -> None:
    task, reference = autoencoder_task(channels_last=True), autoencoder_task(channels_last=None)
    for t in (task, reference):
        t.setup("fit")  # no trainer: the task's own device, the CPU
    assert all(map(is_channels_last, conv_weights(task)))  # autoencoder and discriminator
    assert not any(map(is_channels_last, conv_weights(reference)))  # None on the CPU: off
    video = torch.rand(2, 2, 3, 16, 16)
    task.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.net(video), reference.net(video), rtol=1e-5, atol=1e-5)


def test_training_with_channels_last_keeps_the_format(tmp_path) -> None:
    task = autoencoder_task(channels_last=True)
    data = SyntheticVideoDataModule(
        num_frames=2, height=16, width=16, batch_size=2, train_size=2, val_size=2, test_size=2
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        fast_dev_run=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = copy.deepcopy(task.net.state_dict())
    trainer.fit(task, datamodule=data)
    assert all(map(is_channels_last, conv_weights(task)))
    assert any(not torch.equal(before[k], v) for k, v in task.net.state_dict().items())


def test_convolutional_tasks_expose_channels_last_and_others_do_not_convert(
    compose_train,
) -> None:
    for model in ("vid2vid", "vid2vid_tiny", "vptr_ae", "vptr_ae_tiny", "vptr_far", "vptr_nar"):
        assert compose_train(f"model={model}").model.channels_last is None, model
    for task in (SynthesisTask, AutoencoderTask):
        assert "channels_last" in task.runtime_options
    assert ClassificationTask.channels_last is False


# --------------------------------------------------------------------------- checkpointing


def assert_same_gradients(
    build: Callable[[bool], nn.Module], inputs: tuple[torch.Tensor, ...]
) -> tuple[nn.Module, nn.Module]:
    """Train-mode forward/backward of `build(False)` and `build(True)` (same weights, same random
    state): every parameter gradient is the same. Returns both models."""
    plain, checkpointed = build(False).train(), build(True).train()
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout masks
        model(*inputs).square().mean().backward()
    grads = 0
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
        grads += 1
    assert grads > 0
    return plain, checkpointed


def test_far_checkpointing_gives_the_same_gradients() -> None:
    def build(checkpointing: bool) -> nn.Module:
        torch.manual_seed(0)
        return VPTRFAR(depth=2, trained_frames=4, grad_checkpointing=checkpointing, **TINY_VPTR)

    assert_same_gradients(build, (torch.randn(2, 3, 16, 4, 4),))


def test_nar_checkpointing_gives_the_same_gradients_and_batchnorm_statistics() -> None:
    def build(checkpointing: bool) -> nn.Module:
        torch.manual_seed(0)
        return VPTRNAR(
            encoder_depth=2,
            decoder_depth=2,
            context_frames=2,
            future_frames=2,
            grad_checkpointing=checkpointing,
            **TINY_VPTR,
        )

    plain, checkpointed = assert_same_gradients(build, (torch.randn(2, 2, 16, 4, 4),))
    # The encoder's conv FFNs use BatchNorm: the recompute must not update it a second time.
    buffers = dict(checkpointed.named_buffers())
    running = [name for name in buffers if "running" in name or "num_batches" in name]
    assert running
    for name in running:
        torch.testing.assert_close(dict(plain.named_buffers())[name], buffers[name], msg=name)


def test_frame_vit_checkpointing_gives_the_same_gradients() -> None:
    def build(checkpointing: bool) -> nn.Module:
        torch.manual_seed(0)
        return FrameViT(
            5,
            img_size=16,
            patch_size=8,
            embed_dim=16,
            depth=2,
            num_heads=2,
            drop_path_rate=0.1,
            grad_checkpointing=checkpointing,
        )

    assert build(True).vit.grad_checkpointing
    assert_same_gradients(build, (torch.randn(2, 2, 3, 16, 16),))


def test_model_configs_expose_grad_checkpointing(compose_train) -> None:
    for model in ("vit", "vit_b16", "vivit", "vptr_far", "vptr_nar", "vptr_far_tiny"):
        assert compose_train(f"model={model}").model.net.grad_checkpointing is False, model


# --------------------------------------------------------------------------- compilation

D = 16  # tiny embedding size: tracing cost grows with nothing but the code


def tokens() -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens (B, T * S, D) and their (T, S) grid of 2 frames x 4 spatial tokens."""
    return torch.randn(2, 2 * 4, D), (2, 4)


def graph_cases() -> dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple]]]:
    """name -> (build the module, make its inputs), built lazily inside each test."""
    vptr = dict(num_heads=2, feature_size=(4, 4), window_size=2, drop_rate=0.1, drop_path_rate=0.1)
    cases = {
        "Block": (lambda: Block(D, 2), tokens),
        "Block+FactorisedDotProductAttention": (
            lambda: Block(D, 2, attention=FactorisedDotProductAttention),
            tokens,
        ),
        "FactorisedSelfAttentionBlock": (lambda: FactorisedSelfAttentionBlock(D, 2), tokens),
        "VidHRFormerBlock": (
            lambda: VidHRFormerBlock(D, causal=True, **vptr),
            lambda: (torch.randn(2, 3, 4, 4, D), torch.randn(3, D)),
        ),
        "VidHRFormerDecoderBlock": (
            lambda: VidHRFormerDecoderBlock(D, relative_position=True, **vptr),
            lambda: (
                torch.randn(2, 2, 4, 4, D),
                torch.randn(2, 4, 4, D),
                torch.randn(2, 3, 4, 4, D),
                torch.randn(2, D),
                torch.randn(3, D),
            ),
        ),
    }
    for variant in VARIANTS:
        cases[f"ViViT-{variant}"] = (
            lambda variant=variant: ViViT(
                3,
                num_frames=4,
                img_size=16,
                variant=variant,
                tubelet_size=(2, 8, 8),
                embed_dim=D,
                depth=1,
                num_heads=2,
                temporal_depth=1,
                drop_path_rate=0.1,
            ),
            lambda: (torch.randn(2, 4, 3, 16, 16),),
        )
    # Activation checkpointing traces as one region per block, BatchNorm (NAR's encoder) included.
    cases["VPTRFAR-grad_checkpointing"] = (
        lambda: VPTRFAR(depth=2, trained_frames=4, grad_checkpointing=True, **TINY_VPTR),
        lambda: (torch.randn(2, 3, 16, 4, 4),),
    )
    cases["VPTRNAR-grad_checkpointing"] = (
        lambda: VPTRNAR(
            encoder_depth=1,
            decoder_depth=1,
            context_frames=2,
            future_frames=2,
            grad_checkpointing=True,
            **TINY_VPTR,
        ),
        lambda: (torch.randn(2, 2, 16, 4, 4),),
    )
    return cases


GRAPH_CASES = graph_cases()


@pytest.mark.parametrize("name", list(GRAPH_CASES))
def test_compiles_without_graph_breaks(name: str) -> None:
    build, inputs = GRAPH_CASES[name]
    torch._dynamo.reset()
    try:
        torch.manual_seed(0)
        explanation = torch._dynamo.explain(build().train())(*inputs())
    finally:
        torch._dynamo.reset()
    reasons = [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1
