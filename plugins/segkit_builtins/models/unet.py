"""The U-Net of the Kaggle LGG segmentation tutorial, returning logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segkit.components.params import require_positive_ints
from segkit.errors import ConfigError

__all__ = ["UNet", "pad_to_multiple"]


def pad_to_multiple(
    x: torch.Tensor, multiple: int, min_size: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` (N, C, H, W) on the right and bottom so H and W are multiples of ``multiple``.

    Sides shorter than ``min_size`` are first padded up to it. Edge pixels are
    replicated (works for any size, unlike reflection). Returns the padded tensor
    and the original ``(H, W)`` to crop the output back to.
    """
    height, width = x.shape[-2:]
    pad_h = max(min_size - height, 0)
    pad_w = max(min_size - width, 0)
    pad_h += -(height + pad_h) % multiple
    pad_w += -(width + pad_w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


def double_conv(in_channels: int, out_channels: int, batch_norm: bool = False) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, keeping the spatial size; batch norm after each convolution when asked."""
    layers: list[nn.Module] = []
    for source in (in_channels, out_channels):
        layers.append(nn.Conv2d(source, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """The LGG tutorial's U-Net: 4 levels of double 3x3 convs and bilinear upsampling.

    The layers are the tutorial's, unchanged: encoder double convs
    ``in_channels -> w -> 2w -> 4w -> 8w`` separated by 2x2 max pooling, a decoder
    that upsamples bilinearly (``align_corners=True``), concatenates the skip
    connection and applies a double conv (``8w+4w -> 4w``, ``4w+2w -> 2w``,
    ``2w+w -> w``), and a 1x1 convolution head. With the defaults it has
    7,782,913 parameters.

    The one deliberate change from the tutorial: ``forward`` returns logits, not
    ``sigmoid`` probabilities, so losses can use the numerically stable
    log-sigmoid forms and autocast stays safe. Apply ``torch.sigmoid`` to get
    probabilities.

    Inputs whose height or width is not a multiple of 8 (three poolings) are
    padded on the right and bottom by edge replication, and the output is cropped
    back to the input size.

    Args:
        in_channels: channels of the input images.
        classes: channels of the output mask (1 for binary segmentation).
        width: channels of the first level ``w``; the tutorial uses 64.
        batch_norm: batch norm after every 3x3 convolution (the tutorial has none). The default
            run (``segkit run`` with no model settings) uses width 32 with batch norm: it learns
            from its first epoch, where the tutorial's net predicts nothing for four.

    Shape:
        - Input: ``(N, in_channels, H, W)`` float.
        - Output: ``(N, classes, H, W)`` logits.
    """

    #: H and W must be multiples of this; other sizes are padded in ``forward``.
    size_multiple = 8

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 64, batch_norm: bool = False) -> None:
        require_positive_ints("model unet", in_channels=in_channels, classes=classes, width=width)
        if not isinstance(batch_norm, bool):
            raise ConfigError(f"model unet: batch_norm must be true or false, got {batch_norm!r}")
        super().__init__()
        w, bn = width, batch_norm
        self.dconv_down1 = double_conv(in_channels, w, bn)
        self.dconv_down2 = double_conv(w, 2 * w, bn)
        self.dconv_down3 = double_conv(2 * w, 4 * w, bn)
        self.dconv_down4 = double_conv(4 * w, 8 * w, bn)
        self.maxpool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.dconv_up3 = double_conv(8 * w + 4 * w, 4 * w, bn)
        self.dconv_up2 = double_conv(4 * w + 2 * w, 2 * w, bn)
        self.dconv_up1 = double_conv(2 * w + w, w, bn)
        self.conv_last = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)

        conv1 = self.dconv_down1(x)
        conv2 = self.dconv_down2(self.maxpool(conv1))
        conv3 = self.dconv_down3(self.maxpool(conv2))
        x = self.dconv_down4(self.maxpool(conv3))

        x = self.dconv_up3(torch.cat([self.upsample(x), conv3], dim=1))
        x = self.dconv_up2(torch.cat([self.upsample(x), conv2], dim=1))
        x = self.dconv_up1(torch.cat([self.upsample(x), conv1], dim=1))
        logits = self.conv_last(x)
        return logits[..., :height, :width]
