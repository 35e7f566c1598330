"""How bright each LGG patient's lesion reaches the model after per-case normalisation.

For every patient folder of the Kaggle LGG layout, the FLAIR channel's factor of
``dataset.normalize = "case"`` (:func:`segkit.data.intensity.case_factors`: 204 over the
99th percentile of non-zero pixels, all slices) and the same factor taken over the central
half of the slices only (a rule that would not see the neck at the bottom of a long volume),
with the mean FLAIR value of the lesion pixels after each. A patient whose lesion arrives
much dimmer than the others' is one the model is likely to miss.

    python benchmarks/notes/2026-11-lgg-recipe/lgg_flair_scale.py ../shared/data/lgg/kaggle_3m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/common.py
from common import markdown_table  # noqa: E402
from segkit.data.intensity import case_factors
from segkit.errors import SegkitError
from segkit.components.registry import get_registry

FLAIR = 1  # segkit reads LGG slices as RGB: (pre-contrast, FLAIR, post-contrast)


def patient_row(dataset, case: str) -> list[object]:
    """One patient's slices, read once through segkit's LGG dataset (its files, its slice order)."""
    pairs = [dataset.read_raw(i) for i in dataset.case_positions(case)]
    slices = [image for image, _ in pairs]
    masks = np.stack([mask > 0 for _, mask in pairs])
    flair = np.stack([image[:, :, FLAIR] for image in slices]).astype(np.float64)
    quarter = len(slices) // 4
    whole = case_factors(slices)[FLAIR]
    central = case_factors(slices[quarter:len(slices) - quarter])[FLAIR]
    lesion = float(flair[masks].mean()) if masks.any() else float("nan")
    return [case, len(slices), int(masks.sum()), round(whole, 2), round(lesion * whole, 1),
            round(central, 2), round(lesion * central, 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the kaggle_3m folder (one folder of .tif slices per patient)")
    args = parser.parse_args(argv)
    try:
        dataset = get_registry().build("dataset", "lgg", root=str(args.root))
    except SegkitError as error:
        sys.exit(f"error: {error}")
    rows = [patient_row(dataset, case) for case in dict.fromkeys(dataset.cases)]
    print(markdown_table(["patient", "slices", "lesion pixels", "FLAIR factor", "lesion mean after",
                          "factor, central half", "lesion mean after (central)"], rows))
    factors = np.array([row[3] for row in rows], dtype=float)
    print(f"\nFLAIR factor over all slices: median {np.median(factors):.2f}, range {factors.min():.2f} - {factors.max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
