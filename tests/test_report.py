"""report.html: written by a run, refreshed by evaluate, rebuilt by 'segkit report', and working in a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from clihelp import REPO, segkit

SMALL = ["--dataset", "synthetic", "--set", "dataset.count=64", "--set", "dataset.size=32", "--set", "model.width=4",
         "--batch-size", "16", "--set", "split.val_fraction=0.3"]
ARTIFACTS = REPO / ".test-artifacts"


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    result = segkit("run", *SMALL, "--epochs", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_run_writes_a_self_contained_report(reported_run: Path) -> None:
    page = (reported_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "best val_dice_case" in page
    assert page.count("data:image/png;base64,") == 3  # curves, predictions, best and worst patients
    assert 'src="http' not in page and "<link" not in page  # nothing fetched from elsewhere
    table = (reported_run / "evaluation" / "training-val-per-case.csv").read_text().splitlines()
    section = page.split("Validation patients at the end of training")[1]
    assert section.count("<tr>") + section.count('<tr class="low">') >= len(table)  # header + one row per case
    assert "[model]" in page and "Configuration" in page


def test_evaluate_adds_its_results_and_report_rebuilds(reported_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reported_run, run)
    assert segkit("evaluate", str(run), "--split", "val", "--quiet").returncode == 0
    assert "Evaluation: split val" in (run / "report.html").read_text()
    (run / "report.html").unlink()
    rebuilt = segkit("report", str(run))
    assert rebuilt.returncode == 0 and rebuilt.stdout.strip() == str(run / "report.html")
    assert "Evaluation: split val" in (run / "report.html").read_text()
    refused = segkit("report", str(tmp_path))
    assert refused.returncode != 0 and "not a segkit run directory" in refused.stderr


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here (Debian: apt-get install chromium); the page was not rendered in a browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_the_report_renders_and_sorts_in_a_real_browser(reported_run: Path, tmp_path: Path) -> None:
    browser = _chromium()
    run = tmp_path / "run"
    shutil.copytree(reported_run, run)
    scores = {"TCGA_A": 0.81, "TCGA_B": 0.12, "TCGA_C": 0.55, "TCGA_D": 0.0}
    lines = ["case,n_images,dice"] + [f"{case},10,{value}" for case, value in scores.items()]
    (run / "evaluation" / "test-per-case.csv").write_text("\n".join(lines) + "\n")
    assert segkit("report", str(run)).returncode == 0
    url = (run / "report.html").resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=3000", "--dump-dom",
                          url + "#sort=-dice"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    section = dom.stdout.split('data-source="test-per-case.csv"')[1].split("</table>")[0]
    order = re.findall(r'<tr[^>]*><td[^>]*data-value="(TCGA_[A-D])"', section)
    assert order == ["TCGA_A", "TCGA_C", "TCGA_B", "TCGA_D"]  # sorted by dice, descending, by the page's script
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    rendered = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--window-size=1280,2400",
                               f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, rendered.stderr[-2000:]


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_the_predictions_caption_says_what_the_colours_mean(tmp_path: Path, mode: str) -> None:
    """Binary: outcomes (true positive, false positive, missed); several labels: each label's colour
    (red and blue are then two labels, not false positives and misses)."""
    import cv2
    import numpy as np

    from segkit.runs.report import build_report

    cv2.imwrite(str(tmp_path / "predictions.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "config.toml").write_text(f'[task]\nmode = "{mode}"\n')
    page = build_report(tmp_path)
    outcomes = "true positives yellow, false positives red, missed blue"
    if mode == "binary":
        assert outcomes in page
    else:
        assert outcomes not in page and "each label in its colour, named in the figure&#x27;s legend" in page
