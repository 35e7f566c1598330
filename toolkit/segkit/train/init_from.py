"""Starting a run from the weights of another (``train.init_from``, ``segkit run --init-from RUN|CHECKPOINT``): fine-tuning.

The source is a run directory (its ``best.pt``) or a ``.pt`` checkpoint, read as every checkpoint is
(``weights_only``: it cannot run code). It must hold the same model (``model.name``); every tensor whose
name and shape match is loaded, and the others keep this run's fresh initialisation and are named in the
run's output: a head for another number of labels, a first layer for another number of channels. A
source that fits less than half of the model's weights is refused before the run writes anything. Nothing is
ever downloaded: for an encoder's published weights, give ``model.encoder_weights`` a local file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from segkit.errors import ConfigError
from segkit.runs.checkpoint import load_checkpoint, resolve_checkpoint

__all__ = ["InitReport", "load_initial_weights"]

SHOWN = 6
"""How many re-initialised tensors the report names one by one."""
MIN_SHARE = 0.5
"""A source must fit at least this share of the model's weights (by number): a new head or first layer, not a new model."""


@dataclass
class InitReport:
    """What :func:`load_initial_weights` did: the checkpoint it read, the tensors loaded, the ones re-initialised
    (name, this model's shape, the source's shape or None where the source has no such tensor)."""

    source: Path
    epoch: int | None
    loaded: int
    total: int
    fresh: list[tuple[str, tuple[int, ...], tuple[int, ...] | None]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the run's output."""
        line = (f"initialised from {self.source}" + (f" (epoch {self.epoch})" if self.epoch is not None else "")
                + f": {self.loaded} of {self.total} tensors loaded")
        if not self.fresh:
            return line
        shown = ", ".join(f"{name} ({'x'.join(map(str, shape))}"
                          + (f", was {'x'.join(map(str, was))})" if was is not None else ", not in the source)")
                          for name, shape, was in self.fresh[:SHOWN])
        more = f" and {len(self.fresh) - SHOWN} more" if len(self.fresh) > SHOWN else ""
        return f"{line}; re-initialised for this run: {shown}{more}"


def _checkpoint_of(source: str) -> Path:
    """The checkpoint a source names: a ``.pt`` file, or a run directory's ``checkpoints/best.pt``."""

    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"train.init_from {source!r} does not exist; give a run directory or a .pt checkpoint.")
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise ConfigError(f"train.init_from {source!r} is not a segkit run directory (no checkpoints/); give a run "
                          "directory or a .pt checkpoint.")
    if path.is_file() and path.suffix.lower() != ".pt":
        raise ConfigError(f"train.init_from {source!r} is not a .pt checkpoint; give a run directory or a segkit "
                          ".pt checkpoint (an ONNX export holds no trainable weights).")
    return resolve_checkpoint(path, "best")


def load_initial_weights(model: torch.nn.Module, source: str, model_name: str) -> InitReport:
    """Load the tensors of ``source``'s model that fit ``model`` (same name and shape); the rest stay as they are.

    A :class:`ConfigError` (nothing loaded) when the source holds another model than ``model_name`` or when
    none of its tensors fits.
    """

    path = _checkpoint_of(source)
    payload = load_checkpoint(path)
    theirs = str(((payload.get("config") or {}).get("model") or {}).get("name", "?"))
    if theirs != model_name:
        raise ConfigError(f"train.init_from {str(path)!r} holds a {theirs!r} model, and this run trains "
                          f"{model_name!r}: its weights do not fit. Start from a run of the same model (--model "
                          f"{theirs}), or leave --init-from out to train from scratch.")
    state = payload.get("model_state") or {}
    own = model.state_dict()
    fitting = {name: tensor for name, tensor in state.items()
               if name in own and isinstance(tensor, torch.Tensor) and tensor.shape == own[name].shape}
    weights = sum(tensor.numel() for tensor in own.values() if tensor.is_floating_point())
    fit = sum(tensor.numel() for tensor in fitting.values() if tensor.is_floating_point())
    if fit < MIN_SHARE * weights:  # a bias or a counter fits anything: most of the weights must
        raise ConfigError(f"train.init_from {str(path)!r}: only {fit / max(weights, 1):.0%} of this {model_name} "
                          f"model's weights fit the {len(state)} tensors it holds (another encoder or width?); give "
                          "a run with the same model settings.")
    model.load_state_dict(fitting, strict=False)
    fresh = [(name, tuple(tensor.shape), tuple(state[name].shape) if isinstance(state.get(name), torch.Tensor) else None)
             for name, tensor in own.items() if name not in fitting and tensor.is_floating_point()]
    counted = [name for name, tensor in own.items() if tensor.is_floating_point() or name in fitting]
    loaded = sum(name in fitting for name in counted)
    return InitReport(path, payload.get("epoch"), loaded, len(counted), fresh)
