"""nnU-Net v2's own plans for the LGG patients, beside ``segkit plan``'s (docs/benchmarks/nnunet-side-by-side.md,
"segkit plan beside nnU-Net's plans").

The LGG set is 2D: each patient is a folder of 256x256 three-channel FLAIR-centred slices. It goes to nnU-Net
in the form a user of nnU-Net gives such data, each slice a 2D case (a ``.png`` with the three channels, the
mask 0/1 beside it: nnU-Net's natural-image reader), and nnU-Net extracts its fingerprint and plans its ``2d``
configuration (a dataset of 2D images has no 3D one). Only planning runs; nothing is trained or preprocessed.

nnU-Net is never installed into segkit's environment: give the Python of a separate one (see
benchmarks/nnunet_side_by_side.py).

    .venv/bin/python benchmarks/nnunet_plan_lgg.py --data-root ../shared/data/lgg/kaggle_3m \\
        --nnunet-python /work/nnunet-venv/bin/python --work runs/nnunet-lgg-plan

Prints the planned ``2d`` configuration and writes ``plans-2d.json`` (the part of ``nnUNetPlans.json`` the
table quotes) into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

DATASET_ID = 501
DATASET_NAME = "Dataset501_LGG"


def write_raw_dataset(data_root: Path, raw: Path) -> int:
    """Each slice of each patient as an nnU-Net 2D case (``PATIENT_SLICE_0000.png`` and its 0/1 mask)."""
    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    count = 0
    for patient in sorted(p for p in data_root.iterdir() if p.is_dir()):
        for image_path in sorted(patient.glob("*.tif")):
            if image_path.stem.endswith("_mask"):
                continue
            mask_path = image_path.with_name(image_path.stem + "_mask.tif")
            case = image_path.stem.replace("-", "_")
            target = folder / "imagesTr" / f"{case}_0000.png"
            if not target.is_file():
                image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
                mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(target), image)
                cv2.imwrite(str(folder / "labelsTr" / f"{case}.png"), (mask > 127).astype(np.uint8))
            count += 1
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": count, "file_ending": ".png", "name": "LGG",
    }, indent=2))
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--nnunet-python", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/nnunet-lgg-plan"))
    args = parser.parse_args(argv)
    work = args.work.resolve()
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"), OMP_NUM_THREADS="2")
    cases = write_raw_dataset(args.data_root, work / "nnUNet_raw")
    print(f"{cases} slices written as nnU-Net 2D cases")
    bin_dir = args.nnunet_python.parent
    for command in (["nnUNetv2_extract_fingerprint", "-d", str(DATASET_ID), "-np", "2"],
                    ["nnUNetv2_plan_experiment", "-d", str(DATASET_ID)]):
        result = subprocess.run([str(bin_dir / command[0]), *command[1:]], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: {command[0]} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    plans = json.loads((work / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json").read_text())
    two_d = plans["configurations"]["2d"]
    keep = {key: two_d.get(key) for key in ("patch_size", "batch_size", "spacing", "median_image_size_in_voxels",
                                            "normalization_schemes", "use_mask_for_norm")}
    keep["architecture"] = two_d.get("architecture")
    keep["configurations"] = sorted(plans["configurations"])
    (work / "plans-2d.json").write_text(json.dumps(keep, indent=2))
    print(json.dumps(keep, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
