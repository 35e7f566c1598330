"""Paths that a data file names must stay inside its folder: one check for dataset.json, tables and volume headers.

A dataset or a volume header that names other files (a ``dataset.json`` training entry, a table's
relative path, a MetaImage ``ElementDataFile``, an NRRD ``data file``) is input segkit did not
write: a downloaded dataset could name ``../../../home/you/secret.nii.gz`` or ``/etc/passwd``, and
segkit would read that file, train on it and write what it learned (or, in predict, a label map
of it) where the user can see it. segkit already refuses this for ONNX external data
(:mod:`segkit.inference.onnx_file`); :func:`inside_folder` does it for data.

The check is on the path as written, made absolute and normalised (``a/../b`` is ``b``), not on
where symbolic links lead: a link someone put inside the dataset's folder is their choice (data
sets are often folders of links to shared storage), a ``..`` or an absolute path in a file they
downloaded is not.
"""

from __future__ import annotations

import os
from pathlib import Path

from segkit.errors import DataError

__all__ = ["inside_folder", "is_inside"]


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (relative paths start at ``folder``) lies in ``folder`` or below, links not followed."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, os.fspath(path)))
    return os.path.commonpath([base, target]) == base


def inside_folder(named: str | os.PathLike[str], folder: str | os.PathLike[str], *, entry: str,
                  source: str | os.PathLike[str], what: str = "the dataset's folder") -> Path:
    """``folder / named`` (as given) when it stays inside ``folder``; else a one-line :class:`DataError`.

    Args:
        named: the path as the file wrote it (relative to ``folder``, or absolute).
        folder: the folder it must stay in.
        entry: which entry named it, e.g. ``"training[3].image"`` or ``"ElementDataFile"``.
        source: the file that names it (``dataset.json``, the table, the header).
        what: how the message calls ``folder``.
    """
    base = Path(os.path.normpath(os.path.abspath(folder)))
    target = Path(os.path.normpath(os.path.join(base, os.fspath(named))))
    if os.path.commonpath([base, target]) != str(base):
        raise DataError(f"{source}: {entry} names {os.fspath(named)!r}, which is {target}, outside {what} {base}; "
                        "segkit reads only files inside it, so a data file cannot make it read anything else. "
                        f"Put the file inside {base} and name it relative to it")
    return Path(folder) / named
