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
