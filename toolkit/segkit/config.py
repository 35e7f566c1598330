"""Run configuration: defaults < config file < command-line flags < ``--set``.

A configuration is a TOML document with the sections ``[model]``, ``[loss]``,
``[dataset]`` (``name`` picks the component, every other key is its parameter),
``[task]``, ``[metrics]``, ``[split]`` and ``[train]``. :func:`resolve_config` merges the
layers; :func:`validate_config` checks every key and type against the
components' signatures and the settings below, before any work starts.

Why it is long: every setting of a run is declared here, with its type and default, and every range
check sits beside the others in :func:`_check_ranges`, so one file answers "what can I set, and what
values does it take" (docs/cli.md mirrors it).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segkit.errors import ConfigError, unknown_name
from segkit.components.params import check_numbers, check_params
from segkit.tomlio import parse_toml_value, read_toml

__all__ = [
    "COMPONENT_SECTIONS",
    "SECTIONS",
    "ComponentSpec",
    "TaskSettings",
    "MetricsSettings",
    "SplitSettings",
    "TrainSettings",
    "RunConfig",
    "resolve_config",
    "validate_config",
    "parse_set",
    "resolve_monitor",
    "monitored_metric",
    "AUTO_LOSS",
    "task_loss",
    "MAX_EPOCHS",
    "check_epochs",
    "transform_specs",
]

COMPONENT_SECTIONS = ("model", "loss", "dataset")
SECTIONS = (*COMPONENT_SECTIONS, "task", "metrics", "split", "train")


@dataclass
class TrainSettings:
    """How to train: optimisation, schedule, device, precision, early stopping."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    scheduler: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    image_size: int = 0
    augment: str = "light"
    transforms: list[Any] = field(default_factory=list)
    device: str = "auto"
    amp: bool = True
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    channels_last: bool | Literal["cuda", "always"] = "cuda"
    compile: bool = False
    grad_clip: float = 0.0
    accumulate: int = 1
    seed: int = 0
    workers: int = 0
    patience: int = 0
    max_minutes: float = 0.0
    foreground_fraction: float = 0.0
    ema_decay: float = 0.0
    modality_dropout: float = 0.0
    loader: Literal["auto", "workers", "device"] = "auto"
    verify_data: bool = True
    loggers: list[str] = field(default_factory=list)
    patch_size: list[int] = field(default_factory=list)
    patches_per_epoch: int = 0
    window_overlap: float = 0.5
    target_spacing: list[float] = field(default_factory=list)
    preprocess_workers: int = 0
    init_from: str = ""


MONITOR_SUFFIXES = ("_case", "_global")


def resolve_monitor(monitor: str, names: list[str], has_cases: bool) -> str:
    """The monitor a run uses: ``monitor`` itself, or for ``auto`` ``dice_case`` / ``dice_global``.

    ``has_cases``: the dataset has cases of more than one item (patients, volumes).
    """
    if monitor != "auto":
        return monitor
    metric = "dice" if "dice" in names else names[0]
    return metric + ("_case" if has_cases else "_global")


def monitored_metric(monitor: str) -> str:
    """The metric name inside a monitor: ``dice`` for ``dice``, ``dice_case`` or ``dice_global``."""
    for suffix in MONITOR_SUFFIXES:
        if monitor.endswith(suffix):
            return monitor[: -len(suffix)]
    return monitor


@dataclass
class MetricsSettings:
    """Which metrics to report, at which threshold, and which value picks the best epoch.

    ``monitor`` is a metric name (its per-image mean on validation), or the name with
    ``_case`` (mean over cases of one 3D score per case) or ``_global`` (pooled over pixels).
    ``auto`` (the default) is Dice (else the first metric) per case when the dataset has cases
    of several items, else pooled: never the per-image mean, which counts an empty slice
    predicted empty as a perfect score. See :func:`resolve_monitor`.
    """

    names: list[str] = field(default_factory=lambda: ["dice", "iou"])
    threshold: float = 0.5
    monitor: str = "auto"


@dataclass
class TaskSettings:
    """What the model's outputs mean (:mod:`segkit.labels`).

    ``mode``: ``binary`` (one sigmoid channel), ``multiclass`` (softmax over the ``C`` label
    values), ``multilabel`` (a sigmoid per foreground label, labels may overlap), or ``auto``:
    binary when the dataset's masks hold two label values, else multiclass (multilabel with
    ``regions``). A run records the mode it resolved to.

    ``regions`` (multilabel): a table from a region's name to the label values it holds, one
    output channel each, e.g. ``{whole = [1, 2, 3], core = [2, 3]}`` (nnU-Net's region-based
    training); empty: one output per foreground label.
    """

    mode: Literal["auto", "binary", "multiclass", "multilabel"] = "auto"
    regions: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class SplitSettings:
    """How items are split into train, validation and test: by case (patient) unless told otherwise.

    ``by = "none"`` holds nothing out: validation scores the training items themselves (a dataset of one
    image or case has nothing else), so its scores are not unseen-data scores; a run says so.
    """

    by: Literal["case", "slice", "none"] = "case"
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    folds: int = 0
    fold: int = 0
    seed: int = 0


@dataclass
class ComponentSpec:
    """A registry name and the parameters passed to its target."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@dataclass
class RunConfig:
    """A fully resolved and validated run configuration."""

    model: ComponentSpec
    loss: ComponentSpec
    dataset: ComponentSpec
    task: TaskSettings = field(default_factory=TaskSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        """The TOML document that reproduces this run."""
        return {
            "model": self.model.to_dict(),
            "loss": self.loss.to_dict(),
            "dataset": self.dataset.to_dict(),
            "task": dataclasses.asdict(self.task),
            "metrics": dataclasses.asdict(self.metrics),
            "split": dataclasses.asdict(self.split),
            "train": dataclasses.asdict(self.train),
        }


AUTO_LOSS = "auto"


def task_loss(binary: bool) -> str:
    """The loss ``loss.name = "auto"`` (the default) stands for: ``bce_dice`` for binary data, else ``ce_dice``."""
    return "bce_dice" if binary else "ce_dice"


#: The default run (the README's first command): the tutorial's U-Net at half its width with batch norm, which
#: learns from its first epoch and trains twice as fast on a CPU (docs/benchmarks/first-command.md);
#: ``--model unet`` keeps these, a config file's ``[model] width = 64, batch_norm = false`` is the tutorial's own.
DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"name": "unet", "width": 32, "batch_norm": True},
    "loss": {"name": AUTO_LOSS},
    "dataset": {"name": "synthetic"},
    "task": {},
    "metrics": {},
    "split": {},
    "train": {},
}


def parse_set(assignment: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value as TOML) into its three parts."""
    target, sep, raw = assignment.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(
            f"--set {assignment!r} is not of the form section.key=value, e.g. --set model.encoder_name=resnet34."
        )
    if section not in SECTIONS:
        raise unknown_name("config section", section, SECTIONS, "Sections: " + ", ".join(SECTIONS) + ".")
    return section, key.strip(), parse_toml_value(raw.strip())


def _merge_layer(base: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str) -> None:
    for section, values in layer.items():
        if section not in SECTIONS:
            raise unknown_name(f"section in {origin}", section, SECTIONS, "See docs/config.md.")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table of keys, got {values!r}.")
        current = base.setdefault(section, {})
        new_name = values.get("name")
        if section in COMPONENT_SECTIONS and new_name is not None and new_name != current.get("name"):
            current.clear()  # another component: the previous one's parameters do not apply
        current.update(values)


def resolve_config(
    config_file: str | Path | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
    sets: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """Merge defaults, a config file, flags and ``--set`` assignments into one raw document."""
    document = copy.deepcopy(DEFAULTS)
    if config_file is not None:
        _merge_layer(document, read_toml(config_file), f"config file {str(config_file)!r}")
    if flags:
        _merge_layer(document, {s: {k: v for k, v in vals.items() if v is not None} for s, vals in flags.items()}, "flags")
    for assignment in sets:
        section, key, value = parse_set(assignment)
        _merge_layer(document, {section: {key: value}}, "--set")
    return document


def _settings(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    checked = check_params(f"[{section}]", cls, dict(values), "See docs/config.md.")
    return cls(**checked)


#: More epochs than any run trains: a typo (``1e23``) or a wish for "until I stop it", which is
#: ``train.max_minutes`` (a time budget) or ``train.patience`` (stop when it no longer improves).
MAX_EPOCHS = 100_000
#: More patches than one epoch of a 3D run draws: the epoch's order and patch table hold each one in memory
#: (a typo such as ``1e12`` would end in a MemoryError); longer training is more epochs.
MAX_PATCHES_PER_EPOCH = 1_000_000
#: Seeds the random generators take: torch up to 2**63 - 1; scikit-learn's splitters below 2**32.
MAX_TRAIN_SEED = 2**63 - 1
MAX_SPLIT_SEED = 2**32 - 1


def check_epochs(epochs: int, what: str = "train.epochs") -> str | None:
    """Why ``epochs`` cannot be trained (None when it can): below 1, or beyond :data:`MAX_EPOCHS`."""
    if epochs < 1:
        return f"{what} must be at least 1, got {epochs}"
    if epochs > MAX_EPOCHS:
        return (f"{what} = {epochs} is more than any run can train (at most {MAX_EPOCHS}); for a time budget set "
                "train.max_minutes (the epochs it holds are planned after the first), to stop when the score no "
                "longer improves set train.patience")
    return None


def _non_finite(config: RunConfig) -> list[str]:
    """``section.key`` of every float setting that is infinite or not a number."""
    found = []
    for section in ("task", "metrics", "split", "train"):
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if isinstance(value, float) and not math.isfinite(value):
                found.append(f"{section}.{key} must be a finite number, got {value}")
    return found


def _check_ranges(config: RunConfig) -> None:
    t, s, m = config.train, config.split, config.metrics
    problems = _non_finite(config)
    if problems:  # the comparisons below would let infinities and NaN through
        raise ConfigError("impossible settings: " + "; ".join(problems) + ".")
    epochs_problem = check_epochs(t.epochs)
    if epochs_problem:
        problems.append(epochs_problem)
    if not 0 <= t.seed <= MAX_TRAIN_SEED:
        problems.append(f"train.seed must be between 0 and 2**63 - 1 (torch's generator), got {t.seed}")
    if not 0 <= s.seed <= MAX_SPLIT_SEED:
        problems.append(f"split.seed must be between 0 and 2**32 - 1 (scikit-learn's splitters), got {s.seed}")
    if not 0 <= t.momentum < 1:
        problems.append(f"train.momentum (SGD) must be in [0, 1), e.g. 0.9 or 0.99 (nnU-Net), got {t.momentum}")
    if t.batch_size < 1:
        problems.append(f"train.batch_size must be at least 1, got {t.batch_size}")
    if not t.lr > 0:
        problems.append(f"train.lr must be greater than 0, got {t.lr}")
    if t.weight_decay < 0:
        problems.append(f"train.weight_decay must not be negative, got {t.weight_decay}")
    if t.warmup_epochs < 0:
        problems.append(f"train.warmup_epochs must not be negative, got {t.warmup_epochs}")
    if t.image_size < 0:
        problems.append(f"train.image_size must be 0 (the data's own size) or positive, got {t.image_size}")
    if t.accumulate < 1:
        problems.append(f"train.accumulate must be at least 1, got {t.accumulate}")
    if not 0 <= t.foreground_fraction <= 1:
        problems.append(f"train.foreground_fraction must be between 0 and 1 (nnU-Net uses 0.33), got {t.foreground_fraction}")
    if not 0 <= t.ema_decay < 1:
        problems.append(f"train.ema_decay must be 0 (off) or between 0 and 1, e.g. 0.999, got {t.ema_decay}")
    if not 0 <= t.modality_dropout <= 1:
        problems.append(f"train.modality_dropout must be between 0 (off) and 1, e.g. 0.2, got {t.modality_dropout}")
    if t.patch_size and (len(t.patch_size) not in (2, 3) or any(isinstance(p, bool) or not isinstance(p, int)
                                                                 or p < 1 for p in t.patch_size)):
        problems.append(f"train.patch_size must be empty (whole images), two positive integers (a 2D model trained on "
                        f"patches of images at their own size, e.g. [256, 256]) or three (a 3D model trained on patches "
                        f"of volumes, e.g. [40, 56, 40]); got {t.patch_size}")
    elif len(t.patch_size) == 2 and t.image_size:
        problems.append(f"train.patch_size = {t.patch_size} trains on patches of the images at their own size, and "
                        f"train.image_size = {t.image_size} resizes every image: choose one (leave train.image_size "
                        "out for patches, or train.patch_size out to train on resized whole images)")
    if t.target_spacing and (len(t.target_spacing) != 3 or any(not math.isfinite(v) or v <= 0
                                                                for v in t.target_spacing)):
        problems.append(f"train.target_spacing must be empty (each case keeps its own spacing) or three positive "
                        f"voxel sizes in mm, e.g. [1.0, 1.0, 1.0]; got {t.target_spacing}")
    elif t.target_spacing and len(t.patch_size) != 3:
        problems.append(f"train.target_spacing = {t.target_spacing} resamples the volumes of a 3D run; set "
                        "train.patch_size too (three sizes), or leave train.target_spacing out (a 2D run trains on the "
                        "slices as stored)")
    if not 0 <= t.patches_per_epoch <= MAX_PATCHES_PER_EPOCH:
        problems.append(f"train.patches_per_epoch must be 0 (one patch per training case) or up to "
                        f"{MAX_PATCHES_PER_EPOCH:,} (each patch of an epoch has its place in memory; nnU-Net "
                        f"draws 250 batches an epoch), got {t.patches_per_epoch}; to train longer, raise train.epochs")
    if not 0 <= t.window_overlap < 1:
        problems.append(f"train.window_overlap (of the sliding windows over an image or volume) must be in [0, 1), e.g. 0.5, "
                        f"got {t.window_overlap}")
    if t.workers < 0 or t.patience < 0 or t.grad_clip < 0 or t.max_minutes < 0:
        problems.append("train.workers, train.patience, train.grad_clip and train.max_minutes must not be negative")
    if isinstance(t.preprocess_workers, bool) or not isinstance(t.preprocess_workers, int) or t.preprocess_workers < 0:
        problems.append(f"train.preprocess_workers must be a whole number >= 0 (0: automatic, 1: in this process), "
                        f"got {t.preprocess_workers!r}")
    if not 0 < s.val_fraction < 1:
        problems.append(f"split.val_fraction must be between 0 and 1, got {s.val_fraction}")
    if not 0 <= s.test_fraction < 1:
        problems.append(f"split.test_fraction must be in [0, 1), got {s.test_fraction}")
    if s.by == "none" and s.folds:
        problems.append("split.by = none holds no case out, so it has no folds: use split.by = case for "
                        "cross-validation")
    if s.folds == 1 or s.folds < 0:
        problems.append(f"split.folds must be 0 (no cross-validation) or at least 2, got {s.folds}")
    if s.folds and not 0 <= s.fold < s.folds:
        problems.append(f"split.fold must be between 0 and {s.folds - 1} for {s.folds} folds, got {s.fold}")
    if not 0 < m.threshold < 1:
        problems.append(f"metrics.threshold must be between 0 and 1, got {m.threshold}")
    if not m.names:
        problems.append("metrics.names must name at least one metric")
    if m.monitor != "auto" and monitored_metric(m.monitor) not in m.names:
        problems.append(
            f"metrics.monitor {m.monitor!r} must be 'auto' or one of the reported metrics {m.names}, optionally "
            "with the suffix _case (mean over cases) or _global (pooled), e.g. 'dice_case'"
        )
    if problems:
        raise ConfigError("impossible settings: " + "; ".join(problems) + ".")


def _check_auto_loss(values: dict[str, Any], registry: Any) -> dict[str, Any]:
    """Parameters for ``loss.name = "auto"``: each must belong to a loss it can stand for.

    Which one it is depends on the data's labels, so the types are checked once the run knows
    them (:func:`segkit.train.assemble.fill_labels`).
    """
    candidates = [registry.get("loss", task_loss(binary)) for binary in (True, False)]
    known = sorted({p.name for component in candidates for p in component.parameters()})
    for key in values:
        if key not in known:
            raise unknown_name(
                "parameter of loss 'auto'", key, known,
                f"loss 'auto' is {task_loss(True)} for binary data and {task_loss(False)} for several labels; "
                f"see 'segkit info loss {task_loss(True)}' and 'segkit info loss {task_loss(False)}', or pick one "
                "with --loss.")
    return values


def transform_specs(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(name, params)`` of each entry of ``train.transforms``: a name, or a table with ``name`` and parameters."""
    if not isinstance(value, list):
        raise ConfigError(f"train.transforms must be a list of augmentation names or tables, got {value!r}; "
                          'e.g. transforms = ["mirror", {name = "gaussian_noise", std = 0.05}]')
    specs = []
    for entry in value:
        if isinstance(entry, str) and entry:
            specs.append((entry, {}))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            specs.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
        else:
            raise ConfigError(f"train.transforms entry {entry!r} is neither an augmentation name nor a table with "
                              "a name; see 'segkit list augmentation'")
    return specs


def validate_config(document: Mapping[str, Mapping[str, Any]], registry: Any) -> RunConfig:
    """Check a raw document against the registry and the settings; return a :class:`RunConfig`."""
    specs = {}
    for section in COMPONENT_SECTIONS:
        values = dict(document.get(section, {}))
        name = values.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"[{section}] needs a name, e.g. name = {DEFAULTS[section]['name']!r}.")
        if section == "loss" and name == AUTO_LOSS:
            specs[section] = ComponentSpec(name, _check_auto_loss(values, registry))
            continue
        component = registry.get(section, name)
        check_numbers(f"{section} {name!r}", values)
        specs[section] = ComponentSpec(name, component.check_params(values))
    metrics = _settings(MetricsSettings, "metrics", document.get("metrics", {}))
    for metric in metrics.names:
        registry.get("metric", metric)
    config = RunConfig(
        model=specs["model"],
        loss=specs["loss"],
        dataset=specs["dataset"],
        task=_settings(TaskSettings, "task", document.get("task", {})),
        metrics=metrics,
        split=_settings(SplitSettings, "split", document.get("split", {})),
        train=_settings(TrainSettings, "train", document.get("train", {})),
    )
    _check_ranges(config)
    for name, params in transform_specs(config.train.transforms):
        component = registry.get("augmentation", name)
        check_numbers(f"augmentation {name!r}", params)
        component.check_params(params)
    return config
