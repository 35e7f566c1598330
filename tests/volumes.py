"""Small NIfTI datasets in the Decathlon layout, written with nibabel, for the volume tests."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "hippocampus"


def ellipsoid_case(shape: Sequence[int], seed: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(image (X, Y, Z, C) float32, label (X, Y, Z) uint8)``: a two-label ellipsoid in noise, bright where labelled."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    centre = rng.uniform(-0.2, 0.2, 3)
    inside = sum(((g - c) / 0.5) ** 2 for g, c in zip(grid, centre, strict=True)) < 1
    label = np.where(inside, np.where(grid[0] < centre[0], 1, 2), 0).astype(np.uint8)
    image = rng.normal(100.0, 10.0, (*shape, channels)).astype(np.float32)
    image += (label[..., None] > 0) * 60.0 * (1 + np.arange(channels))
    return image, label


def write_msd(root: Path, cases: int = 3, shape: Sequence[int] = (20, 24, 12), channels: int = 1,
              spacing: Sequence[float] = (1.0, 1.0, 2.0), layout: str = "4d", label_dtype: type = np.uint8,
              list_training: bool = True, shapes: Sequence[Sequence[int]] = ()) -> Path:
    """A Decathlon folder of ``cases`` synthetic volumes; ``layout`` "4d" (channels last) or "split" (_0000 files).

    ``shapes``: the shape of each case in turn (the rest have ``shape``)."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    training = []
    for k in range(cases):
        name = f"vol_{k:03d}"
        image, label = ellipsoid_case(shapes[k] if k < len(shapes) else shape, seed=k, channels=channels)
        if layout == "4d":
            array = image if channels > 1 else image[..., 0]
            nib.save(nib.Nifti1Image(array, affine), root / "imagesTr" / f"{name}.nii.gz")
        else:
            for c in range(channels):
                nib.save(nib.Nifti1Image(image[..., c], affine), root / "imagesTr" / f"{name}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(label_dtype), affine), root / "labelsTr" / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    description = {"name": "synthetic", "modality": {str(c): f"MR{c}" for c in range(channels)},
                   "labels": {"0": "background", "1": "front", "2": "back"}}
    if list_training:
        description["training"] = training
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def hippocampus_subset(target: Path, count: int = 4) -> Path:
    """A Decathlon folder of links to the first ``count`` hippocampus cases, with its own dataset.json."""
    description = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    chosen = description["training"][:count]
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for entry in chosen:
        for key in ("image", "label"):
            os.symlink((HIPPOCAMPUS / entry[key]).resolve(), target / entry[key])
    (target / "dataset.json").write_text(json.dumps({**description, "training": chosen, "numTraining": count}))
    return target
