"""A run directory from someone else is untrusted input: the report embeds nothing from outside it and
runs nothing it carries, nothing segkit writes follows a link out of it, and damaged files are one line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from clihelp import segkit, segkit_here

from segkit.runs.report import _SCRIPT, build_report
from segkit.fileio import atomic_write_text

SECRET = "segkit-test-secret-4711"


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "private.txt"
    path.write_text(SECRET)
    return path


def test_a_figure_that_links_out_of_the_run_is_not_embedded(run: Path, secret: Path) -> None:
    (run / "curves.png").unlink()
    (run / "curves.png").symlink_to(secret)
    (run / "cases.png").write_bytes(SECRET.encode())  # a regular file that is not a PNG
    page = build_report(run)
    assert base64.b64encode(SECRET.encode()).decode()[:16] not in page and SECRET not in page
    assert "Learning curves" not in page and "Best and worst" not in page
    assert "Validation predictions" in page  # the run's own PNG still is


def test_text_from_run_files_stays_text_and_only_the_reports_script_may_run(run: Path) -> None:
    attack = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'
    summary = json.loads((run / "summary.json").read_text())
    summary["headline"]["name"] = attack
    summary["headline"]["epoch"] = attack
    summary["stopped"] = attack
    summary["best"] = {attack: 0.5}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "evaluation" / "test-per-case.csv").write_text(f'case,dice\n"{attack}",0.5\n')
    page = build_report(run)
    assert "<img src=x" not in page and "<script>alert" not in page and page.count("<script>") == 1
    assert "&lt;img src=x onerror=" in page
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy and "img-src data:" in policy


def test_an_evaluation_table_leads_with_its_summary_in_readable_numbers(run: Path) -> None:
    rows = ["case,n_images,tp,dice,dice_core", "a,4,10,0.123456789012345,0.5", "b,4,20,0.9,0.7", "c,4,30,0.6,0.9"]
    (run / "evaluation" / "test-last-per-case.csv").write_text("\n".join(rows) + "\n")
    page = build_report(run)
    section = page.split("Evaluation: split test, checkpoint last")[1]
    summary = section.split('<table class="sortable"')[0]
    assert re.search(r"<th>dice</th><td[^>]*>0\.5412</td><td[^>]*>0\.6000</td><td[^>]*>3</td>", summary)
    assert "<th>dice_core</th>" in summary and "<th>tp</th>" not in summary
    assert "0.1235" in section and "0.123456789012345</td>" not in section


@pytest.mark.parametrize("damage, words", [
    ("summary cut short", "summary.json is not valid JSON"),
    ("summary a list", "summary.json holds a JSON list"),
    ("headline not a number", "field 'headline.value' is 'high'"),
    ("short csv row", "test-per-case.csv, line 3: 1 fields for the 2 columns"),
    ("binary csv", "test-per-case.csv"),
    ("config not utf-8", "config.toml is not UTF-8"),
])
def test_damaged_run_files_are_one_line_naming_the_file(run: Path, damage: str, words: str) -> None:
    summary = run / "summary.json"
    table = run / "evaluation" / "test-per-case.csv"
    if damage == "summary cut short":
        summary.write_text(summary.read_text()[:40])
    elif damage == "summary a list":
        summary.write_text("[1, 2]")
    elif damage == "headline not a number":
        data = json.loads(summary.read_text())
        data["headline"]["value"] = "high"
        summary.write_text(json.dumps(data))
    elif damage == "short csv row":
        table.write_text("case,dice\na,0.5\nb\n")
    elif damage == "binary csv":
        table.write_bytes(b"case,dice\n\x00\x01\xff\xfe\n")
    elif damage == "config not utf-8":
        (run / "config.toml").write_bytes(b"[model]\nname = \"unet\xff\"\n")
    before = (run / "report.html").read_bytes() if (run / "report.html").exists() else None
    result = segkit("report", str(run))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr, result.stderr
    after = (run / "report.html").read_bytes() if (run / "report.html").exists() else None
    assert after == before  # nothing replaced


def test_a_users_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_bytes(b"[train]\nepochs = 1 # caf\xe9\n")
    result = segkit("run", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "is not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_lock_that_links_out_of_the_run_is_refused_and_its_target_untouched(tmp_path: Path,
                                                                                  secret: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".segkit.lock").symlink_to(secret)
    result = segkit("run", "--set", "dataset.count=16", "--set", "dataset.size=32", "--set", "model.width=4",
                    "--epochs", "1", "--quiet", "--out", str(out))
    assert result.returncode == 2 and "is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert secret.read_text() == SECRET


def test_an_atomic_write_never_follows_a_planted_temporary_link(tmp_path: Path, secret: Path) -> None:
    target = tmp_path / "run" / "metrics.csv"
    target.parent.mkdir()
    (target.parent / f".metrics.csv.tmp-{os.getpid()}").symlink_to(secret)
    atomic_write_text(target, "epoch\n1\n")
    assert secret.read_text() == SECRET and target.read_text() == "epoch\n1\n" and not target.is_symlink()


@pytest.mark.parametrize("edit, words", [
    ("drop config", "field 'config' is missing"),
    ("image size", "field 'preprocessing.image_size' is 512 but the run trained with"),
    ("channels", "field 'preprocessing.in_channels' is 7 but the run trained with 3"),
    ("threshold", "field 'preprocessing.threshold' is 'half' but must be a number between 0 and 1"),
])
def test_an_edited_checkpoint_is_one_line_naming_the_field(run: Path, edit: str, words: str) -> None:
    import torch

    path = run / "checkpoints" / "best.pt"
    payload = torch.load(path, weights_only=True)
    if edit == "drop config":
        del payload["config"]
    elif edit == "image size":
        payload["preprocessing"]["image_size"] = 512
    elif edit == "channels":
        payload["preprocessing"]["in_channels"] = 7
    elif edit == "threshold":
        payload["preprocessing"]["threshold"] = "half"
    edited = run / "edited.pt"
    torch.save(payload, edited)
    result = segkit_here("evaluate", str(run), "--checkpoint", str(edited), "--split", "val", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr and "edited.pt" in result.stderr, result.stderr
