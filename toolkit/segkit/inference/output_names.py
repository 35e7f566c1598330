"""Output file names of predict: label names made file-safe, and the check that no two outputs collide.

Shared by 2D predictions (:mod:`segkit.inference.predict`) and volume predictions
(:mod:`segkit.inference.volume_files`): whatever the kind, segkit never writes over one of its
inputs, two inputs never write the same output file, and nothing is written into a dataset's
label folder (:func:`refuse_label_folder`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from segkit.errors import ConfigError

__all__ = ["file_safe", "claim_outputs", "dataset_label_folders", "refuse_label_folder"]

LABEL_FOLDERS: tuple[str, ...] = ("labelsTr", "labelsTs")
"""The label folders of the Decathlon and nnU-Net layouts, beside ``dataset.json``."""


def file_safe(name: str) -> str:
    """A label name as a file-name part: letters, digits, '-' and '_' kept, anything else '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def claim_outputs(targets: Iterable[Path], source: Path, inputs: set[Path], owner: dict[Path, Path],
                  kind: str = "image") -> None:
    """Record ``source`` as the writer of ``targets``; a ConfigError when one is an input or already claimed.

    ``inputs``: every input file, resolved. ``owner``: output -> the input that writes it, filled
    as the inputs are claimed one by one. ``kind`` names the inputs in the message.
    """
    for target in targets:
        if target.resolve() in inputs:
            raise ConfigError(f"writing {target} would replace an input {kind} with a prediction (even with "
                              "--overwrite, segkit never writes over its inputs); choose another --out.")
        if target in owner:
            raise ConfigError(f"{owner[target]} and {source} would both write {target}; "
                              "predict them into different --out folders.")
        owner[target] = source


def dataset_label_folders(description: Path) -> set[Path]:
    """The folders holding the ground truth of the dataset ``description`` (a ``dataset.json``), resolved.

    ``labelsTr/`` and ``labelsTs/`` beside it, and the folder of every ``label`` its ``training``
    and ``test`` entries list. A dataset.json that cannot be read still has the first two.
    """
    root = description.parent
    folders = {(root / name).resolve() for name in LABEL_FOLDERS}
    try:
        listed = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return folders
    for key in ("training", "test"):
        entries = listed.get(key) if isinstance(listed, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            label = entry.get("label") if isinstance(entry, dict) else None
            if isinstance(label, str) and label.strip():
                folders.add((root / label).resolve().parent)
    return folders


def refuse_label_folder(out: Path) -> None:
    """A ConfigError when ``out`` is, or lies inside, a label folder of a dataset above it (even with --overwrite).

    A folder is a dataset's label folder when a ``dataset.json`` in it or in any folder above it
    names it (:func:`dataset_label_folders`): predictions written there would replace or mix
    with the ground truth that training and evaluation read. Links are followed, so a link to a
    label folder is one too.
    """
    target = Path(out).resolve()
    for folder in (target, *target.parents):
        description = folder / "dataset.json"
        if not description.is_file():
            continue
        for labels in dataset_label_folders(description):
            below = labels in target.parents and labels != folder  # labels kept at the root: only the root itself
            if target == labels or below:
                raise ConfigError(f"--out {out} is {'inside ' if below else ''}the label folder {labels} of the "
                                  f"dataset {description} (its ground truth); segkit predict never writes there, "
                                  "even with --overwrite. Choose another --out.")
