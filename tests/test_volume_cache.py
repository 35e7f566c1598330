"""Volume preprocessing (normalisation by modality, resampling) and the memory-mapped volume cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from segkit.components import get_registry
from segkit.data.preprocess import (
    ChannelStats,
    channel_scheme,
    channel_schemes,
    foreground_stats,
    normalize_case,
    resample_case,
)
from segkit.data.volume_cache import VolumeCache, default_cache_root
from segkit.errors import ConfigError, DataError, UnknownNameError
from volumes import HIPPOCAMPUS, hippocampus_subset, write_msd


def build(root: Path):
    return get_registry().build("dataset", "msd", root=str(root))


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix in (".npy", ".npz")}


def test_channel_schemes_follow_the_modality_name_unless_overridden() -> None:
    assert channel_scheme("CT") == channel_scheme(" ct ") == "ct"
    assert channel_scheme("MRI") == channel_scheme("T2") == channel_scheme("PET") == "zscore"
    assert channel_scheme("CT", "none") == "none"
    assert channel_schemes(["CT", "MRI"]) == ("ct", "zscore")
    assert channel_schemes(["CT", "MRI"], ["zscore", "ct"]) == ("zscore", "ct")
    with pytest.raises(UnknownNameError, match="unknown intensity scheme 'zcore'. Did you mean 'zscore'"):
        channel_scheme("MRI", "zcore")
    with pytest.raises(ConfigError, match="1 intensity scheme"):
        channel_schemes(["CT", "MRI"], ["ct"])


def test_zscore_is_per_case_and_channel_and_survives_a_constant_channel() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(300.0, 40.0, (6, 7, 8)), np.full((6, 7, 8), 5.0)]).astype(np.float32)
    out = normalize_case(image, ("zscore", "zscore"))
    assert out.dtype == np.float32 and out.shape == image.shape
    expected = (image[0].astype(np.float64) - image[0].mean(dtype=np.float64)) / image[0].std(dtype=np.float64)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    assert np.all(out[1] == 0.0)  # std 0: only the mean is taken away, no NaN
    np.testing.assert_array_equal(normalize_case(image, ("none", "none")), image)


def test_ct_is_clipped_to_the_foreground_percentiles_and_scaled_by_the_foreground_stats() -> None:
    rng = np.random.default_rng(1)
    samples = []
    for k in range(3):
        image = rng.normal(-500.0, 300.0, (1, 10, 10, 10)).astype(np.float32)
        label = np.zeros((10, 10, 10), np.uint8)
        label[2:7, 3:8, k:k + 5] = 1 + k % 2
        image[0][label > 0] = rng.normal(40.0 * (k + 1), 20.0, int((label > 0).sum()))
        samples.append((image, label))
    stats = foreground_stats(samples, voxels_per_case=10_000)  # every foreground voxel
    foreground = np.concatenate([im[0][lab > 0] for im, lab in samples]).astype(np.float64)
    low, high = np.percentile(foreground, [0.5, 99.5])
    assert stats[0].low == pytest.approx(low) and stats[0].high == pytest.approx(high)
    assert stats[0].mean == pytest.approx(foreground.mean()) and stats[0].std == pytest.approx(foreground.std())
    image = samples[0][0]
    out = normalize_case(image, ("ct",), stats)
    expected = (np.clip(image[0].astype(np.float64), low, high) - foreground.mean()) / foreground.std()
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)
    few = foreground_stats(samples, voxels_per_case=20, seed=3)  # subsampled: close, cheap
    assert abs(few[0].mean - stats[0].mean) < 3 * stats[0].std / np.sqrt(60)
    with pytest.raises(ConfigError, match="no foreground stats"):
        normalize_case(image, ("ct",), None)
    with pytest.raises(DataError, match="no foreground voxels"):
        foreground_stats([(image, np.zeros((10, 10, 10), np.uint8))])


def test_resampling_changes_shape_to_the_target_spacing_and_keeps_labels() -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 20, 24, 12)).astype(np.float32)
    label = rng.integers(0, 3, (20, 24, 12)).astype(np.uint8)
    out, out_label = resample_case(image, label, (1.0, 1.0, 2.0), (1.0, 1.0, 1.0))
    assert out.shape == (2, 20, 24, 24) and out.dtype == np.float32
    assert out_label.shape == (20, 24, 24) and out_label.dtype == np.uint8
    assert set(np.unique(out_label)) <= {0, 1, 2}
    same, same_label = resample_case(image, label, (1.0, 1.0, 2.0), None)
    assert same is image and same_label is label
    assert resample_case(image, label, (1.0, 1.0, 2.0), (1.0, 1.0, 2.00001))[0] is image


def test_labels_resample_closer_to_the_true_shape_than_nearest_neighbour() -> None:
    import torch
    import torch.nn.functional as F

    def ball(n: int, spacing: float) -> np.ndarray:  # a ball of radius 11 mm in a 40 mm box, voxel centres
        centres = (np.arange(n) + 0.5) * spacing - 20.0
        x, y, z = np.meshgrid(centres, centres, centres, indexing="ij")
        shell = np.sqrt(x ** 2 + y ** 2 + z ** 2)
        return np.where(shell < 7.0, 2, np.where(shell < 11.0, 1, 0)).astype(np.uint8)

    fine, truth = ball(40, 1.0), ball(16, 2.5)
    _, ours = resample_case(np.zeros((1, 40, 40, 40), np.float32), fine, (1.0,) * 3, (2.5,) * 3)
    nearest = F.interpolate(torch.from_numpy(fine)[None, None].float(), size=(16, 16, 16),
                            mode="nearest")[0, 0].numpy().astype(np.uint8)
    assert ours.shape == truth.shape
    assert (ours != truth).sum() < (nearest != truth).sum()


def test_the_cache_writes_memory_mapped_arrays_with_their_metadata(tmp_path: Path) -> None:
    dataset = build(write_msd(tmp_path / "msd", cases=3, shape=(20, 24, 12), spacing=(1.0, 1.0, 2.0)))
    cache = VolumeCache(dataset, directory=tmp_path / "cache", target_spacing=(1.0, 1.0, 1.0), progress=False).build()
    assert cache.built == ["vol_000", "vol_001", "vol_002"] and len(cache) == 3
    image, label = cache.image("vol_001"), cache.label("vol_001")
    assert isinstance(image, np.memmap) and isinstance(label, np.memmap)
    assert not image.flags.writeable and image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == (1, 20, 24, 24) and label.shape == (20, 24, 24) == cache.shape("vol_001")
    assert cache.spacing("vol_001") == (1.0, 1.0, 1.0)
    meta = cache.metadata("vol_001")
    assert meta["original_shape"] == [20, 24, 12] and meta["original_spacing"] == [1.0, 1.0, 2.0]
    assert abs(float(image.mean())) < 1e-4 and float(image.std()) == pytest.approx(1.0, abs=1e-4)
    foreground = cache.foreground("vol_001")
    assert sorted(foreground) == [1, 2]
    for value, coords in foreground.items():
        assert coords.shape[1] == 3 and np.all(label[tuple(coords.T)] == value)
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # atomic writes leave no temporary files


def test_a_second_build_reuses_everything_and_a_changed_file_rebuilds_only_its_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    root = write_msd(tmp_path / "msd", cases=3)
    folder = tmp_path / "cache"
    VolumeCache(build(root), directory=folder).build()
    assert "volume cache: 3/3 cases" in capsys.readouterr().err  # progress lines in a log
    before = mtimes(folder)
    again = VolumeCache(build(root), directory=folder, progress=False).build()
    assert again.built == [] and mtimes(folder) == before
    path = root / "imagesTr" / "vol_002.nii.gz"
    stored = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj) * 2.0 + 7.0, stored.affine), path)
    changed = VolumeCache(build(root), directory=folder, progress=False).build()
    assert changed.built == ["vol_002"]
    after = mtimes(folder)
    assert {k for k in after if after[k] != before[k]} == {f"vol_002_{p}" for p in ("image.npy", "label.npy",
                                                                                   "foreground.npz")}
    other = VolumeCache(build(root), directory=folder, target_spacing=(2.0, 2.0, 2.0), progress=False).build()
    assert other.built == ["vol_000", "vol_001", "vol_002"]  # other settings: everything again


def test_ct_stats_are_recorded_and_a_changed_case_renormalises_every_case(tmp_path: Path) -> None:
    import nibabel as nib

    root = write_msd(tmp_path / "msd", cases=3)
    folder = tmp_path / "cache"
    cache = VolumeCache(build(root), directory=folder, schemes=["ct"], progress=False).build()
    stats = cache.stats[0]
    dataset = build(root)
    row = dataset.cases_table.iloc[0]
    raw = dataset.read_image(tuple(row["image_paths"]))
    expected = (np.clip(raw, stats.low, stats.high) - stats.mean) / stats.std
    np.testing.assert_allclose(cache.image(str(row["case"])), expected, rtol=1e-5, atol=1e-5)
    assert 130.0 < stats.mean < 190.0  # the synthetic foreground is about 160, the background 100
    assert VolumeCache(build(root), directory=folder, schemes=["ct"], progress=False).build().built == []
    path = root / "imagesTr" / "vol_001.nii.gz"
    stored = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj) + 50.0, stored.affine), path)
    rebuilt = VolumeCache(build(root), directory=folder, schemes=["ct"], progress=False).build()
    assert rebuilt.built == ["vol_000", "vol_001", "vol_002"] and rebuilt.stats[0] != ChannelStats(**vars(stats))


def test_the_default_folder_is_under_xdg_cache_home_and_keyed_by_settings(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "segkit" / "volumes"
    dataset = build(write_msd(tmp_path / "msd", cases=2))
    first = VolumeCache(dataset, progress=False)
    assert first.directory.parent == tmp_path / "xdg" / "segkit" / "volumes"
    assert VolumeCache(dataset, progress=False).directory == first.directory
    assert VolumeCache(dataset, target_spacing=(1, 1, 1), progress=False).directory != first.directory
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert default_cache_root() == Path.home() / ".cache" / "segkit" / "volumes"


def test_an_unwritable_cache_folder_is_a_one_line_error_saying_where(tmp_path: Path) -> None:
    dataset = build(write_msd(tmp_path / "msd", cases=1))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as info:
        VolumeCache(dataset, directory=blocker / "cache", progress=False).build()
    message = str(info.value)
    assert "\n" not in message and str(blocker / "cache") in message and "elsewhere" in message


def test_bad_cache_settings_are_refused(tmp_path: Path) -> None:
    dataset = build(write_msd(tmp_path / "msd", cases=1))
    for bad in ((1.0, 0.0, 1.0), (1.0, 1.0)):
        with pytest.raises(ConfigError, match="target_spacing"):
            VolumeCache(dataset, directory=tmp_path / "c", target_spacing=bad)
    with pytest.raises(ConfigError, match="foreground_voxels"):
        VolumeCache(dataset, directory=tmp_path / "c", foreground_voxels=0)
    with pytest.raises(DataError, match="not in the volume cache"):
        VolumeCache(dataset, directory=tmp_path / "empty", progress=False).image("vol_000")
    assert not (tmp_path / "c").exists()
    from segkit.data.volume import VolumeDataset

    table = dataset.cases_table[["case", "image_paths", "label_path"]].assign(case="../outside")
    odd = VolumeDataset(table, channels=dataset.channel_names, labels=dataset.labels)
    with pytest.raises(DataError, match="'../outside' cannot name files"):
        VolumeCache(odd, directory=tmp_path / "c")


def test_real_hippocampus_cases_are_cached_at_their_own_shape(tmp_path: Path) -> None:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS}")
    dataset = build(hippocampus_subset(tmp_path / "hippocampus", count=3))
    cache = VolumeCache(dataset, directory=tmp_path / "cache", progress=False).build()
    assert cache.settings["schemes"] == ["zscore"]  # the channel is MRI
    for row in dataset.cases_table.itertuples(index=False):
        image, label = cache.image(row.case), cache.label(row.case)
        assert image.shape == (1, *row.shape) and cache.spacing(row.case) == (1.0, 1.0, 1.0)
        assert abs(float(image.mean())) < 1e-3 and float(image.std()) == pytest.approx(1.0, abs=1e-3)
        assert set(np.unique(label)) == {0, 1, 2} and sorted(cache.foreground(row.case)) == [1, 2]
    assert os.path.getsize(tmp_path / "cache" / "cache.json") > 0


# The cache as untrusted input: damaged files are found, noted in one line and rebuilt -------------

def _swap(folder: Path) -> None:
    """vol_000's label replaced by vol_001's (same shape and dtype: only the fingerprint tells them apart)."""
    (folder / "vol_000_label.npy").write_bytes((folder / "vol_001_label.npy").read_bytes())


def _truncate(folder: Path) -> None:
    path = folder / "vol_000_image.npy"
    path.write_bytes(path.read_bytes()[:-100])


def _objects(folder: Path) -> None:
    np.save(folder / "vol_000_image.npy", np.array([{"x": 1}, "y"], dtype=object), allow_pickle=True)


def _garbage_npz(folder: Path) -> None:
    (folder / "vol_000_foreground.npz").write_bytes(b"PK\x03\x04 not a zip archive at all" * 10)


def _string_shape(folder: Path) -> None:
    import json

    recorded = json.loads((folder / "cache.json").read_text())
    recorded["cases"]["vol_000"]["shape"] = "20x24x12"
    (folder / "cache.json").write_text(json.dumps(recorded))


def _json_garbage(folder: Path) -> None:
    (folder / "cache.json").write_bytes(b"\x00\xffnot json")


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-case dataset and its built cache, copied by the tests that damage it."""
    home = tmp_path_factory.mktemp("untrusted-cache")
    root = write_msd(home / "msd", cases=2, shape=(12, 12, 6))
    VolumeCache(build(root), directory=home / "cache", progress=False).build()
    return root, home / "cache"


@pytest.mark.parametrize(("damage", "named", "rebuilt"), [
    (_string_shape, "cache.json entry of case 'vol_000' has the shape '20x24x12'", ["vol_000"]),
    (_truncate, "vol_000_image.npy has", ["vol_000"]),
    (_swap, "vol_000_label.npy has other content", ["vol_000"]),
    (_objects, "vol_000_image.npy", ["vol_000"]),
    (_garbage_npz, "vol_000_foreground.npz", ["vol_000"]),
    (_json_garbage, "cache.json is unreadable", ["vol_000", "vol_001"]),
], ids=["string-shape", "truncated", "swapped", "objects", "garbage-npz", "json-garbage"])
def test_a_damaged_cache_is_noted_in_one_line_and_rebuilt(built_cache: tuple[Path, Path], tmp_path: Path,
                                                          damage: Any, named: str, rebuilt: list[str]) -> None:
    import shutil

    root, reference = built_cache
    folder = tmp_path / "cache"
    shutil.copytree(reference, folder)
    damage(folder)
    notes: list[str] = []
    cache = VolumeCache(build(root), directory=folder, progress=False, note=notes.append).build()
    assert cache.built == rebuilt and cache.notes == notes
    assert len(notes) == 1 and named in notes[0] and "\n" not in notes[0], notes
    original = VolumeCache(build(root), directory=reference, progress=False)
    for case in ("vol_000", "vol_001"):  # the rebuilt cache holds what the undamaged one does
        np.testing.assert_array_equal(cache.image(case), original.image(case))
        np.testing.assert_array_equal(cache.label(case), original.label(case))
        assert {k: v.tolist() for k, v in cache.foreground(case).items()} == {
            k: v.tolist() for k, v in original.foreground(case).items()}
    again = VolumeCache(build(root), directory=folder, progress=False, note=notes.append).build()
    assert again.built == [] and len(notes) == 1  # repaired for good


def test_a_file_damaged_after_the_check_is_a_one_line_error_when_read(built_cache: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    import shutil

    root, reference = built_cache
    shutil.copytree(reference, tmp_path / "cache")
    cache = VolumeCache(build(root), directory=tmp_path / "cache", progress=False).build()
    _truncate(tmp_path / "cache")
    _garbage_npz(tmp_path / "cache")
    for read in (cache.image, cache.foreground):
        with pytest.raises(DataError, match=r"vol_000_\w+\.np[yz] changed after it was checked.*rebuilds") as info:
            read("vol_000")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("failure", ["short-write", "enospc"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(built_cache: tuple[Path, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 failure: str) -> None:
    import errno

    import segkit.data.cache_files as cache_files

    root, _ = built_cache
    folder = tmp_path / "cache"
    real_save = np.save
    calls = []

    def save_then_fill(handle: Any, array: np.ndarray, allow_pickle: bool = False) -> None:
        calls.append(array.shape)
        if len(calls) < 4:  # vol_000's image and label, vol_001's image; then half its label, and the disk is full
            return real_save(handle, array, allow_pickle=allow_pickle)
        handle.write(b"\x93NUMPY" + b"\x00" * (array.nbytes // 2))
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise OSError(f"{array.nbytes} requested and {array.nbytes // 2} written")  # numpy's own short write

    monkeypatch.setattr(cache_files.np, "save", save_then_fill)
    with pytest.raises(ConfigError) as info:
        VolumeCache(build(root), directory=folder, progress=False).build()
    message = str(info.value)
    assert "\n" not in message and str(folder / "vol_001_label.npy") in message and "Nothing half-written" in message
    assert ("probably full" if failure == "short-write" else "No space left") in message
    assert sorted(p.name for p in folder.iterdir()) == ["cache.json", "vol_000_foreground.npz", "vol_000_image.npy",
                                                        "vol_000_label.npy"]  # no temporary file, nothing of the half-built case
    monkeypatch.setattr(cache_files.np, "save", real_save)
    notes: list[str] = []
    cache = VolumeCache(build(root), directory=folder, progress=False, note=notes.append).build()
    assert cache.built == ["vol_001"] and notes == []  # the finished case kept, the half one built whole


def test_labels_resampled_within_their_boxes_equal_the_whole_volume_interpolation() -> None:
    """resample_labels interpolates each label only where it reaches and derives the background's weight; the
    labels are those of interpolating every indicator over the whole volume, but for near-ties (float rounding)."""
    import torch
    import torch.nn.functional as F
    from segkit.data.preprocess import resample_labels

    rng = np.random.default_rng(0)
    for shape, size in (((30, 24, 17), (45, 13, 40)), ((40, 40, 12), (22, 31, 30)), ((9, 8, 7), (9, 8, 7))):
        grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        label = np.zeros(shape, np.uint8)
        for value in (1, 2, 3):
            centre, radius = rng.uniform(0, 1, 3) * shape, rng.uniform(0.15, 0.4) * min(shape)
            label[sum(((g - c) / radius) ** 2 for g, c in zip(grid, centre)) < 1] = value
        weights = np.stack([F.interpolate(torch.from_numpy(label == v).float()[None, None], size=size,
                                          mode="trilinear", align_corners=False)[0, 0].numpy() for v in range(4)])
        top = np.sort(weights, axis=0)
        decided = top[-1] - top[-2] > 1e-5
        expected = weights.argmax(0)  # the first of equal weights: the lower label wins a tie
        resampled = resample_labels(label, size)
        assert resampled.shape == size and resampled.dtype == np.uint8
        np.testing.assert_array_equal(resampled[decided], expected[decided])
