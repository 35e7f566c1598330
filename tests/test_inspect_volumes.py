"""``segkit inspect`` on volume datasets: shapes, spacings, intensities and label volumes, checked against the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clihelp import segkit
from segkit.cli import cli
from segkit.components import get_registry
from segkit.data.inspect import summarize
from volumes import HIPPOCAMPUS, ellipsoid_case, hippocampus_subset, write_msd


def inspect_json(root: Path, *args: str) -> dict:
    """``segkit inspect --dataset msd --json`` in-process; the parsed summary."""
    result = CliRunner().invoke(cli, ["inspect", "--dataset", "msd", "--data-root", str(root), "--json", "--quiet",
                                      *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rewrite_case(root: Path, name: str, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 scale: float = 1.0, seed: int = 7, merge_labels: bool = False) -> None:
    """Replace case ``name`` of a write_msd folder by one of another shape, spacing and intensity scale."""
    import nibabel as nib

    image, label = ellipsoid_case(shape, seed=seed)
    if merge_labels:  # label 2 absent from this case
        label[label == 2] = 1
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(image[..., 0] * np.float32(scale), affine), root / "imagesTr" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{name}.nii.gz")


def read_cases(root: Path) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """``(image, label, spacing)`` of every case, read with nibabel straight from the files."""
    import nibabel as nib

    cases = []
    for entry in json.loads((root / "dataset.json").read_text())["training"]:
        image = nib.load(root / entry["image"])
        label = nib.load(root / entry["label"])
        cases.append((np.asarray(image.dataobj, dtype=np.float64), np.asarray(label.dataobj).astype(np.int64),
                      tuple(float(z) for z in label.header.get_zooms()[:3])))
    return cases


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Three synthetic cases of different shapes and spacings; the last has no label 2 and a 1000x intensity scale."""
    root = write_msd(tmp_path / "mixed", cases=3, shape=(20, 24, 12), spacing=(1.0, 1.0, 2.0))
    rewrite_case(root, "vol_001", (16, 28, 10), (0.8, 0.8, 2.5))
    rewrite_case(root, "vol_002", (24, 20, 14), (1.2, 1.0, 3.0), scale=1000.0, merge_labels=True)
    return root


@pytest.fixture
def hippocampus(tmp_path: Path) -> Path:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS} (../shared/data/hippocampus beside the repo)")
    return hippocampus_subset(tmp_path / "hippocampus", count=3)


def test_shapes_spacings_and_label_volumes_are_those_of_the_files(mixed: Path) -> None:
    with pytest.warns(UserWarning, match="different voxel spacings"):
        volumes = inspect_json(mixed)["volumes"]
    cases = read_cases(mixed)
    shapes = np.array([label.shape for _, label, _ in cases])
    spacings = np.array([spacing for _, _, spacing in cases])
    assert volumes["cases"] == 3 and volumes["channels"] == ["MR0"] and volumes["labels"] == ["background", "front",
                                                                                               "back"]
    assert volumes["shape"] == {"min": [16, 20, 10], "median": [20, 24, 12], "max": [24, 28, 14]}
    assert volumes["spacing"]["min"] == pytest.approx(spacings.min(axis=0).tolist(), rel=1e-6)
    assert volumes["spacing"]["median"] == pytest.approx([1.0, 1.0, 2.5], rel=1e-6)
    assert volumes["spacing"]["max"] == pytest.approx([1.2, 1.0, 3.0], rel=1e-6)
    assert volumes["anisotropy"] == pytest.approx(2.5, rel=1e-6) and volumes["slice_axis"] == 2
    assert shapes.tolist() == [[20, 24, 12], [16, 28, 10], [24, 20, 14]]
    for value, name in ((1, "front"), (2, "back")):
        voxels = np.array([(label == value).sum() for _, label, _ in cases])
        mm3 = voxels * np.prod(spacings, axis=1)
        held = voxels > 0
        entry = volumes["label_volumes"][name]
        assert entry["value"] == value and entry["cases"] == held.sum() and entry["absent"] == (~held).sum()
        assert entry["voxels"] == pytest.approx({"mean": voxels[held].mean(), "median": np.median(voxels[held]),
                                                 "min": voxels[held].min(), "max": voxels[held].max()})
        assert entry["mm3"] == pytest.approx({"mean": mm3[held].mean(), "median": np.median(mm3[held]),
                                              "min": mm3[held].min(), "max": mm3[held].max()}, rel=1e-6)
    assert volumes["label_volumes"]["back"]["absent"] == 1 and volumes["label_volumes"]["front"]["absent"] == 0


def test_intensities_of_small_volumes_are_every_voxel_and_a_1000x_case_is_flagged(mixed: Path) -> None:
    """Each case has fewer voxels than the default 10,000 sampled, so the statistics are exact."""
    with pytest.warns(UserWarning):
        channel = inspect_json(mixed)["volumes"]["intensity"]["channels"][0]
    cases = read_cases(mixed)
    everything = np.concatenate([image.ravel() for image, _, _ in cases])
    foreground = np.concatenate([image[label > 0] for image, label, _ in cases])
    for part, values in (("all", everything), ("foreground", foreground)):
        low, median, high = np.percentile(values, [0.5, 50, 99.5])
        assert channel[part] == pytest.approx({"p0.5": low, "p50": median, "p99.5": high, "mean": values.mean(),
                                               "std": values.std(), "voxels": values.size}, rel=1e-9)
    scale = channel["scale"]
    spans = [np.subtract(*np.percentile(image, [99.5, 0.5])) for image, _, _ in cases]
    assert scale["largest"]["case"] == "vol_002" and scale["largest"]["span"] == pytest.approx(max(spans))
    assert scale["ratio"] == pytest.approx(max(spans) / min(spans)) and scale["ratio"] > 500 and scale["differs"]
    description = json.loads((mixed / "dataset.json").read_text())
    (mixed / "dataset.json").write_text(json.dumps({**description, "modality": {"0": "CT"}}))
    with pytest.warns(UserWarning, match="different voxel spacings"):
        result = CliRunner().invoke(cli, ["inspect", "--dataset", "msd", "--data-root", str(mixed), "--quiet"])
    assert result.exit_code == 0 and "a channel named CT, which 3D runs clip by dataset-wide" in result.stdout


def test_the_text_summary_names_the_scale_problem_and_reports_progress(mixed: Path) -> None:
    result = segkit("inspect", "--dataset", "msd", "--data-root", str(mixed), env={"SEGKIT_PROGRESS_INTERVAL": "0"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dataset msd: 36 images in 3 cases" in out  # 12 + 10 + 14 slices along axis 2
    assert "shape (voxels)" in out and "16 / 20 / 24" in out and "10 / 12 / 14" in out
    assert "anisotropy:    2.5 (largest / smallest median spacing); 2D models slice along axis 2" in out
    assert "scale warning: MR0's per-case span" in out and "(vol_002)" in out and "own normalisation" in out
    assert "2 back" in out and "1 case(s)" in out
    assert "inspect: 3/3 volumes (100%)" in result.stderr


def test_cases_on_one_scale_are_not_flagged(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "same", cases=3)
    summary = inspect_json(root)
    assert not summary["volumes"]["intensity"]["channels"][0]["scale"]["differs"]
    result = CliRunner().invoke(cli, ["inspect", "--dataset", "msd", "--data-root", str(root), "--quiet"])
    assert result.exit_code == 0 and "scale warning" not in result.stdout and "label volumes:" in result.stdout


@pytest.mark.filterwarnings("ignore:the 3 cases have 3 different voxel spacings")
def test_the_slice_counts_match_those_of_the_2d_summary(mixed: Path, tmp_path: Path) -> None:
    """The one read per case gives what summarize() gets by reading every slice (the lines a 2D dataset prints)."""
    two_channels = write_msd(tmp_path / "two", cases=2, channels=2, layout="split")
    images = two_channels / "imagesTr"
    (images / "vol_001_0001.nii.gz").write_bytes((images / "vol_001_0000.nii.gz").read_bytes())  # a missing sequence
    for root in (mixed, two_channels):
        dataset = get_registry().build("dataset", "msd", root=str(root))
        summary = inspect_json(root)
        for key in ("grid", "channel_names", "volumes"):
            summary.pop(key)
        assert summary == json.loads(json.dumps(summarize(dataset)))
    assert summary["copied_channels"] == {"vol_001": [[0, 1]]} and summary["channels"] == [2]


def test_the_2d_summary_has_no_volume_part() -> None:
    result = CliRunner().invoke(cli, ["inspect", "--set", "count=8", "--set", "size=32", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "volumes" not in json.loads(result.stdout)
    bad = CliRunner().invoke(cli, ["inspect", "--voxels-per-case", "0"])
    assert bad.exit_code == 2 and "--voxels-per-case" in bad.output


def test_real_hippocampus_cases_sampled_reproducibly_and_exactly_with_every_voxel(hippocampus: Path) -> None:
    sampled = inspect_json(hippocampus)["volumes"]
    assert inspect_json(hippocampus)["volumes"] == sampled  # seeded
    cases = read_cases(hippocampus)
    assert sampled["spacing"] == {"min": [1.0] * 3, "median": [1.0] * 3, "max": [1.0] * 3}
    assert sampled["anisotropy"] == 1.0 and sampled["slice_axis"] == 2
    shapes = np.array([label.shape for _, label, _ in cases])
    assert sampled["shape"]["median"] == np.median(shapes, axis=0).tolist()
    for value, name in ((1, "Anterior"), (2, "Posterior")):
        voxels = [int((label == value).sum()) for _, label, _ in cases]
        assert sampled["label_volumes"][name]["mm3"]["max"] == max(voxels)  # 1 mm^3 voxels
        assert sampled["label_volumes"][name]["absent"] == 0
    channel = sampled["intensity"]["channels"][0]
    everything = np.concatenate([image.ravel() for image, _, _ in cases])
    assert channel["all"]["voxels"] == 10_000 * len(cases) < everything.size
    below = (everything < channel["all"]["p50"]).mean()
    assert 0.48 < below < 0.52  # the sampled median is a median of all voxels
    exact = inspect_json(hippocampus, "--voxels-per-case", "1000000")["volumes"]["intensity"]["channels"][0]["all"]
    assert exact["voxels"] == everything.size
    assert [exact["p0.5"], exact["p50"], exact["p99.5"]] == pytest.approx(np.percentile(everything, [0.5, 50, 99.5]))


def test_real_hippocampus_cases_on_scales_a_thousand_fold_apart_are_flagged(tmp_path: Path) -> None:
    """hippocampus_001 is stored as uint8 (maximum 139), hippocampus_212 as float32 (maximum about 1.6 million)."""
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS} (../shared/data/hippocampus beside the repo)")
    description = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    chosen = [e for e in description["training"] if Path(e["image"]).name in ("hippocampus_001.nii.gz",
                                                                              "hippocampus_212.nii.gz")]
    assert len(chosen) == 2
    root = tmp_path / "two"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for entry in chosen:
        for key in ("image", "label"):
            os.symlink((HIPPOCAMPUS / entry[key]).resolve(), root / entry[key])
    (root / "dataset.json").write_text(json.dumps({**description, "training": chosen, "numTraining": 2}))
    scale = inspect_json(root)["volumes"]["intensity"]["channels"][0]["scale"]
    assert scale["differs"] and scale["ratio"] > 1000
    assert (scale["smallest"]["case"], scale["largest"]["case"]) == ("hippocampus_001", "hippocampus_212")
