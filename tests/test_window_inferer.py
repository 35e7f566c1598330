"""The one sliding-window owner: WindowSettings (config -> checkpoint -> export metadata and back) and the
SlidingWindowInferer that training, evaluate, predict and export share; and that nothing else slides windows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from segkit.config import TrainSettings
from segkit.errors import CheckpointError, ConfigError
from segkit.inference.sliding_window import SlidingWindowInferer, sliding_window_logits
from segkit.runs.window import WindowSettings

REPO = Path(__file__).resolve().parents[1]


def conv_net(dims: int, in_channels: int = 2, classes: int = 3) -> nn.Module:
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    torch.manual_seed(0)
    return nn.Sequential(conv(in_channels, 4, 3, padding="same"), nn.ReLU(), conv(4, classes, 3, padding="same")).eval()


@pytest.mark.parametrize("spatial", [(24, 20), (12, 16, 10)])
def test_one_window_covering_the_image_equals_a_whole_image_pass(spatial) -> None:
    model = conv_net(len(spatial))
    image = torch.rand(2, *spatial, generator=torch.Generator().manual_seed(3))
    inferer = SlidingWindowInferer(WindowSettings(spatial, overlap=0.5))
    with torch.no_grad():
        whole = model(image[None])[0]
    torch.testing.assert_close(inferer(model, image), whole, rtol=1e-5, atol=1e-5)
    # and a batch of images, each slid on its own
    batch = torch.stack([image, image.flip(-1)])
    with torch.no_grad():
        expected = model(batch)
    torch.testing.assert_close(inferer(model, batch), expected, rtol=1e-5, atol=1e-5)


def test_the_inferer_is_the_function_with_its_settings() -> None:
    model = conv_net(2)
    image = torch.rand(2, 40, 33, generator=torch.Generator().manual_seed(4))
    inferer = SlidingWindowInferer(WindowSettings((16, 16), overlap=0.25), batch_size=3).mirrored((1,))
    expected = sliding_window_logits(model, image, (16, 16), overlap=0.25, batch_size=3, mirror_axes=(1,))
    assert torch.equal(inferer(model, image), expected)


def test_the_stitching_device_holds_the_output() -> None:
    image = torch.rand(1, 20, 20)
    out = SlidingWindowInferer(WindowSettings((8, 8)), stitch_device="cpu")(lambda x: x, image)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, image)


def test_an_image_of_other_dims_is_a_config_error() -> None:
    inferer = SlidingWindowInferer(WindowSettings((8, 8)))
    with pytest.raises(ConfigError, match=r"8x8 windows, overlap 0.5 inferer takes one image \(C, 2 spatial sizes\)"):
        inferer(lambda x: x, torch.rand(1, 1, 1, 8, 8))


def test_window_settings_travel_from_config_to_checkpoint_to_metadata_and_back() -> None:
    train = TrainSettings(patch_size=[64, 48], window_overlap=0.25)
    window = WindowSettings.from_train(train)
    assert window == WindowSettings((64, 48), 0.25) and window.dims == 2
    assert WindowSettings.from_train({"patch_size": [16, 16, 8], "window_overlap": 0.5}).dims == 3
    assert WindowSettings.from_train(TrainSettings()) is None
    record = window.to_record()
    assert record == {"patch_size": [64, 48], "window_overlap": 0.25}
    assert WindowSettings.from_record(record) == window
    # a checkpoint from before the window was recorded in its preprocessing: the configuration's train section
    assert WindowSettings.from_record({}, {"train": {"patch_size": [8, 8, 8]}}) == WindowSettings((8, 8, 8), 0.5)
    assert WindowSettings.from_record({"image_size": 128}, {"train": {}}) is None
    metadata = window.to_metadata()
    assert metadata == {"patch_size": "[64, 48]", "window_overlap": "0.25"}
    assert WindowSettings.from_metadata(metadata) == window
    assert WindowSettings.from_metadata({"image_size": "0"}) is None


@pytest.mark.parametrize("record", [{"patch_size": [64, 0]}, {"patch_size": [64]}, {"patch_size": "64"},
                                    {"patch_size": [8, 8], "window_overlap": 1.0},
                                    {"patch_size": [8, 8], "window_overlap": "half"}])
def test_an_edited_checkpoint_window_is_a_checkpoint_error_naming_the_file(record) -> None:
    with pytest.raises(CheckpointError, match=r"'run/best.pt' records the patch size .* edited or damaged"):
        WindowSettings.from_record(record, source="run/best.pt")


@pytest.mark.parametrize("metadata", [{"patch_size": "[8, x]"}, {"patch_size": "[8, 8]", "window_overlap": "2"},
                                      {"patch_size": "[8, 8, 8, 8]"}, {"patch_size": "{}"}])
def test_edited_export_metadata_is_a_checkpoint_error(metadata) -> None:
    with pytest.raises(CheckpointError, match="window metadata .* was edited"):
        WindowSettings.from_metadata(metadata, "model.onnx")


def test_only_the_sliding_window_module_slides_windows() -> None:
    """One implementation: every other module goes through SlidingWindowInferer, none places or blends windows."""
    owner = REPO / "toolkit" / "segkit" / "inference" / "sliding_window.py"
    pattern = re.compile(r"\b(sliding_window_logits|window_starts|gaussian_importance)\(")
    users = [path.relative_to(REPO) for folder in ("toolkit", "plugins") for path in (REPO / folder).rglob("*.py")
             if path != owner and pattern.search(path.read_text())]
    assert users == [], f"these modules slide windows themselves instead of using SlidingWindowInferer: {users}"
    inferer_users = {path.relative_to(REPO).as_posix() for path in (REPO / "toolkit").rglob("*.py")
                     if "SlidingWindowInferer(" in path.read_text() and path != owner}
    assert inferer_users == {"toolkit/segkit/train/loop.py", "toolkit/segkit/inference/predictor.py",
                             "toolkit/segkit/inference/whole_volume.py", "toolkit/segkit/planning/first_batch.py"}
