"""The diffusion process: schedules, noising, losses and samplers, with diffusers' schedulers as
the oracle for single steps."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from videogen.errors import ConfigError
from videogen.models.diffusion.process import (
    GaussianDiffusion,
    make_betas,
    timestep_sequence,
)

SHAPE = (2, 3, 4, 6, 6)  # B, T, C, H, W


def toy_network(learn_sigma: bool = False):
    """A fixed smooth function standing in for a denoiser: output depends on x, t and labels."""

    def network(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        shift = 0.0 if labels is None else labels.float().view(-1, 1, 1, 1, 1) * 0.05
        scale = (t.float() / 1000).view(-1, 1, 1, 1, 1)
        out = torch.tanh(x) * (0.5 + scale) + shift
        if learn_sigma:
            out = torch.cat([out, torch.sin(x)], dim=2)
        return out

    return network


def test_schedules_match_their_definitions_and_diffusers() -> None:
    linear = make_betas("linear", 1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    scaled = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    oracle = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    torch.testing.assert_close(scaled.float(), oracle.betas, rtol=1e-6, atol=1e-9)
    cosine = make_betas("cosine", 1000)
    oracle = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(cosine.float(), oracle.betas, rtol=1e-5, atol=1e-7)
    assert cosine.max() <= 0.999
    with pytest.raises(ConfigError, match="not a noise schedule"):
        make_betas("quadratic", 1000)


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_sampler_timesteps_start_at_the_last_training_step(spacing: str) -> None:
    for steps in (1, 10, 50, 250, 1000):
        sequence = timestep_sequence(1000, steps, spacing)
        assert sequence[0] == 999 and len(sequence) == steps
        assert sequence == sorted(set(sequence), reverse=True) and sequence[-1] >= 0
    assert timestep_sequence(1000, 1000, "leading") == list(range(999, -1, -1))
    with pytest.raises(ConfigError, match="out of range"):
        timestep_sequence(1000, 0)


def test_noising_is_float32_whatever_the_input_precision() -> None:
    process = GaussianDiffusion()
    x0 = torch.randn(SHAPE).bfloat16()
    noise = torch.randn(SHAPE)
    t = torch.tensor([0, 999])
    x_t = process.add_noise(x0, noise, t)
    assert x_t.dtype == torch.float32
    abar = process.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double()
    torch.testing.assert_close(x_t.double(), expected, rtol=0, atol=1e-5)
    # at t = 0 the noise is scaled by 0.01: in bf16 arithmetic it would be mostly rounded away
    assert (x_t[0] - x0[0].float()).abs().max() > 0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_steps_equal_diffusers(prediction: str) -> None:
    process = GaussianDiffusion(prediction=prediction)
    oracle = DDPMScheduler(
        num_train_timesteps=1000,
        prediction_type=prediction,
        clip_sample=False,
        variance_type="fixed_small",
    )
    oracle.set_timesteps(1000)
    torch.manual_seed(0)
    x_t, output = torch.randn(1, *SHAPE[1:]), torch.randn(1, *SHAPE[1:])
    for step in (999, 500, 20, 1, 0):
        expected = oracle.step(
            output, step, x_t, generator=torch.Generator().manual_seed(step)
        ).prev_sample
        t, t_prev = torch.tensor([step]), torch.tensor([step - 1])
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(step))
        got = process.ddpm_step(
            process.read(output, x_t, t), x_t, t, t_prev, noise if step > 0 else None
        )
        # diffusers computes 1 - alpha_bar in float32 (ours: float64): at t = 1, where it is
        # 3e-4, that costs it about 1e-4 relative, so the tolerance is wider than rounding.
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=5e-4)


def test_learned_variance_ddpm_steps_equal_diffusers_learned_range() -> None:
    oracle = DDPMScheduler(
        num_train_timesteps=1000, clip_sample=False, variance_type="learned_range"
    )
    oracle.set_timesteps(1000)
    torch.manual_seed(0)
    x_t = torch.randn(1, 4, 6, 6)
    output = torch.cat([torch.randn(1, 4, 6, 6), torch.rand(1, 4, 6, 6) * 2 - 1], dim=1)
    ours = GaussianDiffusion(learn_sigma=True, channel_dim=1)
    for step in (999, 300, 5):
        expected = oracle.step(
            output, step, x_t, generator=torch.Generator().manual_seed(step)
        ).prev_sample
        t, t_prev = torch.tensor([step]), torch.tensor([step - 1])
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(step))
        got = ours.ddpm_step(ours.read(output, x_t, t), x_t, t, t_prev, noise)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_steps_equal_diffusers(eta: float, prediction: str) -> None:
    process = GaussianDiffusion(prediction=prediction)
    oracle = DDIMScheduler(
        num_train_timesteps=1000,
        prediction_type=prediction,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    oracle.set_timesteps(50)  # leading spacing: t, t - 20, ...
    torch.manual_seed(1)
    x_t, output = torch.randn(*SHAPE), torch.randn(*SHAPE)
    for step in (980, 500, 20, 0):
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(step))
        expected = oracle.step(output, step, x_t, eta=eta, variance_noise=noise).prev_sample
        # diffusers' last step goes to "t = -20", alpha_bar 1: our -1
        t, t_prev = torch.full((2,), step), torch.full((2,), max(step - 20, -1))
        got = process.ddim_step(process.read(output, x_t, t), x_t, t, t_prev, noise, eta)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_ddim_with_eta_one_over_every_step_is_ddpm() -> None:
    process = GaussianDiffusion(num_steps=100)
    network = toy_network()
    ddpm = process.sample(
        network, SHAPE, sampler="ddpm", generator=torch.Generator().manual_seed(3)
    )
    ddim = process.sample(
        network, SHAPE, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)
    # and eta = 0 is another (deterministic) sampler
    deterministic = process.sample(
        network, SHAPE, sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(3)
    )
    assert (deterministic - ddpm).abs().max() > 1e-2


def test_samples_are_reproducible_from_the_seed() -> None:
    process = GaussianDiffusion(num_steps=50)
    network = toy_network()
    first, second, other = (
        process.sample(
            network, SHAPE, sampler="ddpm", steps=10, generator=torch.Generator().manual_seed(seed)
        )
        for seed in (7, 7, 8)
    )
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_guidance_scale_one_is_the_conditional_prediction() -> None:
    process = GaussianDiffusion()
    network = toy_network()
    x, t, labels = torch.randn(SHAPE), torch.tensor([10, 700]), torch.tensor([1, 3])
    null = 8
    conditional = network(x, t, labels)
    unconditional = network(x, t, torch.full_like(labels, null))
    torch.testing.assert_close(process.guided(network, x, t, labels, 1.0, null), conditional)
    torch.testing.assert_close(process.guided(network, x, t, labels, 0.0, null), unconditional)
    torch.testing.assert_close(
        process.guided(network, x, t, labels, 4.0, null),
        unconditional + 4.0 * (conditional - unconditional),
    )
    with pytest.raises(ConfigError, match="null class"):
        process.guided(network, x, t, labels, 4.0, None)


def test_guidance_leaves_a_learned_variance_conditional() -> None:
    process = GaussianDiffusion(learn_sigma=True)
    network = toy_network(learn_sigma=True)
    x, t, labels = torch.randn(SHAPE), torch.tensor([10, 700]), torch.tensor([1, 3])
    guided = process.guided(network, x, t, labels, 3.0, 8)
    assert guided.shape[2] == 2 * SHAPE[2]
    torch.testing.assert_close(guided[:, :, 4:], network(x, t, labels)[:, :, 4:])


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_a_perfect_prediction_has_zero_loss(prediction: str) -> None:
    process = GaussianDiffusion(prediction=prediction)
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([3, 900])
    x_t = process.add_noise(x0, noise, t)
    target = process.target(x0, noise, t)
    assert process.training_loss(target, x0, noise, t, x_t)["loss"].abs().max() < 1e-10
    read = process.read(target, x_t, t)
    torch.testing.assert_close(read.x0, x0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(read.eps, noise, rtol=1e-3, atol=1e-3)


def test_the_vlb_term_trains_only_the_variance_channels() -> None:
    process = GaussianDiffusion(learn_sigma=True)
    x0 = torch.rand(SHAPE) * 2 - 1
    noise, t = torch.randn(SHAPE), torch.tensor([0, 400])
    x_t = process.add_noise(x0, noise, t)
    output = torch.randn(2, 3, 8, 6, 6, requires_grad=True)
    losses = process.training_loss(output, x0, noise, t, x_t)
    assert set(losses) == {"mse", "vlb", "loss"} and torch.isfinite(losses["vlb"]).all()
    (gradient,) = torch.autograd.grad(losses["vlb"].sum(), output)
    assert gradient[:, :, :4].abs().max() == 0
    assert gradient[:, :, 4:].abs().max() > 0
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vlb"])


def test_the_vlb_is_smallest_at_the_true_posterior_variance() -> None:
    """With the true x0 the KL is only the variance mismatch: zero at v where the model's
    variance equals the posterior's (v = -1 interpolates to it exactly)."""
    process = GaussianDiffusion(learn_sigma=True)
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([50, 500])
    x_t = process.add_noise(x0, noise, t)

    def vlb(v: float) -> torch.Tensor:
        output = torch.cat([noise, torch.full(SHAPE, v)], dim=2)
        return process.training_loss(output, x0, noise, t, x_t)["vlb"]

    assert vlb(-1.0).abs().max() < 1e-5
    assert (vlb(0.0) > vlb(-1.0)).all() and (vlb(1.0) > vlb(0.0)).all()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_the_x0_error_by_min_snr_gamma(prediction: str) -> None:
    """Whatever the prediction type, the weighted loss of an output off by `delta` in x0 is
    min(SNR_t, gamma) * mean(delta^2): the low-noise steps, where SNR is large, are capped."""
    gamma = 5.0
    process = GaussianDiffusion(prediction=prediction, min_snr_gamma=gamma)
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([20, 700])
    x_t = process.add_noise(x0, noise, t)
    delta = 0.01 * torch.randn(SHAPE)
    # The output whose read-out is x0 + delta (every type reads x0 linearly from the output).
    perfect = process.target(x0, noise, t)
    unit = process.read(perfect + 1.0, x_t, t).x0 - process.read(perfect, x_t, t).x0
    output = perfect + delta / unit
    torch.testing.assert_close(process.read(output, x_t, t).x0, x0 + delta, atol=1e-4, rtol=1e-4)
    abar = process.abar(t)
    snr = (abar / (1 - abar)).float()
    expected = snr.clamp(max=gamma) * delta.square().flatten(1).mean(1)
    torch.testing.assert_close(
        process.training_loss(output, x0, noise, t, x_t)["loss"], expected, rtol=1e-3, atol=0
    )
    assert snr[0] > gamma > snr[1]  # one capped step, one weighted by its own SNR


def test_logit_normal_timesteps_gather_in_the_middle_and_are_reproducible() -> None:
    uniform = GaussianDiffusion()
    logit = GaussianDiffusion(timesteps="logit_normal")
    draws = {
        name: process.sample_timesteps(20000, torch.device("cpu"), torch.Generator().manual_seed(0))
        for name, process in (("uniform", uniform), ("logit", logit))
    }
    middle = {name: ((t >= 250) & (t < 750)).float().mean().item() for name, t in draws.items()}
    assert middle["uniform"] == pytest.approx(0.5, abs=0.02)
    # P(|u| < logit(0.75)) for u ~ N(0, 1): about 0.73.
    assert middle["logit"] == pytest.approx(0.73, abs=0.02)
    assert draws["logit"].min() >= 0 and draws["logit"].max() <= 999
    again = logit.sample_timesteps(20000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(again, draws["logit"])


def test_bad_training_draw_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="timesteps='beta'"):
        GaussianDiffusion(timesteps="beta")
    with pytest.raises(ConfigError, match="logit_std"):
        GaussianDiffusion(timesteps="logit_normal", logit_std=0.0)
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        GaussianDiffusion(min_snr_gamma=-1.0)


def test_bad_sampler_settings_are_refused() -> None:
    process = GaussianDiffusion(num_steps=10)
    with pytest.raises(ConfigError, match="eta"):
        process.sample(toy_network(), SHAPE, sampler="ddim", eta=1.5)
    with pytest.raises(ConfigError, match="sampler"):
        process.sample(toy_network(), SHAPE, sampler="euler")
    with pytest.raises(ConfigError, match="out of range"):
        process.sample(toy_network(), SHAPE, steps=11)
    assert math.isfinite(float(process.betas.sum()))


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddpm", 50), ("ddim", 20)])
def test_an_exact_denoiser_of_one_clip_samples_that_clip(sampler: str, steps: int) -> None:
    """For data that is a single clip x*, the ideal noise prediction is
    (x_t - sqrt(abar) x*) / sqrt(1 - abar): every sampler must end at x*."""
    process = GaussianDiffusion()
    target = torch.rand(SHAPE) * 2 - 1

    def exact(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        abar = process.broadcast(process.abar(t), x)
        return (x - abar.sqrt() * target) / (1 - abar).sqrt()

    sample = process.sample(
        exact, SHAPE, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(sample, target, rtol=0, atol=1e-3)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 20), ("ddpm", 1000)])
def test_sampling_with_the_exact_denoiser_of_a_few_clips_returns_one_of_them(
    prediction: str, sampler: str, steps: int
) -> None:
    """The posterior mean of x0 over a data set of 3 clips is the ideal denoiser: sampling it
    must land on one of the clips (a sampler or read-out error would leave noise or a blend)."""
    torch.manual_seed(0)
    data = torch.rand(3, 2, 3, 8, 8) * 2 - 1
    process = GaussianDiffusion(prediction=prediction, channel_dim=2)

    def exact(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        abar = process.abar(t).float().view(-1, 1, 1, 1, 1)
        distance = (x[:, None] - abar[:, None].sqrt() * data[None]).square().flatten(2).sum(-1)
        weights = (-distance / (2 * (1 - abar.view(-1, 1)))).softmax(-1)
        x0 = torch.einsum("bk,k...->b...", weights, data)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        if prediction == "sample":
            return x0
        return eps if prediction == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0

    samples = process.sample(
        exact,
        (4, 2, 3, 8, 8),
        sampler=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(1),
    )
    nearest = (samples[:, None] - data[None]).square().flatten(2).mean(-1).min(1).values
    assert nearest.max() < 1e-6
