"""Foreign or hostile ONNX files: refused with one line before anything runs, no data read from elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from clihelp import segkit

from segkit.errors import CheckpointError
from segkit.inference.export import export_onnx, load_onnx_predictor


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(trained_run, out, verify=False)
    return out


def tampered(source: Path, target: Path, how: str) -> Path:
    import onnx

    model = onnx.load(str(source))
    if how.startswith("external "):
        tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", how.removeprefix("external ")), ("offset", "0"), ("length", "64")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    elif how == "output channels":
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("location", ["../../secret.bin", "/etc/passwd", "weights.bin"])
def test_external_data_references_are_refused_before_anything_is_opened(exported: Path, tmp_path: Path,
                                                                         location: str) -> None:
    (tmp_path / "weights.bin").write_bytes(np.zeros(64, np.uint8).tobytes())
    path = tampered(exported, tmp_path / "hostile.onnx", f"external {location}")
    with pytest.raises(CheckpointError, match=r"keeps the tensor .* in an external file " + re.escape(f"({location!r})")):
        load_onnx_predictor(path)


def test_an_output_of_another_shape_than_the_metadata_describes_is_refused(exported: Path, tmp_path: Path) -> None:
    path = tampered(exported, tmp_path / "edited.onnx", "output channels")
    with pytest.raises(CheckpointError, match=r"outputs 3 channel\(s\) but its metadata describes 1 \(binary"):
        load_onnx_predictor(path)


def test_the_cli_refuses_a_hostile_onnx_in_one_line_and_writes_nothing(exported: Path, tmp_path: Path) -> None:
    import cv2

    path = tampered(exported, tmp_path / "hostile.onnx", "external ../../../etc/shadow")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "masks"
    result = segkit("predict", str(path), str(images), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "in an external file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_an_untouched_export_still_loads(exported: Path) -> None:
    assert load_onnx_predictor(exported).members[0].labels.out_channels == 1
