"""2.5D context: neighbouring slices of a case stacked as channels, from the datasets to predict and export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from clihelp import train_tiny_lgg
from segkit.cli import cli
from segkit.data import SegmentationDataset, read_image, read_mask
from segkit.errors import CheckpointError, ConfigError, DataError
from segkit.inference.predictor import Member, Predictor
from segkit.inference.predict import context_neighbours
from segkit.components.registry import get_registry

REGISTRY = get_registry()
CASE = "TCGA_CS_6667_20011105"  # 20 slices, numbered 1..20


def slice_path(root: Path, number: int, mask: bool = False) -> Path:
    return root / CASE / f"{CASE}_{number}{'_mask' if mask else ''}.tif"


def stacked(root: Path, numbers: list[int]) -> np.ndarray:
    return np.concatenate([read_image(slice_path(root, n)) for n in numbers], axis=2)


def position(dataset, number: int) -> int:
    rows = dataset.index[(dataset.index["case"] == CASE) & (dataset.index["slice"] == number)]
    assert len(rows) == 1
    return int(rows.index[0])


# --- datasets ---------------------------------------------------------------------------------------------

def test_lgg_context_repeats_the_edge_slice_and_stacks_neighbours_in_order(lgg_small: Path) -> None:
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=1)
    assert dataset.in_channels == 9 and dataset.slice_channels == 3 and dataset.context == 1
    last = int(dataset.index.loc[dataset.index["case"] == CASE, "slice"].max())
    for number, expected in ((1, [1, 1, 2]), (10, [9, 10, 11]), (last, [last - 1, last, last])):
        image, mask = dataset.read(position(dataset, number))
        assert image.shape == (256, 256, 9) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, stacked(lgg_small, expected))
        np.testing.assert_array_equal(mask, read_mask(slice_path(lgg_small, number, mask=True)))
    tensor, _ = dataset[position(dataset, 10)]
    assert tensor.shape == (9, 256, 256)
    wide = REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=2)
    image, _ = wide.read(position(wide, 2))
    np.testing.assert_array_equal(image, stacked(lgg_small, [1, 1, 2, 3, 4]))


def test_context_zero_is_unchanged(lgg_small: Path) -> None:
    plain = REGISTRY.build("dataset", "lgg", root=str(lgg_small))
    assert plain.context == 0 and plain.in_channels == plain.slice_channels == 3
    i = position(plain, 7)
    image, mask = plain.read(i)
    np.testing.assert_array_equal(image, read_image(slice_path(lgg_small, 7)))
    assert plain.neighbours(i) == [i]
    assert "context" not in repr(plain)


def test_the_cache_decodes_each_slice_once(lgg_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=2, cache=True)
    calls: list[int] = []
    original = type(dataset).read_raw
    monkeypatch.setattr(type(dataset), "read_raw", lambda self, i: calls.append(i) or original(self, i))
    case = [int(i) for i in np.flatnonzero(dataset.index["case"] == CASE)]
    first = [dataset.read(i)[0].copy() for i in case]
    second = [dataset.read(i)[0] for i in case]
    assert sorted(calls) == case  # every slice decoded exactly once, not 5 times
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_subset_reads_neighbours_from_its_parent(lgg_small: Path) -> None:
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=1)
    middle = position(dataset, 10)
    view = dataset.subset([middle])  # slices 9 and 11 are not in the subset
    assert view.in_channels == 9 and len(view) == 1
    image, _ = view.read(0)
    np.testing.assert_array_equal(image, stacked(lgg_small, [9, 10, 11]))
    assert view[0][0].shape == (9, 256, 256)
    assert view.neighbours(0) == [position(dataset, 9), middle, position(dataset, 11)]


def _write_slices(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    """PNG images (distinct pixels) and masks under root/images and root/masks; returns the RGB images by stem."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for name in names:
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{name}.png"), image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{name}.png"), (rng.random((16, 16)) > 0.7).astype(np.uint8) * 255)
        images[name] = image
    return images


def test_folder_and_csv_with_slice_numbers(tmp_path: Path) -> None:
    names = ["pa_1", "pa_2", "pa_10", "pb_3", "pb_5"]  # 10 sorts before 2 as text, not as a number
    images = _write_slices(tmp_path, names)
    expected = {"pa_1": ["pa_1", "pa_1", "pa_2"], "pa_2": ["pa_1", "pa_2", "pa_10"],
                "pa_10": ["pa_2", "pa_10", "pa_10"], "pb_3": ["pb_3", "pb_3", "pb_5"]}

    def check(dataset) -> None:
        assert dataset.in_channels == 9
        for stem, stack in expected.items():
            i = int(np.flatnonzero(dataset.index["item"] == stem)[0])
            np.testing.assert_array_equal(dataset.read(i)[0], np.concatenate([images[s] for s in stack], axis=2))

    check(REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1,
                         case_pattern=r"^(?P<case>.+)_(?P<slice>\d+)$"))
    check(REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1, case_pattern=r"^(p\w)_",
                         slice_pattern=r"_(\d+)$"))
    table = pd.DataFrame({"image": [f"images/{n}.png" for n in names], "mask": [f"masks/{n}.png" for n in names],
                          "patient": [n.split("_")[0] for n in names], "z": [n.split("_")[1] for n in names]})
    table.to_csv(tmp_path / "table.csv", index=False)
    check(REGISTRY.build("dataset", "csv", path=str(tmp_path / "table.csv"), case_column="patient",
                         slice_column="z", context=1))
    # without context the slice number is still recorded, the images are single slices
    plain = REGISTRY.build("dataset", "csv", path=str(tmp_path / "table.csv"), case_column="patient", slice_column="z")
    assert plain.in_channels == 3 and plain.index["slice"].tolist() == [1, 2, 10, 3, 5]


def test_bad_context_settings_are_clear_errors(tmp_path: Path, lgg_small: Path) -> None:
    synthetic = REGISTRY.get("dataset", "synthetic").load()
    for bad in (-1, True, 1.5, "1"):
        with pytest.raises(ConfigError, match="context must be an integer >= 0"):
            synthetic(count=4, size=16, context=bad)
    with pytest.raises(ConfigError, match="context"):
        REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=-2)
    _write_slices(tmp_path, ["pa_1", "pa_2", "pa_02"])
    with pytest.raises(ConfigError, match="case_pattern"):
        REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1)
    with pytest.raises(ConfigError, match="slice_pattern"):
        REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1, case_pattern=r"^(p\w)_")
    with pytest.raises(DataError, match="integer slice number"):
        REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1, case_pattern=r"^(p\w)_",
                       slice_pattern=r"^(p\w)")
    with pytest.raises(DataError, match="both slice 2"):
        REGISTRY.build("dataset", "folder", root=str(tmp_path), context=1, case_pattern=r"^(p\w)_",
                       slice_pattern=r"_(\d+)$")
    pd.DataFrame({"image": ["images/pa_1.png"], "mask": ["masks/pa_1.png"], "z": ["top"]}).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match="slice_column"):
        REGISTRY.build("dataset", "csv", path=str(tmp_path / "t.csv"), case_column="image", context=1)
    with pytest.raises(DataError, match="slice numbers must be integers"):
        REGISTRY.build("dataset", "csv", path=str(tmp_path / "t.csv"), case_column="image", slice_column="z")

    class NoOrder(SegmentationDataset):
        def read_raw(self, i: int):
            return np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)

    index = pd.DataFrame({"item": ["a", "b"], "case": ["c", "c"], "has_lesion": [False, False]})
    with pytest.raises(ConfigError, match="no 'slice' column.*lgg.*slice_pattern.*slice_column"):
        NoOrder(index, 3, context=1)
    assert NoOrder(index, 3).in_channels == 3
    info = CliRunner().invoke(cli, ["info", "dataset", "lgg"])
    assert info.exit_code == 0 and "context" in info.output and "edge slice repeats" in info.output


def test_predict_orders_a_case_by_slice_number_and_refuses_unnumbered_files() -> None:
    files = [Path(f"/d/{n}.png") for n in ("s_10", "s_2", "s_1", "scan", "t_1", "t_1b", "u_3", "u_03")]
    neighbours, failures, single = context_neighbours(files, 1)
    assert neighbours[2] == [2, 2, 1] and neighbours[1] == [2, 1, 0] and neighbours[0] == [1, 0, 0]
    assert neighbours[4] == [4, 4, 4] and single == ["/d/t"]
    assert "does not end in _<number>" in failures[3] and "does not end in _<number>" in failures[5]
    assert "both slice 3" in failures[6] and failures[6] == failures[7]


def test_an_ensemble_must_agree_on_context() -> None:
    def member(context: int) -> Member:
        return Member("m", f"run{context}", 0, None, 0.5, lambda x: x[:, :1], context=context)

    with pytest.raises(CheckpointError, match="context"):
        Predictor([member(0), member(1)])
    assert Predictor([member(1), member(1)]).context == 1


# --- a real context run: train, evaluate, predict, export --------------------------------------------------

@pytest.fixture(scope="module")
def context_run(lgg_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial U-Net (width 8) trained 1 epoch at 32x32 on 3 LGG patients with context 1 (9 channels)."""
    return train_tiny_lgg(lgg_small, tmp_path_factory.mktemp("context") / "run", "dataset.context=1")


def test_context_run_records_context_and_evaluates(context_run: Path, lgg_small: Path) -> None:
    from segkit.evaluation.evaluate import select_data
    from segkit.inference.sources import load_predictor
    from segkit.tomlio import read_toml

    config = read_toml(context_run / "config.toml")
    assert config["dataset"]["context"] == 1 and config["model"]["in_channels"] == 9
    predictor = load_predictor(context_run, device="cpu")
    assert predictor.context == 1 and predictor.in_channels == 9 and predictor.slice_channels == 3
    data = select_data(context_run, REGISTRY, split="val")
    assert data.dataset.context == 1 and data.dataset.in_channels == 9
    result = CliRunner().invoke(cli, ["evaluate", str(context_run), "--split", "val", "--json", "--quiet"])
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(result.stdout)
    assert report["n_images"] == len(data.positions) and 0 <= report["global"]["dice"] <= 1
    # another copy of the data (a foreign dataset) is stacked like the model's
    other = select_data(None, REGISTRY, dataset_name="lgg", data_root=str(lgg_small), context=1)
    assert other.dataset.in_channels == 9


def test_predict_stacks_a_case_like_the_dataset(context_run: Path, lgg_small: Path, tmp_path: Path) -> None:
    from segkit.inference.sources import load_predictor

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(context_run), str(lgg_small / CASE), "--out", str(out),
                                      "--save-probs", "--overlay", "--quiet"])
    assert result.exit_code == 0, result.output[-3000:]
    count = len(list((lgg_small / CASE).glob("*_mask.tif")))
    assert len(list(out.glob(f"{CASE}_*_prob.png"))) == count
    # the probabilities equal the predictor's on the dataset's stacked slices
    dataset = REGISTRY.build("dataset", "lgg", root=str(lgg_small), context=1)
    predictor = load_predictor(context_run, device="cpu")
    for number in (1, 10, count):
        image, _ = dataset.read(position(dataset, number))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        expected = predictor.probabilities(x)[0, 0].numpy()
        written = cv2.imread(str(out / f"{CASE}_{number}_prob.png"), cv2.IMREAD_UNCHANGED) / 65535.0
        assert np.abs(written - expected).max() <= 1.0 / 65535
    # a file outside a numbered series fails with a clear message, the others are written
    loose = tmp_path / "loose"
    loose.mkdir()
    cv2.imwrite(str(loose / "scan.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(loose / "p_1.png"), np.zeros((32, 32, 3), np.uint8))
    failed = CliRunner().invoke(cli, ["predict", str(context_run), str(loose), "--out", str(tmp_path / "o2"),
                                      "--quiet"])
    assert failed.exit_code == 1
    assert "scan.png" in failed.output and "_<number>" in failed.output and "single slice" in failed.output
    assert (tmp_path / "o2" / "p_1.png").is_file()


def test_context_run_exports_to_torchscript(context_run: Path, tmp_path: Path) -> None:
    from segkit.runs.checkpoint import build_model_from_checkpoint, load_checkpoint

    result = CliRunner().invoke(cli, ["export", str(context_run), "--format", "torchscript",
                                      "--out", str(tmp_path / "m.ts"), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    assert json.loads(result.stdout)["max_abs_diff"] <= 1e-4
    extra = {"segkit.json": ""}
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in torch 2.14, still works
        scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    metadata = json.loads(extra["segkit.json"])
    assert metadata["context"] == "1" and metadata["in_channels"] == "9"
    model = build_model_from_checkpoint(load_checkpoint(context_run / "checkpoints" / "best.pt"))
    images = torch.rand(2, 9, 40, 36)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(images), model(images), atol=1e-4, rtol=0)


def test_context_run_exports_to_onnx_and_predicts_the_same(context_run: Path, lgg_small: Path,
                                                           tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from segkit.inference.export import export_onnx, load_onnx_predictor

    report = export_onnx(context_run, tmp_path / "m.onnx")
    assert report["metadata"]["context"] == "1" and report.get("max_abs_diff", 0) <= 1e-4
    assert load_onnx_predictor(tmp_path / "m.onnx").context == 1
    masks = {}
    for name, source in (("torch", str(context_run)), ("onnx", str(tmp_path / "m.onnx"))):
        result = CliRunner().invoke(cli, ["predict", source, str(lgg_small / CASE), "--out", str(tmp_path / name),
                                          "--save-probs", "--quiet"])
        assert result.exit_code == 0, result.output[-3000:]
        masks[name] = cv2.imread(str(tmp_path / name / f"{CASE}_10_prob.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(masks["torch"] - masks["onnx"]).max() <= 2
