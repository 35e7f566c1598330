"""Per-case intensity normalisation (``dataset.normalize = "case"``): the rule, the datasets, predict and export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clihelp import train_tiny_lgg
from segkit.cli import cli
from segkit.data import read_image
from segkit.data.intensity import TARGET, apply_factors, case_factors, check_normalize
from segkit.errors import CheckpointError, ConfigError
from segkit.inference.predictor import Member, Predictor
from segkit.components.registry import get_registry

REGISTRY = get_registry()
CASE = "TCGA_CS_6667_20011105"


# --- the rule ---------------------------------------------------------------------------------------------

def test_factors_map_the_99th_percentile_of_nonzero_pixels_to_the_target() -> None:
    # channel 0: 100 non-zero pixels 1..100 over two slices (p99 = 99.01); channel 1: all zero
    first = np.zeros((10, 10, 2), np.uint8)
    second = np.zeros((10, 10, 2), np.uint8)
    first[:5, :, 0] = np.arange(1, 51).reshape(5, 10)
    second[:5, :, 0] = np.arange(51, 101).reshape(5, 10)
    factors = case_factors([first, second])
    assert factors.shape == (2,)
    assert factors[0] == pytest.approx(TARGET / 99.01)
    assert factors[1] == 1.0  # a channel with no non-zero pixel stays as it is
    # zeros (the background) do not move the percentile
    padded = [np.pad(first, ((0, 20), (0, 20), (0, 0))), second]
    assert case_factors(padded)[0] == pytest.approx(factors[0])


def test_apply_factors_rounds_clips_and_keeps_uint8() -> None:
    image = np.array([[[10, 200], [0, 255]]], np.uint8)  # (1, 2, 2)
    out = apply_factors(image, np.array([1.55, 2.0]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.array([[[16, 255], [0, 255]]], np.uint8))  # 15.5 -> 16, 400 -> 255
    gray = apply_factors(np.array([[3, 4]], np.uint8), np.array([0.5]))
    np.testing.assert_array_equal(gray, np.array([[2, 2]], np.uint8))  # round half to even, like np.rint


def test_a_darker_scan_of_the_same_case_normalises_to_the_same_pixels(lgg_root: Path) -> None:
    slices = [read_image(p) for p in sorted((lgg_root / CASE).glob(f"{CASE}_*[0-9].tif"))]
    darker = [np.round(s * 0.4).astype(np.uint8) for s in slices]  # another scanner's scale
    a, b = case_factors(slices), case_factors(darker)
    mismatch = np.abs(0.4 * b / a - 1)  # how far the darker copy's percentile is from exactly 40%
    assert mismatch.max() < 0.02
    for original, dim in zip(slices[8:12], darker[8:12], strict=True):
        normalised = apply_factors(original, a).astype(float)
        diff = np.abs(normalised - apply_factors(dim, b))
        # the bound: half a stored step of the darker copy times its factor, the percentile's mismatch,
        # and the two final roundings; the stored pixels themselves differ by up to about 100
        bound = 0.5 * b + mismatch * normalised + 1 + 1e-9
        assert (diff <= bound).all()
        assert diff.mean() < 1.5 and np.abs(original.astype(int) - dim).max() > 50


def test_unknown_rule_is_a_clear_error() -> None:
    assert check_normalize("case") == "case"
    with pytest.raises(ConfigError, match="normalize must be one of 'none', 'case'"):
        check_normalize("zscore")


# --- datasets ---------------------------------------------------------------------------------------------

def _case_rows(dataset, case: str) -> list[int]:
    return [int(i) for i in np.flatnonzero(dataset.index["case"] == case)]


def test_lgg_normalises_each_patient_with_factors_from_all_its_slices(lgg_small: Path) -> None:
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), normalize="case")
    plain = REGISTRY.build("dataset", "lgg", root=str(lgg_small))
    assert dataset.normalize == "case" and plain.normalize == "none" and "normalize 'case'" in repr(dataset)
    rows = _case_rows(dataset, CASE)
    raw = [plain.read(i)[0] for i in rows]
    expected = case_factors(raw)
    np.testing.assert_allclose(dataset.case_factors(CASE), expected)
    image, mask = dataset.read(rows[10])
    np.testing.assert_array_equal(image, apply_factors(raw[10], expected))
    np.testing.assert_array_equal(mask, plain.read(rows[10])[1])  # masks are never touched
    tensor, _ = dataset[rows[10]]
    assert float(tensor.max()) <= 1.0 and tensor.dtype == torch.float32


def test_normalisation_with_context_and_cache_decodes_each_slice_once(lgg_small: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), normalize="case", context=1, cache=True)
    uncached = REGISTRY.build("dataset", "lgg", root=str(lgg_small), normalize="case", context=1)
    calls: list[int] = []
    original = type(dataset).read_raw
    monkeypatch.setattr(type(dataset), "read_raw", lambda self, i: calls.append(i) or original(self, i))
    rows = _case_rows(dataset, CASE)
    images = [dataset.read(i)[0] for i in rows]
    assert sorted(calls) == rows  # the factors and the cache share one decoding of each slice
    for i, image in zip(rows, images, strict=True):
        np.testing.assert_array_equal(image, uncached.read(i)[0])  # neighbours are normalised too
    view = dataset.subset([rows[3]])
    np.testing.assert_array_equal(view.read(0)[0], images[3])


def test_folder_normalises_per_case_and_per_image_without_cases(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(1)
    base = rng.integers(1, 120, (16, 16, 3), dtype=np.uint8)
    for name, scale in (("a_1", 1.0), ("a_2", 1.0), ("b_1", 0.5), ("b_2", 0.5)):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.round(base * scale).astype(np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), np.zeros((16, 16), np.uint8))
    by_case = REGISTRY.build("dataset", "folder", root=str(tmp_path), case_pattern=r"^(?P<case>[a-z])_",
                             normalize="case")
    a = by_case.read(int(np.flatnonzero(by_case.index["item"] == "a_1")[0]))[0].astype(int)
    b = by_case.read(int(np.flatnonzero(by_case.index["item"] == "b_1")[0]))[0].astype(int)
    assert np.abs(a - b).max() <= 3  # case b was stored at half the brightness
    alone = REGISTRY.build("dataset", "folder", root=str(tmp_path), normalize="case")
    assert alone.case_factors("a_1").shape == (3,)  # every image is its own case


def test_bad_normalize_in_a_run_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--dataset", "synthetic", "--set", "dataset.normalize=zscore",
                                      "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code != 0
    assert "normalize must be one of 'none', 'case'" in result.output and "Traceback" not in result.output


def test_an_ensemble_must_agree_on_normalisation() -> None:
    def member(rule: str) -> Member:
        return Member(name="m", source=f"run-{rule}", image_size=0, in_channels=3, threshold=0.5,
                      run=lambda x: x[:, :1], normalize=rule)

    assert Predictor([member("case"), member("case")]).normalize == "case"
    with pytest.raises(CheckpointError, match="same intensity normalisation"):
        Predictor([member("case"), member("none")])


# --- a real run: train, evaluate, predict, export ----------------------------------------------------------

@pytest.fixture(scope="module")
def normalized_run(lgg_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial U-Net (width 8) trained 1 epoch at 32x32 on 3 LGG patients, normalised per patient."""
    return train_tiny_lgg(lgg_small, tmp_path_factory.mktemp("normalize") / "run", "dataset.normalize=case")


def test_run_records_the_rule_and_evaluate_reads_with_it(normalized_run: Path, lgg_small: Path) -> None:
    from segkit.evaluation.evaluate import select_data
    from segkit.inference.sources import load_predictor
    from segkit.tomlio import read_toml

    assert read_toml(normalized_run / "config.toml")["dataset"]["normalize"] == "case"
    predictor = load_predictor(normalized_run, device="cpu")
    assert predictor.normalize == "case" and "normalize='case'" in repr(predictor)
    assert select_data(normalized_run, REGISTRY, split="val").dataset.normalize == "case"
    other = select_data(None, REGISTRY, dataset_name="lgg", data_root=str(lgg_small), normalize="case")
    assert other.dataset.normalize == "case"
    result = CliRunner().invoke(cli, ["evaluate", str(normalized_run), "--data-root", str(lgg_small),
                                      "--json", "--quiet"])
    assert result.exit_code == 0, result.output[-3000:]
    assert json.loads(result.stdout)["n_images"] == 60


def test_predict_normalises_a_case_like_the_dataset(normalized_run: Path, lgg_small: Path, tmp_path: Path) -> None:
    from segkit.inference.sources import load_predictor

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(normalized_run), str(lgg_small / CASE), "--out", str(out),
                                      "--save-probs", "--quiet"])
    assert result.exit_code == 0, result.output[-3000:]
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), normalize="case")
    predictor = load_predictor(normalized_run, device="cpu")
    rows = _case_rows(dataset, CASE)
    for row in (rows[0], rows[10]):
        image, _ = dataset.read(row)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        expected = predictor.probabilities(x)[0, 0].numpy()
        name = dataset.index["item"].iloc[row]
        written = cv2.imread(str(out / f"{name}_prob.png"), cv2.IMREAD_UNCHANGED) / 65535.0
        assert np.abs(written - expected).max() <= 1.0 / 65535


def test_export_records_the_rule_and_onnx_predicts_the_same(normalized_run: Path, lgg_small: Path,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from segkit.inference.export import export_onnx, load_onnx_predictor

    report = export_onnx(normalized_run, tmp_path / "m.onnx")
    assert report["metadata"]["normalize"] == "case" and "percentile" in report["metadata"]["input"]
    assert load_onnx_predictor(tmp_path / "m.onnx").normalize == "case"
    probs = {}
    for name, source in (("torch", str(normalized_run)), ("onnx", str(tmp_path / "m.onnx"))):
        result = CliRunner().invoke(cli, ["predict", source, str(lgg_small / CASE), "--out", str(tmp_path / name),
                                          "--save-probs", "--quiet"])
        assert result.exit_code == 0, result.output[-3000:]
        probs[name] = cv2.imread(str(tmp_path / name / f"{CASE}_10_prob.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(probs["torch"] - probs["onnx"]).max() <= 2
