"""The Gaussian diffusion process, apart from any network (as in DiT's `diffusion/`).

One object holds a noise schedule and does the three things a diffusion model needs:

- `add_noise`: q(x_t | x_0), computed in float32 whatever the network's precision (in bf16 the
  noise is lost at small t);
- `training_loss`: the DDPM objective for an epsilon-, v- or x0-predicting network, plus the
  VLB term of Improved DDPM when the network also predicts its variance (2C output channels);
  optionally Min-SNR-gamma weighted (Hang et al. 2023), on timesteps drawn uniformly or from a
  logit-normal (Esser et al. 2024), both of which spend more of a short run on the middle noise
  levels where a clip's layout is decided;
- `sample`: DDPM (ancestral) or DDIM (`eta` in [0, 1]) over any sub-sequence of the training
  timesteps, with classifier-free guidance, reproducible from a `torch.Generator`.

Tensors are videos (B, T, C, H, W) or images (B, C, H, W): `channel_dim` says where the channels
are (2 for video), which is where a learned-variance network stacks its 2C outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from videogen.errors import ConfigError

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("linspace", "leading", "trailing")
FIXED_VARIANCES = ("fixed_small", "fixed_large")
TIMESTEP_DRAWS = ("uniform", "logit_normal")

# network(x_t, t, labels) -> output, the same shape as x_t (or 2C channels with learned variance)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def make_betas(
    schedule: str, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """The (num_steps,) float64 noise variances of a named schedule.

    linear: DDPM's evenly spaced betas; scaled_linear: evenly spaced square roots (Stable
    Diffusion's VAE-latent schedule, with beta_start 0.00085 and beta_end 0.012); cosine:
    Improved DDPM's alpha_bar(t) = cos^2((t/T + 0.008) / 1.008 * pi / 2), betas capped at 0.999.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"model.diffusion.schedule={schedule!r} is not a noise schedule: choose one of "
            f"{', '.join(SCHEDULES)}."
        )
    if num_steps < 2:
        raise ConfigError(f"model.diffusion.num_steps must be at least 2, got {num_steps}.")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def timestep_sequence(num_train_steps: int, steps: int, spacing: str = "linspace") -> list[int]:
    """The `steps` training timesteps a sampler visits, descending.

    linspace: evenly spaced from T-1 down to 0 (both ends included); trailing: T-1, T-1-k, ...
    (k = T / steps); leading: ..., k, 0 (diffusers' default: the first step is not T-1, a known
    source of washed-out samples at few steps). All steps (`steps == T`) is T-1, ..., 0 for each.
    """
    if spacing not in SPACINGS:
        raise ConfigError(f"spacing={spacing!r} is not one of {', '.join(SPACINGS)}.")
    if not 1 <= steps <= num_train_steps:
        raise ConfigError(
            f"steps={steps} is out of range: a sampler takes between 1 and the "
            f"{num_train_steps} training timesteps."
        )
    if spacing == "linspace":
        points = torch.linspace(num_train_steps - 1, 0, steps, dtype=torch.float64).round()
    elif spacing == "trailing":
        points = torch.arange(num_train_steps, 0, -num_train_steps / steps).round() - 1
    else:
        points = torch.arange(0, steps) * (num_train_steps // steps)
    return sorted({int(p) for p in points}, reverse=True)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """The mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.flatten(1).mean(1)


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2).square() * torch.exp(-logvar2)
    )


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x), through the tanh approximation Improved DDPM uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log p(x) of data in [-1, 1] on 256 levels under N(mean, exp(log_scale)^2), elementwise
    (the VLB's decoder term at t = 0, Ho et al. 2020)."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


@dataclass
class Prediction:
    """What a network output says about x_0 and the noise, and (learned variance) its log
    variance for the step, all float32."""

    x0: torch.Tensor
    eps: torch.Tensor
    log_variance_fraction: torch.Tensor | None = None


class GaussianDiffusion:
    """A DDPM noise schedule with its training loss and its DDPM / DDIM samplers (module doc).

    `prediction`: what the network outputs, "epsilon" (the noise, DDPM), "v_prediction"
    (sqrt(abar) eps - sqrt(1 - abar) x0) or "sample" (x0). `learn_sigma`: the network also
    outputs C channels v in [-1, 1] that interpolate the step's log variance between log beta_t
    and the log posterior variance (Improved DDPM's "learned range"); the loss adds the VLB
    term. Without it, DDPM samples with `variance` "fixed_small" (the posterior variance,
    diffusers' default) or "fixed_large" (beta_t). `clip_denoised` clamps predicted x0 to
    [-1, 1] while sampling (pixels: yes; VAE latents: no).

    Training draws: `timesteps` "uniform" (DDPM) or "logit_normal" (t / T = sigmoid(u),
    u ~ N(`logit_mean`, `logit_std`^2)). `min_snr_gamma`: each example's prediction error is
    weighted so that its weight on the x0 error is min(SNR_t, gamma) (Min-SNR-gamma; null: the
    plain objective of the prediction type).
    """

    def __init__(
        self,
        num_steps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "epsilon",
        learn_sigma: bool = False,
        variance: str = "fixed_small",
        clip_denoised: bool = False,
        channel_dim: int = 2,
        timesteps: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        min_snr_gamma: float | None = None,
    ) -> None:
        if timesteps not in TIMESTEP_DRAWS:
            raise ConfigError(
                f"model.diffusion.timesteps={timesteps!r} is not one of {', '.join(TIMESTEP_DRAWS)}."
            )
        if logit_std <= 0:
            raise ConfigError(f"model.diffusion.logit_std must be positive, got {logit_std}.")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ConfigError(
                f"model.diffusion.min_snr_gamma must be positive (or null), got {min_snr_gamma}."
            )
        if prediction not in PREDICTIONS:
            raise ConfigError(
                f"model.diffusion.prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}."
            )
        if variance not in FIXED_VARIANCES:
            raise ConfigError(
                f"model.diffusion.variance={variance!r} is not one of {', '.join(FIXED_VARIANCES)}."
            )
        self.num_steps = int(num_steps)
        self.prediction = prediction
        self.learn_sigma = bool(learn_sigma)
        self.variance = variance
        self.clip_denoised = bool(clip_denoised)
        self.channel_dim = channel_dim
        self.timesteps = timesteps
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)
        self.min_snr_gamma = None if min_snr_gamma is None else float(min_snr_gamma)
        self.betas = make_betas(schedule, self.num_steps, beta_start, beta_end)
        # float64 on the CPU; `coefficient` gathers and casts per call.
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        # alpha_bar with 1.0 in front for "t = -1", per device.
        self.padded_abar = {
            torch.device("cpu"): torch.cat(
                [torch.ones(1, dtype=torch.float64), self.alphas_cumprod]
            )
        }
        # The posterior variance of the step 1 -> 0, the floor of every log variance.
        self.last_variance = (
            self.betas[1] * (1 - self.alphas_cumprod[0]) / (1 - self.alphas_cumprod[1])
        )

    # -- the forward process ------------------------------------------------------------------

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (B,), any t < 0 meaning "no noise" (1.0); float64,
        on t's device (the table is copied there once, so no step waits on a host copy)."""
        table = self.padded_abar.get(t.device)
        if table is None:
            table = self.padded_abar[torch.device("cpu")].to(t.device)
            self.padded_abar[t.device] = table
        return table[t.long().clamp_min(-1) + 1]

    @staticmethod
    def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B,) float64 values as float32 on `like`'s device, shaped to broadcast over it."""
        return values.to(device=like.device, dtype=torch.float32).view(-1, *[1] * (like.dim() - 1))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, in float32."""
        abar = self.broadcast(self.abar(t), x0)
        return abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output at x_t for this `prediction` type."""
        if self.prediction == "epsilon":
            return noise.float()
        if self.prediction == "sample":
            return x0.float()
        abar = self.broadcast(self.abar(t), x0)
        return abar.sqrt() * noise.float() - (1 - abar).sqrt() * x0.float()

    # -- reading a network output -------------------------------------------------------------

    def split_output(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction and (learned variance) the variance channels of a network output."""
        if not self.learn_sigma:
            return output, None
        channels = output.shape[self.channel_dim]
        if channels % 2:
            raise ValueError(
                f"a learned-variance network outputs 2C channels on dim {self.channel_dim}, "
                f"got {channels}"
            )
        mean_part, variance_part = output.split(channels // 2, dim=self.channel_dim)
        return mean_part, variance_part

    def read(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip: bool = False
    ) -> Prediction:
        """Predicted x0 and noise (and the variance fraction in [0, 1]) from a network output;
        `clip`: x0 clamped to [-1, 1] (and the noise made consistent with it)."""
        mean_part, variance_part = self.split_output(output.float())
        x_t = x_t.float()
        abar = self.broadcast(self.abar(t), x_t)
        if self.prediction == "epsilon":
            eps = mean_part
            x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        elif self.prediction == "sample":
            x0 = mean_part
            eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        else:
            x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * mean_part
            eps = (1 - abar).sqrt() * x_t + abar.sqrt() * mean_part
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        fraction = None if variance_part is None else (variance_part + 1) / 2
        return Prediction(x0, eps, fraction)

    # -- one reverse step between any two timesteps -------------------------------------------

    def posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log beta of q(x_prev | x_t, x0) for the jump t -> t_prev.

        With t_prev = t - 1 this is DDPM's posterior; for a longer jump it is the posterior of the
        respaced process whose beta is 1 - abar_t / abar_prev (what DiT and Latte sample 250
        steps with). The variance is 0 at the last step (t_prev = -1).
        """
        abar_t, abar_prev = self.abar(t), self.abar(t_prev)
        beta = 1 - abar_t / abar_prev
        variance = beta * (1 - abar_prev) / (1 - abar_t)
        coef_x0 = abar_prev.sqrt() * beta / (1 - abar_t)
        coef_xt = (abar_t / abar_prev).sqrt() * (1 - abar_prev) / (1 - abar_t)
        mean = self.broadcast(coef_x0, x_t) * x0 + self.broadcast(coef_xt, x_t) * x_t
        return mean, variance, beta.log()

    def log_variances(
        self, t: torch.Tensor, t_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) float64 log posterior variance and log beta of the jump t -> t_prev.

        The posterior variance is 0 at the last step; its log is clipped to the variance of the
        step 1 -> 0, as Improved DDPM does (no noise is added there anyway).
        """
        abar_t, abar_prev = self.abar(t), self.abar(t_prev)
        beta = 1 - abar_t / abar_prev
        posterior_variance = beta * (1 - abar_prev) / (1 - abar_t)
        clipped = torch.where(posterior_variance > 0, posterior_variance, self.last_variance)
        return clipped.log(), beta.log()

    def step_log_variance(
        self, prediction: Prediction, t: torch.Tensor, t_prev: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        """log of the DDPM step's variance, shaped like `like`: learned (interpolated between
        the log posterior variance and log beta), fixed small (the posterior's) or fixed large
        (beta)."""
        log_small, log_beta = self.log_variances(t, t_prev)
        if prediction.log_variance_fraction is not None:
            fraction = prediction.log_variance_fraction
            small, large = self.broadcast(log_small, like), self.broadcast(log_beta, like)
            return fraction * large + (1 - fraction) * small
        chosen = log_small if self.variance == "fixed_small" else log_beta
        return self.broadcast(chosen, like).expand_as(like)

    def ddpm_step(
        self,
        prediction: Prediction,
        x_t: torch.Tensor,
        t: torch.Tensor,
        t_prev: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_prev ~ p(x_prev | x_t): the posterior mean at the predicted x0, plus the step's
        standard deviation times `noise` (None at the last step, which adds none)."""
        mean, _, _ = self.posterior(prediction.x0, x_t.float(), t, t_prev)
        if noise is None:
            return mean
        log_variance = self.step_log_variance(prediction, t, t_prev, mean)
        return mean + torch.exp(0.5 * log_variance) * noise.float()

    def ddim_step(
        self,
        prediction: Prediction,
        x_t: torch.Tensor,
        t: torch.Tensor,
        t_prev: torch.Tensor,
        noise: torch.Tensor | None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """DDIM: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with
        sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))."""
        abar_t, abar_prev = self.abar(t), self.abar(t_prev)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        direction = (1 - abar_prev - sigma**2).clamp_min(0).sqrt()
        x_prev = (
            self.broadcast(abar_prev.sqrt(), x_t) * prediction.x0
            + self.broadcast(direction, x_t) * prediction.eps
        )
        if eta > 0 and noise is not None:
            x_prev = x_prev + self.broadcast(sigma, x_t) * noise.float()
        return x_prev

    # -- training -----------------------------------------------------------------------------

    def sample_timesteps(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training timesteps (B,) in [0, T), uniform or logit-normal (see the class doc):
        drawn on `device`, or from a (CPU) `generator` when one is given (fixed draws for
        evaluation)."""
        on = device if generator is None else torch.device("cpu")
        if self.timesteps == "uniform":
            t = torch.randint(0, self.num_steps, (batch,), generator=generator, device=on)
        else:
            u = torch.randn(batch, generator=generator, device=on)
            fraction = torch.sigmoid(self.logit_mean + self.logit_std * u)
            t = (fraction * self.num_steps).long().clamp(0, self.num_steps - 1)
        return t.to(device)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) float32 weights of each example's prediction error: 1, or Min-SNR-gamma's
        min(SNR_t, gamma) on the x0 error expressed in this prediction type's error (whose own
        weight on the x0 error is SNR_t for epsilon, SNR_t + 1 for v and 1 for x0)."""
        if self.min_snr_gamma is None:
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        abar = self.abar(t)
        snr = abar / (1 - abar)
        native = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}
        return (snr.clamp(max=self.min_snr_gamma) / native[self.prediction]).float()

    def training_loss(
        self,
        output: torch.Tensor,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        x_t: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per-example losses (B,) of a network `output` at `x_t` = add_noise(x0, noise, t).

        "mse": the prediction's mean squared error to its target; with learned variance "vlb":
        the variational bound's term for step t in bits per dimension (Improved DDPM), whose
        gradient reaches only the variance channels; "loss": the mse times `loss_weights` plus
        the VLB (DiT / Latte's hybrid loss, the VLB unweighted).
        """
        mean_part, _ = self.split_output(output.float())
        losses = {"mse": mean_flat((mean_part - self.target(x0, noise, t)).square())}
        weighted = losses["mse"] * self.loss_weights(t).to(losses["mse"].device)
        if not self.learn_sigma:
            losses["loss"] = weighted
            return losses
        # The VLB trains the variance only: the mean comes from a detached prediction.
        mean_detached, variance_part = self.split_output(output.float())
        detached = self.read(
            torch.cat([mean_detached.detach(), variance_part], dim=self.channel_dim), x_t, t
        )
        losses["vlb"] = self.vlb_term(detached, x0.float(), x_t.float(), t)
        losses["loss"] = weighted + losses["vlb"]
        return losses

    def vlb_term(
        self, prediction: Prediction, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """(B,) KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) in bits per dimension; at t = 0
        the decoder's negative log-likelihood of x0 instead."""
        t_prev = t - 1
        true_mean, _, _ = self.posterior(x0, x_t, t, t_prev)
        true_log_variance, _ = self.log_variances(t, t_prev)
        true_log_variance = self.broadcast(true_log_variance, x_t)
        model_mean, _, _ = self.posterior(prediction.x0, x_t, t, t_prev)
        model_log_variance = self.step_log_variance(prediction, t, t_prev, x_t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance))
        nll = -mean_flat(
            discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance)
        )
        return torch.where(t.to(kl.device) == 0, nll, kl) / math.log(2.0)

    # -- sampling -----------------------------------------------------------------------------

    def guided(
        self,
        network: Denoiser,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        guidance: float,
        null_label: int | None,
    ) -> torch.Tensor:
        """The network output at x_t with classifier-free guidance:
        uncond + guidance * (cond - uncond), on the prediction channels (a learned variance is
        the conditional one). Scale 1 (or no labels) is the conditional output, one pass."""
        if labels is None or guidance == 1.0:
            return network(x_t, t, labels)
        if null_label is None:
            raise ConfigError(
                "classifier-free guidance needs a model trained with a null class: this one is "
                "unconditional or has no null class; sample with guidance=1."
            )
        both = network(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            torch.cat([labels, torch.full_like(labels, null_label)]),
        )
        cond, uncond = both.float().chunk(2)
        cond_mean, cond_variance = self.split_output(cond)
        uncond_mean, _ = self.split_output(uncond)
        guided = uncond_mean + guidance * (cond_mean - uncond_mean)
        if cond_variance is None:
            return guided
        return torch.cat([guided, cond_variance], dim=self.channel_dim)

    def sample(
        self,
        network: Denoiser,
        shape: tuple[int, ...],
        labels: torch.Tensor | None = None,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        spacing: str = "linspace",
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> torch.Tensor:
        """Samples x_0 of `shape`, from pure noise through `steps` timesteps (default: all).

        Every random draw comes from `generator` (a CPU generator, so a seed gives the same
        clips on any device): the start noise first, then one draw per step that adds noise.
        `progress` wraps the step iterator (a progress bar).
        """
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}.")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta={eta} is out of range: DDIM's eta is between 0 and 1.")
        sequence = timestep_sequence(self.num_steps, steps or self.num_steps, spacing)
        x = torch.randn(shape, generator=generator).to(device)
        pairs = list(zip(sequence, [*sequence[1:], -1], strict=True))
        iterator = progress(iter(pairs)) if progress else iter(pairs)
        for t_now, t_next in iterator:
            t = torch.full((shape[0],), t_now, dtype=torch.long)
            t_prev = torch.full((shape[0],), t_next, dtype=torch.long)
            output = self.guided(network, x, t.to(device), labels, guidance, null_label)
            prediction = self.read(output, x, t, clip=self.clip_denoised)
            adds_noise = t_next >= 0 and (sampler == "ddpm" or eta > 0)
            noise = torch.randn(shape, generator=generator).to(device) if adds_noise else None
            if sampler == "ddpm":
                x = self.ddpm_step(prediction, x, t, t_prev, noise)
            else:
                x = self.ddim_step(prediction, x, t, t_prev, noise, eta)
        return x
