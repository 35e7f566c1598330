"""MONAI's networks as segkit models (the optional extra: ``pip install 'segkit[monai]'``).

One factory per network (``monai_unet``, ``monai_dynunet``, ``monai_segresnet``). Each takes segkit's names ``in_channels``, ``classes`` (MONAI's
``out_channels``) and ``spatial_dims`` (3 for volumes, 2 for images), lists the MONAI class's
other options in its signature (so ``segkit info`` shows them and a misspelt one is refused,
as for the smp models), and returns a module that pads inputs to the size the network needs
and crops the logits back. Nothing is downloaded: MONAI builds these from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from segkit.components.params import passthrough_signature, require_positive_ints
from segkit.errors import ConfigError
from segkit_builtins.models.unet3d import pad_to_multiples

__all__ = ["MonaiModel", "monai_unet", "monai_dynunet", "monai_segresnet"]

INSTALL_HINT = "pip install 'segkit[monai]'"
#: MONAI's own names for what segkit passes as in_channels, classes and spatial_dims.
RESERVED_MONAI_PARAMETERS = ("in_channels", "out_channels", "spatial_dims")


def _monai_class(name: str, model: str) -> type[nn.Module]:
    """``monai.networks.nets.<name>``, or a one-line ConfigError saying how to install MONAI."""
    try:
        from monai.networks import nets
    except ImportError as error:
        raise ConfigError(f"model {model} needs MONAI, which is not installed ({error}); install it with "
                          f"{INSTALL_HINT}") from None
    return getattr(nets, name)


class MonaiModel(nn.Module):
    """A MONAI network that accepts any input size and returns logits (or deep supervision's tuple).

    Inputs are padded at the far end of each spatial axis (edge replication) to a multiple of
    ``size_multiples``; the logits are cropped back. A DynUNet with ``deep_supervision`` returns,
    in training mode, its stacked outputs ``(N, 1 + k, C, ...)`` (all at the input size), which
    become segkit's tuple ``(main, aux_1, ..., aux_k)``.

    Shape:
        - Input: ``(N, in_channels, D, H, W)`` (``(N, in_channels, H, W)`` with ``spatial_dims=2``), any size.
        - Output: ``(N, classes, D, H, W)`` logits.
    """

    def __init__(self, model: nn.Module, spatial_dims: int, size_multiples: Sequence[int],
                 stacked_supervision: bool = False) -> None:
        super().__init__()
        self.model = model
        self.spatial_dims = int(spatial_dims)
        self.size_multiples = tuple(int(m) for m in size_multiples)
        self.stacked_supervision = stacked_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if x.ndim != self.spatial_dims + 2:
            layout = "(N, C, D, H, W)" if self.spatial_dims == 3 else "(N, C, H, W)"
            raise ValueError(f"this MONAI model (spatial_dims={self.spatial_dims}) takes {layout} inputs, "
                             f"got shape {tuple(x.shape)}")
        x, sizes = pad_to_multiples(x, self.size_multiples)
        crop = (..., *(slice(0, size) for size in sizes))
        out = self.model(x)
        if self.stacked_supervision and self.training and out.ndim == x.ndim + 1:
            return tuple(level[crop] for level in out.unbind(1))
        return out[crop]


def _per_axis_product(strides: Sequence[Any], dims: int) -> tuple[int, ...]:
    """The total stride per axis of a list of strides, each an int or one int per axis."""
    totals = [1] * dims
    for stride in strides:
        values = [stride] * dims if isinstance(stride, int) else list(stride)
        if len(values) != dims:
            raise ConfigError(f"stride {stride!r} has {len(values)} axes, expected {dims} (spatial_dims={dims})")
        totals = [t * int(v) for t, v in zip(totals, values, strict=True)]
    return tuple(totals)


def _build(model: str, class_name: str, spatial_dims: int, in_channels: int, classes: int,
           options: dict[str, Any], multiples: Callable[[nn.Module], Sequence[int]],
           with_spatial_dims: bool = True) -> MonaiModel:
    """Check segkit's parameters, build ``monai.networks.nets.<class_name>`` and wrap it."""
    require_positive_ints(f"model {model}", in_channels=in_channels, classes=classes)
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ConfigError(f"model {model}: spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
    monai_class = _monai_class(class_name, model)
    try:
        network = monai_class(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=classes, **options)
    except (ValueError, TypeError, AssertionError, KeyError, IndexError) as error:
        message = " ".join(str(error).split())
        raise ConfigError(f"model {model}: MONAI's {class_name} refused these options: {message}. "
                          f"See 'segkit info model {model}'.") from None
    stacked = bool(options.get("deep_supervision", False))
    return MonaiModel(network, spatial_dims, multiples(network), stacked_supervision=stacked)


def monai_unet(
    in_channels: int = 1,
    classes: int = 1,
    spatial_dims: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    **kwargs: Any,
) -> MonaiModel:
    """MONAI ``UNet``: a U-Net of strided convolutions, with residual units (``num_res_units``).

    A light, quick network; a good first 3D model on a CPU. Its defaults here are MONAI's tutorials'.

    Args:
        in_channels: channels (modalities) of the input.
        classes: channels of the output logits (MONAI's ``out_channels``).
        spatial_dims: 3 for volumes, 2 for images.
        channels: channels of each level; one more than ``strides``.
        strides: the downsampling stride between levels (an int, or one per axis).
        num_res_units: residual units per level (0: plain convolutions).
        further keywords: the options of ``monai.networks.nets.UNet`` listed above (``kernel_size``,
            ``act``, ``norm``, ``dropout``, ...), passed on unchanged.

    Shape:
        - Input: ``(N, in_channels, D, H, W)``, any size (padded inside to a multiple of the total stride).
        - Output: ``(N, classes, D, H, W)`` logits.
    """
    dims = spatial_dims if spatial_dims in (2, 3) else 3
    options = {"channels": list(channels), "strides": list(strides), "num_res_units": num_res_units, **kwargs}
    return _build("monai_unet", "UNet", spatial_dims, in_channels, classes, options,
                  lambda _: _per_axis_product(strides, dims))


def monai_dynunet(
    in_channels: int = 1,
    classes: int = 1,
    spatial_dims: int = 3,
    kernel_size: Sequence[Sequence[int] | int] | None = None,
    strides: Sequence[Sequence[int] | int] = (1, 2, 2, 2, 2),
    upsample_kernel_size: Sequence[Sequence[int] | int] | None = None,
    **kwargs: Any,
) -> MonaiModel:
    """MONAI ``DynUNet``: MONAI's version of nnU-Net's network (per-level kernels and strides).

    Close to ``model.unet3d``; use it to compare against MONAI's implementation or for its
    residual blocks (``res_block=True``). With ``deep_supervision=True`` (and ``deep_supr_num``)
    the training-mode output is segkit's tuple of logits, all at the input size.

    Args:
        in_channels: channels (modalities) of the input.
        classes: channels of the output logits (MONAI's ``out_channels``).
        spatial_dims: 3 for volumes, 2 for images.
        kernel_size: per level, the kernel (an int or one per axis); default 3 at every level.
        strides: per level, the stride (an int or one per axis); the first is usually 1.
        upsample_kernel_size: per upsampling, its kernel; default ``strides[1:]``.
        further keywords: the options of ``monai.networks.nets.DynUNet`` listed above (``filters``,
            ``norm_name``, ``deep_supervision``, ``res_block``, ...), passed on unchanged.

    Shape:
        - Input: ``(N, in_channels, D, H, W)``, any size (padded inside to a multiple of the total stride).
        - Output: ``(N, classes, D, H, W)`` logits.
    """
    dims = spatial_dims if spatial_dims in (2, 3) else 3
    strides = list(strides)
    options = {"kernel_size": list(kernel_size) if kernel_size is not None else [3] * len(strides),
               "strides": strides,
               "upsample_kernel_size": list(upsample_kernel_size) if upsample_kernel_size is not None else strides[1:],
               **kwargs}
    return _build("monai_dynunet", "DynUNet", spatial_dims, in_channels, classes, options,
                  lambda _: _per_axis_product(strides, dims))


def monai_segresnet(in_channels: int = 1, classes: int = 1, spatial_dims: int = 3, **kwargs: Any) -> MonaiModel:
    """MONAI ``SegResNet``: a residual encoder with a light decoder (Myronenko, BraTS 2018).

    Memory-light for its capacity; group norm, so small batches are fine.

    Args:
        in_channels: channels (modalities) of the input.
        classes: channels of the output logits (MONAI's ``out_channels``).
        spatial_dims: 3 for volumes, 2 for images.
        further keywords: the options of ``monai.networks.nets.SegResNet`` listed above
            (``init_filters``, ``blocks_down``, ``blocks_up``, ``dropout_prob``, ...), passed on unchanged.

    Shape:
        - Input: ``(N, in_channels, D, H, W)``, any size (padded inside to a multiple of ``2**(levels - 1)``).
        - Output: ``(N, classes, D, H, W)`` logits.
    """
    dims = spatial_dims if spatial_dims in (2, 3) else 3
    return _build("monai_segresnet", "SegResNet", spatial_dims, in_channels, classes, dict(kwargs),
                  lambda net: (2 ** (len(net.down_layers) - 1),) * dims)


_CLASSES = {monai_unet: "UNet", monai_dynunet: "DynUNet", monai_segresnet: "SegResNet"}


def _list_monai_options() -> None:
    """Give each factory the signature of its MONAI class's options, when MONAI is installed."""
    try:
        from monai.networks import nets
    except ImportError:  # building says how to install it; the factories take any keywords meanwhile
        return
    for factory, class_name in _CLASSES.items():
        factory.__signature__ = passthrough_signature(  # type: ignore[attr-defined]
            factory, getattr(nets, class_name).__init__, exclude=RESERVED_MONAI_PARAMETERS)


_list_monai_options()
