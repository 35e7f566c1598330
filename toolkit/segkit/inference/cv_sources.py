"""A ``segkit cv`` folder as a source of models: its fold runs, and the inference settings its out-of-fold scores chose.

``segkit cv --out DIR`` writes ``DIR/cv.json`` and ``DIR/fold-<k>/``; evaluate, predict and export take
``DIR`` as the ensemble of its fold models (their ``last`` checkpoints), with the test-time augmentation
and post-processing the cross-validation chose (:func:`inference_settings`). Training the folds and scoring
them out of fold is :mod:`segkit.evaluation.cv`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segkit.errors import CheckpointError
from segkit.inference.onnx_file import read_onnx_metadata

__all__ = ["CV_FILE", "CHECKPOINT", "fold_directory", "is_cv_directory", "read_cv", "expand_sources",
           "inference_settings"]

CV_FILE = "cv.json"
CHECKPOINT = "last"
"""The fold checkpoint a cross-validation's ensemble uses: the last, since the best was picked on its own cases."""


def fold_directory(root: str | Path, fold: int) -> Path:
    """Where ``segkit cv`` trains fold ``fold``: ``ROOT/fold-<k>``."""
    return Path(root) / f"fold-{fold}"


def is_cv_directory(path: str | Path) -> bool:
    """True for a folder that ``segkit cv`` wrote (it holds ``cv.json``)."""
    return (Path(path) / CV_FILE).is_file()


def read_cv(path: str | Path) -> dict[str, Any]:
    """The contents of ``DIR/cv.json``; CheckpointError when it is unreadable."""
    file = Path(path) / CV_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {file}: {error}. Is {str(path)!r} a directory written by 'segkit cv'?") from None
    if not isinstance(data, dict) or not isinstance(data.get("folds"), int):
        raise CheckpointError(f"{file} is not a segkit cross-validation file (no 'folds').")
    return data


def expand_sources(sources: Sequence[str | Path]) -> tuple[list[str], dict[str, Any] | None]:
    """Replace each cross-validation directory by its fold runs.

    Returns the sources and, when a cross-validation directory was among them, the
    inference settings its out-of-fold scores chose (``{"tta": bool, "postprocess": str}``).
    """
    expanded: list[str] = []
    chosen: dict[str, Any] | None = None
    for source in sources:
        if str(source).lower().endswith(".onnx") and Path(source).is_file():
            chosen = chosen or _exported_choice(source)
        if not is_cv_directory(source):
            expanded.append(str(source))
            continue
        info = read_cv(source)
        folds = [fold_directory(source, k) for k in range(info["folds"])]
        missing = [str(f) for f in folds if not (f / "checkpoints" / f"{CHECKPOINT}.pt").is_file()]
        if missing:
            raise CheckpointError(f"cross-validation {str(source)!r} is not complete: no model in {', '.join(missing)}. "
                                  f"Finish it with the same 'segkit cv ... --out {source}' command.")
        if info.get("status") != "done":
            raise CheckpointError(f"cross-validation {str(source)!r} has not finished training all folds. "
                                  f"Finish it with the same 'segkit cv ... --out {source}' command.")
        expanded += [str(f) for f in folds]
        chosen = chosen or info.get("chosen")
    return expanded, chosen


def _exported_choice(path: str | Path) -> dict[str, Any] | None:
    """The TTA and post-processing an exported cross-validation ensemble recommends, if it is one."""

    metadata = read_onnx_metadata(path)
    if "recommended_tta" not in metadata:
        return None
    return {"tta": metadata["recommended_tta"] == "true", "postprocess": metadata.get("recommended_postprocess", "none")}


def inference_settings(sources: Sequence[str | Path], tta: bool | None, postprocess: str | None,
                       checkpoint: str | None) -> tuple[list[str], bool, str, str]:
    """Sources with cross-validation directories expanded, and the TTA, post-processing and checkpoint to use.

    Settings left as None take the cross-validation's out-of-fold choice (``last`` checkpoints),
    or the plain defaults (no TTA, no post-processing, ``best``) when no such directory is given.
    """
    expanded, chosen = expand_sources(sources)
    if chosen is not None:
        tta = chosen["tta"] if tta is None else tta
        postprocess = chosen["postprocess"] if postprocess is None else postprocess
        checkpoint = checkpoint or CHECKPOINT
    return expanded, bool(tta), postprocess or "none", checkpoint or "best"
