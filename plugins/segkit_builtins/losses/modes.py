"""The three loss modes and the checks of ``(logits, target)`` pairs against them.

The tensor contract (``H, W`` may be any number of spatial dimensions):

- ``"binary"`` (the default): logits ``(N, 1, H, W)``, target ``(N, 1, H, W)`` float in {0, 1}.
  Logits and target must have the same shape; several channels are pooled into one binary
  problem, as the binary losses always did.
- ``"multiclass"``: logits ``(N, C, H, W)`` for the ``C >= 2`` label values ``0..C-1`` (channel 0
  is the background), softmax over the channels; target ``(N, 1, H, W)`` float holding the label
  values (integers in ``0..C-1``), cast to long inside the loss.
- ``"multilabel"``: logits ``(N, K, H, W)``, one sigmoid per channel (labels may overlap); target
  ``(N, K, H, W)`` float in {0, 1}.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

__all__ = ["LOSS_MODES", "check_mode", "check_target", "class_indices", "float32_region"]

LOSS_MODES = ("binary", "multiclass", "multilabel")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`LOSS_MODES`, else raise ``ValueError`` listing them."""
    if mode not in LOSS_MODES:
        choices = ", ".join(repr(m) for m in LOSS_MODES)
        raise ValueError(f"unknown loss mode {mode!r}: choose one of {choices}")
    return mode


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def check_target(logits: torch.Tensor, target: torch.Tensor, mode: str) -> None:
    """Raise ``ValueError`` saying what is wrong when ``logits`` and ``target`` do not fit ``mode``.

    Shapes are checked in every mode; in ``"multiclass"`` mode the target's values must also be
    integers in ``0..C-1`` (one reduction and one host sync; the message names the offending value
    and ``C``). Binary and multilabel target values are not checked (soft labels stay allowed).
    """
    check_mode(mode)
    got = f"got logits {_shape(logits)} and target {_shape(target)}"
    if mode == "binary":
        if logits.shape != target.shape:
            hint = ""
            if logits.ndim == target.ndim and logits.ndim >= 2 and target.shape[1] == 1 and logits.shape[1] > 1:
                hint = "; a (N, 1, H, W) label map with C-channel logits is mode='multiclass'"
            raise ValueError(f"binary mode expects logits and target of the same shape (N, 1, H, W), {got}{hint}")
        return
    if logits.ndim < 3:
        raise ValueError(f"{mode} mode expects logits (N, C, H, W) with spatial dimensions, {got}")
    channels = logits.shape[1]
    if mode == "multilabel":
        if logits.shape != target.shape:
            hint = ""
            if target.ndim == logits.ndim and target.shape[1] == 1 and channels > 1:
                hint = "; a (N, 1, H, W) label map of values 0..C-1 is mode='multiclass'"
            raise ValueError(
                f"multilabel mode expects logits and target of the same shape (N, K, H, W), one {{0, 1}} "
                f"channel per label, {got}{hint}"
            )
        return
    # multiclass
    if channels < 2:
        raise ValueError(
            f"multiclass mode needs logits with C >= 2 channels (background + classes), {got}; "
            "a single foreground channel is mode='binary'"
        )
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if _shape(target) != expected:
        hint = ""
        if target.shape == logits.shape:
            hint = "; a one-hot (or overlapping) target with one channel per label is mode='multilabel'"
        raise ValueError(
            f"multiclass mode expects target {expected} holding the label values 0..{channels - 1} "
            f"(N, 1, H, W), {got}{hint}"
        )
    values = target.detach()
    if not values.is_floating_point():
        values = values.float()
    bad = (values < 0) | (values > channels - 1) | (values != torch.round(values))  # NaN counts as bad
    if bool(bad.any()):
        high, low = values.max(), values.min()
        if bool(torch.isnan(values).any()):
            value, why = float("nan"), "is not a label"
        elif float(high) > channels - 1:
            value, why = float(high), f"is >= C={channels}"
        elif float(low) < 0:
            value, why = float(low), "is negative"
        else:
            value, why = float(values[bad][0]), "is not an integer"
        raise ValueError(
            f"multiclass target holds the label value {value:g}, which {why}: logits with C={channels} channels "
            f"take label values 0..{channels - 1}"
        )


def class_indices(target: torch.Tensor) -> torch.Tensor:
    """A multiclass target ``(N, 1, H, W)`` (float label values) as a long label map ``(N, H, W)``."""
    return target[:, 0].long()


def float32_region(tensor: torch.Tensor) -> ContextManager[object]:
    """A context that turns autocast off on ``tensor``'s device, so a loss computes in float32."""
    device_type = tensor.device.type
    try:
        available = torch.amp.is_autocast_available(device_type)
    except AttributeError:  # older torch
        available = device_type in ("cpu", "cuda")
    return torch.autocast(device_type, enabled=False) if available else contextlib.nullcontext()
