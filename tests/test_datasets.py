"""The built-in datasets and the base class: index, reading, cache, subsets and bad inputs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from segkit.data import SegmentationDataset, build_transform, read_image, read_mask
from segkit.errors import ConfigError, DataError, UnknownNameError
from segkit_builtins.datasets.folder import FolderDataset
from segkit_builtins.datasets.lgg import LGGDataset
from segkit_builtins.datasets.synthetic import SyntheticDataset
from segkit_builtins.datasets.table import TableDataset


def check_contract(dataset: SegmentationDataset, i: int = 0) -> None:
    image, mask = dataset.read(i)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == dataset.in_channels
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 1}
    assert bool(mask.any()) == bool(dataset.index["has_lesion"].iloc[i])
    x, y = dataset[i]
    assert x.dtype == torch.float32 and x.shape == (dataset.in_channels, *image.shape[:2])
    assert y.dtype == torch.float32 and y.shape == (1, *image.shape[:2])
    torch.testing.assert_close(x, torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert dataset.index["item"].is_unique and len(dataset.cases) == len(dataset)


def write_pair(images: Path, masks: Path, stem: str, size=(16, 16), lesion=True, ext=".png", suffix="") -> None:
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    image = np.full((*size, 3), 60, np.uint8)
    mask = np.zeros(size, np.uint8)
    if lesion:
        mask[4:9, 5:10] = 255
        image[mask > 0] = 220
    cv2.imwrite(str(images / f"{stem}{ext}"), image)
    cv2.imwrite(str(masks / f"{stem}{suffix}.png"), mask)


# --- synthetic -------------------------------------------------------------------------------

def test_synthetic_contract_and_cases():
    data = SyntheticDataset(count=20, size=32, slices_per_case=8)
    for i in (0, 19):
        check_contract(data, i)
    assert data.in_channels == 3 and data.index["case"].nunique() == 3
    assert data.cases[:9] == ["case_00"] * 8 + ["case_01"]


def test_synthetic_is_deterministic_across_instances_and_processes():
    a, b = SyntheticDataset(count=6, size=32, cache=False), SyntheticDataset(count=6, size=32, cache=False)
    for i in range(6):
        for x, y in zip(a.read(i), b.read(i)):
            np.testing.assert_array_equal(x, y)
    clone = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(clone.read(3)[0], a.read(3)[0])
    # Item i does not depend on how many items there are.
    np.testing.assert_array_equal(SyntheticDataset(count=40, size=32).read(5)[0], a.read(5)[0])


def test_synthetic_seed_changes_pixels():
    a, b = SyntheticDataset(count=4, size=32, seed=0), SyntheticDataset(count=4, size=32, seed=1)
    assert not np.array_equal(a.read(0)[0], b.read(0)[0])


def test_synthetic_lesion_fraction_and_masks_agree():
    data = SyntheticDataset(count=400, size=32, lesion_fraction=0.3, cache=False)
    assert abs(data.index["has_lesion"].mean() - 0.3) < 0.06
    flags = [bool(data.read(i)[1].any()) for i in range(0, 400, 7)]
    assert flags == data.index["has_lesion"].iloc[::7].tolist()
    assert not SyntheticDataset(count=20, size=16, lesion_fraction=0).index["has_lesion"].any()
    all_lesion = SyntheticDataset(count=20, size=16, lesion_fraction=1)
    assert all(all_lesion.read(i)[1].any() for i in range(20))


def test_synthetic_lesions_are_brighter_in_flair():
    data = SyntheticDataset(count=40, size=64)
    for i in np.flatnonzero(data.index["has_lesion"])[:5]:
        image, mask = data.read(int(i))
        around = cv2.dilate(mask, np.ones((7, 7), np.uint8)) - mask
        assert image[mask > 0, 1].mean() > image[around > 0, 1].mean() + 15


@pytest.mark.parametrize("kwargs", [{"count": 0}, {"size": 8}, {"seed": -1}, {"slices_per_case": 0},
                                    {"lesion_fraction": 1.5}, {"count": 2.5}])
def test_synthetic_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        SyntheticDataset(**kwargs)


# --- base class: cache, subset, transform, workers ---------------------------------------------

class CountingDataset(SyntheticDataset):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reads = 0

    def read_raw(self, i):
        self.reads += 1
        return super().read_raw(i)


def test_cache_reads_each_item_once_and_subsets_share_it():
    data = CountingDataset(count=10, size=16, cache=True)
    data[2], data[2]
    assert data.reads == 1
    view = data.subset([2, 5])
    view[0], view[1], view[1]
    assert data.reads == 2 and len(view) == 2
    assert view.index["item"].tolist() == [data.index["item"][2], data.index["item"][5]]
    cached = data.read(2)[0]
    with pytest.raises(ValueError):
        cached[0, 0, 0] = 1  # cached slices are read-only


def test_no_cache_reads_every_time():
    data = CountingDataset(count=3, size=16, cache=False)
    data[0], data[0]
    assert data.reads == 2


def test_subset_transform_and_dataloader_workers():
    data = SyntheticDataset(count=12, size=32)
    view = data.subset(range(0, 12, 2), transform=build_transform("light", 16, train=True))
    assert data.transform is None
    clone = pickle.loads(pickle.dumps(view))
    assert clone[0][0].shape == (3, 16, 16)
    batches = list(DataLoader(view, batch_size=3, num_workers=2))
    assert batches[0][0].shape == (3, 3, 16, 16) and batches[0][1].shape == (3, 1, 16, 16)


def test_subset_of_bad_indices():
    with pytest.raises(IndexError):
        SyntheticDataset(count=4, size=16).subset([0, 4])


# --- LGG ---------------------------------------------------------------------------------------

def test_lgg_reads_the_kaggle_layout(lgg_small):
    data = LGGDataset(str(lgg_small))
    assert len(data) == 60 and data.index["case"].nunique() == 3
    first = data.index[data.index["case"] == "TCGA_CS_6667_20011105"]
    assert first["slice"].tolist() == list(range(1, 21))  # numeric, not "1, 10, 11, ..."
    assert first["patient"].iloc[0] == "TCGA_CS_6667"
    assert {"image_path", "mask_path", "age_at_initial_pathologic"} <= set(data.index.columns)
    truth = [bool(read_mask(p).any()) for p in data.index["mask_path"]]
    assert data.index["has_lesion"].tolist() == truth and 0 < sum(truth) < 60
    i = int(np.flatnonzero(truth)[0])
    check_contract(data, i)
    check_contract(data, 0)
    assert data.read(i)[0].shape == (256, 256, 3)


def test_lgg_accepts_the_parent_folder(lgg_small):
    assert len(LGGDataset(str(lgg_small.parent))) == 60


def test_lgg_full_shared_data(lgg_root):
    data = LGGDataset(str(lgg_root))
    assert len(data) == 1087 and data.index["case"].nunique() == 29


def test_lgg_missing_root_shows_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"not found.*TCGA_<inst>_<id>_<date>_<n>_mask\.tif"):
        LGGDataset(str(tmp_path / "nowhere"))


def test_lgg_empty_folder(tmp_path):
    (tmp_path / "kaggle_3m" / "TCGA_XX_0000_20000101").mkdir(parents=True)
    with pytest.raises(DataError, match="no LGG slices"):
        LGGDataset(str(tmp_path))


def test_lgg_images_without_masks(lgg_copy):
    masks = sorted(lgg_copy.glob("TCGA_HT_7602_19951103/*_mask.tif"))[:7]
    for m in masks:
        m.unlink()
    expected = r"7 image\(s\) in .*kaggle_3m have no mask: TCGA_HT_7602_19951103_\d+\.tif, .*, \.\.\. \(7 in all\)\. "
    with pytest.raises(DataError, match=expected + ".*on_missing='skip'"):
        LGGDataset(str(lgg_copy))
    with pytest.warns(UserWarning, match="skipping 7 image"):
        data = LGGDataset(str(lgg_copy), on_missing="skip")
    assert len(data) == 53
    with pytest.raises(UnknownNameError, match="on_missing value 'ignore'"):
        LGGDataset(str(lgg_copy), on_missing="ignore")


def test_lgg_corrupt_image_fails_on_read(lgg_copy):
    data = LGGDataset(str(lgg_copy))
    Path(data.index["image_path"][4]).write_bytes(b"garbage")
    with pytest.raises(DataError, match=Path(data.index["image_path"][4]).name):
        data[4]


def test_lgg_size_mismatch_names_both_files(lgg_copy):
    data = LGGDataset(str(lgg_copy))
    image_path = Path(data.index["image_path"][3])
    cv2.imwrite(str(image_path), np.zeros((128, 128, 3), np.uint8))
    with pytest.raises(DataError, match=rf"{image_path.name} is 128x128.*_mask\.tif is 256x256"):
        data.read(3)


def test_lgg_bad_mask_values(lgg_copy):
    from segkit.data.verify import verify_dataset

    mask_path = next(lgg_copy.glob("TCGA_HT_8107_19980708/*_5_mask.tif"))
    cv2.imwrite(str(mask_path), np.full((256, 256), 7, np.uint8))
    data = LGGDataset(str(lgg_copy))  # the index is built; the item fails when read, and the check lists it
    row = int(np.flatnonzero(data.index["mask_path"] == str(mask_path))[0])
    with pytest.raises(DataError, match=rf"{mask_path.name}: mask values must be 0/1 or 0/255"):
        data.read(row)
    with pytest.raises(DataError, match=rf"1 of {len(data)} items cannot be used:\n  - {data.index['item'][row]}: "):
        verify_dataset(data, remember=False)


def test_lgg_cache_avoids_the_disk(lgg_copy):
    data = LGGDataset(str(lgg_copy), cache=True)
    first = data.read(0)
    shutil.rmtree(lgg_copy / data.index["case"][0])
    np.testing.assert_array_equal(data.read(0)[0], first[0])


# --- folder ------------------------------------------------------------------------------------

def test_folder_pairs_by_stem_with_case_pattern(tmp_path):
    for stem, lesion in (("p01_a", True), ("p01_b", False), ("p02_a", True)):
        write_pair(tmp_path / "images", tmp_path / "masks", stem, lesion=lesion, ext=".tif", suffix="_seg")
    data = FolderDataset(str(tmp_path), case_pattern=r"^(?P<case>p\d+)_", mask_suffix="_seg")
    assert data.index["case"].tolist() == ["p01", "p01", "p02"]
    assert data.index["has_lesion"].tolist() == [True, False, True]
    check_contract(data, 0)
    assert FolderDataset(str(tmp_path), case_pattern=r"(p\d+)", mask_suffix="_seg").cases == ["p01", "p01", "p02"]
    assert FolderDataset(str(tmp_path), mask_suffix="_seg").cases == ["p01_a", "p01_b", "p02_a"]


def test_a_rebuilt_folder_dataset_reads_each_unchanged_mask_once(tmp_path, monkeypatch):
    """segkit plan builds its dataset several times: which masks hold a label is read once per process while
    the file is unchanged, and read again once it changes."""
    import os

    import segkit.data.base as base

    for stem, lesion in (("a", True), ("b", False), ("c", True)):
        write_pair(tmp_path / "images", tmp_path / "masks", stem, lesion=lesion)
    reads = []
    decode = base.decode_mask
    monkeypatch.setattr(base, "decode_mask", lambda path, *args: reads.append(Path(path).name) or decode(path, *args))
    assert FolderDataset(str(tmp_path)).index["has_lesion"].tolist() == [True, False, True]
    assert sorted(reads) == ["a.png", "b.png", "c.png"]
    assert FolderDataset(str(tmp_path)).index["has_lesion"].tolist() == [True, False, True]
    assert len(reads) == 3
    changed = tmp_path / "masks" / "b.png"
    cv2.imwrite(str(changed), np.full(cv2.imread(str(changed), cv2.IMREAD_GRAYSCALE).shape, 255, np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000_000))
    assert FolderDataset(str(tmp_path)).index["has_lesion"].tolist() == [True, True, True]
    assert reads[3:] == ["b.png"]


def test_folder_grayscale_images_give_one_channel(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((8, 8), np.uint8))
    data = FolderDataset(str(tmp_path))
    assert data.in_channels == 1
    check_contract(data)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        FolderDataset(str(tmp_path))
    write_pair(tmp_path / "images", tmp_path / "masks", "a")
    write_pair(tmp_path / "images", tmp_path / "other", "b")
    with pytest.raises(DataError, match=r"1 image\(s\).*have no mask.*b\.png"):
        FolderDataset(str(tmp_path))
    with pytest.warns(UserWarning, match="skipping 1"):
        assert len(FolderDataset(str(tmp_path), on_missing="skip")) == 1
    with pytest.raises(DataError, match="matches no case.*b"):
        FolderDataset(str(tmp_path), case_pattern=r"^(a)$")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        FolderDataset(str(tmp_path), case_pattern="(")
    write_pair(tmp_path / "images", tmp_path / "masks", "a", ext=".jpg")
    with pytest.raises(DataError, match="share the name 'a'"):
        FolderDataset(str(tmp_path))


def test_folder_size_mismatch(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "masks", "a")
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((10, 16), np.uint8))
    with pytest.raises(DataError, match=r"a\.png is 16x16.*a\.png is 16x10"):
        FolderDataset(str(tmp_path))[0]


# --- table -------------------------------------------------------------------------------------

def test_table_with_relative_paths_and_cases(tmp_path):
    for stem in ("x1", "x2", "x3"):
        write_pair(tmp_path / "img", tmp_path / "lab", stem, lesion=stem != "x2")
    table = pd.DataFrame({"scan": [f"img/{s}.png" for s in ("x1", "x2", "x3")],
                          "label": [f"lab/{s}.png" for s in ("x1", "x2", "x3")], "patient": ["a", "a", "b"]})
    table.to_csv(tmp_path / "list.csv", index=False)
    data = TableDataset(str(tmp_path / "list.csv"), image_column="scan", mask_column="label", case_column="patient")
    assert data.index["item"].tolist() == ["x1", "x2", "x3"] and data.cases == ["a", "a", "b"]
    assert data.index["has_lesion"].tolist() == [True, False, True]
    check_contract(data, 0)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(tmp_path / "list.csv", moved / "list.csv")
    assert len(TableDataset(str(moved / "list.csv"), "scan", "label", root=str(tmp_path))) == 3


def test_table_errors(tmp_path):
    write_pair(tmp_path / "img", tmp_path / "lab", "x1")
    pd.DataFrame({"image": ["img/x1.png", "img/x2.png"], "mask": ["lab/x1.png", ""]}).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="table not found"):
        TableDataset(str(tmp_path / "none.csv"))
    with pytest.raises(UnknownNameError, match=r"case_column of t\.csv 'patinet'.*Available: image, mask"):
        TableDataset(str(tmp_path / "t.csv"), case_column="patinet")
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .*t\.csv do not exist.*x2\.png"):
        TableDataset(str(tmp_path / "t.csv"))
    write_pair(tmp_path / "img", tmp_path / "unused", "x2")
    with pytest.raises(DataError, match="have no mask"):
        TableDataset(str(tmp_path / "t.csv"))
    with pytest.warns(UserWarning):
        assert len(TableDataset(str(tmp_path / "t.csv"), on_missing="skip")) == 1
    no_case = pd.DataFrame({"image": ["img/x1.png"], "mask": ["lab/x1.png"], "case": [""]})
    no_case.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="row 2 has an empty 'case' cell"):
        TableDataset(str(tmp_path / "c.csv"), case_column="case")


def test_table_parquet_without_pyarrow_is_explained(tmp_path, monkeypatch):
    import importlib.util

    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(DataError, match="needs pyarrow"):
        TableDataset(str(tmp_path / "t.parquet"))


def test_read_image_of_real_slice_matches_dataset(lgg_small):
    data = LGGDataset(str(lgg_small))
    np.testing.assert_array_equal(data.read(5)[0], read_image(data.index["image_path"][5]))
