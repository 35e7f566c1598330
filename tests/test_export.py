"""segkit export: ONNX and TorchScript with dynamic shapes and the preprocessing inside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clihelp import segkit
from segkit.cli import cli
from segkit.errors import CheckpointError, SegkitError
from segkit.inference.export import export_onnx, load_onnx_predictor
from segkit.inference.sources import load_predictor
from segkit.runs.checkpoint import build_model_from_checkpoint, load_checkpoint

#: Two sizes unlike the export example, one not a multiple of the model's stride.
SIZES = [(2, 3, 64, 96), (1, 3, 45, 70)]


def logits_match(run: Path, onnx_path: Path) -> float:
    import onnxruntime

    model = build_model_from_checkpoint(load_checkpoint(run / "checkpoints" / "best.pt"))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in SIZES:
        images = torch.rand(shape, generator=generator)
        with torch.inference_mode():
            expected = model(images).numpy()
        got = session.run(None, {"images": images.numpy()})[0]
        assert got.shape == expected.shape == (shape[0], 1, *shape[2:])
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def test_cli_exports_the_tutorial_unet_to_onnx(trained_run: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "unet.onnx"
    result = segkit("export", str(trained_run), "--format", "onnx", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |logit difference|" in result.stdout
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata["segkit_format"] == "segkit-onnx-1"
    assert metadata["model"] == "unet" and metadata["in_channels"] == "3" and metadata["image_size"] == "0"
    assert float(metadata["threshold"]) == 0.5 and float(metadata["scale"]) == 255.0
    assert not Path(metadata["source_run"]).is_absolute()  # no path of this machine in a file to share
    assert (out.parent / metadata["source_run"]).resolve() == trained_run.resolve()
    assert logits_match(trained_run, out) <= 1e-4


def test_smp_model_exports_with_dynamic_height_and_width(smp_run: Path, tmp_path: Path) -> None:
    export_onnx(smp_run, tmp_path / "smp.onnx", verify=False)
    assert logits_match(smp_run, tmp_path / "smp.onnx") <= 1e-4


def test_onnx_predictor_matches_pytorch_with_resizing(resized_run: Path, tmp_path: Path) -> None:
    """A run trained at 48x48: the ONNX predictor resizes in and out like the PyTorch one."""
    export_onnx(resized_run, tmp_path / "r.onnx", verify=False)
    onnx_predictor = load_onnx_predictor(tmp_path / "r.onnx", tta=True)
    torch_predictor = load_predictor(resized_run, device="cpu", tta=True)
    assert onnx_predictor.members[0].image_size == 48 and onnx_predictor.in_channels == 3
    images = torch.rand(3, 3, 30, 52)
    expected = torch_predictor.probabilities(images)
    got = onnx_predictor.probabilities(images)
    assert got.shape == (3, 1, 30, 52)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # an ensemble may mix a run and an ONNX export
    mixed = load_predictor([resized_run, tmp_path / "r.onnx"], device="cpu", tta=True)
    torch.testing.assert_close(mixed.probabilities(images), expected, atol=1e-5, rtol=0)


def test_torchscript_export_carries_the_preprocessing(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "torchscript",
                                      "--out", str(tmp_path / "m.ts"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_abs_diff"] <= 1e-4
    extra = {"segkit.json": ""}
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in torch 2.14, still works
        scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    metadata = json.loads(extra["segkit.json"])
    assert metadata["segkit_format"] == "segkit-torchscript-1" and metadata["in_channels"] == "3"
    model = build_model_from_checkpoint(load_checkpoint(trained_run / "checkpoints" / "best.pt"))
    for shape in SIZES:
        images = torch.rand(shape)
        torch.testing.assert_close(scripted(images), model(images), atol=1e-4, rtol=0)
    # an existing file needs --overwrite
    again = CliRunner().invoke(cli, ["export", str(trained_run), "--out", str(tmp_path / "m.ts")])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_onnx_without_segkit_metadata_and_missing_onnx_are_clear_errors(trained_run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(CheckpointError, match="not a segkit export"):
        load_onnx_predictor(tmp_path / "plain.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(SegkitError, match=r"pip install 'segkit\[export\]'"):
        export_onnx(trained_run, tmp_path / "x.onnx")


def test_export_of_a_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output
