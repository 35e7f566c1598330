"""Small things a new user meets: plugin files with modules beside them, aligned listings, ..."""

from __future__ import annotations

import textwrap
from pathlib import Path

from clihelp import segkit, write_plugin

SIBLING_PLUGIN = textwrap.dedent('''
    import sibling_models
    from segkit.components.hookspecs import hookimpl


    @hookimpl
    def segkit_components():
        return [{"kind": "model", "name": "sibling_net", "target": "sibling_models:build",
                 "summary": sibling_models.SUMMARY}]
''')

SIBLING_MODELS = textwrap.dedent('''
    SUMMARY = "a model from a module beside its plugin file"


    def build(in_channels: int = 3, classes: int = 1, depth: int = 2):
        """A model defined beside the plugin file."""
        import torch

        return torch.nn.Conv2d(in_channels, classes, 1)
''')


def test_a_plugin_file_imports_a_module_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "plugin_dir"
    folder.mkdir()
    write_plugin(folder, "sibling_models", SIBLING_MODELS)
    plugin = write_plugin(folder, "with_sibling", SIBLING_PLUGIN)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = segkit("info", "model", "sibling_net", "-p", str(plugin), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "a model from a module beside its plugin file" in result.stdout and "depth" in result.stdout


def test_list_plugins_keeps_its_columns_for_long_names(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "a_plugin_with_a_really_quite_long_name_indeed", "")
    result = segkit("list", "plugins", "-p", str(plugin))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    rows = [(lines["builtins"], "segkit_builtins"), (lines[plugin.stem], str(plugin))]
    assert len({line.index(module) for line, module in rows}) == 1, result.stdout
    assert len({line.rindex(" ok") for line, _ in rows}) == 1, result.stdout


def test_predict_on_a_volume_with_a_2d_run_says_what_the_run_was_trained_on(trained_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segkit.cli import cli

    volumes = tmp_path / "volumes"
    volumes.mkdir()
    (volumes / "BraTS_001_flair.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    for target in (volumes / "BraTS_001_flair.nii.gz", volumes):
        result = CliRunner().invoke(cli, ["predict", str(trained_run), str(target), "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert "trained on the 'synthetic' dataset of 2D images" in result.output, result.output
        assert "a run trained on a volume dataset" in result.output and "not an image" not in result.output
        assert not (tmp_path / "out").exists()


def test_export_metadata_holds_paths_relative_to_the_export(tmp_path: Path) -> None:
    import json

    from segkit.inference.export import portable_metadata

    runs, exports = tmp_path / "runs", tmp_path / "exports"
    metadata = {"source_run": str(runs / "a"), "model": "smp_unet", "threshold": "0.5",
                "model_params": json.dumps({"encoder_weights": str(tmp_path / "weights" / "r34.pth"), "depth": 3,
                                            "encoder_name": "resnet34"}),
                "ensemble": json.dumps([str(runs / "cv" / f"fold{k}" / "checkpoints" / "last.pt") for k in (0, 1)])}
    portable = portable_metadata(metadata, exports)
    assert portable["source_run"] == "../runs/a"
    assert json.loads(portable["model_params"]) == {"encoder_weights": "../weights/r34.pth", "depth": 3,
                                                    "encoder_name": "resnet34"}
    assert json.loads(portable["ensemble"]) == ["../runs/cv/fold0/checkpoints/last.pt",
                                                "../runs/cv/fold1/checkpoints/last.pt"]
    assert portable["model"] == "smp_unet" and portable["threshold"] == "0.5"
    assert str(tmp_path) not in json.dumps(portable)


def test_config_toml_lists_the_dataset_defaults(trained_run: Path) -> None:
    import tomllib

    dataset = tomllib.loads((trained_run / "config.toml").read_text())["dataset"]
    assert dataset["name"] == "synthetic" and dataset["count"] == 48  # set by the command
    assert dataset["seed"] == 0 and dataset["context"] == 0 and dataset["normalize"] == "none"  # defaults
    assert dataset["lesion_fraction"] == 0.5 and dataset["cache"] is True and dataset["classes"] == 2


def test_summary_names_the_per_image_scores_and_keeps_the_old_key(trained_run: Path) -> None:
    import json

    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["best_per_image"] == summary["best"]
    assert set(summary["best_per_image"]) == set(summary["best_per_case"]) == set(summary["best_global"])
    assert summary["headline"]["name"] == "val_dice_case"
    assert summary["headline"]["value"] == summary["best_per_case"]["dice"]


# --- masks named with a suffix (issue 43): the error says which suffix pairs them, and nothing raw precedes it ---

def _suffixed_set(root: Path, stems: list[str], suffix: str) -> Path:
    import cv2
    import numpy as np

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for stem in stems:
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((16, 16), 90, np.uint8))
        cv2.imwrite(str(root / "masks" / f"{stem}{suffix}.png"), np.zeros((16, 16), np.uint8))
    return root


def test_masks_with_a_suffix_are_named_with_the_setting_that_pairs_them(tmp_path: Path) -> None:
    root = _suffixed_set(tmp_path / "set", ["case1", "case2", "case10"], "_pixels0")
    result = segkit("inspect", "--dataset", "folder", "--data-root", str(root))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line: no raw warning before it
    assert "--set dataset.mask_suffix=_pixels0" in result.stderr and "'_pixels0' pairs 3 of these 3" in result.stderr
    assert "case1_pixels0.png" in result.stderr and "on_missing" not in result.stderr  # skipping would drop them all


def test_a_suffix_that_pairs_some_images_names_the_others(tmp_path: Path) -> None:
    import pytest

    from segkit.errors import DataError
    from segkit_builtins.datasets.folder import FolderDataset

    root = _suffixed_set(tmp_path / "set", ["a", "b"], "_mask")
    (root / "images" / "c.png").write_bytes((root / "images" / "a.png").read_bytes())  # an image without a mask
    with pytest.raises(DataError) as error:
        FolderDataset(str(root))
    assert "'_mask' pairs 2 of these 3 image(s)" in str(error.value)
    assert "the other 1 then still need a mask, or on_missing='skip'" in str(error.value)


def test_segkits_notices_are_one_line_notes(tmp_path: Path, capsys, monkeypatch) -> None:
    import warnings

    import segkit.cli
    from segkit.components.registry import get_registry

    root = _suffixed_set(tmp_path / "set", ["a", "b"], "")
    (root / "masks" / "stray.png").write_bytes((root / "masks" / "a.png").read_bytes())  # a mask of no image
    others: list[str] = []
    monkeypatch.setattr(segkit.cli, "_python_showwarning", lambda message, *_args: others.append(str(message)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = segkit.cli._show_as_note  # what 'segkit' (segkit.cli.main) shows warnings with
        get_registry().build("dataset", "folder", root=str(root))
        warnings.warn("not segkit's", UserWarning)  # raised here, outside segkit: shown as Python shows it
    assert capsys.readouterr().err.splitlines() == [f"note: 1 file(s) in {root / 'masks'} match no image"]
    assert others == ["not segkit's"]


# --- a set of several image sizes (issue 43): refused before the run folder is made ---------------------------

def _sized_set(root: Path, sizes: list[tuple[int, int]]) -> Path:
    import cv2
    import numpy as np

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for k, (height, width) in enumerate(sizes):
        cv2.imwrite(str(root / "images" / f"img{k}.png"), np.full((height, width), 80, np.uint8))
        mask = np.zeros((height, width), np.uint8)
        mask[2:6, 2:6] = 255
        cv2.imwrite(str(root / "masks" / f"img{k}.png"), mask)
    return root


def test_images_of_several_sizes_are_refused_before_the_run_folder_exists(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segkit.cli import cli

    root = _sized_set(tmp_path / "set", [(32, 32)] * 5 + [(48, 40)] * 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--dataset", "folder", "--data-root", str(root), "--epochs", "1",
                                      "--set", "model.width=4", "--out", str(out)])
    assert result.exit_code == 2, result.output[-2000:]
    assert "the images have 2 different sizes (32x32 (HxW): 5, e.g. img0; 48x40 (HxW): 2, e.g. img5)" in result.output
    assert "--image-size 32" in result.output and not out.exists()


def test_the_size_check_reads_headers_and_passes_one_size_or_a_size_set(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import pandas as pd
    import pytest

    from segkit.errors import DataError
    from segkit.train.sizes import check_one_image_size, image_sizes

    root = _sized_set(tmp_path / "set", [(32, 32), (32, 32), (20, 24)])
    files = sorted((root / "images").iterdir())
    dataset = SimpleNamespace(index=pd.DataFrame({"item": [f.stem for f in files], "image_path": list(map(str, files))}))
    assert image_sizes(dataset) == {(32, 32): ["img0", "img1"], (20, 24): ["img2"]}
    unsized = SimpleNamespace(train=SimpleNamespace(image_size=0, patch_size=[]))
    with pytest.raises(DataError, match="2 different sizes"):
        check_one_image_size(unsized, dataset)
    for resized in ({"image_size": 32, "patch_size": []}, {"image_size": 0, "patch_size": [16, 16]}):
        check_one_image_size(SimpleNamespace(train=SimpleNamespace(**resized)), dataset)  # brought to one size
    check_one_image_size(unsized, SimpleNamespace(index=dataset.index.iloc[:2]))  # one size
    check_one_image_size(unsized, SimpleNamespace(index=dataset.index[["item"]]))  # no image files to read
