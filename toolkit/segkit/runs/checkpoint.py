"""Checkpoints: written atomically, loaded with ``weights_only=True``, self-describing.

A checkpoint records the resolved run configuration and the preprocessing, so
``evaluate``, ``predict`` and ``export`` rebuild the model from the file alone.
Loading never unpickles arbitrary objects: a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from segkit.fileio import open_new_private

from segkit.errors import CheckpointError
from segkit import __version__
from segkit.components.registry import get_registry
from segkit.data.preprocess_record import volume_record_problem
from segkit.runs.window import WindowSettings

__all__ = ["FORMAT", "CheckpointPacer", "checkpoint_payload", "save_checkpoint", "load_checkpoint", "build_model_from_checkpoint", "resolve_checkpoint"]

FORMAT = "segkit-checkpoint-1"


class CheckpointPacer:
    """When a run writes its checkpoints: after every epoch, unless writing them is slow.

    A write that took ``slow_seconds`` or more holds the next one back until ``factor`` times its
    duration has passed, so writing stays under about 1/factor of the run's time and a crash loses
    at most that long of training. A large model with one-second epochs on a GPU would otherwise
    spend as long writing last.pt (its weights and optimizer state) as training; a CPU epoch, or a
    small model's write, is never held back. The last epoch is always written (``due(final=True)``).
    """

    def __init__(self, slow_seconds: float = 0.5, factor: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_seconds, self.factor, self.clock = slow_seconds, factor, clock
        self.written_at: float | None = None
        self.write_seconds = 0.0

    def due(self, final: bool = False) -> bool:
        if final or self.written_at is None or self.write_seconds < self.slow_seconds:
            return True
        return self.clock() - self.written_at >= self.factor * self.write_seconds

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Time the writes in the block; the next ``due`` counts from its end."""
        started = self.clock()
        yield
        self.written_at = self.clock()
        self.write_seconds = self.written_at - started


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it: a save is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def checkpoint_payload(config: Any, epoch: int, trainer: Any, extra: dict[str, Any],
                       snapshot: bool = False) -> dict[str, Any]:
    """What a checkpoint of ``trainer`` holds; ``snapshot`` copies the weights, for a payload written later.

    ``preprocessing`` is what inference must repeat: the image size, channels, threshold, 2.5D
    context and labels, the window of a run trained on patches (:class:`~segkit.runs.window.WindowSettings`),
    plus what the data adds (``trainer.data_preprocessing``: a volume dataset's slice axis and slice size;
    a 3D run's intensity schemes and target spacing).
    """

    window = WindowSettings.from_train(config.train)
    state = trainer.inference_module.state_dict()  # the EMA of the weights when there is one
    if snapshot:
        state = {name: tensor.detach().clone() for name, tensor in state.items()}
    return {
        "config": config.to_dict(),
        "preprocessing": {"image_size": config.train.image_size, "in_channels": config.model.params.get("in_channels"),
                          "scale": 255.0, "threshold": config.metrics.threshold,
                          "context": int(config.dataset.params.get("context", 0)),
                          "labels": trainer.labels.to_dict(),
                          **(window.to_record() if window is not None else {}),
                          **(getattr(trainer, "data_preprocessing", None) or {})},
        "epoch": epoch,
        "model_state": state,
        "segkit_version": __version__,
        **extra,
    }


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file.

    Ctrl-C during the write is held back until the file is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with deferred_interrupts():
        _write(tmp, path, payload)


def _write(tmp: Path, path: Path, payload: dict[str, Any]) -> None:
    try:
        with os.fdopen(open_new_private(tmp), "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except RuntimeError as error:  # torch.save wraps a failed write (a full disk) in a RuntimeError
        cause = error.__cause__ or error.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a segkit checkpoint safely; a missing, foreign or corrupt file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): it was not written by segkit, which "
                              "writes checkpoints whole or not at all. Restore it from a copy, or use the run's other "
                              "checkpoint (--checkpoint best|last).")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read safely ({reason}): it is truncated or corrupt, or not a "
            "segkit checkpoint (segkit loads checkpoints with weights_only=True). Restore it from a copy, or use "
            "the run's other checkpoint (--checkpoint best|last)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a segkit checkpoint (expected format {FORMAT!r}).")
    check_payload(payload, path)
    return payload


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def check_payload(payload: dict[str, Any], path: str | os.PathLike[str] = "checkpoint") -> None:
    """A :class:`CheckpointError` naming the field when a checkpoint's config or preprocessing was removed or edited.

    Checks that ``config`` names a model, that ``model_state`` holds weights, and that the
    preprocessing fields inference relies on have their types and ranges and agree with the config
    the run trained with (image size, input channels, 2.5D context; a volume run's slicing, intensity
    schemes and statistics and target spacing: :mod:`segkit.data.preprocess_record`).
    """
    where = str(path)

    def refuse(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {where!r}: field {field!r} {problem}; the checkpoint was edited or "
                               "assembled by hand. Use one written by segkit run (--checkpoint best|last).")

    config = payload.get("config")
    if not isinstance(config, dict):
        raise refuse("config", "is missing" if config is None else f"is a {type(config).__name__}, not a table")
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise refuse("config.model.name", "is missing or not a name")
    if not isinstance(payload.get("model_state"), dict):
        raise refuse("model_state", "is missing or holds no weights")
    prep = payload.get("preprocessing")
    if prep is None:
        return
    if not isinstance(prep, dict):
        raise refuse("preprocessing", f"is a {type(prep).__name__}, not a table")
    checks = {"image_size": (lambda v: _whole(v, 0, 16384), "must be a whole number from 0 to 16384"),
              "in_channels": (lambda v: v is None or _whole(v, 1, 4096), "must be a whole number from 1 to 4096"),
              "context": (lambda v: _whole(v, 0, 1024), "must be a whole number >= 0"),
              "threshold": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v < 1,
                            "must be a number between 0 and 1"),
              "scale": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v < 1e12,
                        "must be a positive number"),
              "labels": (lambda v: v is None or isinstance(v, dict), "must be a table of label names and mode")}
    for field, (valid, rule) in checks.items():
        if field in prep and not valid(prep[field]):
            raise refuse(f"preprocessing.{field}", f"is {prep[field]!r} but {rule}")
    trained = {"image_size": (config.get("train") or {}).get("image_size"),
               "in_channels": model.get("in_channels"),
               "context": (config.get("dataset") or {}).get("context", 0) or 0}
    for field, value in trained.items():
        if field in prep and value is not None and prep[field] is not None and prep[field] != value:
            raise refuse(f"preprocessing.{field}", f"is {prep[field]!r} but the run trained with {value!r}")

    volume = volume_record_problem(prep, prep.get("in_channels"), (config.get("train") or {}).get("target_spacing"))
    if volume is not None:  # a volume dataset's slicing, a 3D run's intensity schemes, statistics and target spacing
        raise refuse(f"preprocessing.{volume[0]}", volume[1])


def resolve_checkpoint(source: str | os.PathLike[str], which: str = "best") -> Path:
    """A checkpoint path from a run directory and ``best``/``last``, or a path to a ``.pt`` file."""
    source = Path(source)
    if source.is_file():
        return source
    if which not in ("best", "last"):
        candidate = Path(which)
        if candidate.is_file():
            return candidate
        raise CheckpointError(f"--checkpoint must be best, last or a path to a .pt file; {which!r} is none of these.")
    if not source.is_dir():
        raise CheckpointError(f"run directory {str(source)!r} does not exist.")
    path = source / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        found = sorted(p.name for p in (source / "checkpoints").glob("*.pt")) if (source / "checkpoints").is_dir() else []
        raise CheckpointError(
            f"{str(source)!r} has no checkpoints/{which}.pt"
            + (f" (found: {', '.join(found)})." if found else " and no checkpoints at all: is it a segkit run directory?")
        )
    return path


def build_model_from_checkpoint(payload: dict[str, Any], registry: Any | None = None) -> torch.nn.Module:
    """Rebuild the model named in a checkpoint and load its weights (eval mode, on the CPU)."""

    registry = registry or get_registry()
    spec = payload["config"]["model"]
    params = {k: v for k, v in spec.items() if k != "name"}
    model = registry.build("model", spec["name"], **params)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"the weights in this checkpoint do not fit the model its config describes "
                              f"({spec['name']} with {params}): {first}. The checkpoint was edited or assembled "
                              "by hand; use one written by segkit run.") from None
    return model.eval()
