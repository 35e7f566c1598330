"""Batched, per-sample augmentation in torch, on the device the batch is on.

The ``light`` and ``heavy`` presets (:mod:`segkit.data.augment_presets`; albumentations there,
one item at a time on the CPU) rebuilt for whole ``(N, C, H, W)`` batches: every
sample draws its own parameters, all from one CPU :class:`torch.Generator`.

Geometry is one sampling grid per sample: flips, rotation, scale, translation and
shear form one 2x3 affine matrix (albumentations' matrix, inverted and taken to
``align_corners=False`` coordinates); an elastic or grid-distortion displacement is
added to the output coordinates before the affine (albumentations distorts after
the affine); then one ``grid_sample`` for the images (bilinear) and one for the
masks (nearest, so masks stay in {0, 1}), both with zero padding. The grid is
computed elementwise, not with ``affine_grid``'s matmul, so TF32 cannot blur it.
Samples whose geometry is the identity are left untouched and flip-only samples are
flipped by indexing, both exactly; right-angle rotations map pixel centres onto pixel
centres (bit-exact for power-of-two sizes such as 256, else within float32 rounding:
image values off by under 1e-4, masks exact). Intensity changes touch the images only.

torch primitives rather than kornia: kornia's elastic transform ignores
``mode="nearest"`` for masks (kornia issue 2002), which would leave fractional masks.

Typical use (``seed``, ``epoch``, ``step``, ``rank`` fix the draw)::

    augment = BatchAugment(preset_ranges("heavy"))
    images, masks = augment(images, masks, augment_generator(seed, epoch, step, rank))
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from segkit.errors import ConfigError

__all__ = ["AugmentRanges", "AugmentParams", "BatchAugment", "augment_generator"]

_MOVED = {"BATCH_PRESETS": "PRESET_NAMES", "preset_ranges": "preset_ranges"}


def __getattr__(name: str) -> Any:
    """The presets moved to :mod:`segkit.data.augment_presets` (defined once for all three forms)."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import segkit.data.augment_presets as presets  # lazy: augment_presets imports this module

    return getattr(presets, _MOVED[name])


Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentRanges:
    """Probabilities and ranges of every augmentation; the defaults change nothing.

    Degrees for ``rotate`` and ``shear``; ``translate`` is a fraction of the width
    (x) and height (y); ``scale``, ``translate`` and ``shear`` are drawn independently
    for x and y. ``elastic_p`` and ``grid_p`` exclude each other (one draw picks at
    most one). Intensities are on the [0, 1] scale: ``brightness`` is added,
    ``contrast`` multiplies by ``1 + contrast``, ``gamma`` is the exponent,
    ``noise_std`` the Gaussian noise's standard deviation, ``blur_sigma`` in pixels.
    """

    hflip_p: float = 0.0
    vflip_p: float = 0.0
    affine_p: float = 0.0
    rotate: Range = (0.0, 0.0)
    scale: Range = (1.0, 1.0)
    translate: Range = (0.0, 0.0)
    shear: Range = (0.0, 0.0)
    elastic_p: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 6.0
    grid_p: float = 0.0
    grid_steps: int = 5
    grid_limit: float = 0.0
    brightness_contrast_p: float = 0.0
    brightness: Range = (0.0, 0.0)
    contrast: Range = (0.0, 0.0)
    gamma_p: float = 0.0
    gamma: Range = (1.0, 1.0)
    noise_p: float = 0.0
    noise_std: Range = (0.0, 0.0)
    blur_p: float = 0.0
    blur_sigma: Range = (0.5, 1.0)

    def __post_init__(self) -> None:
        for name in ("hflip_p", "vflip_p", "affine_p", "elastic_p", "grid_p", "brightness_contrast_p",
                     "gamma_p", "noise_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augmentation {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.elastic_p + self.grid_p > 1.0:
            raise ConfigError("augmentation elastic_p + grid_p must be at most 1")
        for name, least, above in (("rotate", -math.inf, False), ("scale", 0.0, True), ("translate", -1.0, False),
                                   ("shear", -90.0, True), ("brightness", -1.0, False), ("contrast", -1.0, False),
                                   ("gamma", 0.0, True), ("noise_std", 0.0, False), ("blur_sigma", 0.0, False)):
            low, high = getattr(self, name)
            if not (low > least if above else low >= least) or not low <= high or (name == "shear" and high >= 90):
                raise ConfigError(f"augmentation {name} must be a range (low, high), low <= high, "
                                  f"low {'>' if above else '>='} {least}; got {(low, high)!r}")
        if self.grid_steps < 1 or not 0.0 <= self.grid_limit < 1.0 or self.elastic_sigma <= 0:
            raise ConfigError("augmentation needs grid_steps >= 1, 0 <= grid_limit < 1 and elastic_sigma > 0")

    @property
    def is_identity(self) -> bool:
        """True when no augmentation can happen (every probability is 0)."""
        return not any((self.hflip_p, self.vflip_p, self.affine_p, self.elastic_p, self.grid_p,
                        self.brightness_contrast_p, self.gamma_p, self.noise_p, self.blur_p))


@dataclass
class AugmentParams:
    """One batch's per-sample parameters: CPU tensors of length ``N``; neutral values mean "not applied".

    Shape:
        hflip, vflip: ``(N,)`` bool. rotate: ``(N,)`` degrees. scale, translate (fraction of W, H),
        shear (degrees, albumentations' sign): ``(N, 2)`` as (x, y). distortion: ``(N,)`` 0 none,
        1 elastic, 2 grid. grid_steps: ``(N, 2, S)`` relative cell sizes for x and y. brightness,
        contrast, noise_std, blur_sigma (0: off), gamma (1: off): ``(N,)``. field_seed seeds the
        device generator of the per-pixel fields (elastic noise, Gaussian noise).
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    rotate: torch.Tensor
    scale: torch.Tensor
    translate: torch.Tensor
    shear: torch.Tensor
    distortion: torch.Tensor
    grid_steps: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    gamma: torch.Tensor
    noise_std: torch.Tensor
    blur_sigma: torch.Tensor
    field_seed: int = 0

    @classmethod
    def identity(cls, n: int, grid_steps: int = 5) -> AugmentParams:
        """Parameters that change nothing, for ``n`` samples (tests set fields from here)."""
        def full(value: float, *shape: int) -> torch.Tensor:
            return torch.full((n, *shape), value, dtype=torch.float64)

        false = torch.zeros(n, dtype=torch.bool)
        return cls(false, false.clone(), full(0.0), full(1.0, 2), full(0.0, 2), full(0.0, 2),
                   torch.zeros(n, dtype=torch.long), full(1.0, 2, grid_steps), full(0.0), full(0.0), full(1.0),
                   full(0.0), full(0.0))


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bounds: Range) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _mat2(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Batched 2x2 matrices ``[[a, b], [c, d]]``, ``(m, 2, 2)`` from four ``(m,)`` tensors."""
    return torch.stack((torch.stack((a, b), -1), torch.stack((c, d), -1)), -2)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample, replicated borders.

    Shape:
        x: ``(n, C, H, W)``; sigma: ``(n,)`` on x's device; returns ``(n, C, H, W)``.
    """
    n, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-taps ** 2 / (2 * sigma.to(x.dtype).clamp_min(1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*C, K)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


class BatchAugment:
    """Per-sample random augmentation of ``(images, masks)`` batches on their own device.

    Call it with a CPU generator; :meth:`sample_params` and :meth:`apply` are the two
    halves of a call, for tests and for replaying chosen parameters.
    """

    def __init__(self, ranges: AugmentRanges) -> None:
        self.ranges = ranges

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch; every random number comes from ``generator`` (a CPU generator).

        Shape:
            images: ``(N, C, H, W)`` float in [0, 1]; masks: ``(N, 1, H, W)`` float in {0, 1};
            returns both with the same shapes, on the same device.
        """
        _check(images, masks)
        if generator.device.type != "cpu":
            raise ValueError("BatchAugment draws its parameters from a CPU torch.Generator")
        if self.ranges.is_identity:
            return images, masks
        return self.apply(images, masks, self.sample_params(images.shape[0], generator))

    def sample_params(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw ``n`` samples' parameters from ``generator``, always in the same order and amount."""
        r, g = self.ranges, generator

        def happens(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g, dtype=torch.float64) < p

        hflip, vflip = happens(r.hflip_p), happens(r.vflip_p)
        affine = happens(r.affine_p)
        rotate = torch.where(affine, _uniform(g, (n,), r.rotate), 0.0)
        scale = torch.where(affine[:, None], _uniform(g, (n, 2), r.scale), 1.0)
        translate = torch.where(affine[:, None], _uniform(g, (n, 2), r.translate), 0.0)
        shear = torch.where(affine[:, None], _uniform(g, (n, 2), r.shear), 0.0)
        pick = torch.rand(n, generator=g, dtype=torch.float64)
        distortion = torch.where(pick < r.elastic_p, 1, torch.where(pick < r.elastic_p + r.grid_p, 2, 0))
        grid_steps = 1.0 + _uniform(g, (n, 2, r.grid_steps), (-r.grid_limit, r.grid_limit))
        bc = happens(r.brightness_contrast_p)
        contrast = torch.where(bc, _uniform(g, (n,), r.contrast), 0.0)
        brightness = torch.where(bc, _uniform(g, (n,), r.brightness), 0.0)
        gamma = torch.where(happens(r.gamma_p), _uniform(g, (n,), r.gamma), 1.0)
        noise_std = torch.where(happens(r.noise_p), _uniform(g, (n,), r.noise_std), 0.0)
        blur_sigma = torch.where(happens(r.blur_p), _uniform(g, (n,), r.blur_sigma), 0.0)
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=g))
        return AugmentParams(hflip, vflip, rotate, scale, translate, shear, distortion, grid_steps,
                             brightness, contrast, gamma, noise_std, blur_sigma, seed)

    def apply(self, images: torch.Tensor, masks: torch.Tensor,
              params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch with the given parameters (deterministic for a given device).

        Shape:
            images: ``(N, C, H, W)``; masks: ``(N, 1, H, W)``; params of length ``N``.
        """
        _check(images, masks)
        if params.hflip.shape[0] != images.shape[0]:
            raise ValueError(f"params for {params.hflip.shape[0]} samples, batch of {images.shape[0]}")
        fields = torch.Generator(device=images.device)
        fields.manual_seed(params.field_seed)
        out, out_masks = self._geometry(images, masks, params, fields)
        return self._intensity(out, out is not images, params, fields), out_masks

    def _geometry(self, images: torch.Tensor, masks: torch.Tensor, p: AugmentParams,
                  fields: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        affine = (p.rotate != 0) | (p.scale != 1).any(1) | (p.translate != 0).any(1) | (p.shear != 0).any(1)
        warp = affine | (p.distortion != 0)
        if warp.all():  # no copies: every sample is resampled
            return self._warp(images, masks, p, warp.nonzero()[:, 0], fields)
        if not (warp | p.hflip | p.vflip).any():
            return images, masks
        images, masks = images.clone(), masks.clone()
        for hf, vf, dims in ((True, False, [-1]), (False, True, [-2]), (True, True, [-2, -1])):
            idx = (~warp & (p.hflip == hf) & (p.vflip == vf)).nonzero()[:, 0].to(images.device)
            if len(idx):
                images[idx], masks[idx] = images[idx].flip(dims), masks[idx].flip(dims)
        idx = warp.nonzero()[:, 0]
        if len(idx):
            on = idx.to(images.device)
            images[on], masks[on] = self._warp(images[on], masks[on], p, idx, fields)
        return images, masks

    def _warp(self, images: torch.Tensor, masks: torch.Tensor, p: AugmentParams, idx: torch.Tensor,
              fields: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample samples ``idx`` of the batch (given as ``images``, ``masks``) through one grid each."""
        m, _, h, w = images.shape
        dev, dt = images.device, images.dtype
        t = self._theta(p, idx, h, w).to(dev, dt)[:, :, :, None]  # (m, 2, 3, 1)
        xs = ((torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1).to(dev, dt)
        ys = ((torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1).to(dev, dt)
        grid = torch.empty(m, h, w, 2, device=dev, dtype=dt)
        for i in (0, 1):  # separable in x and y; elementwise, so TF32 matmuls cannot round the grid
            torch.add((t[:, i, 0] * xs)[:, None, :], (t[:, i, 1] * ys + t[:, i, 2])[:, :, None], out=grid[..., i])
        warped = (p.distortion[idx] != 0).nonzero()[:, 0]
        if len(warped):  # displacements of the output coordinates, taken through the same affine
            dx, dy = self._displacement(p, idx[warped], h, w, images, fields)
            on, tk = warped.to(dev), t[warped.to(dev), :, :, :, None]
            grid[on] += torch.stack([tk[:, i, 0] * dx + tk[:, i, 1] * dy for i in (0, 1)], -1)
        return (F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
                F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False))

    @staticmethod
    def _theta(p: AugmentParams, idx: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Output -> input sampling matrices in normalized coordinates, ``(m, 2, 3)`` float64 on the CPU.

        albumentations' forward matrix about the centre c = ((W-1)/2, (H-1)/2) is
        ``d = L (s - c) + c + t`` with ``L = shear @ rotate @ scale`` and t truncated to
        whole pixels; with ``s - c = D s_n`` (D = diag(W/2, H/2)) the sampling matrix is
        ``s_n = D^-1 L^-1 D d_n - D^-1 L^-1 t``, then the flips (applied first) negate rows.
        """
        rad = torch.deg2rad(p.rotate[idx] % 360)
        cos, sin = torch.cos(rad), torch.sin(rad)
        cos, sin = torch.where(cos.abs() < 1e-12, 0.0, cos), torch.where(sin.abs() < 1e-12, 0.0, sin)
        tan = torch.tan(torch.deg2rad(-p.shear[idx]))
        sx, sy = p.scale[idx, 0], p.scale[idx, 1]
        lin = _mat2(torch.ones_like(cos), tan[:, 0], tan[:, 1], torch.ones_like(cos)) @ \
            _mat2(cos * sx, sin * sy, -sin * sx, cos * sy)  # shear @ rotate @ scale
        a, b, c, d = lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 0], lin[:, 1, 1]
        inv = _mat2(d, -b, -c, a) / (a * d - b * c)[:, None, None]
        half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
        shift = torch.trunc(p.translate[idx] * torch.tensor([w, h], dtype=torch.float64))
        matrix = inv * half[None, None, :] / half[None, :, None]
        offset = -(inv @ shift[:, :, None])[:, :, 0] / half
        theta = torch.cat((matrix, offset[:, :, None]), -1)
        flips = torch.stack((p.hflip[idx], p.vflip[idx]), -1)
        return torch.where(flips[:, :, None], -theta, theta)

    def _displacement(self, p: AugmentParams, idx: torch.Tensor, h: int, w: int, like: torch.Tensor,
                      fields: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Output-space displacements of the distorted samples ``idx`` in normalized units, ``(k, H, W)`` each."""
        r, k, dev, dt = self.ranges, len(idx), like.device, like.dtype
        dx, dy = torch.zeros(k, h, w, device=dev, dtype=dt), torch.zeros(k, h, w, device=dev, dtype=dt)
        kind = p.distortion[idx]
        elastic = (kind == 1).nonzero()[:, 0]
        if len(elastic):  # albumentations: N(0,1) noise / its max |.|, Gaussian blur (radius 4 sigma), * alpha
            noise = torch.randn(len(elastic), 2, h, w, generator=fields, device=dev, dtype=dt)
            noise = noise / noise.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
            sigma = torch.full((len(elastic),), r.elastic_sigma, device=dev)
            field = _gaussian_blur(noise, sigma, math.ceil(4 * r.elastic_sigma)) * r.elastic_alpha
            e = elastic.to(dev)
            dx[e], dy[e] = field[:, 0] * (2 / w), field[:, 1] * (2 / h)
        grid = (kind == 2).nonzero()[:, 0]
        if len(grid):  # cells of relative size steps, edges fixed: piecewise-linear, separable
            steps = p.grid_steps[idx[grid]]  # (g, 2, S)
            cells = steps.shape[-1]
            knots = torch.cat((torch.zeros(len(grid), 2, 1, dtype=torch.float64), steps.cumsum(-1)), -1)
            knots = (knots / knots[:, :, -1:]).to(dev, dt)
            g = grid.to(dev)
            for axis, size, out in ((0, w, dx), (1, h, dy)):
                u = (torch.arange(size, device=dev, dtype=dt) + 0.5) / size * cells
                cell = u.floor().clamp(0, cells - 1).long()
                lo, hi = knots[:, axis, cell], knots[:, axis, cell + 1]
                moved = 2 * (lo + (u - cell) * (hi - lo)) - 2 * u / cells  # source - output, (g, size)
                out[g] = moved[:, None, :].expand(-1, h, -1) if axis == 0 else moved[:, :, None].expand(-1, -1, w)
        return dx, dy

    @staticmethod
    def _intensity(images: torch.Tensor, owned: bool, p: AugmentParams, fields: torch.Generator) -> torch.Tensor:
        """albumentations' order: brightness/contrast, gamma, noise; then blur; clamped after each.

        ``owned``: ``images`` is this call's own copy and may be changed in place.
        """
        dev, dt = images.device, images.dtype

        def col(values: torch.Tensor) -> torch.Tensor:
            return values.to(dev, dt)[:, None, None, None]

        if ((p.brightness != 0) | (p.contrast != 0)).any():  # whole batch: x * 1 + 0 leaves the others exact
            images, owned = torch.addcmul(col(p.brightness), images, col(1 + p.contrast)).clamp_(0, 1), True
        for step, which in enumerate((p.gamma != 1, p.noise_std > 0, p.blur_sigma > 0)):
            if not which.any():
                continue
            if not owned:
                images, owned = images.clone(), True
            idx = which.nonzero()[:, 0].to(dev)
            x = images[idx]
            if step == 0:
                x = x.pow(col(p.gamma[which]))
            elif step == 1:
                x = x + col(p.noise_std[which]) * torch.randn(x.shape, generator=fields, device=dev, dtype=dt)
            else:
                x = _gaussian_blur(x, col(p.blur_sigma[which]).flatten(), math.ceil(3 * float(p.blur_sigma.max())))
            images[idx] = x.clamp_(0, 1)
        return images


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1 or images.shape[0] != masks.shape[0] \
            or images.shape[2:] != masks.shape[2:]:
        raise ValueError(f"expected images (N, C, H, W) and masks (N, 1, H, W), got {tuple(images.shape)} "
                         f"and {tuple(masks.shape)}")
    if not (images.is_floating_point() and masks.is_floating_point()):
        raise ValueError(f"expected float images and masks, got {images.dtype} and {masks.dtype}")
    if images.device != masks.device:
        raise ValueError(f"images on {images.device}, masks on {masks.device}")


def augment_generator(seed: int, epoch: int, step: int, rank: int = 0,
                      stream: str = "segkit.batch_augment") -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, step, rank) alone: resumed runs redraw the same
    augmentations and DDP ranks draw distinct ones. ``stream`` names an independent sequence (the
    preset's by default; ``train.transforms`` draw from their own)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("step", step), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"augment_generator: {name} must be an int, got {value!r}")
    digest = hashlib.blake2b(f"{stream}:{seed}:{epoch}:{step}:{rank}".encode(), digest_size=8).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
    return generator
