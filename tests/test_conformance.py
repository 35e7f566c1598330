"""Every registered component passes segkit.testing's conformance checks.

The parameters come from the live registry, so a newly installed plugin is
tested the moment it is registered (as timm's test_models does for every model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from segkit.components.registry import get_registry
from segkit.testing import check_dataset, check_loss, check_metric, check_model, check_volume_model

REGISTRY = get_registry()

#: Light settings: the contract (shapes, odd sizes, logits, gradients) does not depend on the
#: encoder's size, and timm's test encoders make the heavy decoders (UNet++, UPerNet, DPT) 4-8x
#: faster to check than ResNet-18 on 2 CPU cores. smp_unet keeps one of smp's own encoders.
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "unet": {"width": 8},
    "smp_unet": {"encoder_name": "resnet18"},
    "smp_dpt": {"encoder_name": "tu-test_vit"},
    "unet3d": {"width": 4, "stages": 3},
    "monai_unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "monai_dynunet": {"strides": [1, 2, 2], "filters": [4, 8, 16]},
    "monai_segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
}
SMP_LIGHT_ENCODER = {"encoder_name": "tu-test_resnet"}


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))  # 1 under pytest-xdist
    yield
    torch.set_num_threads(previous)


#: Whose components this suite checks: segkit's own and the example plugin's. A plugin someone
#: installs beside segkit is checked in its own package (segkit.testing.check_components).
CHECKED = ("segkit", "segkit-example-plugin")


def names(kind: str) -> list[str]:
    return [n for n in REGISTRY.names(kind) if REGISTRY.get(kind, n).plugin.distribution in CHECKED]


@pytest.mark.parametrize("name", names("model"))
def test_model_conforms(name: str) -> None:
    params = MODEL_PARAMS.get(name, SMP_LIGHT_ENCODER if name.startswith("smp_") else {})
    torch.manual_seed(0)
    model = REGISTRY.build("model", name, in_channels=3, classes=1, **params)
    if getattr(model, "spatial_dims", 2) == 3:
        check_volume_model(model, in_channels=3, classes=1)
    else:
        check_model(model, in_channels=3, classes=1, size=(64, 64))


@pytest.mark.parametrize("name", names("loss"))
def test_loss_conforms(name: str) -> None:
    check_loss(REGISTRY.build("loss", name))


@pytest.mark.parametrize("name", names("metric"))
def test_metric_conforms(name: str) -> None:
    check_metric(REGISTRY.build("metric", name))


def _write_pairs(root: Path, count: int = 6) -> list[tuple[Path, Path, str]]:
    """A small on-disk dataset (PNG images and 0/255 masks) made from the synthetic generator."""
    import cv2

    source = REGISTRY.build("dataset", "synthetic", count=count, size=32, slices_per_case=3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    pairs = []
    for i in range(count):
        image, mask = source.read(i)
        item = f"case{i // 3}_slice{i % 3}"
        image_path, mask_path = root / "images" / f"{item}.png", root / "masks" / f"{item}.png"
        cv2.imwrite(str(image_path), np.ascontiguousarray(image[..., ::-1]))
        cv2.imwrite(str(mask_path), mask * 255)
        pairs.append((image_path, mask_path, f"case{i // 3}"))
    return pairs


def dataset_params(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if name == "synthetic":
        return {"count": 8, "size": 32}
    if name == "lgg":
        return {"root": str(request.getfixturevalue("lgg_small"))}
    if name == "folder":
        _write_pairs(tmp_path)
        return {"root": str(tmp_path), "case_pattern": r"^(case\d+)_"}
    if name == "csv":
        pairs = _write_pairs(tmp_path)
        table = tmp_path / "items.csv"
        pd.DataFrame({"image": [str(p[0]) for p in pairs], "mask": [str(p[1]) for p in pairs],
                      "case": [p[2] for p in pairs]}).to_csv(table, index=False)
        return {"path": str(table), "case_column": "case"}
    if name == "lgg_volumes":
        return {"root": str(request.getfixturevalue("lgg_small"))}
    if name == "msd":
        from volumes import write_msd

        return {"root": str(write_msd(tmp_path / "msd", cases=2, channels=2))}
    raise AssertionError(f"built-in dataset {name!r} has no test parameters here; add them")


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_conforms(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dataset = REGISTRY.build("dataset", name, **dataset_params(name, tmp_path, request))
    check_dataset(dataset)


def test_check_dataset_rejects_a_broken_dataset() -> None:
    class MaskOutOfRange(torch.utils.data.Dataset):
        index = pd.DataFrame({"item": ["a"], "case": ["a"], "has_lesion": [True]})

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):
            return torch.zeros(3, 8, 8), torch.full((1, 8, 8), 255.0)

    with pytest.raises(AssertionError, match="mask"):
        check_dataset(MaskOutOfRange())


def test_check_model_rejects_a_model_that_returns_probabilities() -> None:
    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.conv(x))

    with pytest.raises(AssertionError, match="looks like probabilities"):
        check_model(Probabilities())


def test_check_component_checks_a_volume_model_on_volumes() -> None:
    from segkit.testing import check_component

    model = check_component("model:unet3d", {"width": 4, "stages": 3})
    assert model.spatial_dims == 3


def test_check_model_rejects_deep_supervision_in_eval_mode() -> None:
    class AlwaysTuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.conv(x)
            return logits, logits[..., ::2, ::2]

    with pytest.raises(AssertionError, match="in eval mode forward must return one logits tensor"):
        check_model(AlwaysTuple())


def test_check_components_runs_a_whole_installed_plugin() -> None:
    from segkit.testing import check_components

    assert check_components("segkit-example-plugin") == ["volume_format:example_npz", "augmentation:example_cutout3d",
                                                         "loss:example_log_cosh_dice", "model:example_tinyunet"]
    with pytest.raises(AssertionError, match="registers no segkit components"):
        check_components("not-installed-anywhere")
    with pytest.raises(AssertionError, match=r"dataset:csv from segkit needs path: pass them as params="):
        check_components("segkit")
