"""Where users extend outside models and losses: augmentations and volume file formats as registry kinds.

The installed example plugin (examples/segkit-example-plugin) adds a 3D augmentation
(``example_cutout3d``, one module plus one components.toml entry) and a volume format
(``example_npz``, ``.vol.npz``, the same): a Decathlon folder of ``.vol.npz`` volumes trains a 3D run
with the cutout through the real CLI, and ``segkit predict`` writes its label maps as ``.vol.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clihelp import segkit
from segkit.components.conformance import check_augmentation, check_component
from segkit.components.registry import get_registry
from segkit.data.batch_transforms import BatchTransform, NamedTransform, apply_transforms, build_transforms
from segkit.data.volume_formats import format_of, volume_suffixes, volume_stem
from segkit.errors import ConfigError, DataError
from volumes import ellipsoid_case

TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[16,16,8]", "--set", "train.window_overlap=0.25", "--batch-size", "2",
           "--device", "cpu", "--quiet")


def _example_installed() -> None:
    if "example_npz" not in get_registry().names("volume_format"):
        pytest.skip("the example plugin is not installed: pip install ./examples/segkit-example-plugin")


def write_npz_decathlon(root: Path, cases: int = 4, shape: tuple[int, int, int] = (20, 24, 12)) -> Path:
    """A Decathlon folder whose volumes are ``.vol.npz`` archives (voxels, affine) of the example plugin."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    training = []
    for k in range(cases):
        image, label = ellipsoid_case(shape, seed=k)
        np.savez_compressed(root / "imagesTr" / f"vol_{k:03d}.vol.npz", voxels=image[..., 0], affine=affine)
        np.savez_compressed(root / "labelsTr" / f"vol_{k:03d}.vol.npz", voxels=label, affine=affine)
        training.append({"image": f"./imagesTr/vol_{k:03d}.vol.npz", "label": f"./labelsTr/vol_{k:03d}.vol.npz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "npz", "modality": {"0": "MR"}, "labels": {"0": "background", "1": "front", "2": "back"},
        "training": training}))
    return root


def test_a_plugin_format_and_3d_augmentation_train_and_predict_through_the_cli(tmp_path: Path) -> None:
    _example_installed()
    root = write_npz_decathlon(tmp_path / "data")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                    "--set", 'train.transforms=["example_cutout3d", {name = "mirror", axes = [1]}]',
                    "--set", "split.val_fraction=0.25", "--set", "split.test_fraction=0", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert "example_cutout3d" in (out / "config.toml").read_text()
    source = root / "imagesTr" / "vol_000.vol.npz"
    predicted = segkit("predict", str(out), str(source), "--out", str(tmp_path / "masks"), "--quiet", env=env)
    assert predicted.returncode == 0, predicted.stderr
    written = np.load(tmp_path / "masks" / "vol_000.vol.npz")
    with np.load(source) as original:
        assert written["voxels"].shape == original["voxels"].shape
        assert np.allclose(written["affine"], original["affine"])
    assert set(np.unique(written["voxels"]).tolist()) <= {0, 1, 2}


def test_an_unknown_transform_is_refused_before_the_run_folder_is_made(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = segkit("run", "--set", "dataset.count=8", "--set", 'train.transforms=["mirorr"]', "--epochs", "1",
                    "--device", "cpu", "--out", str(out), "--quiet")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'mirorr'" in result.stderr and "mirror" in result.stderr  # the name and the suggestion
    assert not out.exists()


def test_a_3d_only_transform_is_refused_for_a_2d_run_by_name() -> None:
    _example_installed()
    with pytest.raises(ConfigError, match=r"augmentation 'example_cutout3d' transforms 3D batches, and this run "
                                          r"trains on 2D ones"):
        build_transforms(["example_cutout3d"], get_registry(), dims=2)


def test_the_cutout_blanks_one_box_of_the_images_and_leaves_labels_alone() -> None:
    _example_installed()
    cutout = get_registry().build("augmentation", "example_cutout3d", p=1.0, fraction=0.5, fill=-7.0)
    images = torch.rand(2, 1, 8, 8, 8)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8)).float()
    out, out_labels = cutout(images.clone(), labels.clone(), torch.Generator().manual_seed(3))
    assert torch.equal(out_labels, labels)
    assert [int((out[k] == -7.0).sum()) for k in range(2)] == [4 * 4 * 4, 4 * 4 * 4]
    assert torch.equal(out[out != -7.0], images[out != -7.0])


@pytest.mark.parametrize("key", ["augmentation:mirror", "augmentation:gaussian_noise", "volume_format:nifti",
                                 "volume_format:simpleitk"])
def test_the_built_in_extensions_pass_the_plugin_conformance_checks(key: str) -> None:
    check_component(key)


def test_the_conformance_check_catches_a_transform_that_ignores_its_generator() -> None:
    class Unseeded(BatchTransform):
        def __call__(self, images, labels, generator):  # noqa: ANN001, ANN204
            return images + torch.rand(images.shape), labels

    with pytest.raises(AssertionError, match="draw every random number from the generator"):
        check_augmentation(Unseeded())


def test_mirror_flips_images_and_labels_together_along_the_axis_named() -> None:
    mirror = get_registry().build("augmentation", "mirror", p=1.0, axes=[1])
    images = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    labels = (images % 3).clone()
    out, out_labels = mirror(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out, images.flip(3)) and torch.equal(out_labels, labels.flip(3))  # axis 1: columns
    rows, _ = get_registry().build("augmentation", "mirror", p=1.0, axes=[0])(images, labels, torch.Generator())
    assert torch.equal(rows, images.flip(2))


def test_a_transform_that_changes_a_shape_is_named() -> None:
    class Cropping(BatchTransform):
        def __call__(self, images, labels, generator):  # noqa: ANN001, ANN204
            return images[..., 1:], labels[..., 1:]

    with pytest.raises(ConfigError, match=r"augmentation 'crop' returned images .* keeps shapes"):
        apply_transforms([NamedTransform("crop", Cropping())], torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4),
                         torch.Generator())


def test_volume_files_find_their_format_by_the_longest_suffix(tmp_path: Path) -> None:
    assert ".nii.gz" in volume_suffixes() and ".mha" in volume_suffixes()
    assert volume_stem("case_001.nii.gz") == "case_001"
    assert type(format_of("a.nii.gz")).__name__ == "NiftiFormat"
    with pytest.raises(DataError, match=r"not a volume file segkit reads: the suffixes are .*\.nii\.gz"):
        format_of(tmp_path / "scan.dcm")
    if "example_npz" in get_registry().names("volume_format"):
        assert volume_stem("case_001.vol.npz") == "case_001"  # .vol.npz, not .npz
