"""segkit predict: masks at the input's size, safe outputs, bad inputs, channels, ONNX sources."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clihelp import segkit
from segkit.cli import cli
from segkit.errors import ConfigError
from segkit.inference.inputs import case_of_file, expand_inputs, split_arguments


def write_images(folder: Path, names: list[str], size: tuple[int, int] = (40, 24), channels: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        shape = size if channels == 1 else (*size, channels)
        path = folder / name
        cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(path)
    return paths


def invoke(*args: str):
    return CliRunner().invoke(cli, ["predict", *args, "--quiet"])


def test_cli_masks_have_the_input_size_and_a_corrupt_file_is_skipped(trained_run: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_images(inputs, ["a.png", "b.tif"], size=(40, 24))  # trained on 32x32
    write_images(inputs, ["c.jpg"], size=(17, 50))
    (inputs / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = segkit("predict", str(trained_run), str(inputs), "--out", str(out), "--save-probs", "--overlay",
                    "--quiet")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "broken.png" in result.stderr and "1 failure" in result.stdout
    assert "wrote 3 mask(s)" in result.stdout
    for name, shape in (("a", (40, 24)), ("b", (40, 24)), ("c", (17, 50))):
        mask = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        prob = cv2.imread(str(out / f"{name}_prob.png"), cv2.IMREAD_UNCHANGED)
        assert prob.shape == shape and prob.dtype == np.uint16
        np.testing.assert_array_equal(prob >= 32768, mask == 255)  # threshold 0.5
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == (*shape, 3)
    assert not (out / "broken.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_existing_outputs_need_overwrite(trained_run: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"keep me")
    result = invoke(str(trained_run), str(tmp_path / "in"), "--out", str(out))
    assert result.exit_code == 2 and "already exist" in result.output and "b.png" in result.output
    assert not (out / "a.png").exists() and (out / "b.png").read_bytes() == b"keep me"  # nothing done
    result = invoke(str(trained_run), str(tmp_path / "in"), "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED).shape == (40, 24)


def test_grayscale_input_to_a_three_channel_model_warns(trained_run: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "in", ["grey.png"], channels=1)
    result = invoke(str(trained_run), str(tmp_path / "in" / "grey.png"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "grayscale" in result.stderr
    assert (tmp_path / "out" / "grey.png").is_file()


def test_an_onnx_file_that_is_not_a_segkit_export_is_refused(trained_run: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    write_images(tmp_path / "in", ["a.png"])
    result = invoke(str(tmp_path / "plain.onnx"), str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not a segkit export" in result.output


def test_lcc_and_tta_with_cases_from_file_names(trained_run: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "in", [f"TCGA_CS_1_2000_{n}.tif" for n in (10, 2, 1)] + ["other.png"])
    result = invoke(str(trained_run), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--postprocess", "lcc",
                    "--tta", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_sources_come_first_then_inputs(trained_run: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path / "in", ["a.png", "a_mask.png"])
    checkpoint = trained_run / "checkpoints" / "best.pt"
    assert split_arguments([str(trained_run), str(checkpoint), str(images[0])]) == (
        [str(trained_run), str(checkpoint)], [str(images[0])])
    with pytest.raises(ConfigError, match="first argument must be a model"):
        split_arguments([str(images[0]), str(trained_run)])
    with pytest.raises(ConfigError, match="comes after the first input"):
        split_arguments([str(trained_run), str(images[0]), str(trained_run)])
    with pytest.raises(ConfigError, match="no input images"):
        split_arguments([str(trained_run)])
    # folders and globs skip *_mask files; a missing path is an error before any work
    assert expand_inputs([str(tmp_path / "in")]) == [images[0].resolve()]
    assert expand_inputs([str(tmp_path / "in" / "*.png")]) == [images[0].resolve()]
    with pytest.raises(ConfigError, match="does not exist"):
        expand_inputs([str(tmp_path / "missing.png")])


def test_case_ids_from_lgg_names() -> None:
    assert case_of_file(Path("/d/TCGA_CS_4941_19960909_12.tif")) == ("/d/TCGA_CS_4941_19960909", 12)
    assert case_of_file(Path("/d/scan.png")) is None
