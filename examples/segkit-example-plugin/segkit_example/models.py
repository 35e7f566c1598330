"""``example_tinyunet``: a small, fast U-Net with batch norm that returns logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segkit.errors import ConfigError
from torch import nn

__all__ = ["TinyUNet", "conv_bn_block", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` (N, C, H, W) on the right and bottom, replicating edges, so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` to crop the output back to.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


def conv_bn_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by batch norm and ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """A small U-Net: ``depth`` poolings, batch norm, transposed-conv upsampling.

    Level ``i`` has ``width * 2**i`` channels; with the defaults (``width=16``,
    ``depth=3``) it has about 0.47 M parameters, few enough to train on a CPU.
    Inputs whose height or width is not a multiple of ``2**depth`` are padded on
    the right and bottom by edge replication and the output is cropped back.

    Batch norm needs more than one value per channel in training mode: train with
    batches of at least 2 or inputs larger than ``2**depth`` pixels on a side.

    Args:
        in_channels: channels of the input images.
        classes: channels of the output (1 for binary segmentation).
        width: channels of the first level.
        depth: number of 2x2 poolings (the bottleneck is ``2**depth`` times smaller).

    Shape:
        - Input: ``(N, in_channels, H, W)`` float.
        - Output: ``(N, classes, H, W)`` logits.
    """

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("classes", classes), ("width", width), ("depth", depth)):
            if value < 1:
                raise ConfigError(f"example_tinyunet: {name} must be at least 1, got {value}.")
        channels = [width * 2**level for level in range(depth + 1)]
        self.size_multiple = 2**depth
        self.down = nn.ModuleList(
            conv_bn_block(c_in, c_out) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(channels[1:]))
        self.merge = nn.ModuleList(conv_bn_block(c, c // 2) for c in reversed(channels[1:]))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[..., :height, :width]
