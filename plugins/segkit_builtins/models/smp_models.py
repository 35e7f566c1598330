"""segmentation-models-pytorch architectures as segkit models.

One factory per smp architecture (``smp_unet``, ``smp_fpn``, ...), all built by
:func:`build_smp_model`. The returned module pads inputs to the size the model
needs and crops the logits back, and never downloads weights: ``encoder_weights``
is ``None`` (train from scratch) or a local state-dict file.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from segkit.errors import ConfigError, unknown_name
from segkit.components.params import passthrough_signature, require_positive_ints
from segkit_builtins.models.unet import pad_to_multiple

__all__ = [
    "SmpModel",
    "build_smp_model",
    "list_encoders",
    "smp_unet",
    "smp_unetplusplus",
    "smp_manet",
    "smp_linknet",
    "smp_fpn",
    "smp_pspnet",
    "smp_deeplabv3",
    "smp_deeplabv3plus",
    "smp_pan",
    "smp_upernet",
    "smp_segformer",
    "smp_dpt",
]

DEFAULT_ENCODER = "resnet34"
# DPT takes only ViT-style timm encoders. ViT-S/16 has about as many parameters as
# ResNet-34 (22M vs 21M), which suits training from scratch on a few thousand slices.
DEFAULT_DPT_ENCODER = "tu-vit_small_patch16_224"
# Parameters of the smp classes that segkit decides itself: never downloaded weights, logits
# only, one output tensor (the factories' own encoder_weights takes a local file instead).
RESERVED_SMP_PARAMETERS = ("encoder_weights", "activation", "aux_params")
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class SmpModel(nn.Module):
    """An smp model that accepts any input size and returns logits.

    Inputs whose height or width is not a multiple of ``size_multiple`` (the
    encoder's output stride, or the ViT patch size) or is below ``min_size`` are
    padded on the right and bottom by edge replication; the logits are cropped
    back to the input size.

    Shape:
        - Input: ``(N, in_channels, H, W)`` float.
        - Output: ``(N, classes, H, W)`` logits.
    """

    def __init__(self, model: nn.Module, size_multiple: int, min_size: int = 0) -> None:
        super().__init__()
        self.model = model
        self.size_multiple = int(size_multiple)
        self.min_size = int(min_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple, self.min_size)
        return self.model(x)[..., :height, :width]


def list_encoders(pattern: str | None = None) -> list[str]:
    """Encoder names usable with the smp models, filtered by an fnmatch glob.

    smp's own encoders (``resnet34``, ``efficientnet-b0``, ``mit_b0``, ...) and every
    timm model as ``tu-<name>``, for example ``list_encoders("*resnet*")``.
    """
    names = sorted(smp.encoders.get_encoder_names()) + ["tu-" + name for name in timm.list_models()]
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def _check_encoder_name(encoder_name: str) -> None:
    if encoder_name.startswith("tu-"):
        known = timm.is_model(encoder_name[3:])
    else:
        known = encoder_name in smp.encoders.get_encoder_names()
    if not known:
        raise unknown_name("encoder", encoder_name, list_encoders(), "See 'segkit list encoders'.")


def _weights_file(encoder_weights: str) -> Path:
    """The local weights file named by ``encoder_weights``, or a ConfigError."""
    path = Path(encoder_weights).expanduser()
    if path.is_file():
        return path
    if path.suffix in WEIGHT_SUFFIXES:
        raise ConfigError(f"encoder weights file not found: {encoder_weights}")
    raise ConfigError(
        f"encoder_weights={encoder_weights!r}: segkit never downloads weights. Pass the path of a "
        f"local state-dict file ({', '.join(WEIGHT_SUFFIXES)}) or None to train from scratch."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file or one holding more than tensors
        raise ConfigError(f"cannot read encoder weights {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"encoder weights {path} do not hold a state dict (name -> tensor)")
    return state


def _load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load a state dict into ``encoder``.

    Accepted layouts: the encoder's own state dict, a whole smp model's (its
    ``encoder.*`` entries are used), or for timm encoders the plain timm model's.
    Extra entries (a classifier head) are ignored; missing ones are an error.
    """
    state = _read_state_dict(path)
    if any(key.startswith("encoder.") for key in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    targets = [encoder] + ([encoder.model] if isinstance(getattr(encoder, "model", None), nn.Module) else [])
    best_missing: list[str] = []
    for target in targets:
        missing = sorted(set(target.state_dict()) - set(state))
        if not missing:
            try:
                target.load_state_dict(state, strict=False)
            except RuntimeError as error:  # shape mismatch, e.g. other in_channels
                raise ConfigError(f"encoder weights {path} do not fit the encoder: {error}") from error
            return
        if not best_missing or len(missing) < len(best_missing):
            best_missing = missing
    shown = ", ".join(best_missing[:5]) + (", ..." if len(best_missing) > 5 else "")
    raise ConfigError(
        f"encoder weights {path} do not match the encoder: {len(best_missing)} entries missing ({shown})"
    )


def build_smp_model(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 1,
    **kwargs: Any,
) -> SmpModel:
    """Build the smp architecture ``arch`` (a key of ``smp.MODEL_ARCHITECTURES_MAPPING``).

    ``kwargs`` go to the smp class (``encoder_depth``, ``decoder_channels``, ...).
    """
    model_class = smp.MODEL_ARCHITECTURES_MAPPING[arch]
    require_positive_ints(f"model smp_{arch}", in_channels=in_channels, classes=classes)
    _check_encoder_name(encoder_name)
    if arch == "dpt":
        if not encoder_name.startswith("tu-"):
            raise ConfigError(
                f"smp_dpt needs a timm ViT encoder named 'tu-<model>', got {encoder_name!r}; "
                f"for example {DEFAULT_DPT_ENCODER!r}. See 'segkit list encoders --filter \"tu-vit*\"'."
            )
        kwargs.setdefault("dynamic_img_size", True)  # any padded size, not only 224x224
    if kwargs.get("activation") is not None:
        raise ConfigError("segkit models return logits: leave 'activation' unset")
    if kwargs.get("aux_params") is not None:
        raise ConfigError("segkit models return one mask tensor: 'aux_params' is not supported")
    weights_path = None if encoder_weights is None else _weights_file(encoder_weights)
    model = model_class(
        encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes, **kwargs
    )
    if weights_path is not None:
        _load_encoder_weights(model.encoder, weights_path)
    multiple = model.encoder.output_stride
    if arch == "dpt":  # the decoder resamples the tokens to 1/4, 1/8, ... 1/2**(depth + 1)
        multiple = math.lcm(multiple, 2 ** (len(model.encoder.output_strides) + 1))
    # PAN's feature pyramid attention pools the last feature map three times more.
    min_size = 8 * multiple if arch == "pan" else 0
    return SmpModel(model, size_multiple=multiple, min_size=min_size)


def _factory(
    arch: str, default_encoder: str = DEFAULT_ENCODER, note: str = "", extra: tuple[inspect.Parameter, ...] = ()
) -> Callable[..., SmpModel]:
    """A module-level factory for ``arch`` with an explicit signature and docstring.

    The signature lists the smp class's own parameters in place of ``**kwargs`` (less
    :data:`RESERVED_SMP_PARAMETERS`), so ``segkit info`` shows them and a misspelt one is refused.
    """
    model_class = smp.MODEL_ARCHITECTURES_MAPPING[arch]
    class_name = model_class.__name__

    def factory(
        encoder_name: str = default_encoder,
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        **kwargs: Any,
    ) -> SmpModel:
        return build_smp_model(arch, encoder_name, encoder_weights, in_channels, classes, **kwargs)

    factory.__name__ = factory.__qualname__ = f"smp_{arch}"
    factory.__signature__ = passthrough_signature(  # type: ignore[attr-defined]
        factory, model_class.__init__, exclude=RESERVED_SMP_PARAMETERS, extra=extra)
    factory.__doc__ = f"""segmentation-models-pytorch ``{class_name}``, returning logits at the input size.
{note}
    Args:
        encoder_name: an smp encoder or ``tu-<timm model>``; see ``segkit list encoders``.
        encoder_weights: ``None`` to train from scratch, or the path of a local
            ``.pth``/``.pt``/``.safetensors`` state dict for the encoder. Nothing is downloaded.
        in_channels: channels of the input images.
        classes: channels of the output mask.
        further keywords: the options of ``smp.{class_name}`` listed above (``encoder_depth``,
            ``decoder_channels``, ...), passed on unchanged.

    Shape:
        - Input: ``(N, in_channels, H, W)`` float; any H and W (padded inside).
        - Output: ``(N, classes, H, W)`` logits.
    """
    return factory


smp_unet = _factory("unet")
smp_unetplusplus = _factory("unetplusplus")
smp_manet = _factory("manet")
smp_linknet = _factory("linknet")
smp_fpn = _factory("fpn")
smp_pspnet = _factory("pspnet")
smp_deeplabv3 = _factory("deeplabv3")
smp_deeplabv3plus = _factory("deeplabv3plus")
smp_pan = _factory("pan")
smp_upernet = _factory("upernet")
smp_segformer = _factory("segformer")
smp_dpt = _factory(
    "dpt",
    DEFAULT_DPT_ENCODER,
    note="\n    DPT needs a ViT-style timm encoder (``tu-vit_*``, ``tu-deit_*``, ...); it is built\n"
    "    with ``dynamic_img_size=True`` so any input size works.\n",
    extra=(inspect.Parameter("dynamic_img_size", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool),),
)
