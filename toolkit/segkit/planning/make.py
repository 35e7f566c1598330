"""``segkit plan`` end to end: build the dataset, check it, fingerprint it, ask the planner, write the files.

Every check comes before anything is written: an unknown planner, the data check, the
fingerprint's refusals, a plan ``segkit run`` would not accept or whose first batch fails
(:mod:`segkit.planning.first_batch`), a budget that holds no epoch.
Then ``fingerprint.json`` and ``plan.toml`` are written atomically into the output folder.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.config import resolve_config, validate_config
from segkit.data.verify import verify_dataset
from segkit.device import select_device
from segkit.errors import ConfigError, DataError
from segkit.fileio import atomic_write_text
from segkit.memory import available_bytes
from segkit.planning.contract import Plan, PlanRequest
from segkit.planning.fingerprint import check_fingerprint, fingerprint_dataset
from segkit.planning.first_batch import check_first_batch
from segkit.planning.plan_file import write_plan
from segkit.planning.timing import TimingWatch, time_loading, time_training_steps

__all__ = ["PlanOutcome", "make_plan", "PLAN_FILE", "FINGERPRINT_FILE"]

PLAN_FILE = "plan.toml"
FINGERPRINT_FILE = "fingerprint.json"


@dataclass
class PlanOutcome:
    """What :func:`make_plan` wrote and decided."""

    plan: Plan
    fingerprint: dict[str, Any]
    plan_path: Path
    fingerprint_path: Path
    timing_notes: list[str] = field(default_factory=list)
    """Why the timings may not measure this machine at rest (:class:`segkit.planning.timing.TimingWatch`);
    also among the plan's notes."""


def _json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and tuples made plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _check_out(out: Path, overwrite: bool) -> None:
    existing = [name for name in (PLAN_FILE, FINGERPRINT_FILE) if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them, or --out "
                          "another folder.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder.")


def make_plan(registry: Any, dataset_name: str, dataset_params: dict[str, Any], planner_name: str,
              planner_params: dict[str, Any], minutes: float, device: str, out: str | Path,
              overwrite: bool = False, progress: bool = False) -> PlanOutcome:
    """Plan a run of ``dataset_name`` for ``minutes`` on ``device`` and write it into ``out``."""

    out = Path(out)
    _check_out(out, overwrite)
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--minutes must be a positive number of minutes, got {minutes}.")
    torch_device = select_device(device)
    planner = registry.get("planner", planner_name).build(**planner_params)
    dataset = registry.build("dataset", dataset_name, **dataset_params)
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset_name!r} has no items: nothing to plan for. Check --data-root and its "
                        "parameters.")
    try:
        verify_dataset(dataset)
    except DataError as error:  # its list of bad items, on one line
        raise DataError(" ".join(line.strip() for line in str(error).splitlines())) from None
    fingerprint = fingerprint_dataset(dataset, dataset_name, progress=progress)
    check_fingerprint(fingerprint, dataset_name)
    fingerprint["device"] = {"name": device, "free_bytes": available_bytes(torch_device)}
    watch = TimingWatch(device)
    request = PlanRequest(
        fingerprint=fingerprint, dataset=dataset, dataset_name=dataset_name, dataset_params=dict(dataset_params),
        minutes=float(minutes), device=device, free_bytes=available_bytes(torch_device), registry=registry,
        time_steps=lambda document, batch, shape, seconds=2.0, forward_batch=None: time_training_steps(
            document, dataset, registry, device, batch, shape, seconds, forward_batch, watch),
        time_loading=lambda document, seconds=1.0: time_loading(document, registry, device, seconds))
    plan = planner.plan(request)
    for note in (timing_notes := watch.notes()):
        plan.note(note)
    _check_plan(plan, registry, planner_name)
    check_first_batch(plan.document(), registry, planner_name)
    if plan.epoch_seconds > minutes * 60:
        raise ConfigError(f"a budget of {minutes:g} min holds no epoch of the planned run: "
                          f"{plan.fitting_hint or f'one epoch takes about {plan.epoch_seconds:.0f} s here'}.")
    out.mkdir(parents=True, exist_ok=True)
    fingerprint_path = out / FINGERPRINT_FILE
    atomic_write_text(fingerprint_path, json.dumps(_json_ready(fingerprint), indent=2) + "\n")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"Planned by 'segkit plan --planner {planner_name}' on {stamp}: dataset {dataset_name}, "
              f"{fingerprint['cases']} cases, {fingerprint['items']} items, {minutes:g} minutes on {device}. "
              f"The dataset's fingerprint is in {FINGERPRINT_FILE}; docs/plan.md says how each decision is made.",
              f"Run it as it is: segkit run --config {out / PLAN_FILE} --out runs/planned",
              f"or cross-validate it: segkit cv --config {out / PLAN_FILE} --folds 5 --out runs/planned-cv"]
    plan_path = write_plan(out / PLAN_FILE, plan, header)
    return PlanOutcome(plan, fingerprint, plan_path, fingerprint_path, timing_notes)


def _check_plan(plan: Plan, registry: Any, planner_name: str) -> None:
    """The plan as ``segkit run --config`` reads it must validate; a planner's slip names the planner."""

    try:
        validate_config(resolve_config(None, plan.document()), registry)
    except ConfigError as error:
        raise ConfigError(f"planner {planner_name!r} planned a run segkit cannot take: {error}") from None
