"""A synthetic CT-sized dataset in the Decathlon layout (and optionally nnU-Net v2's raw layout), made reproducibly.

Writes ``OUT/dataset.json`` (``modality`` {"0": "CT"}, labels background/liver/kidney/lesion, the
``training`` list), ``OUT/imagesTr/ct_NNN.nii.gz`` (int16 Hounsfield-like units: air -1000 around
a body ellipse, subcutaneous fat ~-100, soft tissue ~40, a vertebral column ~700 with discs, a
liver ~60, two contrast-enhanced kidneys ~150, a hypodense lesion ~20 inside the liver, Gaussian
noise) and ``OUT/labelsTr/ct_NNN.nii.gz`` (uint8 0..3). Each case is ``512 x 512 x Z`` with the
slice axis last, Z spread over 80..400 (case 0 always has 400 slices, the largest), square pixels
of 0.6-0.9 mm and 1.5-5 mm between slices, stored in the NIfTI affine and zooms. Organs are drawn
in millimetres (smoothly deformed ellipsoids), so they keep their shape whatever the spacing; the
anatomy shrinks only where a field of view is too small for it (the --quick cases). The three
labels differ in size by orders of magnitude: the liver holds millions of voxels, each kidney
~100k, the lesion a few hundred to a few thousand.

``--mri`` writes a BraTS-like set instead: 240 x 240 x 155 at 1 mm, one 4D int16 file per case
with the channels last (FLAIR, T1w, t1gd, T2w), labels background/edema/non-enhancing/enhancing
as nested blobs in a skull-stripped brain.

Everything comes from ``numpy.random.default_rng([seed, case])``: the same arguments give the
same bytes (gzip level 1 with no time stamp or file name in its header). Volumes are generated
in float32 blocks of slices into one int16 volume, so the generator holds about one volume plus
small temporaries. Files are written atomically and existing cases are skipped, so an
interrupted run resumes; ``OUT/synth.json`` records the settings (a folder made with other
settings is refused) and each case's shape, spacing and label sizes.

    python benchmarks/ct_volumes.py OUT [--cases 20] [--seed 0] [--json FILE]
    python benchmarks/ct_volumes.py OUT --nnunet RAW_DIR --dataset-id 501   # also nnU-Net v2's raw layout
    python benchmarks/ct_volumes.py OUT --mri                               # the 4-channel MRI variant
    python benchmarks/ct_volumes.py OUT --quick --verify                    # 3 small cases; read them back

``--nnunet`` also writes ``RAW_DIR/DatasetNNN_CTSynth`` (``MRSynth`` with ``--mri``): the same
files hard-linked (copied across file systems) as ``imagesTr/ct_NNN_0000.nii.gz`` and
``labelsTr/ct_NNN.nii.gz``, one 3D file per channel for the MRI variant, and a v2 dataset.json.
``--verify`` reads every case back with nibabel and, when segkit is importable, builds its ``msd``
dataset from OUT. Other scripts import :func:`make_case` (and :func:`generate`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import markdown_table

__all__ = ["CT_LABELS", "MR_CHANNELS", "MR_LABELS", "case_geometry", "label_counts", "make_case", "make_mr_case",
           "generate", "nnunet_folder", "write_nifti"]

CT_LABELS = ("background", "liver", "kidney", "lesion")
MR_CHANNELS = ("FLAIR", "T1w", "t1gd", "T2w")
MR_LABELS = ("background", "edema", "non-enhancing", "enhancing")
BLOCK = 16
"""Slices generated per float32 block. Fixed: the noise stream, hence the bytes, depend on it."""
GZIP_LEVEL = 1
CT_SHAPE, CT_SLICES, CT_QUICK_SHAPE, CT_QUICK_SLICES = (512, 512), (80, 400), (96, 96), (20, 40)
MR_SHAPE, MR_QUICK_SHAPE = (240, 240, 155), (64, 64, 40)


# Geometry ---------------------------------------------------------------------------------------------------------

def case_geometry(index: int, cases: int, seed: int = 0, quick: bool = False,
                  mri: bool = False) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing in mm) of case ``index`` of ``cases``: the slice counts are ``linspace(low, high, cases)``,
    the largest given to case 0 and the rest shuffled (seeded) over cases 1..; square pixels of 0.6-0.9 mm
    (scaled by 512 / the in-plane size, so a --quick field of view stays body-sized) and 1.5-5 mm between
    slices, chosen so a case covers about 26-70 cm. The MRI variant: its fixed shape at 1 mm (scaled likewise)."""
    if mri:
        shape = MR_QUICK_SHAPE if quick else MR_SHAPE
        step = round(240.0 / shape[0], 4)
        return shape, (step, step, round(155.0 / shape[2], 4))
    (nx, ny), (low, high) = (CT_QUICK_SHAPE, CT_QUICK_SLICES) if quick else (CT_SHAPE, CT_SLICES)
    counts = np.rint(np.linspace(low, high, cases)).astype(int) if cases > 1 else np.array([high])
    others = np.random.default_rng([seed, 1_000_003]).permutation(counts[:-1])
    slices = int(counts[-1] if index == 0 else others[(index - 1) % max(1, len(others))])
    rng = np.random.default_rng([seed, index, 7])
    pixel = round(float(rng.uniform(0.6, 0.9)) * 512 / nx, 4)
    between = round(float(np.clip(rng.uniform(260.0, 700.0) / slices, 1.5, 5.0)), 2)
    return (nx, ny, slices), (pixel, pixel, between)


def _axes(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm along each axis, 0 at the volume's centre (float32)."""
    return [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)) for n, s in zip(shape, spacing)]


@dataclass
class Blob:
    """A smoothly deformed ellipsoid in mm: inside where ``|(p - centre) / radii| < 1 + sum of 3 separable waves``."""

    centre: np.ndarray
    radii: np.ndarray
    waves: list[tuple[float, np.ndarray, np.ndarray]]  # (amplitude, 3 wave numbers (rad/mm), 3 phases)

    @classmethod
    def draw(cls, rng: np.random.Generator, centre: Sequence[float], radii: Sequence[float],
             amplitude: float) -> Blob:
        radii = np.asarray(radii, dtype=np.float64)
        waves = []
        for _ in range(3):
            lengths = radii * rng.uniform(1.2, 3.0, 3)  # wave lengths on the organ's own scale
            waves.append((amplitude * float(rng.uniform(0.5, 1.0)), 2 * np.pi / lengths, rng.uniform(0, 2 * np.pi, 3)))
        return cls(np.asarray(centre, dtype=np.float64), radii, waves)

    @property
    def reach(self) -> np.ndarray:
        """Half-extent of the bounding box (mm) of every point the blob can hold."""
        return self.radii * (1.0 + sum(a for a, _, _ in self.waves))

    def box(self, axes: Sequence[np.ndarray]) -> tuple[slice, ...] | None:
        """Index ranges of the voxels in the blob's bounding box; None when it misses these axes."""
        out = []
        for coords, c, r in zip(axes, self.centre, self.reach):
            lo, hi = np.searchsorted(coords, c - r), np.searchsorted(coords, c + r, side="right")
            if hi <= lo:
                return None
            out.append(slice(int(lo), int(hi)))
        return tuple(out)

    def inside(self, axes: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean mask over the grid ``axes`` (three 1D coordinate arrays, mm)."""
        d = [(a - np.float32(c)) for a, c in zip(axes, self.centre)]
        grid = [x.reshape(shape) for x, shape in zip(d, ((-1, 1, 1), (1, -1, 1), (1, 1, -1)))]
        radius = np.sqrt(sum((g / np.float32(r)) ** 2 for g, r in zip(grid, self.radii)))
        bound = np.float32(1.0)
        for amplitude, k, phase in self.waves:
            parts = [np.cos(np.float32(kk) * g + np.float32(p)) for g, kk, p in zip(grid, k, phase)]
            bound = bound + np.float32(amplitude) * parts[0] * parts[1] * parts[2]
        return radius < bound


def _paint(target: np.ndarray, axes: Sequence[np.ndarray], blob: Blob, value: Any,
           where: np.ndarray | None = None) -> np.ndarray | None:
    """``target[blob] = value`` (also within ``where``, a mask of target's shape); the blob's mask in its box
    (or None when it misses the block), with the box as ``mask.box``."""
    box = blob.box(axes)
    if box is None:
        return None
    mask = blob.inside([a[s] for a, s in zip(axes, box)])
    if where is not None:
        mask &= where[box]
    target[box][mask] = value
    return mask


# CT ---------------------------------------------------------------------------------------------------------------

@dataclass
class _CTAnatomy:
    centre: np.ndarray  # body centre (x, y) mm
    semi: np.ndarray  # body semi-axes (x, y) mm
    sway: tuple[float, float, float]  # body outline change along z: amplitude, wave number, phase
    scale: float
    spine: tuple[float, float, float]  # centre x, y and radius (mm)
    disc: tuple[float, float]  # vertebra period and disc thickness (mm)
    liver: list[Blob]
    kidneys: list[Blob]
    lesion: Blob
    tissue: dict[str, float]


def _ct_anatomy(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float]) -> _CTAnatomy:
    field = [n * s for n, s in zip(shape, spacing)]
    scale = float(min(1.0, 0.45 * field[0] / 165.0, 0.45 * field[1] / 120.0, field[2] / 260.0))
    semi = np.array([165.0, 115.0]) * scale * rng.uniform(0.92, 1.05, 2)
    semi = np.minimum(semi, 0.47 * np.array(field[:2]))
    centre = np.array([rng.uniform(-4, 4), rng.uniform(-4, 8)]) * scale
    A, B = semi
    cx, cy = centre
    zc = float(rng.uniform(-10, 10) * scale)
    z_liver = zc + 40.0 * scale
    liver = [Blob.draw(rng, (cx - 0.42 * A, cy - 0.05 * B, z_liver), (0.42 * A, 0.6 * B, 80.0 * scale), 0.08),
             Blob.draw(rng, (cx + 0.05 * A, cy - 0.35 * B, z_liver + 25.0 * scale),
                       (0.3 * A, 0.28 * B, 45.0 * scale), 0.08)]
    z_kidney = z_liver - 95.0 * scale
    kidneys = [Blob.draw(rng, (cx + side * 0.38 * A, cy + 0.3 * B, z_kidney + rng.uniform(-10, 10) * scale),
                         np.array([25.0, 30.0, 55.0]) * scale * rng.uniform(0.9, 1.1, 3), 0.05) for side in (-1, 1)]
    # the lesion: well inside the right lobe, 6-14 mm (never smaller than the largest voxel side, so it holds voxels)
    right = liver[0]
    offset = rng.uniform(-0.35, 0.35, 3) * right.radii
    offset[2] = rng.uniform(0.0, 0.35) * right.radii[2]  # above the kidneys
    radius = max(float(rng.uniform(6.0, 14.0)) * scale, 1.05 * max(spacing))
    lesion = Blob.draw(rng, right.centre + offset, [radius] * 3, 0.1)
    tissue = {"soft": float(rng.uniform(35, 45)), "fat": float(rng.uniform(-110, -90)),
              "bone": float(rng.uniform(650, 750)), "liver": float(rng.uniform(55, 65)),
              "kidney": float(rng.uniform(140, 160)), "lesion": float(rng.uniform(15, 25)),
              "noise": float(rng.uniform(8, 14))}
    return _CTAnatomy(centre=centre, semi=semi,
                      sway=(float(rng.uniform(0.02, 0.05)), float(2 * np.pi / rng.uniform(150, 300)),
                            float(rng.uniform(0, 2 * np.pi))),
                      scale=scale, spine=(cx, cy + 0.62 * B, 16.0 * scale), disc=(32.0 * scale, 6.0 * scale),
                      liver=liver, kidneys=kidneys, lesion=lesion, tissue=tissue)


def _ct_block(anatomy: _CTAnatomy, axes: Sequence[np.ndarray], rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """float32 HU and uint8 labels of the slices whose z coordinates are ``axes[2]``."""
    xs, ys, zs = axes
    t = anatomy.tissue
    sway = 1.0 + anatomy.sway[0] * np.sin(anatomy.sway[1] * zs + anatomy.sway[2])
    dx = ((xs - np.float32(anatomy.centre[0])) / np.float32(anatomy.semi[0]))[:, None, None]
    dy = ((ys - np.float32(anatomy.centre[1])) / np.float32(anatomy.semi[1]))[None, :, None]
    body_radius = (dx * dx + dy * dy) / (sway * sway).astype(np.float32)[None, None, :]  # squared
    image = np.full(body_radius.shape, -1000.0, dtype=np.float32)
    image[body_radius < 1.0] = t["fat"]
    image[body_radius < 0.86] = t["soft"]  # subcutaneous fat: the outer ring
    inner = body_radius < 0.86
    del body_radius, dx, dy
    label = np.zeros(image.shape, dtype=np.uint8)
    # vertebral column: a cylinder of bone, discs of soft tissue between vertebrae
    sx, sy, sr = anatomy.spine
    period, disc = anatomy.disc
    bone = ((xs - np.float32(sx)) ** 2)[:, None] + ((ys - np.float32(sy)) ** 2)[None, :] < np.float32(sr * sr)
    in_disc = np.mod(zs, np.float32(period)) < np.float32(disc)
    image[bone[:, :, None] & ~in_disc[None, None, :]] = t["bone"]
    image[bone[:, :, None] & in_disc[None, None, :]] = t["soft"] + 50.0
    for blob in anatomy.liver:
        _paint(label, axes, blob, 1, where=inner)
    _paint(label, axes, anatomy.lesion, 3, where=label == 1)
    for blob in anatomy.kidneys:
        _paint(label, axes, blob, 2, where=inner)
    for value, name in ((1, "liver"), (2, "kidney"), (3, "lesion")):
        image[label == value] = t[name]
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.where(image <= -999.0, np.float32(3.0), np.float32(t["noise"]))
    image += noise
    return image, label


def make_case(index: int, seed: int, shape: Sequence[int], spacing: Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One synthetic CT case: (int16 HU image, uint8 label 0..3, spacing), arrays ``shape`` (x, y, z) in Fortran
    order (slices contiguous), the same bytes for the same arguments."""
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    rng = np.random.default_rng([seed, index])
    anatomy = _ct_anatomy(rng, shape, spacing)
    axes = _axes(shape, spacing)
    image = np.empty(shape, dtype=np.int16, order="F")
    label = np.empty(shape, dtype=np.uint8, order="F")
    for z0 in range(0, shape[2], BLOCK):
        z1 = min(shape[2], z0 + BLOCK)
        block, labels = _ct_block(anatomy, [axes[0], axes[1], axes[2][z0:z1]], rng)
        np.clip(np.rint(block, out=block), -1024, 3071, out=block)
        image[:, :, z0:z1] = block
        label[:, :, z0:z1] = labels
    return image, label, spacing


# MRI --------------------------------------------------------------------------------------------------------------

# per channel (FLAIR, T1w, t1gd, T2w): brain, edema, non-enhancing core, enhancing rim
_MR_INTENSITY = np.array([[100, 180, 120, 150], [120, 100, 60, 110], [120, 100, 60, 230], [100, 170, 200, 140]],
                         dtype=np.float32)


def make_mr_case(index: int, seed: int, shape: Sequence[int] = MR_SHAPE,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """One BraTS-like case: (int16 image ``shape + (4,)`` channels last, uint8 label 0..3, spacing)."""
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    rng = np.random.default_rng([seed, index])
    field = [n * s for n, s in zip(shape, spacing)]
    scale = float(min(1.0, 0.45 * field[0] / 70.0, 0.45 * field[1] / 88.0, 0.47 * field[2] / 68.0))
    brain = Blob.draw(rng, rng.uniform(-4, 4, 3) * scale,
                      np.array([68.0, 85.0, 62.0]) * scale * rng.uniform(0.93, 1.03, 3), 0.03)
    where = rng.uniform(-0.4, 0.4, 3) * brain.radii
    edema = Blob.draw(rng, brain.centre + where, [rng.uniform(22, 34) * scale] * 3, 0.2)
    core = Blob.draw(rng, edema.centre + rng.uniform(-4, 4, 3) * scale, [rng.uniform(12, 18) * scale] * 3, 0.15)
    necrosis = Blob.draw(rng, core.centre, [max(rng.uniform(5, 9) * scale, 1.05 * max(spacing))] * 3, 0.1)
    texture = [(float(rng.uniform(0.05, 0.12)), 2 * np.pi / rng.uniform(15, 40, 3), rng.uniform(0, 2 * np.pi, 3))
               for _ in range(3)]
    gain = rng.uniform(0.9, 1.1, 4).astype(np.float32)
    axes = _axes(shape, spacing)
    image = np.empty((*shape, 4), dtype=np.int16, order="F")
    label = np.empty(shape, dtype=np.uint8, order="F")
    for z0 in range(0, shape[2], BLOCK):
        z1 = min(shape[2], z0 + BLOCK)
        block_axes = [axes[0], axes[1], axes[2][z0:z1]]
        size = (shape[0], shape[1], z1 - z0)
        inside = np.zeros(size, dtype=bool)
        _paint(inside, block_axes, brain, True)
        labels = np.zeros(size, dtype=np.uint8)
        _paint(labels, block_axes, edema, 1, where=inside)
        _paint(labels, block_axes, core, 3, where=labels == 1)
        _paint(labels, block_axes, necrosis, 2, where=labels == 3)
        grid = [a.reshape(s) for a, s in zip(block_axes, ((-1, 1, 1), (1, -1, 1), (1, 1, -1)))]
        pattern = np.zeros(size, dtype=np.float32)
        for amplitude, k, phase in texture:  # grey/white matter-like smooth variation
            pattern += np.float32(amplitude) * (np.cos(np.float32(k[0]) * grid[0] + np.float32(phase[0]))
                                                * np.cos(np.float32(k[1]) * grid[1] + np.float32(phase[1]))
                                                * np.cos(np.float32(k[2]) * grid[2] + np.float32(phase[2])))
        for c in range(4):
            values = _MR_INTENSITY[c][labels] * gain[c] * (1.0 + pattern * (labels == 0))
            values += rng.standard_normal(size, dtype=np.float32) * (0.04 * values)
            values[~inside] = 0.0
            image[:, :, z0:z1, c] = np.clip(np.rint(values), 0, 32767)
        label[:, :, z0:z1] = labels
    return image, label, spacing


def label_counts(label: np.ndarray, classes: int = 4) -> np.ndarray:
    """Voxels of each label value, counted slice block by slice block (no int64 copy of the volume)."""
    counts = np.zeros(classes, dtype=np.int64)
    for z0 in range(0, label.shape[2], BLOCK):
        counts += np.bincount(label[:, :, z0:z0 + BLOCK].ravel(order="K"), minlength=classes)[:classes]
    return counts


# Files ------------------------------------------------------------------------------------------------------------

def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float]) -> int:
    """Write ``array`` (3D, or 4D with channels last) as gzip level-1 NIfTI, atomically and byte-reproducibly (no
    time stamp or name in the gzip header); its size in bytes. The affine: the spacing on the diagonal, origin at
    the volume's centre, as qform and sform."""
    import nibabel as nib

    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -(np.asarray(array.shape[:3]) - 1) / 2.0 * np.asarray(spacing)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_data_dtype(array.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw,
                                                   mtime=0) as stream:
        image.to_stream(stream)
    os.replace(partial, path)
    return path.stat().st_size


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems)."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def _settings(cases: int, seed: int, quick: bool, mri: bool) -> dict[str, Any]:
    return {"generator": "benchmarks/ct_volumes.py", "version": 1, "cases": cases, "seed": seed, "quick": quick,
            "mri": mri, "block": BLOCK, "gzip_level": GZIP_LEVEL}


def _record(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """OUT/synth.json's case table when it was made with ``settings`` (none yet: empty); exits otherwise."""
    path = out / "synth.json"
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text())
    if recorded.get("settings") != settings:
        raise SystemExit(f"error: {out} holds cases generated with other settings ({recorded.get('settings')}); "
                         "choose another folder or delete it")
    return dict(recorded.get("cases", {}))


def _nnunet_dataset_json(name: str, mri: bool, count: int) -> dict[str, Any]:
    channels = MR_CHANNELS if mri else ("CT",)
    labels = MR_LABELS if mri else CT_LABELS
    return {"name": name, "channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": {n: i for i, n in enumerate(labels)}, "numTraining": count, "file_ending": ".nii.gz"}


def nnunet_folder(raw: Path, dataset_id: int, mri: bool = False) -> Path:
    """``RAW/DatasetNNN_CTSynth`` (``MRSynth`` for the MRI variant)."""
    return Path(raw) / f"Dataset{int(dataset_id):03d}_{'MRSynth' if mri else 'CTSynth'}"


def generate(out: Path, cases: int = 20, seed: int = 0, quick: bool = False, mri: bool = False,
             nnunet_raw: Path | None = None, dataset_id: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Write (or complete) the dataset in ``out``; OUT/synth.json's content (settings and each case's shape, spacing,
    label voxels and file bytes) with ``timings``: the seconds of each case generated by this call."""
    import nibabel as nib

    nib.openers.Opener.default_compresslevel = GZIP_LEVEL  # anything nibabel itself writes: fast gzip too
    out = Path(out)
    settings = _settings(cases, seed, quick, mri)
    out.mkdir(parents=True, exist_ok=True)
    records = _record(out, settings)  # deterministic content only; the timings of this run go to `seconds`
    seconds: dict[str, dict[str, float]] = {}
    prefix = "mr" if mri else "ct"
    names = [f"{prefix}_{k:03d}" for k in range(cases)]
    if nnunet_raw is not None and dataset_id is None:
        raise SystemExit("error: --nnunet needs --dataset-id")
    nn_folder = nnunet_folder(nnunet_raw, dataset_id, mri) if nnunet_raw is not None else None
    for k, name in enumerate(names):
        image_path, label_path = out / "imagesTr" / f"{name}.nii.gz", out / "labelsTr" / f"{name}.nii.gz"
        arrays = None
        if not (image_path.is_file() and label_path.is_file() and name in records):
            started = time.perf_counter()
            shape, spacing = case_geometry(k, cases, seed, quick, mri)
            image, label, spacing = (make_mr_case if mri else make_case)(k, seed, shape, spacing)
            counts = label_counts(label)
            made = time.perf_counter()
            size = write_nifti(image_path, image, spacing) + write_nifti(label_path, label, spacing)
            records[name] = {"shape": list(shape), "spacing": list(spacing),
                             "label_voxels": {n: int(c) for n, c in zip(MR_LABELS if mri else CT_LABELS, counts)},
                             "bytes": size}
            seconds[name] = {"generate_seconds": round(made - started, 2),
                             "write_seconds": round(time.perf_counter() - made, 2)}
            (out / "synth.json").write_text(json.dumps({"settings": settings, "cases": records}, indent=1))
            arrays = (image, label, spacing) if mri else None
            del image, label
            if not quiet:
                r = records[name]
                sizes = ", ".join(f"{n} {v:,}" for n, v in list(r["label_voxels"].items())[1:])
                print(f"{name} ({k + 1}/{cases}): {'x'.join(map(str, shape))} at "
                      f"{' x '.join(f'{s:g}' for s in spacing)} mm; {sizes} voxels; {r['bytes'] / 2**20:.1f} MiB in "
                      f"{sum(seconds[name].values()):.1f} s", flush=True)
        elif not quiet:
            print(f"{name} ({k + 1}/{cases}): exists, skipped", flush=True)
        if nn_folder is not None:
            _link(label_path, nn_folder / "labelsTr" / f"{name}.nii.gz")
            if not mri:
                _link(image_path, nn_folder / "imagesTr" / f"{name}_0000.nii.gz")
                continue
            channel_paths = [nn_folder / "imagesTr" / f"{name}_{c:04d}.nii.gz" for c in range(len(MR_CHANNELS))]
            if all(p.is_file() for p in channel_paths):
                continue
            if arrays is None:  # resumed: split the 4D file written before
                loaded = nib.load(image_path)
                arrays = (np.asarray(loaded.dataobj), None, tuple(float(z) for z in loaded.header.get_zooms()[:3]))
            for c, path in enumerate(channel_paths):
                write_nifti(path, np.asfortranarray(arrays[0][..., c]), arrays[2])
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]
    description = {"name": "MRSynth" if mri else "CTSynth",
                   "description": "synthetic volumes from benchmarks/ct_volumes.py",
                   "modality": {str(i): c for i, c in enumerate(MR_CHANNELS if mri else ("CT",))},
                   "labels": {str(i): n for i, n in enumerate(MR_LABELS if mri else CT_LABELS)},
                   "numTraining": cases, "numTest": 0, "training": training, "test": []}
    (out / "dataset.json").write_text(json.dumps(description, indent=1))
    if nn_folder is not None:
        (nn_folder / "dataset.json").write_text(json.dumps(_nnunet_dataset_json(nn_folder.name.split("_", 1)[1], mri,
                                                                                cases), indent=1))
    return {"settings": settings, "cases": {n: records[n] for n in names}, "timings": seconds}


def verify(out: Path, nnunet: Path | None = None) -> list[str]:
    """Read every case back (nibabel: shape, zooms, dtype, label values) and build segkit's ``msd`` dataset from
    ``out`` (and from the nnU-Net folder) when segkit is importable; the lines to print."""
    import nibabel as nib

    description = json.loads((out / "dataset.json").read_text())
    recorded = json.loads((out / "synth.json").read_text())["cases"]
    classes = len(description["labels"])
    lines = []
    for entry in description["training"]:
        name = Path(entry["image"]).name.removesuffix(".nii.gz")
        image, label = nib.load(out / entry["image"]), nib.load(out / entry["label"])
        record = recorded[name]
        assert image.shape[:3] == tuple(record["shape"]) == label.shape, (name, image.shape, label.shape)
        assert np.allclose(image.header.get_zooms()[:3], record["spacing"]), (name, image.header.get_zooms())
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8, name
        values = label_counts(np.asarray(label.dataobj), classes)
        assert len(values) == classes and all(values > 0), (name, values)
        assert [int(v) for v in values] == list(record["label_voxels"].values()), name
    lines.append(f"nibabel: {len(description['training'])} cases read back: shapes, zooms, dtypes and label voxel "
                 "counts match synth.json")
    try:
        from segkit.components import get_registry
    except ImportError:
        lines.append("segkit is not importable here: its msd dataset was not checked")
        return lines
    for root in [out] + ([nnunet] if nnunet is not None else []):
        dataset = get_registry().build("dataset", "msd", root=str(root))
        lines.append(f"segkit msd dataset of {root}: {dataset!r}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the Decathlon folder to write (or complete)")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mri", action="store_true", help="the 4-channel BraTS-like variant instead of CT")
    parser.add_argument("--quick", action="store_true", help="3 small cases (CT: 96x96 by 20..40 slices)")
    parser.add_argument("--nnunet", type=Path, metavar="RAW_DIR", help="also write nnU-Net v2's raw layout here")
    parser.add_argument("--dataset-id", type=int, help="nnU-Net's dataset id (with --nnunet)")
    parser.add_argument("--verify", action="store_true", help="read the cases back (nibabel, segkit's msd dataset)")
    parser.add_argument("--json", type=Path, help="also write the case table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases = 3
    if args.nnunet is not None and args.dataset_id is None:
        parser.error("--nnunet needs --dataset-id")
    started = time.perf_counter()
    result = generate(args.out, args.cases, args.seed, args.quick, args.mri, args.nnunet, args.dataset_id)
    seconds = time.perf_counter() - started
    rows = [[name, "x".join(map(str, r["shape"])), " x ".join(f"{s:g}" for s in r["spacing"]),
             *list(r["label_voxels"].values())[1:], r["bytes"] / 2**20] for name, r in result["cases"].items()]
    labels = MR_LABELS if args.mri else CT_LABELS
    print()
    print(markdown_table(["case", "shape", "spacing mm", *[f"{n} voxels" for n in labels[1:]], "MiB (gz)"], rows))
    voxels = sum(int(np.prod(r["shape"])) for r in result["cases"].values())
    total = sum(r["bytes"] for r in result["cases"].values())
    print(f"\n{len(rows)} cases, {voxels / 1e9:.3f} G voxels, {total / 2**30:.2f} GiB of files, in {seconds:.0f} s "
          f"(this run) at {args.out}")
    if args.verify:
        nn = nnunet_folder(args.nnunet, args.dataset_id, args.mri) if args.nnunet is not None else None
        for line in verify(args.out, nn):
            print(line)
    if args.json:
        args.json.write_text(json.dumps(result | {"seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
