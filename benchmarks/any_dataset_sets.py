"""The datasets of ``any_dataset.py``: where each lives, its fixed split, its views, its truth, its reference.

A *view* is a folder that holds some cases of a dataset through symbolic links, in the dataset's own
layout, so that ``segkit plan`` / ``segkit run`` see the training cases only and ``segkit evaluate RUN
--data-root VIEW`` sees the held-out cases only. (``dataset.cases`` restricts plan and run just as well,
but a run's ``config.toml`` then keeps those ids, and ``segkit evaluate`` has no way to give it other
cases: with ``--data-root`` it keeps the run's parameters, ``cases`` included.)

Truth for scoring is read here, by one function per kind, for every method alike: a binary mask is the
first channel above half its type's range (above 0 for 0/1 masks), so JPEG masks (values near 0 and
near 255) and 1-bit BMPs read as 0/1; the hippocampus labels are the NIfTI values.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common import REPO

SHARED = REPO.parent / "shared" / "data"
DATA = Path("/work/data")
HIPPO_FOLD0 = REPO / "benchmarks" / "results" / "hippocampus" / "plan3d-fold0-last.csv"


@dataclass(frozen=True)
class BenchmarkSet:
    """One dataset of the benchmark: how segkit reads it and how it is split, scored and quoted."""

    key: str
    dataset: str                      # segkit's dataset name
    root: Path                        # the default data root
    layout: str                       # folder | lgg | msd
    unit: str                         # what one row of the table is: image, patient or volume
    reference: str                    # the published figure, one line
    params: dict = field(default_factory=dict)  # dataset parameters beyond the root (folder's mask_suffix)
    labels: tuple[str, ...] = ("lesion",)
    rebuild: str = ""                 # how to get the data when it is missing

    def set_options(self) -> list[str]:
        """``--set k=v`` options for the dataset parameters (values as TOML)."""
        return [option for key, value in self.params.items() for option in ("--set", f"{key}={json.dumps(value)}")]


SETS = {s.key: s for s in (
    BenchmarkSet("kvasir", "folder", SHARED / "kvasir-seg", "folder", "image",
                 "U-Net 0.818 mean Dice per image (PraNet, MICCAI 2020: 900 Kvasir + 550 CVC-ClinicDB training, "
                 "100 Kvasir test); 880/120 split of Jha et al. 2021: U-Net 0.597, ResNet-34 U-Net 0.876"),
    BenchmarkSet("ph2", "folder", DATA / "ph2", "folder", "image",
                 "DSNet mean IoU 0.870 (Hasan et al., CBM 2020; PH2 as a second test set); no same-split U-Net "
                 "Dice verified", params={"mask_suffix": "_lesion"}, rebuild="benchmarks/public2d/ph2.py"),
    BenchmarkSet("hc18", "folder", DATA / "hc18", "folder", "image",
                 "Dice 0.979 (DAG V-Net, Zeng et al., J Digit Imaging 2021; trained on the 999, challenge test set "
                 "of 335)", params={"mask_suffix": "_Annotation"}, rebuild="benchmarks/public2d/hc18.py"),
    BenchmarkSet("lgg", "lgg", SHARED / "lgg" / "kaggle_3m", "lgg", "patient",
                 "U-Net 0.82 mean Dice per patient (Buda et al., CBM 2019: 110 patients, cross-validation)"),
    BenchmarkSet("hippocampus", "msd", SHARED / "hippocampus", "msd", "volume",
                 "nnU-Net about 0.90 anterior / 0.89 posterior (MSD Task04, 260 cases)",
                 labels=("Anterior", "Posterior")),
)}


def read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def hash_split(cases: list[str], salt: str, share: float = 0.2) -> tuple[list[str], list[str]]:
    """(kept cases in their order, held-out cases sorted): the ``share`` with the smallest sha256 of
    ``"<salt>/<case>"`` are held out, so the split depends on the names only."""
    ranked = sorted(cases, key=lambda c: hashlib.sha256(f"{salt}/{c}".encode()).hexdigest())
    held_out = set(ranked[:round(share * len(cases))])
    return [c for c in cases if c not in held_out], sorted(held_out)


def fixed_split(spec: BenchmarkSet, root: Path) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases) of the benchmark's fixed split.

    - folder sets: the set's own ``train.txt`` / ``test.txt`` (Kvasir-SEG's README; the public2d scripts).
    - lgg: the 20% of patients (6 of 29) with the smallest sha256 of "lgg/<patient>" are held out.
    - hippocampus: fold 0 of the kept side-by-side, the 39 cases of ``results/hippocampus/plan3d-fold0-last.csv``.
    """
    if spec.layout == "folder":
        missing = [name for name in ("train.txt", "test.txt") if not (root / name).is_file()]
        if missing:
            raise SystemExit(f"error: {root} has no {' or '.join(missing)}: the fixed split comes with the set"
                             + (f" (rebuild it: python {spec.rebuild})" if spec.rebuild else ""))
        return read_ids(root / "train.txt"), read_ids(root / "test.txt")
    if spec.layout == "lgg":
        return hash_split(sorted(p.name for p in root.iterdir() if p.is_dir()), "lgg")
    with HIPPO_FOLD0.open() as handle:
        held_out = sorted(row["case"] for row in csv.DictReader(handle))
    cases = sorted(volume_files(root))
    return [c for c in cases if c not in set(held_out)], held_out


def volume_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """Decathlon case id -> (image, label), from ``dataset.json``'s training list."""
    listing = json.loads((root / "dataset.json").read_text())
    files = {}
    for entry in listing["training"]:
        image = (root / entry["image"]).resolve()
        files[image.name.removesuffix(".nii.gz")] = (image, (root / entry["label"]).resolve())
    return files


def folder_pairs(spec: BenchmarkSet, root: Path) -> dict[str, tuple[Path, Path]]:
    """Image id (stem) -> (image, mask) of a folder set; the mask is the stem plus ``mask_suffix``."""
    suffix = spec.params.get("mask_suffix", "")
    images = {p.stem: p for p in sorted((root / "images").iterdir()) if p.is_file()}
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.is_file()}
    missing = [stem for stem in images if stem + suffix not in masks]
    if missing:
        raise SystemExit(f"error: {root}/masks has no {missing[0]}{suffix}.* (and {len(missing) - 1} more missing)")
    return {stem: (path, masks[stem + suffix]) for stem, path in images.items()}


def lgg_slices(root: Path, patient: str) -> list[tuple[Path, Path]]:
    """(image, mask) of each slice of one LGG patient, in slice order."""
    folder = root / patient
    images = [p for p in folder.glob("*.tif") if not p.stem.endswith("_mask")]
    images.sort(key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [(p, p.with_name(p.stem + "_mask.tif")) for p in images]


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def make_view(spec: BenchmarkSet, root: Path, cases: list[str], view: Path) -> Path:
    """A folder holding ``cases`` of the dataset at ``root`` through links, in its own layout; returns it."""
    root = root.resolve()
    view.mkdir(parents=True, exist_ok=True)
    if spec.layout == "folder":
        pairs = folder_pairs(spec, root)
        unknown = [c for c in cases if c not in pairs]
        if unknown:
            raise SystemExit(f"error: {root} has no image {unknown[0]!r} named by the split")
        for sub in ("images", "masks"):
            (view / sub).mkdir(exist_ok=True)
            for stale in (view / sub).iterdir():
                stale.unlink()
        for case in cases:
            image, mask = pairs[case]
            _link(view / "images" / image.name, image)
            _link(view / "masks" / mask.name, mask)
    elif spec.layout == "lgg":
        for stale in view.iterdir():
            stale.unlink()
        for case in cases:
            _link(view / case, root / case)
        if (root / "data.csv").is_file():
            _link(view / "data.csv", root / "data.csv")
    else:
        files = volume_files(root)
        listing = json.loads((root / "dataset.json").read_text())
        for sub in ("imagesTr", "labelsTr"):
            (view / sub).mkdir(exist_ok=True)
            for stale in (view / sub).iterdir():
                stale.unlink()
        for case in cases:
            image, label = files[case]
            _link(view / "imagesTr" / image.name, image)
            _link(view / "labelsTr" / label.name, label)
        listing["training"] = [{"image": f"./imagesTr/{files[c][0].name}", "label": f"./labelsTr/{files[c][1].name}"}
                               for c in cases]
        listing["numTraining"] = len(cases)
        (view / "dataset.json").write_text(json.dumps(listing, indent=1))
    return view


def binary_mask(path: Path) -> np.ndarray:
    """A mask file as 0/1: first channel, above half its type's range (above 0 when it holds only 0 and 1)."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:  # formats OpenCV does not decode (GIF)
        from PIL import Image

        array = np.asarray(Image.open(path))
    if array.ndim == 3:
        array = array[..., 0]
    if array.max() <= 1:
        return (array > 0).astype(np.uint8)
    half = np.iinfo(array.dtype).max / 2 if np.issubdtype(array.dtype, np.integer) else 0.5
    return (array > half).astype(np.uint8)


def counts(prediction: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(tp, fp, fn) of a binary prediction against a binary truth of the same shape."""
    p, t = prediction.astype(bool), truth.astype(bool)
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())


def dice(tp: int, fp: int, fn: int) -> float:
    """Dice from counts; 1.0 where truth and prediction are both empty (segkit's and this table's convention)."""
    total = 2 * tp + fp + fn
    return 1.0 if total == 0 else 2.0 * tp / total
