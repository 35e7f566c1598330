"""Rebuild HC18 (999 fetal head ultrasound images with head masks) from a public repository's copy.

HC18 (van den Heuvel et al., PLoS ONE 2018; Radboud UMC; Zenodo 1327317, CC BY 4.0) ships its 999
training images as ``training_set/NNN_HC.png`` (8-bit grey, most 800x540) with ``NNN_HC_Annotation.png``
beside each: the sonographer's ellipse fitted to the skull, drawn as a one-pixel **outline** (0/255).
A pregnancy with several images has ``NNN_2HC.png``, ``NNN_3HC.png``...; the 335 test images have no
public annotation. The copy read here is the one committed to
github.com/suraj7974/Tensorflow-Keras-UNET-model-for-Fetal-dataset at commit e5b9e79 (2023-12-10; a
later commit deleted it): the complete training set, images and outlines as released.

Segmentation papers on HC18 segment the head, the ellipse's inside, so the masks are that region:

    masks/NNN_HC_Annotation.png   the outline filled (scipy.ndimage.binary_fill_holes), 0/255 PNG; where
                                  the ellipse leaves the image the outline is open (4 images: 186_HC,
                                  346_HC, 628_2HC, 787_HC) and the region is the ellipse fitted to the
                                  outline's pixels (cv2.fitEllipse), drawn filled, plus the outline
    outlines/NNN_HC_Annotation.png  the released outlines, bytes unchanged
    images/NNN_HC.png             the released images, bytes unchanged
    train.txt, test.txt           image ids (NNN_HC, NNN_2HC, ...): the test split holds the pregnancies
                                  with the smallest sha256 of "hc18/<NNN>", all their images, 12% in all
    README.md                     citation, licence, published figures

Read it as ``segkit ... --dataset folder --data-root /work/data/hc18 --set mask_suffix=_Annotation``.

    python benchmarks/public2d/hc18.py [--mirror DIR] [--out /work/data/hc18]

Without the mirror, fetch github:suraj7974/Tensorflow-Keras-UNET-model-for-Fetal-dataset with the
search tool first. The script is idempotent: a second run writes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from rebuild import DATA, check_mirror, git_files, hash_split, mirror_path, split_text, write_set

SOURCE = "suraj7974/Tensorflow-Keras-UNET-model-for-Fetal-dataset"
COMMIT = "e5b9e795112fbdc5923a315f69956c50ca9054fd"
PREFIX = "training_set/"
NAME = "hc18"
TEST_FRACTION = 0.12

README = """# HC18 (fetal head in 2D ultrasound), rebuilt for segkit's benchmarks

T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken, "Automated measurement of fetal
head circumference using 2D ultrasound images", PLoS ONE 13(8): e0200412, 2018,
doi:10.1371/journal.pone.0200412. Data: Zenodo record 1327317; challenge: hc18.grand-challenge.org.

Licence: CC BY 4.0 (the Zenodo record), citing the paper above. The data stays out of the segkit
repository all the same.

Source of this copy: github.com/{source}, commit {commit} (the release's `training_set/`, unchanged;
the test images are not used: their annotations are not public). Rebuilt by benchmarks/public2d/hc18.py.

## Contents
- `images/NNN_HC.png`: {n_images} grey ultrasound images (975 of them 800x540, the others from 738 to
  800 wide and 539 to 563 high), from {n_subjects} pregnancies
  (`NNN_2HC.png`, `NNN_3HC.png`, ... are further images of pregnancy NNN). Bytes unchanged.
- `outlines/NNN_HC_Annotation.png`: the released annotation, the fitted ellipse drawn as a one-pixel
  outline. Bytes unchanged.
- `masks/NNN_HC_Annotation.png`: the head, the outline filled (0/255 PNG). {n_open} outlines leave the
  image and are open ({open_list}); their region is the ellipse fitted to the outline (cv2.fitEllipse)
  drawn filled. This is the derived part: segmentation papers on HC18 segment this region.
- Pairs differ by a name pattern: mask = image stem + `_Annotation`. Read with
  `--dataset folder --set mask_suffix=_Annotation` (each image its own case; add
  `case_pattern='^(\\d+)_'` to group a pregnancy's images).

## Split
The challenge's test set has no public annotation, so the 999 training images are split here, by
pregnancy: `test.txt` holds every image of the pregnancies with the smallest sha256 of "hc18/" + NNN,
until it has 12% of the images ({n_test} images of {n_test_subjects} pregnancies); `train.txt` the other
{n_train}. Train and choose on `train.txt`; score `test.txt` once.

## Published figures (Dice of the head region, on the challenge's 335 test images)
- Zeng et al., "Fetal ultrasound image segmentation for automatic head circumference biometry using
  deeply supervised attention-gated V-Net", Journal of Digital Imaging 34:134-148, 2021: trained on the
  999 training images (augmented), Dice **0.9793** (ranked fifth in the challenge).
- "Improving fetal head contour detection by object localisation with deep learning" (a localisation
  network in front of a fully convolutional segmentation): trained on the 999, Dice 0.9773 +- 0.0132 on
  the 335 test images.
The challenge ranks by head circumference error; these papers fit an ellipse to the segmentation
before scoring. A split of the training set, as here, is not the challenge's test set.
"""


def head_mask(outline: np.ndarray) -> tuple[np.ndarray, bool]:
    """The region inside an ellipse outline (0/255, uint8), and whether the outline was open."""
    drawn = outline > 0
    filled = ndimage.binary_fill_holes(drawn)
    if filled.sum() >= 3 * drawn.sum():  # a closed ellipse encloses far more than its own outline
        return filled.astype(np.uint8) * 255, False
    ys, xs = np.nonzero(drawn)
    ellipse = cv2.fitEllipse(np.stack([xs, ys], axis=1).astype(np.float32))
    region = np.zeros(drawn.shape, np.uint8)
    cv2.ellipse(region, ellipse, 255, thickness=-1)
    region[drawn] = 255
    return region, True


def encode_png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def collect(files: dict[str, bytes]) -> tuple[dict[str, bytes], list[str], list[str]]:
    """Output files (relative path -> bytes), the image ids, and the ids whose outline was open."""
    pattern = re.compile(rf"^{PREFIX}(\d{{3}}_\d*HC)\.png$")
    out: dict[str, bytes] = {}
    ids, opened = [], []
    for path in sorted(files):
        found = pattern.match(path)
        if not found:
            continue
        item = found.group(1)
        annotation = files.get(f"{PREFIX}{item}_Annotation.png")
        if annotation is None:
            sys.exit(f"error: {SOURCE}@{COMMIT[:7]} has {path} but no {item}_Annotation.png")
        outline = cv2.imdecode(np.frombuffer(annotation, np.uint8), cv2.IMREAD_GRAYSCALE)
        mask, was_open = head_mask(outline)
        out[f"images/{item}.png"] = files[path]
        out[f"outlines/{item}_Annotation.png"] = annotation
        out[f"masks/{item}_Annotation.png"] = encode_png(mask)
        ids.append(item)
        if was_open:
            opened.append(item)
    if len(ids) != 999:
        sys.exit(f"error: expected the 999 HC18 training images in {SOURCE}@{COMMIT[:7]}, found {len(ids)}")
    return out, ids, opened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=mirror_path(SOURCE),
                        help="bare git directory of the source repository (default: the fetched snapshot)")
    parser.add_argument("--out", type=Path, default=DATA / NAME)
    args = parser.parse_args(argv)

    check_mirror(args.mirror, COMMIT, SOURCE)
    files, ids, opened = collect(git_files(args.mirror, COMMIT, PREFIX))

    def pregnancy(item: str) -> str:
        return item.split("_")[0]

    train, test = hash_split(ids, NAME, TEST_FRACTION, group_of=pregnancy)
    files["train.txt"], files["test.txt"] = split_text(train), split_text(test)
    files["README.md"] = README.format(
        source=SOURCE, commit=COMMIT, n_images=len(ids), n_subjects=len({pregnancy(i) for i in ids}),
        n_open=len(opened), open_list=", ".join(opened), n_test=len(test),
        n_test_subjects=len({pregnancy(i) for i in test}), n_train=len(train)).encode()
    write_set(args.out, files, {"repository": SOURCE, "commit": COMMIT,
                                "masks": "outlines filled; open outlines: fitted ellipse filled",
                                "split": f"test: pregnancies with the smallest sha256 of '{NAME}/<NNN>', "
                                         f"{TEST_FRACTION:.0%} of the images"})
    print(f"HC18: {len(ids)} images ({len(train)} train, {len(test)} test), {len(opened)} open outline(s) "
          f"filled by a fitted ellipse ({', '.join(opened)}); read with --dataset folder --data-root "
          f"{args.out} --set mask_suffix=_Annotation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
