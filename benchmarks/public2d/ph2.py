"""Rebuild PH2 (200 dermoscopic images, skin lesion masks) from a public repository's copy.

PH2 (Mendonca et al., EMBC 2013; ADDI project, Hospital Pedro Hispano, Matosinhos) as its release lays it
out: ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` (24-bit RGB BMP, 761x570 to
769x577) and ``IMDxxx_lesion/IMDxxx_lesion.bmp`` (the lesion: 199 of them 1-bit BMPs with a two-colour
palette, IMD002's a 24-bit top-down BMP; 0 and 255 once decoded). The copy read here is the one committed to
github.com/chelseaparlett/SkinCancerVariation (commit e06866b, 2 commits, no licence of its own): the
complete release, plus a JPEG version of every lesion mask that repository's author made with
ImageMagick.

Written to ``--out`` (default /work/data/ph2), outside the repository, in segkit's ``folder`` layout:

    images/IMDxxx.bmp            the dermoscopic image, bytes unchanged
    masks/IMDxxx_lesion.bmp      the lesion mask, bytes unchanged (``--masks jpg``: IMDxxx_lesion.jpg,
                                 that repository's JPEG copies, to test lossy masks)
    train.txt, test.txt          160 / 40 ids: the 20% of ids with the smallest sha256 of "ph2/<id>"
    PH2_dataset.txt              the release's per-image table (diagnosis, dermoscopic criteria)
    README.md                    citation, licence, published figures

Read it as ``segkit ... --dataset folder --data-root /work/data/ph2 --set mask_suffix=_lesion``.

    python benchmarks/public2d/ph2.py [--mirror DIR] [--out /work/data/ph2] [--masks bmp|jpg]

Without the mirror, fetch github:chelseaparlett/SkinCancerVariation with the search tool first (or clone
it and pass --mirror CLONE/.git). The script is idempotent: a second run writes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rebuild import DATA, check_mirror, git_files, hash_split, mirror_path, split_text, write_set

SOURCE = "chelseaparlett/SkinCancerVariation"
COMMIT = "e06866b70a49acfba5762f289ca169f056e97997"
PREFIX = "PH2Dataset/"
NAME = "ph2"
TEST_FRACTION = 0.20  # 40 of 200: 12% (Kvasir's share) would score only 24 images

README = """# PH2 (dermoscopic images, skin lesion segmentation), rebuilt for segkit's benchmarks

T. Mendonca, P. M. Ferreira, J. S. Marques, A. R. S. Marcal, J. Rozeira, "PH2 - A dermoscopic image
database for research and benchmarking", 35th Annual International Conference of the IEEE EMBS (EMBC),
2013, pp. 5437-5440, doi:10.1109/EMBC.2013.6610779. Database page: https://www.fc.up.pt/addi/ph2%20database.html

Licence: made available by the ADDI project "for research and benchmarking purposes", citing the paper
above. Not for redistribution: this folder stays out of the segkit repository.

Source of this copy: github.com/{source}, commit {commit} (the release's folder tree, unchanged).
Rebuilt by benchmarks/public2d/ph2.py.

## Contents
- `images/IMDxxx.bmp`: 200 RGB dermoscopic images (24-bit BMP, 761x570 to 769x577), 80 common nevi,
  80 atypical nevi, 40 melanomas (`PH2_dataset.txt`, column "Clinical Diagnosis" 0/1/2).
- `masks/IMDxxx_lesion{mask_ext}`: the lesion, one per image; {mask_note}
- Pairs differ by a name pattern: mask = image stem + `_lesion`. Read with
  `--dataset folder --set mask_suffix=_lesion`.

## Split
No official split. `test.txt`: the {n_test} ids with the smallest sha256 of "ph2/" + id (20%);
`train.txt`: the other {n_train}. Train and choose on `train.txt`; score `test.txt` once.

## Published figures
- DSNet (Hasan et al., "DSNet: Automatic dermoscopic skin lesion segmentation", Computers in Biology
  and Medicine 120, 103738, 2020; arXiv 1907.04305): mean IoU **0.870** on PH2, with PH2 as a second
  test set (the abstract: "better-segmented masks on two different test datasets"; the network is a
  U-Net-like encoder-decoder trained on ISIC-2017). IoU, not Dice (Dice >= IoU per image).
- No same-split U-Net Dice on PH2 could be verified when this set was added; papers quote U-Net Dice
  around 0.87-0.90 on PH2 under varied protocols. Quote the split and setting with any comparison.
"""

MASK_NOTES = {
    "bmp": ("the release's BMP, unchanged: 199 are 1-bit BMPs with a two-colour palette, IMD002's a "
            "24-bit top-down BMP (three equal channels); 0 and 255 once decoded."),
    "jpg": ("that repository's JPEG conversion of the release's BMP (ImageMagick `convert`): values spread "
            "near 0 and near 255, as lossy masks do."),
}


def collect(files: dict[str, bytes], masks: str) -> tuple[dict[str, bytes], list[str]]:
    """The output files (relative path -> bytes) and the image ids, checked complete."""
    pattern = re.compile(r"PH2 Dataset images/(IMD\d{3})/IMD\d{3}_Dermoscopic_Image/(IMD\d{3})\.bmp$")
    out: dict[str, bytes] = {}
    ids = []
    for path, data in files.items():
        found = pattern.search(path)
        if not found or found.group(1) != found.group(2):
            continue
        item = found.group(1)
        mask_path = f"{PREFIX}PH2 Dataset images/{item}/{item}_lesion/{item}_lesion.{masks}"
        if mask_path not in files:
            sys.exit(f"error: {SOURCE}@{COMMIT[:7]} has {path} but no {mask_path}")
        out[f"images/{item}.bmp"] = data
        out[f"masks/{item}_lesion.{masks}"] = files[mask_path]
        ids.append(item)
    if len(ids) != 200:
        sys.exit(f"error: expected the 200 PH2 images in {SOURCE}@{COMMIT[:7]}, found {len(ids)}")
    out["PH2_dataset.txt"] = files[f"{PREFIX}PH2_dataset.txt"]
    return out, sorted(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=mirror_path(SOURCE),
                        help="bare git directory of the source repository (default: the fetched snapshot)")
    parser.add_argument("--out", type=Path, default=DATA / NAME)
    parser.add_argument("--masks", choices=sorted(MASK_NOTES), default="bmp",
                        help="bmp: the release's masks (default); jpg: that repository's JPEG copies")
    args = parser.parse_args(argv)

    check_mirror(args.mirror, COMMIT, SOURCE)
    files, ids = collect(git_files(args.mirror, COMMIT, PREFIX), args.masks)
    train, test = hash_split(ids, NAME, TEST_FRACTION)
    files["train.txt"], files["test.txt"] = split_text(train), split_text(test)
    files["README.md"] = README.format(source=SOURCE, commit=COMMIT, mask_ext=f".{args.masks}",
                                       mask_note=MASK_NOTES[args.masks], n_test=len(test),
                                       n_train=len(train)).encode()
    out = args.out
    if out.exists() and any((out / "masks").glob(f"*_lesion.{'jpg' if args.masks == 'bmp' else 'bmp'}")):
        sys.exit(f"error: {out}/masks holds masks of the other --masks choice; rebuild into another --out")
    write_set(out, files, {"repository": SOURCE, "commit": COMMIT, "masks": args.masks,
                           "split": f"test: {TEST_FRACTION:.0%} of ids, smallest sha256 of '{NAME}/<id>'"})
    print(f"PH2: {len(ids)} images ({len(train)} train, {len(test)} test), masks as {args.masks.upper()}; "
          f"read with --dataset folder --data-root {out} --set mask_suffix=_lesion")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
