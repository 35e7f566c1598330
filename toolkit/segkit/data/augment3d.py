"""Batched 3D augmentation of patches, on the device the batch is on (the 3D side of
:mod:`segkit.data.batch_augment`).

Every sample of a ``(N, C, D, H, W)`` batch draws its own parameters, all from one CPU
:class:`torch.Generator`, always in the same order and amount, so a resumed run augments the same
way. The defaults follow nnU-Net's: rotation about each axis up to 30 degrees (p 0.2), isotropic
scaling 0.7..1.4 (p 0.2), mirroring along each axis (p 0.5 each), multiplicative brightness
0.75..1.25 (p 0.15), contrast 0.75..1.25 (p 0.15, kept within the sample's range), gamma 0.7..1.5
(p 0.3, on the sample rescaled to [0, 1], mean and spread kept) and Gaussian noise (p 0.1, standard
deviation up to 0.316, variance up to 0.1); elastic deformation is off by default.

Geometry is one sampling grid for the batch's warped samples, computed elementwise (so TF32
matmuls cannot blur it) from one 3x4 matrix per sample (rotation and scale about the centre, in
voxel units, so a non-cubic patch is not sheared) plus an optional smooth displacement field; then
one ``grid_sample`` for the images (trilinear) and one for the labels (nearest, so labels keep
their values), zero padding (the mean after z-score; background). Mirroring is done by indexing,
exactly; samples drawn without geometry are left untouched. Rotation angles assume isotropic
voxels: for anisotropic patches limit the rotations out of plane (``rotate``).

Typical use::

    images, labels = augment_volumes(images, labels, augment_generator(seed, epoch, step, rank),
                                     Augment3DSettings())
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segkit.errors import ConfigError

__all__ = ["Augment3DSettings", "augment_volumes"]

Range = tuple[float, float]


@dataclass(frozen=True)
class Augment3DSettings:
    """Probabilities and ranges of the 3D augmentations (nnU-Net-like defaults; :meth:`none` changes nothing).

    ``rotate`` holds one range in degrees per volume axis (rotation about axis 0, 1, 2 of
    ``(D, H, W)``); ``scale`` is one factor for all axes (above 1 zooms in); ``mirror_p`` is per
    axis. ``elastic_magnitude`` is the largest displacement in voxels, ``elastic_spacing`` the
    distance in voxels between the random field's control points (larger: smoother).
    """

    rotate_p: float = 0.2
    rotate: tuple[Range, Range, Range] = ((-30.0, 30.0), (-30.0, 30.0), (-30.0, 30.0))
    scale_p: float = 0.2
    scale: Range = (0.7, 1.4)
    mirror_p: tuple[float, float, float] = (0.5, 0.5, 0.5)
    brightness_p: float = 0.15
    brightness: Range = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast: Range = (0.75, 1.25)
    gamma_p: float = 0.3
    gamma: Range = (0.7, 1.5)
    noise_p: float = 0.1
    noise_std: Range = (0.0, math.sqrt(0.1))
    elastic_p: float = 0.0
    elastic_magnitude: float = 4.0
    elastic_spacing: float = 16.0

    def __post_init__(self) -> None:
        for name in ("rotate_p", "scale_p", "brightness_p", "contrast_p", "gamma_p", "noise_p", "elastic_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"3D augmentation {name} must be in [0, 1], got {getattr(self, name)!r}")
        if len(self.mirror_p) != 3 or not all(0.0 <= p <= 1.0 for p in self.mirror_p):
            raise ConfigError(f"3D augmentation mirror_p must be three probabilities in [0, 1], got {self.mirror_p!r}")
        if len(self.rotate) != 3:
            raise ConfigError(f"3D augmentation rotate must be three ranges (degrees per axis), got {self.rotate!r}")
        ranges = [(f"rotate[{k}]", r, -180.0) for k, r in enumerate(self.rotate)] + [
            ("scale", self.scale, 0.0), ("brightness", self.brightness, 0.0), ("contrast", self.contrast, 0.0),
            ("gamma", self.gamma, 0.0), ("noise_std", self.noise_std, -1e-12)]
        for name, (low, high), least in ranges:
            if not least < low <= high:
                raise ConfigError(f"3D augmentation {name} must be a range (low, high) with {least:g} < low <= high, "
                                  f"got {(low, high)!r}")
        if self.elastic_magnitude < 0 or self.elastic_spacing < 1:
            raise ConfigError("3D augmentation needs elastic_magnitude >= 0 and elastic_spacing >= 1 (voxels)")

    @classmethod
    def none(cls) -> Augment3DSettings:
        """Settings that change nothing."""
        return cls(rotate_p=0.0, scale_p=0.0, mirror_p=(0.0, 0.0, 0.0), brightness_p=0.0, contrast_p=0.0,
                   gamma_p=0.0, noise_p=0.0, elastic_p=0.0)

    @property
    def is_identity(self) -> bool:
        """True when no augmentation can happen (every probability is 0)."""
        return not any((self.rotate_p, self.scale_p, *self.mirror_p, self.brightness_p, self.contrast_p,
                        self.gamma_p, self.noise_p, self.elastic_p))


def _uniform(g: torch.Generator, shape: tuple[int, ...], bounds: Range) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(shape, generator=g, dtype=torch.float64)


def _draw(n: int, s: Augment3DSettings, g: torch.Generator) -> dict[str, torch.Tensor | int]:
    """Every sample's parameters (CPU float64), drawn in a fixed order and amount; neutral values mean "off"."""
    def happens(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g, dtype=torch.float64) < p

    rotate = happens(s.rotate_p)
    angles = torch.stack([_uniform(g, (n,), r) for r in s.rotate], 1)
    scaled = happens(s.scale_p)
    scale = _uniform(g, (n,), s.scale)
    mirror = torch.stack([happens(p) for p in s.mirror_p], 1)
    brightness = torch.where(happens(s.brightness_p), _uniform(g, (n,), s.brightness), 1.0)
    contrast = torch.where(happens(s.contrast_p), _uniform(g, (n,), s.contrast), 1.0)
    gamma = torch.where(happens(s.gamma_p), _uniform(g, (n,), s.gamma), 1.0)
    noise = torch.where(happens(s.noise_p), _uniform(g, (n,), s.noise_std), 0.0)
    elastic = happens(s.elastic_p)
    return {"angles": torch.where(rotate[:, None], angles, 0.0), "scale": torch.where(scaled, scale, 1.0),
            "mirror": mirror, "brightness": brightness, "contrast": contrast, "gamma": gamma, "noise": noise,
            "elastic": elastic, "field_seed": int(torch.randint(0, 2 ** 62, (1,), generator=g))}


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """``(m, 3, 3)`` rotations in grid order (x = W, y = H, z = D) from angles (degrees) about volume axes D, H, W."""
    a = torch.deg2rad(angles)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    about_d = mat([[c[:, 0], -s[:, 0], zero], [s[:, 0], c[:, 0], zero], [zero, zero, one]])  # the (x, y) plane
    about_h = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])  # the (x, z) plane
    about_w = mat([[one, zero, zero], [zero, c[:, 2], -s[:, 2]], [zero, s[:, 2], c[:, 2]]])  # the (y, z) plane
    return about_d @ about_h @ about_w


def _theta(angles: torch.Tensor, scale: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Output -> input sampling matrices ``(m, 3, 3)`` in normalised coordinates (grid order x, y, z).

    In voxel units about the centre the input point is ``R^T p / s``; with ``p = H p_n``
    (H = half the size per axis) the normalised matrix is ``H^-1 R^T H / s``.
    """
    d, h, w = size
    half = torch.tensor([w / 2, h / 2, d / 2], dtype=torch.float64)
    inverse = _rotation(angles).transpose(1, 2) / scale[:, None, None]
    return inverse * half[None, None, :] / half[None, :, None]


def _elastic(m: int, size: tuple[int, int, int], s: Augment3DSettings, fields: torch.Generator,
             like: torch.Tensor) -> torch.Tensor:
    """Smooth displacements ``(m, 3, D, H, W)`` in normalised units (x, y, z): control-point noise, upsampled."""
    d, h, w = size
    coarse = [max(2, math.ceil(n / s.elastic_spacing) + 1) for n in size]
    noise = torch.randn(m, 3, *coarse, generator=fields, device=like.device, dtype=like.dtype)
    noise = noise / noise.abs().amax((1, 2, 3, 4), keepdim=True).clamp_min(1e-6) * s.elastic_magnitude
    smooth = F.interpolate(noise, size=size, mode="trilinear", align_corners=True)
    to_normalised = torch.tensor([2 / w, 2 / h, 2 / d], device=like.device, dtype=like.dtype)
    return smooth * to_normalised[None, :, None, None, None]


def _warp(images: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor, displacement: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``images`` (trilinear) and ``labels`` (nearest) through one grid per sample."""
    m, _, d, h, w = images.shape
    dev, dt = images.device, images.dtype
    t = theta.to(dev, dt)
    axes = [((torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1).to(dev, dt) for n in (w, h, d)]
    x, y, z = axes[0][None, None, None, :], axes[1][None, None, :, None], axes[2][None, :, None, None]
    grid = torch.empty(m, d, h, w, 3, device=dev, dtype=dt)
    for i in range(3):
        col = t[:, i, :, None, None, None]  # (m, 3, 1, 1, 1)
        value = col[:, 0] * x + col[:, 1] * y + col[:, 2] * z
        if displacement is not None:
            value = value + col[:, 0] * displacement[:, 0] + col[:, 1] * displacement[:, 1] + \
                col[:, 2] * displacement[:, 2]
        grid[..., i] = value
    return (F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
            F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=False))


def _intensity(images: torch.Tensor, p: dict, fields: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, gamma and noise, each on the samples that drew it; a new tensor when any applies."""
    dev, dt = images.device, images.dtype

    def col(values: torch.Tensor) -> torch.Tensor:
        return values.to(dev, dt)[:, None, None, None, None]

    def stat(x: torch.Tensor, fn: str) -> torch.Tensor:  # per sample and channel, (m, C, 1, 1, 1)
        return getattr(x.flatten(2), fn)(-1)[..., None, None, None]

    if (p["brightness"] != 1).any():
        images = images * col(p["brightness"])
    which = p["contrast"] != 1
    if which.any():
        idx = which.nonzero()[:, 0].to(dev)
        x = images[idx]
        low, high, mean = stat(x, "amin"), stat(x, "amax"), stat(x, "mean")
        images = images.clone()
        images[idx] = torch.minimum(torch.maximum((x - mean) * col(p["contrast"][which]) + mean, low), high)
    which = p["gamma"] != 1
    if which.any():
        idx = which.nonzero()[:, 0].to(dev)
        x = images[idx]
        low, span = stat(x, "amin"), (stat(x, "amax") - stat(x, "amin")).clamp_min(1e-7)
        mean, std = stat(x, "mean"), x.flatten(2).std(-1)[..., None, None, None]
        y = ((x - low) / span).clamp(0, 1).pow(col(p["gamma"][which])) * span + low
        y_mean, y_std = stat(y, "mean"), y.flatten(2).std(-1)[..., None, None, None]
        images = images.clone()
        images[idx] = (y - y_mean) / y_std.clamp_min(1e-7) * std + mean
    which = p["noise"] > 0
    if which.any():
        idx = which.nonzero()[:, 0].to(dev)
        x = images[idx]
        noise = torch.randn(x.shape, generator=fields, device=dev, dtype=dt)
        images = images.clone()
        images[idx] = x + col(p["noise"][which]) * noise
    return images


def augment_volumes(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    settings: Augment3DSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of patches; every random number comes from ``generator`` (a CPU generator).

    Shape:
        images: ``(N, C, D, H, W)`` float; labels: ``(N, 1, D, H, W)`` (the patch datasets' masks) or
        ``(N, D, H, W)``, float or integer label values; returns both with their shapes, dtypes and device.
    """
    if images.ndim != 5 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, C, D, H, W), got {images.dtype} {tuple(images.shape)}")
    squeeze = labels.ndim == 4
    volume_labels = labels[:, None] if squeeze else labels
    if volume_labels.ndim != 5 or volume_labels.shape[1] != 1 or volume_labels.shape[0] != images.shape[0] \
            or volume_labels.shape[2:] != images.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not fit images {tuple(images.shape)}: expected "
                         "(N, 1, D, H, W) or (N, D, H, W)")
    if images.device != labels.device:
        raise ValueError(f"images on {images.device}, labels on {labels.device}")
    if generator.device.type != "cpu":
        raise ValueError("augment_volumes draws its parameters from a CPU torch.Generator")
    if settings.is_identity:
        return images, labels
    n, size = images.shape[0], tuple(images.shape[2:])
    p = _draw(n, settings, generator)
    fields = torch.Generator(device=images.device)
    fields.manual_seed(p["field_seed"])
    out, out_labels = images, volume_labels
    warp = (p["angles"] != 0).any(1) | (p["scale"] != 1) | p["elastic"]
    if warp.any():
        idx = warp.nonzero()[:, 0]
        on = idx.to(images.device)
        elastic = p["elastic"][idx]
        displacement = None
        if elastic.any():
            displacement = torch.zeros(len(idx), 3, *size, device=images.device, dtype=images.dtype)
            chosen = elastic.nonzero()[:, 0].to(images.device)
            displacement[chosen] = _elastic(len(chosen), size, settings, fields, images)
        warped, warped_labels = _warp(images[on], volume_labels[on].to(images.dtype),
                                      _theta(p["angles"][idx], p["scale"][idx], size), displacement)
        out, out_labels = images.clone(), volume_labels.clone()
        out[on], out_labels[on] = warped, warped_labels.to(volume_labels.dtype)
    for axis in range(3):
        idx = p["mirror"][:, axis].nonzero()[:, 0].to(images.device)
        if len(idx):
            if out is images:
                out, out_labels = images.clone(), volume_labels.clone()
            out[idx], out_labels[idx] = out[idx].flip(2 + axis), out_labels[idx].flip(2 + axis)
    out = _intensity(out, p, fields)
    return out, (out_labels[:, 0] if squeeze else out_labels)
