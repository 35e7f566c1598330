"""nnU-Net v2 ``2d`` for ``any_dataset.py``: raw dataset, fixed split, preprocessing, budgeted training.

The cases go to nnU-Net as a user of nnU-Net gives them (its ``imagesTr``/``labelsTr`` raw layout):
2D images as ``.png`` (RGB, or grey for grey sets: nnU-Net's natural-image reader) with 0/1 label
maps, the LGG slices each as a 2D case (as benchmarks/nnunet_plan_lgg.py writes them), the
hippocampus volumes as links to their NIfTI files (as benchmarks/nnunet_side_by_side.py). The fixed
split is fold 0 of ``splits_final.json``: training cases as ``train``, held-out cases as ``val``, so
nnU-Net's final validation predicts exactly the held-out cases (its per-epoch pseudo-validation also
draws from them, for its log and ``checkpoint_best`` only; the scored model is the final one).

Training is ``nnunet_budget_train.py`` (nnU-Net's own trainer, stopped by the wall clock, its poly
schedule fitted to the minutes), with the plan's batch replaced for a CPU: as many patches as hold
about 262,144 pixels (segkit's CPU batch rule), at least 2 and at most the plan's; the hippocampus
takes 32, the batch of its side-by-side (docs/benchmarks/nnunet-side-by-side.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from any_dataset_sets import BenchmarkSet, binary_mask, folder_pairs, lgg_slices, volume_files
from nnunet_side_by_side import nnunet_env, run

BUDGET_SCRIPT = Path(__file__).resolve().parent / "nnunet_budget_train.py"
DATASET_IDS = {"kvasir": 601, "ph2": 602, "hc18": 603, "lgg": 604, "hippocampus": 605}
GREY = {"hc18"}  # sets whose images are all grey: one channel for nnU-Net
PIXELS_PER_BATCH = 262_144
FIXED_BATCH = {"hippocampus": 32}


def dataset_name(key: str) -> str:
    return f"Dataset{DATASET_IDS[key]:03d}_{key}"


def _png(path: Path, array: np.ndarray) -> None:
    if not path.is_file():
        if not cv2.imwrite(str(path), array):
            sys.exit(f"error: could not write {path}")


def write_raw(spec: BenchmarkSet, root: Path, cases: list[str], raw: Path) -> dict[str, list[str]]:
    """nnU-Net's raw dataset of ``cases``; returns case -> its nnU-Net case ids (LGG: one per slice)."""
    folder = raw / dataset_name(spec.key)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    if spec.layout == "msd":
        files = volume_files(root)
        listing = json.loads((root / "dataset.json").read_text())
        for case in cases:
            image, label = files[case]
            for link, target in ((folder / "imagesTr" / f"{case}_0000.nii.gz", image),
                                 (folder / "labelsTr" / f"{case}.nii.gz", label)):
                if not link.is_symlink():
                    link.symlink_to(target)
            ids[case] = [case]
        channels = listing.get("modality", {"0": "MRI"})
        labels = {"background": 0, **{name: int(value) for value, name in listing["labels"].items() if int(value)}}
        ending = ".nii.gz"
    else:
        grey = spec.key in GREY
        flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
        if spec.layout == "folder":
            pairs = folder_pairs(spec, root)
            slices = {case: [(case, *pairs[case])] for case in cases}
        else:  # lgg: each slice a 2D case
            slices = {case: [(image.stem, image, mask) for image, mask in lgg_slices(root, case)] for case in cases}
        for case, members in slices.items():
            ids[case] = []
            for item, image, mask in members:
                target = folder / "imagesTr" / f"{item}_0000.png"
                if not target.is_file():
                    pixels = cv2.imread(str(image), flag)
                    if pixels is None:
                        sys.exit(f"error: OpenCV cannot read {image} for nnU-Net's raw dataset")
                    _png(target, pixels)
                _png(folder / "labelsTr" / f"{item}.png", binary_mask(mask))
                ids[case].append(item)
        channels = {"0": "grey"} if grey else {"0": "R", "1": "G", "2": "B"}
        labels = {"background": 0, "lesion": 1}
        ending = ".png"
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": channels, "labels": labels, "numTraining": sum(len(v) for v in ids.values()),
        "file_ending": ending, "name": spec.key}, indent=2))
    return ids


def preprocess(key: str, env: dict, bin_dir: Path, threads: int, work: Path) -> dict:
    """Plan and preprocess ``2d`` once (skipped when done); returns the plans."""
    plans_path = work / "nnUNet_preprocessed" / dataset_name(key) / "nnUNetPlans.json"
    if not (plans_path.is_file() and (plans_path.parent / "nnUNetPlans_2d").is_dir()):
        print("  nnU-Net: plan and preprocess 2d", flush=True)
        run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_IDS[key]), "-c", "2d",
             "-np", str(threads), "--verify_dataset_integrity"], env, work / "nnunet-preprocess.log")
    return json.loads(plans_path.read_text())


def write_split(key: str, train: list[str], test: list[str], work: Path) -> None:
    """Fold 0 = the fixed split (training cases train, held-out cases validate)."""
    path = work / "nnUNet_preprocessed" / dataset_name(key) / "splits_final.json"
    path.write_text(json.dumps([{"train": sorted(train), "val": sorted(test)}], indent=1))


def cpu_batch(key: str, plans: dict) -> int:
    """The batch for a CPU: the hippocampus's 32, else about 262,144 pixels, at least 2, at most the plan's."""
    if key in FIXED_BATCH:
        return FIXED_BATCH[key]
    two_d = plans["configurations"]["2d"]
    pixels = int(np.prod(two_d["patch_size"]))
    return int(max(2, min(two_d["batch_size"], PIXELS_PER_BATCH // pixels)))


def train(key: str, train_ids: list[str], test_ids: list[str], *, python: Path, minutes: float, threads: int,
          iterations: int, val_iterations: int, mirroring: bool, work: Path) -> dict:
    """Preprocess, write the split, train ``2d`` for ``minutes`` and predict the held-out cases (each once)."""
    env = nnunet_env(work, threads)
    plans = preprocess(key, env, python.parent, threads, work)
    write_split(key, train_ids, test_ids, work)
    record = work / "nnunet-2d.json"
    if not record.is_file():
        batch = cpu_batch(key, plans)
        print(f"  nnU-Net 2d: {minutes:g} minutes of training, batch {batch} of "
              f"{'x'.join(map(str, plans['configurations']['2d']['patch_size']))}", flush=True)
        started = time.monotonic()
        out = run([str(python), str(BUDGET_SCRIPT), "--dataset", str(DATASET_IDS[key]), "--configuration", "2d",
                   "--fold", "0", "--minutes", str(minutes), "--threads", str(threads), "--iterations", str(iterations),
                   "--val-iterations", str(val_iterations), "--batch-size", str(batch),
                   *([] if mirroring else ["--no-mirroring"])], env, work / "nnunet-2d.log")
        info = json.loads(out.strip().splitlines()[-1])
        info["wall_seconds"] = round(time.monotonic() - started, 1)
        info["plan_batch_size"] = plans["configurations"]["2d"]["batch_size"]
        record.write_text(json.dumps(info, indent=1))
    return json.loads(record.read_text())


def label_map(path: Path) -> np.ndarray:
    """A predicted label map: a 2D ``.png`` or a NIfTI volume, as integers."""
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(path).dataobj).astype(np.int64)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        sys.exit(f"error: cannot read nnU-Net's prediction {path}")
    return array.astype(np.int64)
