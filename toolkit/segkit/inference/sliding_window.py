"""Whole-volume (or whole-image) inference by sliding windows: overlapping patches through a patch model.

This is segkit's one implementation of it: :class:`SlidingWindowInferer` (a window, a batch size,
mirroring, the devices) is what training's validation, ``segkit evaluate``, ``segkit predict`` and
exported models use, for 2D models trained on patches of images and 3D models trained on patches
of volumes alike; :func:`sliding_window_logits` is the function behind it.

A model trained on patches predicts an image of any size window by window; the logits of
overlapping windows are averaged with weights that favour each window's centre (a Gaussian,
so the less reliable window borders count less), optionally over mirrored copies of each window
(test-time augmentation). Windows go to the model in batches on its device; the sum is kept on
the image's device in float32, so a big volume can stay in CPU memory while a GPU runs the model.

Window placement follows nnU-Net: per axis, the fewest windows that cover the axis with at
least the requested overlap, spread evenly, the first at 0 and the last flush with the end.
An image smaller than the patch along an axis is padded with zeros on both sides (half each,
the extra voxel after) and cropped back.

    inferer = SlidingWindowInferer(WindowSettings((32, 32, 32), overlap=0.5), mirror_axes=(0, 1, 2))
    logits = inferer(model, volume)   # or sliding_window_logits(model, volume, (32, 32, 32), ...)

Why it is long: one owner of window placement, weighting, batching, mirroring and stitching, in its three
forms (whole logits, slabs, labels) and the inferer that wraps them; split up, each form would place windows
its own way again.

Shape:
    image ``(C, *spatial)`` or ``(1, C, *spatial)``, 2 or 3 spatial axes (as many as ``patch_size``);
    the model maps ``(B, C, *patch_size)`` to ``(B, K, *patch_size)``; the result is ``(K, *spatial)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segkit.errors import ConfigError
from segkit.labels import first_largest
from segkit.runs.window import WindowSettings

__all__ = ["SlidingWindowInferer", "argmax_labels", "axis_window_count", "gaussian_importance", "slab_axis",
           "sliding_window_labels", "sliding_window_logits", "window_slabs", "window_starts"]

Progress = Callable[[int, int], None]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of the windows of length ``patch`` along an axis of length ``size`` (``size >= patch``).

    The fewest windows whose neighbours overlap by at least ``overlap * patch`` voxels, spread
    as evenly as whole voxels allow, the first at 0 and the last at ``size - patch``.
    """
    if size <= patch:
        return [0]
    count = axis_window_count(size, patch, overlap)
    step = (size - patch) / (count - 1)
    return [round(step * index) for index in range(count)]


def axis_window_count(size: int, patch: int, overlap: float) -> int:
    """How many windows :func:`window_starts` places along an axis (counted without making the list, which an
    overlap near 1 would make enormous)."""
    if size <= patch:
        return 1
    return math.ceil((size - patch) / (patch * (1.0 - overlap)) - 1e-9) + 1  # 1 - 0.9 is 0.0999... in floating point


def _axis_weights(length: int, sigma_scale: float, dims: int) -> torch.Tensor:
    """One axis's factor of the window weight (float64, maximum 1): a Gaussian of sigma ``sigma_scale * length``,
    floored at ``1e-30 ** (1 / dims)`` so that a product over ``dims`` axes never underflows float32."""
    sigma = sigma_scale * length
    offset = torch.arange(length, dtype=torch.float64) - (length - 1) / 2.0
    weight = torch.exp(-offset.square() / (2.0 * sigma * sigma))
    return weight.clamp_min(1e-30 ** (1.0 / dims)) / weight.max()


@functools.lru_cache(maxsize=8)
def _importance(patch_size: tuple[int, ...], sigma_scale: float, device: str) -> torch.Tensor:
    weight = torch.ones((), dtype=torch.float64)
    for length in patch_size:
        weight = weight.unsqueeze(-1) * _axis_weights(length, sigma_scale, len(patch_size))  # outer product
    return weight.to(torch.float32).to(device)


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 0.125,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """The window weights: a Gaussian centred on the patch, sigma ``sigma_scale * patch`` per axis.

    The product of one Gaussian per axis, each normalised to a maximum of 1 and floored so that the
    product stays a positive float32 (every voxel of a window counts, however small sigma is). Cached
    per (patch, sigma, device): do not modify the returned tensor in place.
    """
    return _importance(tuple(int(n) for n in patch_size), float(sigma_scale), str(torch.device(device)))


def _check(image: torch.Tensor, patch_size: Sequence[int], overlap: float, batch_size: int, sigma_scale: float,
           mirror_axes: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """The image as ``(C, *spatial)``, the patch and the mirror axes, or a ConfigError naming the bad value."""
    try:
        patch = tuple(patch_size)
    except TypeError:
        raise ConfigError(f"patch_size must be a sequence of 2 or 3 whole numbers, got {patch_size!r}.") from None
    if len(patch) not in (2, 3) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in patch):
        raise ConfigError(f"patch_size must be 2 or 3 whole numbers >= 1 (one per spatial axis), got {patch_size!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be a number in [0, 1) (0.5: neighbouring windows share half), "
                          f"got {overlap!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1 (windows per model call), got {batch_size!r}.")
    if isinstance(sigma_scale, bool) or not isinstance(sigma_scale, (int, float)) or not sigma_scale > 0:
        raise ConfigError(f"sigma_scale must be a number > 0 (sigma = sigma_scale x patch size), got {sigma_scale!r}.")
    spatial = len(patch)
    if not isinstance(image, torch.Tensor):
        raise ConfigError(f"image must be a torch.Tensor, got {type(image).__name__}.")
    if image.dim() == spatial + 2 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != spatial + 1:
        raise ConfigError(f"image has shape {tuple(image.shape)}; a {spatial}D patch_size {patch} needs "
                          f"(C, {', '.join('XYZ'[:spatial])}) or (1, C, {', '.join('XYZ'[:spatial])}).")
    if not image.is_floating_point():
        image = image.float()
    axes = tuple(sorted(set(mirror_axes)))
    if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < spatial for a in axes):
        raise ConfigError(f"mirror_axes must be spatial axis indices in 0..{spatial - 1}, got {tuple(mirror_axes)!r}.")
    return image, patch, axes


def _model_device(model: Callable[[torch.Tensor], torch.Tensor], fallback: torch.device) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return fallback


def _predict(model: Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor, patch: tuple[int, ...],
             flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Logits of a batch of windows, averaged over ``flips`` (each flipped in, flipped back out), in float32."""
    total: torch.Tensor | None = None
    for dims in flips:
        logits = model(torch.flip(windows, dims) if dims else windows)
        if not isinstance(logits, torch.Tensor) or logits.dim() != windows.dim() \
                or tuple(logits.shape[2:]) != patch or logits.shape[0] != windows.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"the model returned {shape} for windows of shape {tuple(windows.shape)}; "
                              f"sliding windows need logits (B, K, {', '.join(map(str, patch))}): pick a "
                              f"patch_size the model keeps (e.g. multiples of its total downsampling).")
        logits = logits.float()
        if dims:
            logits = torch.flip(logits, dims)
        total = logits if total is None else total.add_(logits)
    assert total is not None
    return total.div_(len(flips)) if len(flips) > 1 else total


def slab_axis(shape: Sequence[int], patch_size: Sequence[int]) -> int:
    """The spatial axis :func:`window_slabs` steps along: the one whose patch is the smallest share of the image
    (ties: the first), so the stitching buffer, ``patch / size`` of the image per output channel, is smallest."""
    shares = [min(int(p), int(s)) / max(int(s), 1) for s, p in zip(shape, patch_size)]
    return shares.index(min(shares))


class _Ring:
    """The running weighted sum of the windows over ``length`` consecutive positions along one axis, as a ring.

    Position ``r`` along the axis lives in row ``r % length``: adding a window and finishing the rows behind it
    never move data, so the buffer stays exactly one patch deep.
    """

    def __init__(self, channels: int, length: int, axis: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.length, self.dim = length, axis + 1  # dim: the tensor dimension of the axis (0 is the channels)
        size = list(shape)
        size[axis] = length
        self.sum = torch.zeros((channels, *size), dtype=torch.float32, device=device)

    def _pieces(self, first: int, last: int) -> list[tuple[int, int, int]]:
        """Positions ``[first, last)`` as contiguous row ranges of the ring: ``(row, rows, offset from first)``."""
        pieces, position = [], first
        while position < last:
            row = position % self.length
            rows = min(last - position, self.length - row)
            pieces.append((row, rows, position - first))
            position += rows
        return pieces

    def add(self, logits: torch.Tensor, first: int, region: tuple[slice, ...]) -> None:
        """Add ``logits`` ``(K, ...)`` whose axis positions start at ``first``; ``region``: the other axes' slices."""
        for row, rows, offset in self._pieces(first, first + logits.shape[self.dim]):
            target = list(region)
            target[self.dim - 1] = slice(row, row + rows)
            self.sum[(slice(None), *target)] += logits.narrow(self.dim, offset, rows)

    def take(self, first: int, last: int, divisors: list[torch.Tensor]) -> torch.Tensor:
        """The sums at positions ``[first, last)`` divided by the product of ``divisors`` (one 1D tensor per spatial
        axis, the slab axis's for these positions), as a new tensor; their rows zeroed for the windows to come."""
        out = torch.empty((self.sum.shape[0], *[len(d) for d in divisors]), dtype=self.sum.dtype,
                          device=self.sum.device)
        for row, rows, offset in self._pieces(first, last):
            part = self.sum.narrow(self.dim, row, rows)
            target = out.narrow(self.dim, offset, rows)
            for k, divisor in enumerate(divisors):  # broadcast along one axis at a time: nothing volume-sized
                if k == self.dim - 1:
                    divisor = divisor[offset:offset + rows]
                shape = [1] * len(divisors)
                shape[k] = -1
                torch.div(part if k == 0 else target, divisor.view(shape), out=target)
            part.zero_()
        return out


def _coverage(size: int, starts: list[int], patch: int, weight: torch.Tensor) -> torch.Tensor:
    """The sum, at each position of an axis, of the axis weights of the windows covering it (float64)."""
    total = torch.zeros(size, dtype=torch.float64)
    for start in starts:
        total[start:start + patch] += weight
    return total


Slab = tuple[int, int, torch.Tensor]
"""``(first, last, logits)``: the final logits ``(K, ...)`` of positions ``[first, last)`` along the slab axis."""


@torch.no_grad()
def window_slabs(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, patch_size: Sequence[int], *,
                 overlap: float = 0.5, batch_size: int = 4, gaussian: bool = True, sigma_scale: float = 0.125,
                 mirror_axes: Sequence[int] = (), device: torch.device | str | None = None,
                 progress: Progress | None = None, stitch_device: torch.device | str | None = None,
                 axis: int | None = None) -> Iterator[Slab]:
    """The model's logits for the whole ``image``, slab by slab along one axis, as soon as each slab is final.

    The arguments are :func:`sliding_window_logits`'s; ``axis`` is the spatial axis to step along (default:
    :func:`slab_axis`). Windows run in order of their start along that axis, and the weighted sum is kept only
    for the positions one window deep (a ring buffer of ``(K, patch along axis, other axes)`` float32 on the
    stitching device): the positions no later window reaches are divided by their weight and yielded, so what
    is held is one slab of logits, never the whole image's. The weight a position received is the product of
    per-axis sums (each window's weight is a product of per-axis Gaussians and the windows form a grid), so no
    image-sized map of weights is kept either.

    Yields ``(first, last, logits)``: float32 logits ``(K, ...)`` of the image's positions ``[first, last)`` along
    ``axis`` (the other axes whole), at most a quarter patch of positions each, in order and covering the axis once.
    """
    image, patch, axes = _check(image, patch_size, overlap, batch_size, sigma_scale, mirror_axes)
    out_device = torch.device(stitch_device) if stitch_device is not None else image.device
    run_device = torch.device(device) if device is not None else _model_device(model, out_device)
    spatial = tuple(image.shape[1:])
    dims = len(patch)
    if axis is None:
        axis = slab_axis(spatial, patch)
    elif isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < dims:
        raise ConfigError(f"axis must be a spatial axis index in 0..{dims - 1}, got {axis!r}.")

    # Pad each axis shorter than the patch: half before, the rest after (cropped away from every slab).
    before = [max(p - s, 0) // 2 for s, p in zip(spatial, patch)]
    after = [max(p - s, 0) - b for s, p, b in zip(spatial, patch, before)]
    if any(before) or any(after):
        image = F.pad(image, [n for b, a in zip(reversed(before), reversed(after)) for n in (b, a)])  # zeros
    padded = tuple(image.shape[1:])

    starts = [window_starts(s, p, float(overlap)) for s, p in zip(padded, patch)]
    corners = sorted(itertools.product(*starts), key=lambda corner: corner[axis])  # stable: otherwise product order
    flips = [tuple(2 + a for a in combo) for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]
    factors = [_axis_weights(p, sigma_scale, dims) if gaussian else torch.ones(p, dtype=torch.float64) for p in patch]
    coverage = [_coverage(s, st, p, w).to(torch.float32).to(out_device)
                for s, st, p, w in zip(padded, starts, patch, factors)]
    weight_run = gaussian_importance(patch, sigma_scale, run_device) if gaussian else None
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    ring: _Ring | None = None
    done = 0  # positions along the axis [0, done) are yielded (padded coordinates)

    piece = max(1, -(-patch[axis] // 4))  # rows per yielded slab: a quarter patch, so what is yielded stays small

    def finish(until: int) -> Iterator[Slab]:
        nonlocal done
        until = min(until, padded[axis])
        assert ring is not None or until <= done
        while done < until:
            first, last = done, min(until, done + piece)
            logits = ring.take(first, last, [coverage[k][first:last] if k == axis else coverage[k] for k in range(dims)])
            done = last
            keep = list(crop)
            low, high = max(first, before[axis]), min(last, before[axis] + spatial[axis])
            if high > low:
                keep[axis] = slice(low - first, high - first)
                yield low - before[axis], high - before[axis], logits[(slice(None), *keep)].contiguous()

    for number in range(0, len(corners), batch_size):
        batch = corners[number:number + batch_size]
        regions = [tuple(slice(s, s + p) for s, p in zip(corner, patch)) for corner in batch]
        windows = torch.stack([image[(slice(None),) + region] for region in regions]).to(run_device)
        logits = _predict(model, windows, patch, flips)
        if weight_run is not None:
            logits.mul_(weight_run)
        logits = logits.to(out_device)
        if ring is None:
            ring = _Ring(logits.shape[1], patch[axis], axis, padded, out_device)
        for index, corner in enumerate(batch):
            yield from finish(corner[axis])  # nothing before this window's start receives another window
            others = tuple(slice(None) if k == axis else region for k, region in enumerate(regions[index]))
            ring.add(logits[index], corner[axis], others)
        if progress is not None:
            progress(min(number + batch_size, len(corners)), len(corners))
    yield from finish(padded[axis])


def sliding_window_logits(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          patch_size: Sequence[int], *, overlap: float = 0.5, batch_size: int = 4,
                          gaussian: bool = True, sigma_scale: float = 0.125, mirror_axes: Sequence[int] = (),
                          device: torch.device | str | None = None, progress: Progress | None = None,
                          stitch_device: torch.device | str | None = None) -> torch.Tensor:
    """The model's logits for the whole ``image``: the weighted average of its overlapping windows.

    ``model`` maps a batch of windows ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)`` (the
    caller puts it in eval mode). Windows of ``patch_size`` overlap by at least ``overlap`` (in
    [0, 1)) and go to ``device`` (default: the model's, else the image's) ``batch_size`` at a time.
    ``gaussian`` weights each window by :func:`gaussian_importance` (``sigma_scale``), else uniformly.
    ``mirror_axes`` (spatial axis indices, 0 = the first after channels) averages each window's logits
    over every combination of flips along them (2^k model calls per window). ``progress``, when
    given, is called as ``progress(windows_done, windows_total)`` after each batch. ``stitch_device``
    is where the weighted sum of the windows is kept (default: the image's device): the CPU keeps a
    large volume's logits out of GPU memory while the GPU runs the model.

    Returns float32 logits ``(K, *spatial)`` on the stitching device (the slabs of :func:`window_slabs`
    put together). Bad arguments are a ConfigError.
    """
    out: torch.Tensor | None = None
    for first, last, logits in window_slabs(model, image, patch_size, overlap=overlap, batch_size=batch_size,
                                            gaussian=gaussian, sigma_scale=sigma_scale, mirror_axes=mirror_axes,
                                            device=device, progress=progress, stitch_device=stitch_device, axis=0):
        if out is None:
            spatial = tuple(image.shape[-len(patch_size):])
            out = torch.empty((logits.shape[0], *spatial), dtype=torch.float32, device=logits.device)
        out[:, first:last] = logits
    assert out is not None  # at least one window
    return out


def argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    """The most likely channel of each position of ``logits`` ``(K, ...)``, as uint8 (K at most 256)."""
    return first_largest(logits, dim=0, dtype=torch.uint8)


def sliding_window_labels(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          patch_size: Sequence[int], *, overlap: float = 0.5, batch_size: int = 4,
                          gaussian: bool = True, sigma_scale: float = 0.125, mirror_axes: Sequence[int] = (),
                          device: torch.device | str | None = None, progress: Progress | None = None,
                          stitch_device: torch.device | str | None = None,
                          to_labels: Callable[[torch.Tensor], torch.Tensor] = argmax_labels) -> torch.Tensor:
    """A uint8 label map ``(*spatial)`` of ``image`` from its sliding-window logits, made slab by slab.

    ``to_labels`` turns a slab's logits ``(K, ...)`` into its labels (default: the most likely channel).
    Memory holds the image, one slab of logits (:func:`window_slabs`) and the label map: a large volume is
    predicted without its ``K`` channels of logits ever existing whole. The other arguments are
    :func:`sliding_window_logits`'s.
    """
    out: torch.Tensor | None = None
    axis = 0
    for first, last, logits in window_slabs(model, image, patch_size, overlap=overlap, batch_size=batch_size,
                                            gaussian=gaussian, sigma_scale=sigma_scale, mirror_axes=mirror_axes,
                                            device=device, progress=progress, stitch_device=stitch_device):
        if out is None:
            spatial = tuple(image.shape[-len(patch_size):])
            axis = slab_axis(spatial, patch_size)
            out = torch.empty(spatial, dtype=torch.uint8, device=logits.device)
        out.narrow(axis, first, last - first).copy_(to_labels(logits))
    assert out is not None
    return out


@dataclass(frozen=True)
class SlidingWindowInferer:
    """A patch-trained model applied to whole images or volumes by Gaussian-weighted sliding windows.

    Args:
        window: the patch size (2 or 3 spatial sizes) and the overlap of neighbouring windows.
        batch_size: windows per model call.
        mirror_axes: spatial axes (0 = the first after channels) to average mirrored windows over
            (test-time augmentation; 2^k model calls per window); empty: none.
        gaussian: weight each window by a Gaussian centred on it (``sigma_scale`` x patch), else uniformly.
        device: where the model runs (default: the model's parameters' device).
        stitch_device: where the windows' weighted sum is kept (default: the image's device).

    Shape:
        one image ``(C, *spatial)`` -> logits ``(K, *spatial)``; a batch ``(N, C, *spatial)`` ->
        ``(N, K, *spatial)`` (each image slid on its own), float32.
    """

    window: WindowSettings
    batch_size: int = 4
    mirror_axes: tuple[int, ...] = ()
    gaussian: bool = True
    sigma_scale: float = 0.125
    device: torch.device | str | None = None
    stitch_device: torch.device | str | None = None

    def mirrored(self, axes: Sequence[int]) -> SlidingWindowInferer:
        """The same inferer averaging over the flips of ``axes`` (test-time augmentation)."""
        return dataclasses.replace(self, mirror_axes=tuple(axes))

    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                 progress: Progress | None = None) -> torch.Tensor:
        dims = self.window.dims
        if not isinstance(images, torch.Tensor) or images.dim() not in (dims + 1, dims + 2):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"a {self.window.describe()} inferer takes one image (C, {dims} spatial sizes) or a "
                              f"batch (N, C, {dims} spatial sizes), got {shape}.")
        options = self._options(progress)
        if images.dim() == dims + 1:
            return sliding_window_logits(model, images, self.window.patch_size, **options)
        return torch.stack([sliding_window_logits(model, image, self.window.patch_size, **options)
                            for image in images])

    def _options(self, progress: Progress | None) -> dict[str, object]:
        return {"overlap": self.window.overlap, "batch_size": self.batch_size, "gaussian": self.gaussian,
                "sigma_scale": self.sigma_scale, "mirror_axes": self.mirror_axes, "device": self.device,
                "stitch_device": self.stitch_device, "progress": progress}

    def slabs(self, model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
              progress: Progress | None = None) -> Iterator[Slab]:
        """One image's logits slab by slab (:func:`window_slabs`): ``(first, last, logits (K, ...))`` along
        :func:`slab_axis` of its shape, the memory of one slab instead of the whole image's logits."""
        return window_slabs(model, image, self.window.patch_size, **self._options(progress))  # type: ignore[arg-type]

    def labels(self, model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
               to_labels: Callable[[torch.Tensor], torch.Tensor] = argmax_labels,
               progress: Progress | None = None) -> torch.Tensor:
        """One image's uint8 label map (:func:`sliding_window_labels`), made slab by slab."""
        return sliding_window_labels(model, image, self.window.patch_size, to_labels=to_labels,
                                     **self._options(progress))  # type: ignore[arg-type]
