"""dataset.cases: some cases of any dataset, by a list of ids or a file of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from segkit.cli import cli
from segkit.components.registry import get_registry
from segkit.errors import ConfigError

SYNTHETIC = {"count": 48, "size": 32, "slices_per_case": 4}  # 12 cases, case_00 .. case_11
TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
        "--set", "model.width=8", "--batch-size", "8", "--augment", "none", "--epochs", "1", "--quiet"]
CHOSEN = [f"case_{k:02d}" for k in (1, 2, 4, 5, 7, 8, 10, 11)]


def test_a_dataset_keeps_only_the_cases_named() -> None:
    dataset = get_registry().build("dataset", "synthetic", **SYNTHETIC, cases=["case_07", "case_02"])
    assert len(dataset) == 8 and sorted(set(dataset.cases)) == ["case_02", "case_07"]
    whole = get_registry().build("dataset", "synthetic", **SYNTHETIC)
    position = whole.cases.index("case_07")
    image, mask = dataset.read(dataset.cases.index("case_07"))
    expected_image, expected_mask = whole.read(position)
    assert (image == expected_image).all() and (mask == expected_mask).all()
    assert dataset.channel_names == whole.channel_names and dataset.in_channels == whole.in_channels


def test_cases_from_a_file_with_one_id_a_line(tmp_path: Path) -> None:
    listing = tmp_path / "cases.txt"
    listing.write_text("# validation patients\ncase_03\n\ncase_09\n")
    dataset = get_registry().build("dataset", "synthetic", **SYNTHETIC, cases=f"@{listing}")
    assert sorted(set(dataset.cases)) == ["case_03", "case_09"]


def test_unknown_case_ids_are_named_with_suggestions() -> None:
    with pytest.raises(ConfigError) as caught:
        get_registry().build("dataset", "synthetic", **SYNTHETIC, cases=["case_03", "case_3", "nobody"])
    message = str(caught.value)
    assert "2 case(s)" in message and "'case_3' (did you mean 'case_03'?)" in message and "'nobody'" in message


@pytest.mark.parametrize("value, message", [("case_03", "a list of case ids or '@FILE'"), ([], "names no case"),
                                            ("@/no/such/list.txt", "cannot read the case list")])
def test_bad_case_lists_are_refused(value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        get_registry().get("dataset", "synthetic").check_params({"cases": value})


def test_info_lists_cases_for_every_dataset() -> None:
    for component in get_registry().list("dataset"):
        assert "cases" in {p["name"] for p in component.describe()["parameters"]}, component.name


def test_a_run_on_some_cases_splits_and_records_only_them(tmp_path: Path) -> None:
    listing = tmp_path / "cases.txt"
    listing.write_text("\n".join(CHOSEN) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", *TINY, "--set", f"dataset.cases='@{listing}'", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    assert set(pd.read_csv(out / "splits.csv")["case"]) == set(CHOSEN)
    assert tomllib.loads((out / "config.toml").read_text())["dataset"]["cases"] == CHOSEN  # the ids, not the file
    listing.unlink()  # evaluate reads the run alone
    evaluated = CliRunner().invoke(cli, ["evaluate", str(out), "--split", "all", "--json"])
    assert evaluated.exit_code == 0, evaluated.output[-3000:]
    assert '"n_cases": 8' in evaluated.output


def test_a_run_naming_an_unknown_case_stops_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", *TINY, "--set", "dataset.cases=['case_01','case_99']", "--out", str(out)])
    assert result.exit_code == 2 and "'case_99'" in result.output
    assert not out.exists()
