"""segkit plan: the fingerprint, the built-in planner's decisions, plan.toml as segkit run takes it, bad input."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clihelp import run_in_process, write_plugin
from volumes import write_msd

#: Short measurements: the planner times 2 steps after a warm-up, whatever the budget.
QUICK = ("--set", "planner.timing_seconds=0.1", "--quiet")
SMALL_SYNTHETIC = ("--set", "count=24", "--set", "size=32", "--set", "slices_per_case=4")


def invoke(*args: str):
    """``segkit ARGS`` in this process; the click result (exit code, output)."""
    from segkit.cli import cli

    return CliRunner().invoke(cli, list(args))


def read_plan(out: Path) -> tuple[dict, list[str]]:
    text = (out / "plan.toml").read_text()
    return tomllib.loads(text), text.splitlines()


def assert_every_setting_has_a_reason(lines: list[str]) -> None:
    for k, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[k - 1].startswith("# ") and len(lines[k - 1]) > 4, f"no reason above {line!r}"


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic Decathlon cases of 20x24x12 voxels, 1 x 1 x 3 mm: thick slices along the last axis."""
    return write_msd(tmp_path_factory.mktemp("msd") / "data", cases=4, spacing=(1.0, 1.0, 3.0))


def test_synthetic_plan_is_commented_and_runs_as_written(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    output = run_in_process("plan", *SMALL_SYNTHETIC, *QUICK, "--minutes", "5", "--out", str(out))
    assert "wrote" in output
    plan, lines = read_plan(out)
    assert_every_setting_has_a_reason(lines)
    assert plan["dataset"] == {"name": "synthetic", "count": 24, "size": 32, "slices_per_case": 4, "context": 1,
                               "normalize": "case", "cache": True}
    assert plan["task"]["mode"] == "binary" and plan["loss"]["name"] == "bce_dice"
    assert plan["model"]["name"] == "smp_unet"
    assert plan["train"]["max_minutes"] == 5
    assert plan["train"]["image_size"] == 64  # 32x32 would leave the encoder a 1x1 deepest map
    assert 2 <= plan["train"]["batch_size"] <= 64 and plan["train"]["epochs"] >= 1
    reason = lines[lines.index(f"epochs = {plan['train']['epochs']}") - 1]  # what the estimate rests on, measured
    assert "s per batch" in reason and "a validation forward of" in reason and "a fold of segkit cv --folds 5" in reason
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["cases"] == 6 and fingerprint["items"] == 24
    assert fingerprint["image_sizes"] == {"32x32": 24} and fingerprint["labels"] == ["background", "lesion"]
    assert fingerprint["intensity"][0]["foreground"]["voxels"] > 0
    assert fingerprint["object_sizes"]["lesion"]["count"] >= fingerprint["label_items"]["lesion"]
    # the plan unchanged, one epoch shorter: segkit run takes it
    run = tmp_path / "run"
    run_in_process("run", "--config", str(out / "plan.toml"), "--epochs", "1", "--quiet", "--out", str(run))
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["model"]["decoder_channels"] == [128, 64, 32, 16, 16] and config["dataset"]["context"] == 1
    assert (run / "summary.json").is_file()


def test_volumes_3d_plan_pools_thick_slices_last_and_runs(msd_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    run_in_process("plan", "--dataset", "msd", "--data-root", str(msd_root), "--set", "planner.dims=3d", *QUICK,
                   "--out", str(out))
    plan, lines = read_plan(out)
    assert_every_setting_has_a_reason(lines)
    model, train = plan["model"], plan["train"]
    assert model["name"] == "unet3d" and model["spatial_dims"] == 3
    # by hand: 3 mm > 2 x 1 mm, so the last axis gets kernel 1 and no stride until the others are at 2 mm
    assert model["kernel_sizes"][0] == [3, 3, 1] and model["strides"][1] == [2, 2, 1]
    assert model["kernel_sizes"][1] == [3, 3, 3]
    total = np.prod(np.array(model["strides"]), axis=0)
    assert [p % s for p, s in zip(train["patch_size"], total, strict=True)] == [0, 0, 0]
    assert all(p <= m for p, m in zip(train["patch_size"], (20, 24, 12), strict=True))
    assert plan["task"]["mode"] == "multiclass" and plan["loss"]["name"] == "ce_dice"
    assert "context" not in plan["dataset"]
    text = "\n".join(lines)
    assert "every case has the spacing [1.0, 1.0, 3.0] mm (within 1%): no resampling" in text
    assert "target_spacing" not in train
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["spacing"]["median"] == [1.0, 1.0, 3.0] and fingerprint["anisotropy"] == 3.0
    run = tmp_path / "run"
    run_in_process("run", "--config", str(out / "plan.toml"), "--epochs", "1", "--quiet", "--out", str(run))
    assert json.loads((run / "summary.json").read_text())


def test_volumes_on_a_cpu_get_slices_with_context(msd_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    run_in_process("plan", "--dataset", "msd", "--data-root", str(msd_root), *QUICK, "--out", str(out))
    plan, _ = read_plan(out)
    assert plan["model"]["name"] == "smp_unet" and plan["dataset"]["context"] == 1
    assert "patch_size" not in plan["train"] and plan["train"]["device"] == "cpu"


def _write_pngs(root: Path, sizes: list[tuple[int, int]], channels: list[int], lesion: bool = True,
                value: int = 255, every: int = 2) -> Path:
    """PNG images (grey or RGB) and masks in ``root/images`` and ``root/masks``; every ``every``-th mask (from the
    first) holds ``value``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, ((h, w), c) in enumerate(zip(sizes, channels, strict=True)):
        image = np.full((h, w, c) if c > 1 else (h, w), 40, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if lesion and k % every == 0:
            mask[h // 4: h // 2, w // 4: w // 2] = value
            image[h // 4: h // 2, w // 4: w // 2] = 220
        cv2.imwrite(str(root / "images" / f"img{k}.png"), image)
        cv2.imwrite(str(root / "masks" / f"img{k}.png"), mask)
    return root


def test_folder_of_pngs_of_two_sizes_is_resized_to_one(tmp_path: Path) -> None:
    root = _write_pngs(tmp_path / "pngs", [(40, 40)] * 5 + [(48, 24)] * 3, [3] * 8)
    out = tmp_path / "plan"
    run_in_process("plan", "--dataset", "folder", "--data-root", str(root), *QUICK, "--out", str(out))
    plan, lines = read_plan(out)
    assert_every_setting_has_a_reason(lines)
    assert plan["train"]["image_size"] == 64  # most are 40x40: a multiple of 32, at least 64
    assert "modality_dropout" not in plan["train"]  # every image is grey in RGB: no sequence is missing
    assert "context" not in plan["dataset"]  # every image is its own case
    assert plan["train"]["batch_size"] == 2  # 5% of 6 training images, but at least 2
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["image_sizes"] == {"40x40": 5, "48x24": 3} and fingerprint["empty"]["items"] == 4
    assert "per_image" not in plan["loss"]  # half the images hold nothing: a per-image Dice would punish them


def test_images_that_all_hold_the_label_train_a_dice_per_image(tmp_path: Path) -> None:
    root = _write_pngs(tmp_path / "pngs", [(40, 40)] * 8, [3] * 8, every=1)
    out = tmp_path / "plan"
    run_in_process("plan", "--dataset", "folder", "--data-root", str(root), *QUICK, "--out", str(out))
    plan, lines = read_plan(out)
    assert plan["loss"] == {"name": "bce_dice", "per_image": True}
    assert "every image holds the label" in lines[lines.index("per_image = true") - 1]
    run = tmp_path / "run"
    run_in_process("run", "--config", str(out / "plan.toml"), "--epochs", "1", "--quiet", "--out", str(run))
    assert tomllib.loads((run / "config.toml").read_text())["loss"]["per_image"] is True


def test_lgg_patients_plan_with_context_and_normalisation(lgg_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    run_in_process("plan", "--dataset", "lgg", "--data-root", str(lgg_small), *QUICK, "--out", str(out))
    plan, _ = read_plan(out)
    assert plan["dataset"]["context"] == 1 and plan["dataset"]["normalize"] == "case"
    assert plan["train"]["foreground_fraction"] in (0.33, 0.67)
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["cases"] == 3 and fingerprint["channel_names"] == ["pre-contrast", "FLAIR", "post-contrast"]


def _refused(out: Path, *args: str) -> str:
    """The error of ``segkit plan ARGS``: exit status 2, one line on stderr, no traceback, nothing written."""
    result = invoke("plan", *args, *QUICK, "--out", str(out))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()
    return result.stderr


def test_bad_input_is_refused_in_one_line_and_nothing_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert "error:" in _refused(tmp_path / "a", "--dataset", "folder", "--data-root", str(empty))
    unlabelled = _write_pngs(tmp_path / "unlabelled", [(32, 32)] * 4, [3] * 4, lesion=False)
    assert "no item holds a label" in _refused(tmp_path / "c", "--dataset", "folder", "--data-root", str(unlabelled))
    three = _write_pngs(tmp_path / "three", [(32, 32)] * 4, [3] * 4, value=1)
    assert "label(s) class_2 appear in no item" in _refused(tmp_path / "d", "--dataset", "folder", "--data-root",
                                                         str(three), "--set", "classes=3")
    bad = _write_pngs(tmp_path / "bad", [(32, 32)] * 4, [3] * 4, value=1)
    cv2.imwrite(str(bad / "masks" / "img1.png"), np.full((32, 32), 7, np.uint8))
    assert "img1" in _refused(tmp_path / "g", "--dataset", "folder", "--data-root", str(bad), "--set", "classes=3")
    message = _refused(tmp_path / "e", *SMALL_SYNTHETIC, "--minutes", "0.001")
    assert "holds no epoch" in message and "--minutes 1 or more would fit" in message
    assert "Did you mean 'default'" in _refused(tmp_path / "f", "--planner", "defualt")


TINY_PLANNER = '''
from segkit import hookimpl
from segkit.planning import Plan


class TinyPlanner:
    """Always the tutorial U-Net at width 4, one epoch."""

    def __init__(self, width: int = 4) -> None:
        self.width = width

    def plan(self, request):
        plan = Plan(epoch_seconds=0.0)
        plan.set("dataset", "name", request.dataset_name, "the data")
        for key, value in request.dataset_params.items():
            plan.set("dataset", key, value, "as given")
        plan.set("model", "name", "unet", "the tutorial's")
        plan.set("model", "width", self.width, f"{request.fingerprint['items']} items: small")
        plan.set("train", "epochs", 1, "a test")
        return plan


@hookimpl
def segkit_components():
    return [{"kind": "planner", "name": "tiny_planner", "target": "tiny_plugin:TinyPlanner",
             "summary": "a planner from a test"}]
'''


def test_a_plugin_planner_is_listed_and_picked_with_planner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = write_plugin(tmp_path, "tiny_plugin", TINY_PLANNER)
    monkeypatch.syspath_prepend(str(tmp_path))
    listed = invoke("list", "planner", "-p", str(plugin))
    assert listed.exit_code == 0 and "default" in listed.output and "tiny_planner" in listed.output
    out = tmp_path / "plan"
    result = invoke("plan", "-p", str(plugin), "--planner", "tiny_planner", "--set", "planner.width=6",
                    *SMALL_SYNTHETIC, "--quiet", "--out", str(out))
    assert result.exit_code == 0, result.output
    plan, lines = read_plan(out)
    assert plan["model"] == {"name": "unet", "width": 6} and plan["train"] == {"epochs": 1}
    assert "# 24 items: small" in lines


def test_a_plan_reads_back_what_it_set_and_a_later_setting_replaces_an_earlier() -> None:
    from segkit.planning import Plan

    plan = Plan()
    plan.set("train", "batch_size", 16, "the pixel rule")
    plan.set("train", "batch_size", 8, "timed")
    assert plan.get("train", "batch_size") == 8 and [s.reason for s in plan.settings] == ["timed"]
    assert plan.get("train", "patch_size") is None and plan.get("dataset", "context", 0) == 0
    assert plan.document() == {"train": {"batch_size": 8}}


def test_network_topology_by_hand() -> None:
    from segkit_builtins.planners.network3d import fit_patch, topology

    # nnU-Net's Hippocampus 3d_fullres plan: patch 40x56x40 at 1 mm, 4 stages pooling every axis
    net = topology([40, 56, 40], [1.0, 1.0, 1.0])
    assert net.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]] and net.total_stride == [8, 8, 8]
    assert fit_patch([35, 50, 36], net.total_stride, [42, 59, 46]) == [40, 56, 40]
    assert fit_patch([35, 50, 36], net.total_stride, [36, 59, 46]) == [32, 56, 40]  # 40 > the largest case
    # 3 mm slices of 0.5 mm pixels: the slice axis waits (kernel 1, stride 1) until the others reach 1-2 mm
    net = topology([20, 160, 160], [3.0, 0.5, 0.5])
    assert net.kernels == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert net.strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def test_target_spacing_by_hand() -> None:
    from segkit_builtins.planners.network3d import target_spacing

    same = target_spacing([[35, 50, 36], [40, 52, 30]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert same.target is None and same.shape == [38, 51, 33] and same.largest == [40, 52, 36]
    # mixed voxel sizes: the median per axis, and the shapes as they will be once resampled
    mixed = target_spacing([[100, 100, 50], [80, 80, 40], [50, 50, 20]], [[0.8, 0.8, 2.0], [1.0, 1.0, 2.5],
                                                                           [1.6, 1.6, 5.0]])
    assert mixed.target == [1.0, 1.0, 2.5] and mixed.shape == [80, 80, 40] and mixed.largest == [80, 80, 40]
    # thick slices (5 mm against 0.7 mm, few of them): the slice axis takes its 10th percentile, not the median
    spacings = [[0.7, 0.7, 5.0]] * 8 + [[0.7, 0.7, 3.0]] * 2
    thick = target_spacing([[256, 256, 24]] * 10, spacings)
    assert thick.target == [0.7, 0.7, pytest.approx(3.0)] and "thick slices along axis 2" in thick.why
    assert thick.shape == [256, 256, 40]


def test_cpu_batch_is_the_smallest_within_a_fifth_of_the_best_throughput() -> None:
    from segkit.planning import StepTiming
    from segkit_builtins.planners.cpu_batch import candidate_batches, efficient_batch

    assert candidate_batches(64) == [8, 16, 32, 64] and candidate_batches(16) == [8, 16]
    assert candidate_batches(6) == [6] and candidate_batches(12) == [12]

    def timed(batch: int, images_per_second: float) -> StepTiming:
        return StepTiming(batch / images_per_second, 5, batch, (48, 64))

    # images/s 60, 85, 100, 104: 16 is within 20% of the best (64's), 8 is not; within 10%, only 32 and 64
    timings = [timed(8, 60), timed(16, 85), timed(32, 100), timed(64, 104)]
    assert efficient_batch(timings).batch_size == 16
    assert efficient_batch(timings, share=0.9).batch_size == 32
    # Kvasir-SEG's held-out plan measured 8: 14 and 16: 16 images/s; the 0.9 line planned 16, this plans 8
    assert efficient_batch([timed(8, 14), timed(16, 16)]).batch_size == 8
    assert efficient_batch([timed(8, 14), timed(16, 16)], share=0.9).batch_size == 16
    # throughput that falls with the batch (a cache-bound CPU): the smallest is also the fastest
    assert efficient_batch([timed(8, 50), timed(16, 40)]).batch_size == 8
    with pytest.raises(ValueError):
        efficient_batch([])


def test_cpu_batch_candidates_are_timed_there_and_back_so_a_drifting_machine_favours_none() -> None:
    from segkit.planning import StepTiming
    from segkit_builtins.planners.cpu_batch import interleaved_timings

    calls: list[int] = []

    def time_batch(batch: int) -> StepTiming:  # every image costs the same, on a machine slowing 5% per timing
        calls.append(batch)
        slowdown = 1 + 0.05 * (len(calls) - 1)
        return StepTiming(0.01 * batch * slowdown, 3, batch, (48, 64), seconds_per_forward=0.004 * batch * slowdown)

    batches = [8, 16, 32, 64]
    there_and_back = interleaved_timings(time_batch, batches, rounds=2)
    assert calls == [8, 16, 32, 64, 64, 32, 16, 8]
    rates = [t.batch_size / t.seconds_per_step for t in there_and_back]
    assert max(rates) / min(rates) == pytest.approx(1.0)
    assert [t.steps for t in there_and_back] == [6] * 4
    assert there_and_back[0].seconds_per_forward == pytest.approx(0.004 * 8 * (1 + 0.05 * 3.5))

    calls.clear()
    once = interleaved_timings(time_batch, batches, rounds=1)  # one pass: the last timed looks 15% slower
    assert calls == batches
    rates = [t.batch_size / t.seconds_per_step for t in once]
    assert rates[0] / rates[-1] == pytest.approx(1.15)
    with pytest.raises(ValueError):
        interleaved_timings(time_batch, batches, rounds=0)


def test_images_of_many_sizes_are_halved_until_the_budget_holds_eight_epochs_never_stopping_between() -> None:
    """Kvasir-like images (most 530x622) and a step whose time is proportional to its pixels: 608 -> 288 -> 128.
    Halving never stops at 192 (11 epochs there scored 0.155 below 128's 23 on Kvasir's training side,
    docs/benchmarks/size-rule.md), and the reason says the size was chosen for the budget."""
    from segkit.components.registry import get_registry
    from segkit.planning import Plan, PlanRequest, StepTiming
    from segkit_builtins.planners.default import DefaultPlanner

    timed: list[tuple] = []

    def time_steps(document, batch, shape, seconds=2.0, forward_batch=None):
        timed.append(tuple(shape))
        return StepTiming(1e-6 * batch * shape[0] * shape[1], 3, batch, tuple(shape))

    fingerprint = {"kind": "images", "items": 880, "cases": 880, "in_channels": 3, "labels": ["background", "lesion"],
                   "image_sizes": {"530x622": 600, "1080x1350": 280}, "structure_width": {"lesion": {"median": 78.0}},
                   "object_sizes": {"lesion": {"median": 30000.0}}}
    request = PlanRequest(fingerprint=fingerprint, dataset=None, dataset_name="folder", dataset_params={},
                          minutes=5.0, device="cpu", free_bytes=8 * 2**30, time_steps=time_steps,
                          registry=get_registry())
    plan = Plan()
    DefaultPlanner(timing_rounds=1)._network_2d(plan, request)
    settings = {s.key: s for s in plan.settings}
    assert settings["image_size"].value == 128
    assert sorted(set(timed), reverse=True) == [(608, 608), (288, 288), (128, 128)]
    assert 300 / plan.epoch_seconds >= 8
    assert "608 halved until the budget holds 8 epochs: 128x128" in settings["image_size"].reason


def test_the_epoch_estimate_adds_the_data_path_and_the_validation_forwards_by_hand() -> None:
    from segkit.planning import StepTiming
    from segkit_builtins.planners.epoch_time import CV_SHARES, epoch_2d, epoch_3d, sliding_windows

    timing = StepTiming(0.2, 5, 5, (64, 64), seconds_per_forward=0.05, forward_batch=5, seconds_per_load=0.1)
    # a run: 75 of 100 items train, 15 batches of 0.2 + 0.1 s; 10 validate, 2 batches of 0.05 + 0.1 s
    assert epoch_2d(100, timing) == pytest.approx(15 * 0.3 + 2 * 0.15)
    # a fold of cv --folds 5: 80 items in 16 batches, 20 in 4
    assert epoch_2d(100, timing, CV_SHARES) == pytest.approx(16 * 0.3 + 4 * 0.15)
    # a timing without the forward and the data path (a plugin's time_steps): a forward is a third of a step
    assert epoch_2d(100, StepTiming(0.3, 5, 5, (64, 64))) == pytest.approx(15 * 0.3 + 2 * 0.1)
    # 3D: 15 of 20 cases train, 8 batches of 2 patches (0.5 s step + 0.05 s augmentation); 2 cases validate,
    # each a 56x40x40 case in 40^3 windows at overlap 0.5: 2 windows, one forward of 2
    assert sliding_windows([56, 40, 40], [40, 40, 40]) == 2 and sliding_windows([100, 40, 30], [40, 40, 40]) == 4
    volume = StepTiming(0.5, 3, 2, (40, 40, 40), seconds_per_forward=0.3, forward_batch=2, seconds_per_load=0.05)
    assert epoch_3d(20, volume, [56, 40, 40]) == pytest.approx(8 * 0.55 + 2 * 0.3)


def test_the_data_path_is_timed_as_the_run_builds_it(msd_root: Path) -> None:
    from segkit.components.registry import get_registry
    from segkit.planning.timing import time_loading

    registry = get_registry()
    slices = {"dataset": {"name": "synthetic", "count": 24, "size": 32},
              "train": {"device": "cpu", "batch_size": 4, "image_size": 64}}
    assert time_loading(slices, registry, "cpu", seconds=0.05) > 0  # albumentations per item, in this process
    device_path = {**slices, "train": {**slices["train"], "loader": "device"}}
    assert time_loading(device_path, registry, "cpu", seconds=0.05) > 0  # decoded once, augmented per batch
    volumes = {"dataset": {"name": "msd", "root": str(msd_root)}, "model": {"name": "unet3d", "spatial_dims": 3},
               "loss": {"name": "ce_dice"}, "train": {"device": "cpu", "batch_size": 2, "patch_size": [16, 16, 8]}}
    assert time_loading(volumes, registry, "cpu", seconds=0.05) > 0  # the 3D augmentation of random patches
    unaugmented = {**volumes, "train": {**volumes["train"], "augment": "none"}}
    assert time_loading(unaugmented, registry, "cpu", seconds=0.05) == 0.0


def test_timed_steps_run_channels_last_where_the_run_would(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from segkit.components.registry import get_registry
    from segkit.planning import timing

    registry = get_registry()
    built: list[torch.nn.Module] = []
    inputs_channels_last: list[bool] = []
    real_build = timing.build_model

    def recording_build(config, registry):
        model = real_build(config, registry)
        model.register_forward_pre_hook(
            lambda _module, args: inputs_channels_last.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        built.append(model)
        return model

    monkeypatch.setattr(timing, "build_model", recording_build)
    dataset = registry.build("dataset", "synthetic", count=8, size=32)
    for setting, expected in (("always", True), (False, False), ("cuda", False)):  # "cuda": not on this CPU
        document = {"dataset": {"name": "synthetic", "count": 8, "size": 32},
                    "model": {"name": "smp_unet", "encoder_name": "resnet18", "in_channels": 3},
                    "train": {"device": "cpu", "channels_last": setting}}
        built.clear(), inputs_channels_last.clear()
        timing.time_training_steps(document, dataset, registry, "cpu", 2, (64, 64), seconds=0.01)
        weight = next(w for w in built[0].parameters() if w.dim() == 4 and w.shape[1] > 1 and w.shape[2] > 1)  # a 3x3 conv
        assert weight.is_contiguous(memory_format=torch.channels_last) is expected, setting
        assert inputs_channels_last and set(inputs_channels_last) == {expected}, setting  # steps and forwards
