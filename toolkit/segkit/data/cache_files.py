"""The files of the volume cache: written atomically, and checked as untrusted input before they are used.

A cache folder outlives the run that wrote it: it can be copied, shared, edited, filled by a full
disk or left half-written by a killed process. So every file is recorded in ``cache.json`` as it is
written (:func:`save_npy`, :func:`save_bytes`): its size in bytes, a content fingerprint and, for
``.npy`` arrays, its shape and dtype. Before a cache is reused, :func:`file_problem` compares each
file with its record and says in a few words what differs; the volume cache rebuilds that case.

The fingerprint is a BLAKE2b digest of the whole file up to :data:`WHOLE_FILE` bytes, and beyond
that of :data:`BLOCKS` evenly spaced blocks of :data:`BLOCK` bytes (the first, with the array
header, and the last among them): a few hundred kilobytes read per file, whatever its size. It
catches a file swapped for another case's, truncated, extended or rewritten; an edit of a few
bytes between two sampled blocks can escape it (the size, shape and dtype still have to match).

Arrays are never loaded with ``allow_pickle``: an ``.npy`` or ``.npz`` holding Python objects is a
problem like any other damage, never code run.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from segkit.errors import ConfigError
from segkit.fileio import open_new_private

__all__ = ["BLOCK", "BLOCKS", "WHOLE_FILE", "fingerprint", "save_npy", "save_bytes", "file_problem",
           "npy_header", "foreground_problem", "write_error", "npz_bytes", "entry_problem", "CASE_FILES"]

BLOCK = 4096
"""Bytes per sampled block of a fingerprint."""
BLOCKS = 64
"""Sampled blocks per fingerprint of a file larger than :data:`WHOLE_FILE`."""
WHOLE_FILE = 1 << 20
"""Files up to this size are fingerprinted whole."""
CASE_FILES: tuple[str, ...] = ("image.npy", "label.npy", "foreground.npz")
"""The files of one case, ``CASE_<part>``."""


def fingerprint(path: str | os.PathLike[str]) -> str:
    """The content fingerprint of ``path`` (see the module docstring): 32 hex digits."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as handle:
        if size <= WHOLE_FILE:
            digest.update(handle.read())
        else:
            for k in range(BLOCKS):
                handle.seek(k * (size - BLOCK) // (BLOCKS - 1))
                digest.update(handle.read(BLOCK))
    return digest.hexdigest()


def write_error(path: Path, error: OSError) -> ConfigError:
    """A one-line ConfigError for a failed write of the cache file ``path``.

    numpy reports a short write (a full disk) as ``OSError("62475 requested and 53120 written")``
    without an error number; that is said in words too.
    """
    why = error.strerror or str(error)
    if error.errno is None and "requested and" in str(error):
        why = f"the disk took only part of the file ({error}): it is probably full"
    return ConfigError(f"cannot write the volume cache file {path}: {why}; free some space there, or put the cache "
                       "elsewhere (set XDG_CACHE_HOME, or pass a cache directory). Nothing half-written was left "
                       "behind")


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> dict[str, Any]:
    """Write ``path`` through a temporary file and a rename; its record ``{"bytes", "fingerprint"}``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with os.fdopen(open_new_private(tmp), "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        record = {"bytes": os.path.getsize(tmp), "fingerprint": fingerprint(tmp)}
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return record


def save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """``np.save`` ``array`` to ``path`` atomically; its record with ``shape`` and ``dtype``.

    A failed write (a full disk, no permission) is a :class:`ConfigError` naming the file; the
    temporary file is removed and ``path`` keeps what it held before.
    """
    record = _atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))
    return {**record, "shape": [int(n) for n in array.shape], "dtype": np.dtype(array.dtype).str}


def save_bytes(path: Path, data: bytes) -> dict[str, Any]:
    """``data`` written to ``path`` atomically; its record."""
    return _atomic(path, lambda handle: handle.write(data))


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` from a ``.npy`` file's header; ValueError when it has none."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]}, which segkit does not write")
        return tuple(int(n) for n in shape), np.dtype(dtype), bool(fortran), handle.tell()


def _npy_problem(path: Path, record: Mapping[str, Any], size: int) -> str | None:
    try:
        shape, dtype, _, offset = npy_header(path)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as error:
        return f"is not a readable .npy array ({error})"
    if dtype.hasobject:
        return "holds Python objects, which segkit never loads"
    if list(shape) != list(record["shape"]) or dtype.str != record["dtype"]:
        return (f"holds a {dtype} array of shape {shape}; cache.json records {np.dtype(record['dtype'])} "
                f"{tuple(record['shape'])}")
    if offset + math.prod(shape) * dtype.itemsize != size:
        return f"has {size} bytes where its header needs {offset + math.prod(shape) * dtype.itemsize}"
    return None


def file_problem(path: Path, record: Mapping[str, Any]) -> str | None:
    """What is wrong with ``path`` against its ``cache.json`` record, in a few words; None when it matches."""
    if path.is_symlink():
        return "is a symbolic link, which segkit never writes"
    try:
        size = path.stat().st_size
    except OSError as error:
        return "is missing" if not path.exists() else f"cannot be read ({error.strerror})"
    if not path.is_file():
        return "is not a file"
    if size != record["bytes"]:
        return f"has {size} bytes; cache.json records {record['bytes']}"
    if "shape" in record:
        problem = _npy_problem(path, record, size)
        if problem:
            return problem
    try:
        found = fingerprint(path)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if found != record["fingerprint"]:
        return "has other content than cache.json records (replaced or edited)"
    return None


def foreground_problem(path: Path, shape: tuple[int, ...], classes: int) -> str | None:
    """What is wrong with a foreground ``.npz`` (label -> int32 ``(n, 3)`` voxel coordinates inside ``shape``)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        return f"is not a readable .npz archive ({type(error).__name__}: {error})"
    for key, coords in arrays.items():
        if not key.isdigit() or not 1 <= int(key) < classes:
            return f"holds the entry {key!r}, which is no foreground label 1 .. {classes - 1}"
        if coords.dtype != np.int32 or coords.ndim != 2 or coords.shape[1] != 3:
            return f"holds {coords.dtype} coordinates of shape {coords.shape} for label {key}; expected int32 (n, 3)"
        if coords.size and ((coords < 0).any() or (coords >= np.asarray(shape)).any()):
            return f"holds coordinates of label {key} outside the case's {'x'.join(map(str, shape))} voxels"
    return None


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an uncompressed ``.npz`` archive."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _numbers(value: Any, kind: type, count: int, positive: bool = True) -> bool:
    """Whether ``value`` is a list of ``count`` numbers of ``kind`` (int: whole numbers only), finite and > 0."""
    kinds = (int,) if kind is int else (int, float)
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
                    for v in value))


def _record_problem(record: Any, expected_shape: list[int] | None) -> str | None:
    if not isinstance(record, dict):
        return "is not an object"
    if not isinstance(record.get("bytes"), int) or isinstance(record["bytes"], bool) or record["bytes"] < 0:
        return f"has the size {record.get('bytes')!r}"
    found = record.get("fingerprint")
    if not isinstance(found, str) or len(found) != 32 or any(c not in "0123456789abcdef" for c in found):
        return f"has the fingerprint {found!r}"
    if expected_shape is not None:
        if record.get("shape") != expected_shape:
            return f"has the shape {record.get('shape')!r}, not the case's {expected_shape}"
        try:
            if not isinstance(record.get("dtype"), str) or np.dtype(record["dtype"]).hasobject:
                return f"has the dtype {record.get('dtype')!r}"
        except TypeError:
            return f"has the dtype {record['dtype']!r}"
    return None


def entry_problem(entry: Any, channels: int) -> str | None:
    """What is wrong with one case's ``cache.json`` entry (types and shapes), in a few words; None when sound."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    sources = entry.get("sources")
    if not isinstance(sources, list) or not all(
            isinstance(s, list) and len(s) == 3 and isinstance(s[0], str) and _numbers(s[1:], int, 2, False)
            for s in sources):
        return "has no list of [path, size, mtime] sources"
    for key, kind in (("shape", int), ("original_shape", int), ("spacing", float), ("original_spacing", float)):
        if not _numbers(entry.get(key), kind, 3):
            return f"has the {key} {entry.get(key)!r}, not three positive numbers"
    counts = entry.get("foreground_counts")
    if not isinstance(counts, dict) or not all(isinstance(k, str) and _numbers([v], int, 1, False)
                                               for k, v in counts.items()):
        return f"has the foreground_counts {counts!r}"
    files = entry.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(CASE_FILES):
        return f"records the files {sorted(files) if isinstance(files, dict) else files!r}, not {', '.join(CASE_FILES)}"
    shapes = {"image.npy": [channels, *entry["shape"]], "label.npy": list(entry["shape"]), "foreground.npz": None}
    for name, shape in shapes.items():
        problem = _record_problem(files[name], shape)
        if problem:
            return f"records {name} wrongly: it {problem}"
    return None
