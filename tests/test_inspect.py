"""Dataset summaries and the sample picture."""

from __future__ import annotations

import cv2
import numpy as np

from click.testing import CliRunner

from segkit.cli import cli
from segkit.data.inspect import sample_grid, summarize
from segkit_builtins.datasets.folder import FolderDataset
from segkit_builtins.datasets.lgg import LGGDataset
from segkit_builtins.datasets.synthetic import SyntheticDataset


def test_summarize_synthetic():
    data = SyntheticDataset(count=24, size=32, slices_per_case=8)
    summary = summarize(data)
    lesions = int(data.index["has_lesion"].sum())
    assert summary == {"cases": 3, "images": 24, "lesion_slices": lesions, "empty_slices": 24 - lesions,
                       "image_sizes": {"32x32": 24}, "channels": [3], "in_channels": 3, "mask_values": [0, 1],
                       "copied_channels": {}}


def test_summarize_real_lgg_reports_stored_mask_values(lgg_small):
    summary = summarize(LGGDataset(str(lgg_small)))
    assert summary["cases"] == 3 and summary["images"] == 60
    assert summary["image_sizes"] == {"256x256": 60} and summary["channels"] == [3]
    assert summary["mask_values"] == [0, 255]
    assert summary["lesion_slices"] + summary["empty_slices"] == 60 and summary["lesion_slices"] > 0


def test_summarize_names_the_patients_whose_missing_sequences_hold_flair(lgg_root, tmp_path):
    """LGG stores FLAIR (channel 1) in place of a missing pre- or post-contrast sequence."""
    root = tmp_path / "kaggle_3m"
    root.mkdir()
    for patient in ("TCGA_DU_7013_19860523", "TCGA_DU_7301_19911112", "TCGA_CS_6667_20011105"):
        (root / patient).symlink_to(lgg_root / patient)
    summary = summarize(LGGDataset(str(root)))
    assert summary["copied_channels"] == {"TCGA_DU_7013_19860523": [[0, 1], [0, 2], [1, 2]],
                                          "TCGA_DU_7301_19911112": [[1, 2]]}  # no post-contrast
    result = CliRunner().invoke(cli, ["inspect", "--dataset", "lgg", "--data-root", str(root),
                                      "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert "copied channels: 2 case(s)" in result.output and "TCGA_DU_7013_19860523: pre-contrast (0) = FLAIR (1), pre-contrast (0) = post-contrast (2), FLAIR (1) = post-contrast (2)" in result.output


def test_summarize_mixed_sizes(tmp_path):
    for stem, size in (("a", (8, 8)), ("b", (8, 12)), ("c", (8, 8))):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), np.zeros(size, np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), np.ones(size, np.uint8))
    summary = summarize(FolderDataset(str(tmp_path)))
    assert summary["image_sizes"] == {"8x8": 2, "8x12": 1} and summary["mask_values"] == [1]
    assert summary["lesion_slices"] == 3 and summary["cases"] == 3


def test_sample_grid_writes_a_png_atomically(tmp_path):
    data = SyntheticDataset(count=16, size=32)
    path = sample_grid(data, tmp_path / "out" / "grid.png", n=3, seed=1)
    assert path == tmp_path / "out" / "grid.png"
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 200
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]
    # The red outline is drawn.
    red = (picture[:, :, 2] > 200) & (picture[:, :, 1] < 90) & (picture[:, :, 0] < 90)
    assert red.sum() > 20


def test_sample_grid_with_only_one_kind(tmp_path):
    data = SyntheticDataset(count=4, size=16, lesion_fraction=0)
    assert cv2.imread(str(sample_grid(data, tmp_path / "g.png"))) is not None


def test_sample_grid_real_lgg(lgg_small, tmp_path):
    path = sample_grid(LGGDataset(str(lgg_small)), tmp_path / "lgg.png", n=2)
    assert cv2.imread(str(path)).shape[1] > 300
