"""segkit plan on data no one tuned for: each variant that broke or could break a plan is planned and run as written.

Cases without slice numbers, mixed image sizes, grey and colour mixed, a single image, a label in 0.1% of the
pixels; thin structures keep their pixels (patches at native size); the plan's first batch runs before it is written.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from clihelp import run_in_process

QUICK = ("--set", "planner.timing_seconds=0.1", "--quiet")


def write_folder(root: Path, sizes: list[tuple[int, int]], *, channels: list[int] | None = None,
                 names: list[str] | None = None, draw=None) -> Path:
    """Images and masks in ``root/images``, ``root/masks``; ``draw(k, mask)`` marks the label (a square by default)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        c = channels[k] if channels else 3
        mask = np.zeros((h, w), np.uint8)
        if draw is None:
            mask[h // 4: h // 2, w // 4: w // 2] = 255
        else:
            draw(k, mask)
        image = rng.integers(0, 60, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)
        image[mask > 0] = 220
        name = names[k] if names else f"img{k}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
    return root


def plan_and_run(root: Path, tmp_path: Path, *dataset_sets: str, minutes: str = "0.05") -> tuple[dict, dict]:
    """``segkit plan`` then ``segkit run --config plan.toml`` unedited; (the plan, the run's summary)."""
    out = tmp_path / "plan"
    sets = [arg for pair in (("--set", s) for s in dataset_sets) for arg in pair]
    run_in_process("plan", "--dataset", "folder", "--data-root", str(root), *sets, *QUICK, "--minutes", minutes,
                   "--out", str(out))
    plan = tomllib.loads((out / "plan.toml").read_text())
    run = tmp_path / "run"
    run_in_process("run", "--config", str(out / "plan.toml"), "--out", str(run), "--quiet")
    return plan, json.loads((run / "summary.json").read_text())


def test_cases_without_slice_numbers_get_no_context(tmp_path: Path) -> None:
    names = [f"video{v}_frame{chr(97 + f)}" for v in range(4) for f in range(3)]  # no numbers to order frames by
    root = write_folder(tmp_path / "frames", [(48, 48)] * 12, names=names)
    plan, summary = plan_and_run(root, tmp_path, "dataset.case_pattern='^(video\\d+)_'")
    assert "context" not in plan["dataset"] and summary["epochs_run"] >= 1
    fingerprint = json.loads((tmp_path / "plan" / "fingerprint.json").read_text())
    assert fingerprint["slice_numbers"] is False and fingerprint["items_per_case"]["median"] == 3


def test_mixed_sizes_and_grey_and_colour_mixed_plan_and_run(tmp_path: Path) -> None:
    sizes = [(40, 56), (64, 48), (52, 52), (36, 70)] * 2
    root = write_folder(tmp_path / "mixed", sizes, channels=[1, 3] * 4)
    plan, summary = plan_and_run(root, tmp_path)
    assert summary["epochs_run"] >= 1
    fingerprint = json.loads((tmp_path / "plan" / "fingerprint.json").read_text())
    assert any("different channel counts" in flag for flag in fingerprint["flags"])
    assert plan["train"].get("image_size") or plan["train"].get("patch_size")


def test_a_single_image_plans_a_run_that_validates_on_it_and_says_so(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "one", [(64, 64)])
    plan, summary = plan_and_run(root, tmp_path)
    assert plan["split"]["by"] == "none" and plan["train"]["batch_size"] == 1
    assert summary["epochs_run"] >= 1


def test_a_label_in_a_thousandth_of_the_pixels_is_planned_and_trained(tmp_path: Path) -> None:
    def speck(k: int, mask: np.ndarray) -> None:
        mask[40 + k: 44 + k, 60:64] = 255  # 16 of 16,384 pixels

    root = write_folder(tmp_path / "specks", [(128, 128)] * 6, draw=speck)
    plan, summary = plan_and_run(root, tmp_path)
    assert summary["epochs_run"] >= 1
    assert plan["train"]["foreground_fraction"] > 0


def test_thin_structures_keep_their_pixels_on_patches(tmp_path: Path) -> None:
    def vessels(k: int, mask: np.ndarray) -> None:
        mask[30 + k: 32 + k, 8:-8] = 255
        mask[8:-8, 70 + k: 72 + k] = 255

    root = write_folder(tmp_path / "vessels", [(128, 128)] * 6, draw=vessels)
    plan, summary = plan_and_run(root, tmp_path, minutes="0.03")
    fingerprint = json.loads((tmp_path / "plan" / "fingerprint.json").read_text())
    assert fingerprint["structure_width"]["lesion"]["median"] == pytest.approx(2.0, abs=0.2)
    if "image_size" in plan["train"] and plan["train"]["image_size"]:
        pytest.fail(f"thin structures were resized to {plan['train']['image_size']}")
    assert len(plan["train"].get("patch_size", [])) == 2 and summary["epochs_run"] >= 1
    lines = (tmp_path / "plan" / "plan.toml").read_text()
    assert "pixels wide (median)" in lines
    assert "per_image" not in plan["loss"]  # every image holds vessels, but a patch of one may hold none
