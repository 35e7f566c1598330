"""A volume dataset preprocessed once into memory-mapped arrays, so training reads patches from disk.

Each case becomes ``CASE_image.npy`` (float32 ``(C, X, Y, Z)``, resampled and normalised, see
:mod:`segkit.data.preprocess`), ``CASE_label.npy`` (uint8 ``(X, Y, Z)``) and
``CASE_foreground.npz`` (up to ``foreground_voxels`` voxel coordinates per foreground label, for
oversampling). ``cache.json`` records the settings, the CT foreground stats and, per case, each
source file's size and modification time with the case's spacing and shapes, and each cache
file's size, shape, dtype and content fingerprint (:mod:`segkit.data.cache_files`). A second build
reads nothing whose sources and settings are unchanged and rebuilds only the cases that changed
(every case when the CT stats change). The cache is untrusted input: before reuse every entry of
``cache.json`` and every file is checked against its record, and a case whose entry or files do not
match (truncated, swapped for another case's, holding Python objects, not an array at all) is
rebuilt with a one-line note. Every file is written atomically, and ``cache.json`` after each
case, so an interrupted build keeps what it finished; a write that fails (a full disk) is one
line naming the file, and the case's files are removed rather than left half-built.

The default folder is ``$XDG_CACHE_HOME/segkit/volumes/<key>`` (``~/.cache`` when unset), the key a
hash of the dataset's root and the settings; ``directory`` puts it elsewhere. Arrays are read with
``np.load(mmap_mode="r")``: memory holds what a patch touches, never the dataset.

Typical use::

    cache = VolumeCache(dataset, target_spacing=None).build()
    image, label = cache.image(case), cache.label(case)      # memory-mapped
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.cache_files import (CASE_FILES, entry_problem, file_problem, foreground_problem, npz_bytes,
                                     save_bytes, save_npy)
from segkit import memory
from segkit.data.case_workers import map_bounded, plan_workers
from segkit.data.preprocess import (ChannelStats, case_rng, channel_schemes, foreground_sample, normalize_case,
                                    resample_case, resampled_shape, stats_of_samples)
from segkit.errors import OUTPUT_ERRNOS, ConfigError, DataError
from segkit.fileio import atomic_write_text
from segkit.progress import track

__all__ = ["CACHE_VERSION", "VolumeCache", "default_cache_root"]

CACHE_VERSION = 3
"""Bumped when the files' layout or the preprocessing changes, so older caches are rebuilt."""


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/segkit/volumes`` (``~/.cache/segkit/volumes`` when the variable is unset or empty)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "segkit" / "volumes"


def _fingerprint(paths: Sequence[str]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each source file, the test of whether a cached case is current."""
    out = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"cannot read {path}: {error.strerror}; the dataset lists it") from None
        out.append([str(path), int(stat.st_size), int(stat.st_mtime_ns)])
    return out


def _foreground_coordinates(label: np.ndarray, classes: int, limit: int,
                            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Up to ``limit`` voxel coordinates ``(n, 3)`` int32 per foreground label present, drawn without replacement."""
    out = {}
    flat = label.reshape(-1)
    for value in range(1, classes):
        where = np.flatnonzero(flat == value)
        if where.size == 0:
            continue
        if where.size > limit:
            where = np.sort(rng.choice(where, limit, replace=False))
        out[str(value)] = np.stack(np.unravel_index(where, label.shape), axis=1).astype(np.int32)
    return out


class VolumeCache:
    """The preprocessed cases of a :class:`~segkit.data.volume.VolumeDataset` as memory-mapped arrays.

    Args:
        dataset: a volume dataset (``cases_table``, ``read_image``, ``read_label``, ``channel_names``, ``labels``).
        directory: where the cache lives; None: under :func:`default_cache_root`, keyed by root and settings.
        target_spacing: resample every case to this spacing (mm per axis); None keeps each case's own.
        schemes: one intensity scheme per channel ("zscore", "ct", "none"); None chooses by channel name.
        foreground_voxels: at most this many voxel coordinates kept per label and case, for oversampling.
        progress: report progress on stderr while building.
        workers: processes that preprocess cases at once, each holding one case (0: automatic, see
            :func:`segkit.data.case_workers.plan_workers`; 1: in this process).
        note: where one-line notes go (a damaged cache file rebuilt); None: stderr when ``progress``.

    Attributes:
        notes: the notes of the last :meth:`build`, each naming what was rebuilt and why.
    """

    def __init__(self, dataset: Any, directory: str | os.PathLike[str] | None = None,
                 target_spacing: Sequence[float] | None = None, schemes: Sequence[str] | None = None,
                 foreground_voxels: int = 10_000, progress: bool = True,
                 note: Callable[[str], None] | None = None, workers: int = 0) -> None:
        if isinstance(foreground_voxels, bool) or not isinstance(foreground_voxels, int) or foreground_voxels < 1:
            raise ConfigError(f"foreground_voxels must be an integer >= 1, got {foreground_voxels!r}")
        if target_spacing is not None:
            target_spacing = tuple(float(t) for t in target_spacing)
            if len(target_spacing) != 3 or any(not np.isfinite(t) or t <= 0 for t in target_spacing):
                raise ConfigError(f"target_spacing must be three positive numbers (mm), got {target_spacing}")
        self.dataset = dataset
        self.classes = len(dataset.labels)
        self.settings: dict[str, Any] = {
            "version": CACHE_VERSION,
            "channels": list(dataset.channel_names),
            "labels": list(dataset.labels),
            "schemes": list(channel_schemes(dataset.channel_names, schemes)),
            "target_spacing": list(target_spacing) if target_spacing is not None else None,
            "foreground_voxels": foreground_voxels,
        }
        if directory is None:
            root = str(getattr(dataset, "root", "") or os.path.commonpath(list(dataset.cases_table["label_path"])))
            key = hashlib.sha256(json.dumps([str(Path(root).resolve()), self.settings], sort_keys=True).encode())
            directory = default_cache_root() / key.hexdigest()[:16]
        self.directory = Path(directory).expanduser()
        self.progress = progress
        self.workers = workers
        self._note = note
        self.notes: list[str] = []
        self.cases: tuple[str, ...] = tuple(str(c) for c in dataset.cases_table["case"])
        unsafe = [c for c in self.cases if c in ("", ".", "..") or Path(c).name != c or "\\" in c]
        if unsafe:
            raise DataError(f"case name(s) {', '.join(map(repr, unsafe[:3]))} cannot name files in the volume cache; "
                            "a case name must be a plain file name (no folders)")
        if len(set(self.cases)) != len(self.cases):
            raise DataError("the dataset lists a case name twice; each case needs its own name in the volume cache")
        self.stats: tuple[ChannelStats, ...] | None = None
        self.built: list[str] = []  # the cases the last build() wrote (the rest were reused)
        self._entries: dict[str, dict[str, Any]] = {}
        self._stats_sources: dict[str, Any] | None = None  # the source files the CT stats came from

    # Building -------------------------------------------------------------------------------------

    def _sources(self, row: Any) -> list[list[Any]]:
        return _fingerprint([*row.image_paths, row.label_path])

    def _read(self, row: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
        image = self.dataset.read_image(tuple(row.image_paths))
        label = self.dataset.read_label(row.label_path, self.classes)
        array = np.asarray(label.array)
        bad = (array < 0) | (array >= self.classes) | (array != np.round(array)) if array.dtype.kind in "fiu" else None
        outside = array[bad] if bad is not None else array[:0]
        if outside.size:  # a plugin's own read_label unchecked: never wrapped into uint8, never trained on
            raise DataError(f"case {str(row.case)!r}: its label {row.label_path} holds the label value "
                            f"{outside.max():g}, outside the {self.classes} labels the dataset declares "
                            f"(0 .. {self.classes - 1}); fix the file or the dataset's labels")
        array = array.astype(np.uint8, copy=False)
        return image, array, tuple(float(s) for s in label.spacing)

    def _say(self, message: str) -> None:
        """A one-line note about the cache (a file rebuilt, and why)."""
        self.notes.append(message)
        if self._note is not None:
            self._note(message)
        elif self.progress:
            print(f"note: {message}", file=sys.stderr, flush=True)

    def _load_json(self) -> dict[str, Any]:
        """``cache.json`` when it is an object written with these settings; else ``{}`` (a note when damaged)."""
        path = self.directory / "cache.json"
        if not path.is_file():
            return {}
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            self._say(f"volume cache: {path} is unreadable ({type(error).__name__}); rebuilding every case")
            return {}
        if not isinstance(recorded, dict):
            self._say(f"volume cache: {path} holds a {type(recorded).__name__}, not an object; rebuilding every case")
            return {}
        if recorded.get("settings") != self.settings:
            return {}  # written with other settings (or by another segkit version): rebuilt without a note
        if not isinstance(recorded.get("cases"), dict):
            self._say(f"volume cache: {path} has no table of cases; rebuilding every case")
            recorded["cases"] = {}
        return recorded

    def _recorded_stats(self, recorded: dict[str, Any]) -> tuple[ChannelStats, ...] | None:
        """The CT stats in ``cache.json`` when they are one set of finite numbers per channel; else None."""
        stats = recorded.get("stats")
        if stats is None:
            return None
        keys = {"low", "high", "mean", "std"}
        if (isinstance(stats, list) and len(stats) == len(self.settings["channels"]) and all(
                isinstance(s, dict) and set(s) == keys and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in s.values())
                for s in stats)):
            return tuple(ChannelStats(**{k: float(v) for k, v in s.items()}) for s in stats)
        self._say(f"volume cache: {self.directory / 'cache.json'} holds damaged intensity stats; computing them again")
        return None

    def _write_json(self) -> None:
        stats = [s.to_dict() for s in self.stats] if self.stats is not None else None
        atomic_write_text(self.directory / "cache.json", json.dumps(
            {"settings": self.settings, "stats": stats, "stats_sources": self._stats_sources,
             "cases": self._entries}, indent=1))

    def _current(self, case: str, sources: list[list[Any]]) -> bool:
        """Whether ``case``'s entry and files match its sources and records; a note says why when they do not."""
        entry = self._entries.get(case)
        if entry is None:
            return False
        problem = entry_problem(entry, len(self.settings["channels"]))
        if problem:
            self._say(f"volume cache: the cache.json entry of case {case!r} {problem}; rebuilding the case")
            return False
        if entry["sources"] != sources:
            return False  # its source files changed: rebuilt without a note, as intended
        for part in CASE_FILES:
            path = self.directory / f"{case}_{part}"
            problem = file_problem(path, entry["files"][part])
            if problem is None and part == "foreground.npz":
                problem = foreground_problem(path, tuple(entry["shape"]), self.classes)
            if problem:
                self._say(f"volume cache: {path.name} {problem}; rebuilding case {case!r}")
                return False
        return True

    def build(self) -> VolumeCache:
        """Write every case whose sources or settings changed since the last build, or whose files do not match
        ``cache.json``; reuse the rest."""
        self.notes = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return self._build()
        except OSError as error:
            if error.errno in OUTPUT_ERRNOS:
                raise ConfigError(
                    f"cannot write the volume cache in {self.directory}: {error.strerror}; free some space there, "
                    "or put the cache elsewhere (set XDG_CACHE_HOME, or pass a cache directory)") from None
            raise

    def _build(self) -> VolumeCache:
        recorded = self._load_json()
        self._entries = dict(recorded.get("cases", {}))
        table = list(self.dataset.cases_table.itertuples(index=False))
        sources = {str(row.case): self._sources(row) for row in table}
        if "ct" in self.settings["schemes"]:
            stats_sources = {c: sources[c] for c in self.cases}
            recorded_stats = self._recorded_stats(recorded)
            if recorded_stats is not None and recorded.get("stats_sources") == stats_sources:
                self.stats = recorded_stats
            else:
                stats = self._foreground_stats(table)
                if recorded_stats != stats:
                    self._entries = {}  # every case was normalised with other numbers
                self.stats = stats
            self._stats_sources = stats_sources
        stale = [row for row in table if not self._current(str(row.case), sources[str(row.case)])]
        self.built = []
        work = {str(row.case): sources[str(row.case)] for row in stale}
        cases = track(self._in_workers(self._worker_build, list(work), "preprocessing"), total=len(work),
                      desc="volume cache", unit="cases", enabled=self.progress)
        for case, entry in cases:
            self._entries.pop(case, None)
            self._entries[case] = entry
            self.built.append(case)
            self._write_json()
        if not stale and not (self.directory / "cache.json").is_file():
            self._write_json()
        return self

    def _case_bytes(self, row: Any) -> float:
        """The bytes ``row``'s case holds at the peak of its preprocessing, from its header's shape and spacing."""
        shape = tuple(int(n) for n in getattr(row, "shape", ()) or ())
        if len(shape) != 3:
            return 0.0
        source = math.prod(shape)
        target = self.settings["target_spacing"]
        spacing = getattr(row, "spacing", None)
        voxels = math.prod(resampled_shape(shape, spacing, target)) if target and spacing is not None else None
        return float(memory.volume_preprocess_bytes(source, voxels, len(self.settings["channels"])))

    def _in_workers(self, function: Callable[[str], Any], cases: list[str], what: str) -> Iterator[tuple[str, Any]]:
        """``(case, function(case))`` for ``cases``, in worker processes when :attr:`workers` and the memory allow."""
        rows = {str(row.case): row for row in self.dataset.cases_table.itertuples(index=False)}
        workers, note = plan_workers(self.workers, [self._case_bytes(rows[c]) for c in cases], what=what)
        if note:
            self._say(note)
        return map_bounded(function, cases, workers)

    def _row(self, case: str) -> Any:
        table = self.dataset.cases_table
        return next(table.loc[table["case"].astype(str) == case].itertuples(index=False))

    def _worker_build(self, case: str) -> dict[str, Any]:
        """Preprocess and write ``case`` (in a worker process, or this one); its cache.json entry."""
        return self._build_case(self._row(case), self._sources(self._row(case)))

    def _worker_sample(self, case: str) -> np.ndarray:
        """``case``'s foreground intensity sample for the CT stats (:func:`~segkit.data.preprocess.foreground_sample`)."""
        image, label, _ = self._read(self._row(case))
        return foreground_sample(image, label, 10_000, case_rng(0, self.cases.index(case)))

    def _foreground_stats(self, table: list[Any]) -> tuple[ChannelStats, ...]:
        """The CT foreground stats over every case, each case read once, in workers when they help."""
        cases = [str(row.case) for row in table]
        samples = dict(track(self._in_workers(self._worker_sample, cases, "reading CT intensities"),
                             total=len(cases), desc="volume cache: CT intensities", unit="cases",
                             enabled=self.progress))
        return stats_of_samples(samples[c] for c in cases)

    def _build_case(self, row: Any, sources: list[list[Any]]) -> dict[str, Any]:
        """Preprocess and write one case; its cache.json entry. A failed write removes the case's files."""
        case = str(row.case)
        image, label, spacing = self._read(row)
        original_shape = tuple(int(n) for n in label.shape)
        target = self.settings["target_spacing"]
        image, label = resample_case(image, label, spacing, target)
        image = normalize_case(image, self.settings["schemes"], self.stats)
        new_spacing = [s * n / m for s, n, m in zip(spacing, original_shape, label.shape, strict=True)]
        seed = int.from_bytes(hashlib.blake2b(case.encode(), digest_size=8).digest(), "little")
        foreground = _foreground_coordinates(label, self.classes, self.settings["foreground_voxels"],
                                             np.random.default_rng(seed))
        try:
            files = {"image.npy": save_npy(self.directory / f"{case}_image.npy", image),
                     "label.npy": save_npy(self.directory / f"{case}_label.npy", label),
                     "foreground.npz": save_bytes(self.directory / f"{case}_foreground.npz", npz_bytes(foreground))}
        except ConfigError:  # nothing half-built stays: the case is rebuilt whole next time
            for part in CASE_FILES:
                (self.directory / f"{case}_{part}").unlink(missing_ok=True)
            raise
        return {"sources": sources, "shape": list(label.shape), "spacing": new_spacing,
                "original_shape": list(original_shape), "original_spacing": list(spacing),
                "foreground_counts": {k: int(v.shape[0]) for k, v in foreground.items()}, "files": files}

    # Reading --------------------------------------------------------------------------------------

    def _entry(self, case: str) -> dict[str, Any]:
        if not self._entries:
            self._entries = dict(self._load_json().get("cases", {}))
        if case not in self._entries:
            listed = ", ".join(self.cases[:5]) + (", ..." if len(self.cases) > 5 else "")
            raise DataError(f"case {case!r} is not in the volume cache {self.directory}; build it first "
                            f"(VolumeCache.build()); its cases: {listed}")
        problem = entry_problem(self._entries[case], len(self.settings["channels"]))
        if problem:
            raise DataError(f"the volume cache entry of case {case!r} in {self.directory / 'cache.json'} {problem}; "
                            "run again: segkit checks the cache and rebuilds that case")
        return self._entries[case]

    def _load(self, case: str, part: str) -> Any:
        """``np.load`` of one of ``case``'s files (arrays memory-mapped, never pickles); a DataError when damaged."""
        self._entry(case)
        path = self.directory / f"{case}_{part}"
        try:
            if part.endswith(".npz"):
                with np.load(path, allow_pickle=False) as stored:
                    return {int(k): stored[k] for k in stored.files}
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"the volume cache file {path} changed after it was checked ({type(error).__name__}: "
                            f"{error}); run again: segkit checks the cache and rebuilds that case") from None

    def image(self, case: str) -> np.ndarray:
        """The preprocessed image of ``case``, float32 ``(C, X, Y, Z)``, memory-mapped read-only."""
        return self._load(case, "image.npy")

    def label(self, case: str) -> np.ndarray:
        """The label of ``case``, uint8 ``(X, Y, Z)``, memory-mapped read-only."""
        return self._load(case, "label.npy")

    def foreground(self, case: str) -> dict[int, np.ndarray]:
        """Sampled voxel coordinates ``(n, 3)`` int32 of each foreground label present in ``case``."""
        return self._load(case, "foreground.npz")

    def shape(self, case: str) -> tuple[int, int, int]:
        """The spatial shape of ``case`` after resampling."""
        return tuple(int(n) for n in self._entry(case)["shape"])  # type: ignore[return-value]

    def spacing(self, case: str) -> tuple[float, float, float]:
        """The voxel spacing of ``case`` after resampling (mm)."""
        return tuple(float(s) for s in self._entry(case)["spacing"])  # type: ignore[return-value]

    def metadata(self, case: str) -> dict[str, Any]:
        """``case``'s cache.json entry: sources, shape, spacing, original shape and spacing, foreground counts."""
        return dict(self._entry(case))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for DataLoader workers without the dataset: reading needs only the folder and cache.json."""
        state = dict(self.__dict__)
        state["dataset"] = None
        state["_note"] = None
        return state

    def __iter__(self) -> Iterator[str]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"VolumeCache({len(self.cases)} cases, {', '.join(self.settings['schemes'])}, at {self.directory})"
