"""How bright each LGG patient's lesion reaches the model after per-case normalisation.

For every patient folder of the Kaggle LGG layout, the FLAIR channel's factor of
``dataset.normalize = "case"`` (:func:`segkit.data.intensity.case_factors`: 204 over the
99th percentile of non-zero pixels, all slices) and the same factor taken over the central
half of the slices only (a rule that would not see the neck at the bottom of a long volume),
with the mean FLAIR value of the lesion pixels after each. A patient whose lesion arrives
much dimmer than the others' is one the model is likely to miss.

    python benchmarks/lgg_flair_scale.py ../shared/data/lgg/kaggle_3m
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from common import markdown_table
from segkit.data.intensity import case_factors

FLAIR = 1  # the Kaggle LGG images hold (pre-contrast, FLAIR, post-contrast) in every channel order cv2 reads


def slice_number(path: Path) -> int:
    return int(re.search(r"_(\d+)\.tif$", path.name).group(1))


def patient_row(folder: Path) -> list[object]:
    images = sorted((p for p in folder.glob("*.tif") if not p.name.endswith("_mask.tif")), key=slice_number)
    slices = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in images]
    masks = np.stack([cv2.imread(str(p.with_name(p.stem + "_mask.tif")), cv2.IMREAD_GRAYSCALE) > 0 for p in images])
    flair = np.stack([s[:, :, FLAIR] for s in slices]).astype(np.float64)
    quarter = len(slices) // 4
    whole = case_factors(slices)[FLAIR]
    central = case_factors(slices[quarter:len(slices) - quarter])[FLAIR]
    lesion = float(flair[masks].mean()) if masks.any() else float("nan")
    return [folder.name, len(slices), int(masks.sum()), round(whole, 2), round(lesion * whole, 1),
            round(central, 2), round(lesion * central, 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the kaggle_3m folder (one folder of .tif slices per patient)")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.root.glob("TCGA_*") if p.is_dir())
    if not folders:
        sys.exit(f"error: {args.root} holds no TCGA_* patient folders; give the kaggle_3m folder of the LGG set.")
    rows = [patient_row(folder) for folder in folders]
    print(markdown_table(["patient", "slices", "lesion pixels", "FLAIR factor", "lesion mean after",
                          "factor, central half", "lesion mean after (central)"], rows))
    factors = np.array([row[3] for row in rows], dtype=float)
    print(f"\nFLAIR factor over all slices: median {np.median(factors):.2f}, range {factors.min():.2f} - {factors.max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
