"""Output file names of predict: label names made file-safe, and the check that no two outputs collide.

Shared by 2D predictions (:mod:`segkit.inference.predict`) and volume predictions
(:mod:`segkit.inference.volume_files`): whatever the kind, segkit never writes over one of its
inputs, and two inputs never write the same output file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from segkit.errors import ConfigError

__all__ = ["file_safe", "claim_outputs"]


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
