"""A dimension-generic U-Net in nnU-Net's style (2D or 3D), returning logits.

Written for segkit from the description of nnU-Net's plain U-Net: stages of two
conv -> norm -> LeakyReLU blocks, strided convolutions to go down, transposed
convolutions to come up, per-stage and per-axis kernel and stride sizes for
anisotropic data, and optional deep supervision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.components.params import require_positive_ints
from segkit.errors import ConfigError

__all__ = ["UNet3D", "pad_to_multiples", "stage_sizes"]

NORMS = ("instance", "batch")
_OWNER = "model unet3d"


def pad_to_multiples(x: torch.Tensor, multiples: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad ``x`` (N, C, *spatial) at the far end of each spatial axis to a multiple of ``multiples[axis]``.

    Edge voxels are replicated. Returns the padded tensor and the original spatial size to crop back to.
    """
    sizes = tuple(int(s) for s in x.shape[2:])
    pads = [-size % multiple for size, multiple in zip(sizes, multiples, strict=True)]
    if any(pads):
        flat: list[int] = []
        for pad in reversed(pads):  # F.pad takes the last axis first
            flat += [0, pad]
        x = F.pad(x, flat, mode="replicate")
    return x, sizes


def stage_sizes(value: Any, name: str, stages: int, spatial_dims: int, default: Sequence[Sequence[int]],
                odd: bool = False) -> tuple[tuple[int, ...], ...]:
    """``kernel_sizes`` or ``strides`` as one tuple of ``spatial_dims`` ints per stage; a ConfigError naming ``name``.

    Each stage's entry is a list of one int per axis, or one int for every axis; None gives ``default``.
    """
    if value is None:
        return tuple(tuple(stage) for stage in default)
    example = "[[1, 3, 3], [3, 3, 3], ...]" if name == "kernel_sizes" else "[[1, 1, 1], [1, 2, 2], [2, 2, 2], ...]"
    if not isinstance(value, (list, tuple)) or len(value) != stages:
        raise ConfigError(f"{_OWNER}: {name} must list one entry per stage ({stages} stages), e.g. {example}; "
                          f"got {value!r}")
    result = []
    for stage, entry in enumerate(value, start=1):
        sizes = [entry] * spatial_dims if isinstance(entry, int) else entry
        if (not isinstance(sizes, (list, tuple)) or len(sizes) != spatial_dims
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
            raise ConfigError(f"{_OWNER}: {name} of stage {stage} must be {spatial_dims} integers >= 1 "
                              f"(one per axis, spatial_dims={spatial_dims}) or one integer, got {entry!r}")
        if odd and any(s % 2 == 0 for s in sizes):
            raise ConfigError(f"{_OWNER}: {name} of stage {stage} must be odd (the convolutions keep the size), "
                              f"got {entry!r}")
        result.append(tuple(sizes))
    return tuple(result)


def _check_options(spatial_dims: Any, norm: Any, deep_supervision: Any, dropout: Any, width: int,
                   max_width: int) -> None:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ConfigError(f"{_OWNER}: spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
    if norm not in NORMS:
        raise ConfigError(f"{_OWNER}: norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    if not isinstance(deep_supervision, bool):
        raise ConfigError(f"{_OWNER}: deep_supervision must be true or false, got {deep_supervision!r}")
    if (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not math.isfinite(dropout)
            or not 0 <= dropout < 1):
        raise ConfigError(f"{_OWNER}: dropout must be a probability in [0, 1), got {dropout!r}")
    if max_width < width:
        raise ConfigError(f"{_OWNER}: max_width ({max_width}) must be at least width ({width})")


class ConvBlock(nn.Sequential):
    """conv (optionally strided) -> dropout (when > 0) -> norm -> LeakyReLU(0.01)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int],
                 norm: str, dropout: float) -> None:
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        norm_layer = {"instance": (nn.InstanceNorm2d, nn.InstanceNorm3d),
                      "batch": (nn.BatchNorm2d, nn.BatchNorm3d)}[norm][dims - 2]
        dropout_layer = (nn.Dropout2d, nn.Dropout3d)[dims - 2]
        layers: list[nn.Module] = [conv(in_channels, out_channels, tuple(kernel), tuple(stride),
                                        padding=tuple(k // 2 for k in kernel))]
        if dropout > 0:
            layers.append(dropout_layer(dropout))
        layers += [norm_layer(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True)]
        super().__init__(*layers)


class UNet3D(nn.Module):
    """A U-Net in nnU-Net's style for volumes (``spatial_dims=3``) or images (``spatial_dims=2``).

    Stage ``i`` (1-based) has ``min(width * 2**(i-1), max_width)`` channels and two
    conv -> norm -> LeakyReLU(0.01) blocks, the first with the stage's stride (stride 1 at
    stage 1, so the first stage keeps full resolution). The decoder upsamples with a
    transposed convolution of the lower stage's stride, concatenates the skip connection
    and applies two blocks; a 1x1 convolution gives the logits.

    For anisotropic volumes (thick slices) give per-axis sizes, e.g. 5 stages on 3 mm x
    0.5 mm x 0.5 mm data: ``kernel_sizes=[[1,3,3],[1,3,3],[3,3,3],[3,3,3],[3,3,3]]``,
    ``strides=[[1,1,1],[1,2,2],[1,2,2],[2,2,2],[2,2,2]]``.

    Inputs of any size are padded at the far end of each axis (edge replication) to a
    multiple of the total stride per axis (:attr:`size_multiples`); the logits are cropped back.

    Args:
        in_channels: channels (modalities) of the input.
        classes: channels of the output logits.
        spatial_dims: 3 for volumes ``(N, C, D, H, W)``, 2 for images ``(N, C, H, W)``.
        width: channels of stage 1; each further stage doubles them.
        max_width: the most channels any stage has (nnU-Net: 320 in 3D, 512 in 2D).
        stages: resolution stages, the bottleneck included (each below the first halves the size by default).
        kernel_sizes: per stage, the convolutions' kernel per axis (odd) or one int for all axes; default 3.
        strides: per stage, the downsampling stride per axis or one int; default 1 at stage 1, then 2.
        norm: ``"instance"`` (nnU-Net's choice, independent of the batch size) or ``"batch"``.
        deep_supervision: in training mode also return lower-resolution logits from the decoder
            (see below); in eval mode forward always returns the main logits only.
        dropout: channel dropout after each convolution (0 turns it off).

    Shape:
        - Input: ``(N, in_channels, D, H, W)`` (``(N, in_channels, H, W)`` with ``spatial_dims=2``), any size.
        - Output: logits ``(N, classes, D, H, W)``; with ``deep_supervision`` in training mode a tuple
          ``(main, aux_1, aux_2, ...)``: ``aux_k`` comes from decoder stage ``k + 1`` at that stage's
          resolution (the input size divided by its total stride, rounded up), highest resolution first.
          :func:`segkit.train.deep_supervision.supervised_loss` turns such a tuple into one loss.
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        spatial_dims: int = 3,
        width: int = 32,
        max_width: int = 320,
        stages: int = 5,
        kernel_sizes: list[list[int] | int] | None = None,
        strides: list[list[int] | int] | None = None,
        norm: str = "instance",
        deep_supervision: bool = False,
        dropout: float = 0.0,
    ) -> None:
        require_positive_ints(_OWNER, in_channels=in_channels, classes=classes, width=width, max_width=max_width,
                              stages=stages)
        _check_options(spatial_dims, norm, deep_supervision, dropout, width, max_width)
        dims = int(spatial_dims)
        kernels = stage_sizes(kernel_sizes, "kernel_sizes", stages, dims, [[3] * dims] * stages, odd=True)
        steps = stage_sizes(strides, "strides", stages, dims, [[1] * dims] + [[2] * dims] * (stages - 1))
        if any(s != 1 for s in steps[0]):
            raise ConfigError(f"{_OWNER}: strides of stage 1 must be all 1 (the first stage keeps the input's "
                              f"resolution), got {list(steps[0])}")
        super().__init__()
        self.spatial_dims = dims
        self.deep_supervision = deep_supervision
        self.kernel_sizes = kernels
        self.strides = steps
        #: Total stride of each stage per axis: stage ``i``'s maps are the input size divided by ``scales[i]``.
        self.scales = tuple(tuple(math.prod(s[axis] for s in steps[: i + 1]) for axis in range(dims))
                            for i in range(stages))
        #: Each spatial size must be a multiple of this per axis; other sizes are padded in ``forward``.
        self.size_multiples = self.scales[-1]
        channels = [min(width * 2**i, max_width) for i in range(stages)]
        self.channels = tuple(channels)

        def block(cin: int, cout: int, stage: int, stride: Sequence[int] | None = None) -> ConvBlock:
            return ConvBlock(dims, cin, cout, kernels[stage], stride or (1,) * dims, norm, float(dropout))

        self.encoder = nn.ModuleList()
        previous = in_channels
        for i, out in enumerate(channels):
            self.encoder.append(nn.Sequential(block(previous, out, i, steps[i]), block(out, out, i)))
            previous = out
        transposed = (nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 2]
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(stages - 1, 0, -1):  # from the bottleneck up: stage i -> stage i-1
            self.upsamplers.append(transposed(channels[i], channels[i - 1], steps[i], steps[i]))
            self.decoder.append(nn.Sequential(block(2 * channels[i - 1], channels[i - 1], i - 1),
                                              block(channels[i - 1], channels[i - 1], i - 1)))
        self.head = conv(channels[0], classes, 1)
        # Deep supervision's heads, from the bottleneck up (decoder stages stages-2 .. 2, 1-based), built only when
        # used: a parameter that never gets a gradient stops DistributedDataParallel.
        self.aux_heads = nn.ModuleList(conv(channels[i], classes, 1) for i in range(stages - 2, 0, -1)) \
            if deep_supervision else nn.ModuleList()
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if x.ndim != self.spatial_dims + 2:
            layout = "(N, C, D, H, W)" if self.spatial_dims == 3 else "(N, C, H, W)"
            raise ValueError(f"unet3d with spatial_dims={self.spatial_dims} takes {layout} inputs, "
                             f"got shape {tuple(x.shape)}")
        x, sizes = pad_to_multiples(x, self.size_multiples)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        supervise = self.deep_supervision and self.training
        outputs: list[torch.Tensor] = []
        for level, (up, decode) in enumerate(zip(self.upsamplers, self.decoder)):
            x = decode(torch.cat([up(x), skips.pop()], dim=1))
            stage = len(self.decoder) - 1 - level  # the encoder stage (0-based) this output has the size of
            if supervise and stage > 0:
                outputs.append(self._crop(self.aux_heads[level](x), sizes, self.scales[stage]))
        main = self._crop(self.head(x), sizes, self.scales[0])
        if not supervise:
            return main
        return (main, *reversed(outputs))

    @staticmethod
    def _crop(logits: torch.Tensor, sizes: Sequence[int], scale: Sequence[int]) -> torch.Tensor:
        """``logits`` cut to the unpadded input's extent at ``scale``: ``ceil(size / scale)`` per axis."""
        return logits[(..., *(slice(0, -(-size // s)) for size, s in zip(sizes, scale, strict=True)))]
