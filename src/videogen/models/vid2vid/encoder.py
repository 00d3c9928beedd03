"""vid2vid's instance-level feature encoder E and the per-class feature mixture used at test
time (from pix2pixHD).

During training E encodes the real frame into a few channels that are averaged within each
instance, and the generator is conditioned on them, so it learns to let them choose an
appearance (colour, texture) for every object. At test time there is no real frame: every
instance draws its feature vector from a Gaussian mixture fitted, per semantic class, on the
encoded training features; sampling again gives another plausible appearance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import conv_norm_act

# Smallest variance of a mixture component: a component fitted on identical vectors would
# otherwise collapse to zero variance and an infinite likelihood.
VARIANCE_FLOOR = 1e-4


def check_label_map(name: str, labels: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`labels` as an int64 (B, H, W) map of the given `shape`, or a ValueError saying why not.

    A singleton channel dimension (B, 1, H, W) is accepted and removed.
    """
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"{name} must be a (B, H, W) map of shape {tuple(shape)}, got {tuple(labels.shape)}."
        )
    return labels.long()


def feature_map_shape(features: torch.Tensor) -> tuple[int, int, int]:
    """The (B, H, W) label-map shape that goes with a (B, D, H, W) feature map."""
    if features.dim() != 4:
        raise ValueError(f"features must be (B, D, H, W), got {tuple(features.shape)}.")
    return (features.shape[0], features.shape[2], features.shape[3])


def instance_groups(instance: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Number the (image, instance id) pairs of a (B, H, W) map: (group of each pixel, count).

    Groups are numbered in order of image, then instance id, and the pixel order is that of
    `instance.flatten()`. Instance ids may be any integers (Cityscapes uses ids like 26001).
    """
    ids = instance.flatten(1)
    ids = ids - ids.min()
    batch = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1)
    keys = batch * (ids.max() + 1) + ids
    _, groups = torch.unique(keys.flatten(), return_inverse=True)
    return groups, int(groups.max()) + 1 if groups.numel() else 0


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of the rows of `values` (P, D) within each group -> (num_groups, D)."""
    sums = values.new_zeros(num_groups, values.shape[1]).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=num_groups).to(values.dtype)
    return sums / counts.clamp_min(1).unsqueeze(1)


def group_classes(
    segmentation: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """The majority class id of each group's pixels -> (num_groups,) int64.

    A majority vote rather than any one pixel's class, so that an instance map whose borders
    disagree slightly with the semantic map still gets the class of most of its pixels.
    """
    classes = segmentation.flatten()
    low = classes.min()
    span = int(classes.max() - low) + 1
    votes = torch.bincount(groups * span + (classes - low), minlength=num_groups * span)
    return votes.view(num_groups, span).argmax(dim=1) + low


def flat_pixels(features: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B * H * W, D), pixels in the order of a flattened (B, H, W) map."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def unflat_pixels(pixels: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B * H * W, D) -> (B, D, H, W) for the (B, H, W) `shape` of the label map."""
    return pixels.view(*shape, pixels.shape[1]).permute(0, 3, 1, 2)


def instance_average(features: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """Replace each pixel's feature (B, D, H, W) by the mean over its instance in that image.

    `instance` is an integer (B, H, W) map; the same id in two images names two instances.
    Differentiable with respect to `features`.
    """
    instance = check_label_map("instance", instance, feature_map_shape(features))
    groups, num_groups = instance_groups(instance)
    means = group_means(flat_pixels(features), groups, num_groups)
    return unflat_pixels(means[groups], instance.shape)


def instance_features(
    feature_map: torch.Tensor, segmentation: torch.Tensor, instance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per (image, instance) present: (its mean feature (N, D), its class id (N,)).

    Rows are ordered by image, then instance id; the class is the majority class of the
    instance's pixels in `segmentation` (B, H, W).
    """
    shape = feature_map_shape(feature_map)
    instance = check_label_map("instance", instance, shape)
    segmentation = check_label_map("segmentation", segmentation, shape)
    groups, num_groups = instance_groups(instance)
    means = group_means(flat_pixels(feature_map), groups, num_groups)
    return means, group_classes(segmentation, groups, num_groups)


class InstanceFeatureEncoder(nn.Module):
    """E: image (B, C, H, W) and instance map (B, H, W) -> (B, feature_channels, H, W) features
    in [-1, 1], constant within each instance.

    A small encoder-decoder (7x7 conv, stride-2 convs down, transposed convs up, 7x7 conv,
    Tanh); H and W must be divisible by 2**num_downsampling.
    """

    def __init__(
        self,
        in_channels: int = 3,
        feature_channels: int = 3,
        base_channels: int = 16,
        num_downsampling: int = 3,
    ) -> None:
        super().__init__()
        self.num_downsampling = num_downsampling
        layers = conv_norm_act(in_channels, base_channels, 7, padding="reflect", norm="instance")
        channels = base_channels
        for _ in range(num_downsampling):
            layers += conv_norm_act(channels, channels * 2, 3, stride=2, norm="instance")
            channels *= 2
        for _ in range(num_downsampling):
            layers += conv_norm_act(channels, channels // 2, 3, 2, norm="instance", transposed=True)
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, feature_channels, 7), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
        """Encode `image` and average the result within each instance of `instance`."""
        factor = 2**self.num_downsampling
        if image.shape[-2] % factor or image.shape[-1] % factor:
            raise ConfigError(
                f"the feature encoder halves frames model.feature_encoder.num_downsampling="
                f"{self.num_downsampling} times, so data.height x data.width "
                f"({image.shape[-2]}x{image.shape[-1]}) must be multiples of {factor}."
            )
        return instance_average(self.layers(image), instance)


class ClassFeatureMixture(nn.Module):
    """Per-class diagonal Gaussian mixtures over instance feature vectors.

    The parameters are buffers, so a fitted mixture travels in the state dict of whoever holds
    it. Classes outside [0, num_classes) and classes never seen by `fit` stay unfitted and are
    given zero features by `sample`.
    """

    def __init__(
        self, num_classes: int, feature_channels: int = 3, num_components: int = 4
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_channels = feature_channels
        self.num_components = num_components
        shape = (num_classes, num_components, feature_channels)
        self.register_buffer("means", torch.zeros(shape))
        self.register_buffer("variances", torch.ones(shape))
        self.register_buffer("weights", torch.zeros(num_classes, num_components))
        self.register_buffer("fitted", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def fit(
        self,
        features: torch.Tensor,
        classes: torch.Tensor,
        num_iterations: int = 50,
        generator: torch.Generator | None = None,
    ) -> None:
        """Fit every class's mixture on its rows of `features` (N, D), replacing any earlier fit.

        `generator` (on the CPU) makes the k-means++ initialisation reproducible.
        """
        if features.dim() != 2 or features.shape[1] != self.feature_channels:
            raise ValueError(
                f"features must be (N, {self.feature_channels}), got {tuple(features.shape)}."
            )
        if tuple(classes.shape) != (features.shape[0],):
            raise ValueError(
                f"classes must be ({features.shape[0]},), one per feature row, got "
                f"{tuple(classes.shape)}."
            )
        # EM in float64 on the CPU: the data is small and the likelihoods need the precision.
        features = features.detach().to("cpu", torch.float64)
        classes = classes.detach().cpu()
        self.means.zero_()
        self.variances.fill_(1.0)
        self.weights.zero_()
        self.fitted.zero_()
        for label in range(self.num_classes):
            points = features[classes == label]
            if len(points) == 0:
                continue
            weights, means, variances = fit_diagonal_gmm(
                points, self.num_components, num_iterations, generator
            )
            used = len(weights)
            self.weights[label, :used] = weights.to(self.weights)
            self.means[label, :used] = means.to(self.means)
            self.variances[label, :used] = variances.to(self.variances)
            self.fitted[label] = True

    @torch.no_grad()
    def sample(
        self,
        segmentation: torch.Tensor,
        instance: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One feature vector per instance, drawn from its class's mixture -> (B, D, H, W).

        The vector is constant over the instance's pixels; unfitted classes get zeros.
        `generator` must live on the device of this module's buffers.
        """
        shape = (segmentation.shape[0], *segmentation.shape[-2:])
        segmentation = check_label_map("segmentation", segmentation, shape)
        instance = check_label_map("instance", instance, shape)
        groups, num_groups = instance_groups(instance)
        labels = group_classes(segmentation, groups, num_groups).to(self.means.device)
        known = (labels >= 0) & (labels < self.num_classes)
        labels = labels.clamp(0, self.num_classes - 1)
        known &= self.fitted[labels]
        # Unfitted classes get uniform weights only so that multinomial has something to draw.
        weights = torch.where(known.unsqueeze(1), self.weights[labels], 1.0)
        component = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        mean = self.means[labels, component]
        std = self.variances[labels, component].sqrt()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        values = (mean + std * noise) * known.unsqueeze(1).to(mean.dtype)
        values = values.to(instance.device)
        return unflat_pixels(values[groups], instance.shape)


def kmeans_plus_plus(
    points: torch.Tensor, count: int, generator: torch.Generator | None
) -> torch.Tensor:
    """`count` initial centres chosen among `points` (N, D), each one with probability
    proportional to its squared distance to the centres already chosen."""
    first = torch.randint(len(points), (1,), generator=generator)
    centres = [points[first[0]]]
    distances = ((points - centres[0]) ** 2).sum(dim=1)
    for _ in range(1, count):
        # All points already coincide with a centre (duplicates): any point will do.
        probabilities = distances if distances.sum() > 0 else torch.ones_like(distances)
        chosen = torch.multinomial(probabilities, 1, generator=generator)[0]
        centres.append(points[chosen])
        distances = torch.minimum(distances, ((points - points[chosen]) ** 2).sum(dim=1))
    return torch.stack(centres)


def fit_diagonal_gmm(
    points: torch.Tensor,
    num_components: int,
    num_iterations: int = 50,
    generator: torch.Generator | None = None,
    tolerance: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM for a diagonal-covariance Gaussian mixture on `points` (N, D).

    Uses min(num_components, N) components, initialised by k-means++; returns their weights
    (k,), means (k, D) and variances (k, D). Stops early once the mean log-likelihood improves
    by less than `tolerance`.
    """
    count = min(num_components, len(points))
    means = kmeans_plus_plus(points, count, generator)
    spread = points.var(dim=0, unbiased=False).clamp_min(VARIANCE_FLOOR)
    variances = spread.expand(count, -1).clone()
    weights = torch.full((count,), 1.0 / count, dtype=points.dtype)
    previous = -math.inf
    for _ in range(num_iterations):
        # E step: log N(x | mean_k, diag(var_k)) + log w_k, then responsibilities.
        squared = (points.unsqueeze(1) - means.unsqueeze(0)) ** 2 / variances.unsqueeze(0)
        log_density = -0.5 * (squared + torch.log(2 * math.pi * variances).unsqueeze(0)).sum(-1)
        joint = log_density + torch.log(weights.clamp_min(1e-300)).unsqueeze(0)
        log_likelihood = torch.logsumexp(joint, dim=1)
        responsibilities = torch.exp(joint - log_likelihood.unsqueeze(1))
        # M step. A component that lost all its points keeps its previous parameters (with a
        # weight near zero) instead of dividing by zero.
        mass = responsibilities.sum(dim=0)
        alive = mass > 1e-8
        safe_mass = mass.clamp_min(1e-8).unsqueeze(1)
        new_means = responsibilities.T @ points / safe_mass
        centred = (points.unsqueeze(1) - new_means.unsqueeze(0)) ** 2
        new_variances = (responsibilities.unsqueeze(2) * centred).sum(0) / safe_mass
        means = torch.where(alive.unsqueeze(1), new_means, means)
        variances = torch.where(alive.unsqueeze(1), new_variances, variances)
        variances = variances.clamp_min(VARIANCE_FLOOR)
        weights = mass / mass.sum()
        current = float(log_likelihood.mean())
        if abs(current - previous) < tolerance:
            break
        previous = current
    return weights, means, variances
