"""``segkit run``: assemble a dataset, model, loss and metrics from the registries and train."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import click

from segkit.cli import _PLUGINS_KEY, HintedChoice, plugin_option, registry_from_context
from segkit.errors import ConfigError, SegkitError

_ARGS_KEY = "segkit.run.args"
_ROOT_PLUGINS_KEY = "segkit.run.root_plugins"


def _default_out(document: dict[str, dict[str, Any]]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{document['model']['name']}-{document['loss']['name']}"


class RunCommand(click.Command):
    """``segkit run``; remembers its own command-line arguments for ``--nproc-per-node``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS_KEY] = list(args)
        ctx.meta[_ROOT_PLUGINS_KEY] = list(ctx.find_root().meta.get(_PLUGINS_KEY, []))
        return super().parse_args(ctx, args)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options that configure a training run, shared by ``segkit run`` and ``segkit cv``."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="A TOML run configuration (see configs/)."),
        click.option("--model", help="Model name (see 'segkit list model'). Default: unet."),
        click.option("--loss", help="Loss name (see 'segkit list loss'). Default: auto, the task's loss: bce_dice for binary data, ce_dice for several labels."),
        click.option("--metric", "metric_names", multiple=True, help="Metric to report; repeatable. Default: dice and iou."),
        click.option("--dataset", help="Dataset name (see 'segkit list dataset'). Default: synthetic."),
        click.option("--data-root", type=click.Path(), help="Where the dataset lives (its root or table file)."),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int),
        click.option("--lr", type=float, help="Base learning rate."),
        click.option("--image-size", type=int, help="Resize images to this square size (0: keep the data's size)."),
        click.option("--augment", help="Augmentation preset: none, light, heavy."),
        click.option("--optimizer", type=HintedChoice(["adam", "adamw", "sgd"])),
        click.option("--scheduler", type=HintedChoice(["cosine", "poly", "constant"]), help="After a linear warm-up."),
        click.option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."),
        click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA (bf16, or fp16 with a grad scaler)."),
        click.option("--seed", type=int),
        click.option("--workers", type=int, help="DataLoader worker processes."),
        click.option("--patience", type=int, help="Stop after this many epochs without improvement (0: never)."),
        click.option("--loader", type=HintedChoice(["auto", "workers", "device"]),
                     help="Data path: DataLoader workers, or the dataset on the training device with batched "
                          "augmentation; auto picks device on CUDA when it fits."),
        click.option("--logger", "loggers", multiple=True,
                     help="Also log to this tool: tensorboard (RUN_DIR/tensorboard) or mlflow (MLFLOW_TRACKING_URI); repeatable. Plugins can add "
                          "their own through the training hooks (docs/plugins.md)."),
        click.option("--init-from", "init_from", type=click.Path(),
                     help="Fine-tune: start from the weights of this run directory (its best.pt) or .pt checkpoint; "
                          "tensors that do not fit (another number of labels or channels) are re-initialised and named."),
        click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key; value parsed as TOML."),
        click.option("--quiet", is_flag=True, help="No progress bars or epoch lines."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def run_document(registry: Any, config_file: str | None, model: str | None, loss: str | None,
                 metric_names: tuple[str, ...], dataset: str | None, data_root: str | None, sets: tuple[str, ...],
                 train_flags: dict[str, Any], split: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The raw configuration document of a run from its config file, flags and ``--set`` assignments."""
    from segkit.config import resolve_config

    train_flags = {**train_flags, "loggers": list(train_flags.get("loggers") or ()) or None}
    flags: dict[str, dict[str, Any]] = {
        "model": {"name": model},
        "loss": {"name": loss},
        "dataset": {"name": dataset},
        "metrics": {"names": list(metric_names) or None},
        "split": split or {},
        "train": train_flags,
    }
    if train_flags.get("init_from"):
        train_flags["init_from"] = os.path.abspath(os.path.expanduser(train_flags["init_from"]))
    document = resolve_config(config_file, flags, sets)
    if data_root is not None:
        flags["dataset"][registry.get("dataset", document["dataset"]["name"]).data_root_parameter()] = data_root
        document = resolve_config(config_file, flags, sets)
    return absolute_data_root(registry, document)


def absolute_data_root(registry: Any, document: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``document`` with the dataset's data root (``root`` or ``path``) made absolute against the current folder.

    The run's config.toml then names the same data from any folder, so evaluate and
    resume work wherever they are started. Datasets without a root are left alone.
    """
    spec = document.get("dataset") or {}
    name = spec.get("name")
    if not name:
        return document
    try:
        entry = registry.get("dataset", name)
        accepted = {p.name for p in entry.parameters()}
    except SegkitError:  # an unknown or broken dataset is reported, with its alternatives, when the run is assembled
        return document
    for parameter in ("path", "root"):
        value = spec.get(parameter)
        if parameter in accepted and isinstance(value, str) and value.strip():
            spec[parameter] = os.path.abspath(os.path.expanduser(value))
    return document


@click.command("run", cls=RunCommand)
@run_options
@click.option("--folds", type=int, help="K-fold cross-validation by case: number of folds.")
@click.option("--fold", type=int, help="Which fold is validation (0-based).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory. Default: runs/<date-time>-<model>-<loss>.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory from its last.pt.")
@click.option("--nproc-per-node", type=click.IntRange(min=1),
              help="Data-parallel training in N processes on this machine, through torchrun (one per GPU; gloo on "
                   "CPU). --batch-size is per process. See docs/distributed.md.")
@plugin_option
def run_command(
    config_file: str | None,
    model: str | None,
    loss: str | None,
    metric_names: tuple[str, ...],
    dataset: str | None,
    data_root: str | None,
    out: str | None,
    sets: tuple[str, ...],
    resume: str | None,
    quiet: bool,
    nproc_per_node: int | None,
    **train_flags: Any,
) -> None:
    """Train a model and write its run directory: config, metrics, curves, checkpoints and scores.

    Precedence: defaults < --config file < flags < --set.
    """
    from segkit.config import resolve_config, validate_config

    registry = registry_from_context()
    folds, fold = train_flags.pop("folds"), train_flags.pop("fold")
    train_flags["loggers"] = list(train_flags.get("loggers") or ()) or None
    extend_to = None
    if resume:
        if config_file or model or loss or dataset or data_root or metric_names or out or sets or folds is not None \
                or fold is not None:
            raise ConfigError("--resume continues a run exactly as configured; it takes no other settings than "
                              "--epochs (to train it longer), --device, --workers, --quiet and --nproc-per-node.")
        run_dir = Path(resume)
        if not (run_dir / "config.toml").is_file():
            from segkit.runs.runlock import LOCK_NAME

            if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
                raise ConfigError(f"{resume!r} holds no run to resume: the run started there was stopped before it "
                                  "wrote its config (while it read and checked its data), so nothing was trained. "
                                  f"Start it again with its own command and --out {resume}.")
            raise ConfigError(f"{resume!r} is not a segkit run directory (no config.toml).")
        from segkit.runs.runfiles import read_run_config

        read_run_config(run_dir)  # an emptied config.toml would resume as the default run
        allowed = {k: v for k, v in train_flags.items() if k in ("device", "workers") and v is not None}
        extend_to = train_flags.get("epochs")
        if extend_to is not None:
            from segkit.config import check_epochs

            problem = check_epochs(extend_to, "--epochs")
            if problem:
                raise ConfigError(problem + ".")
        extra = [k for k, v in train_flags.items() if v is not None and k not in allowed and k != "epochs"]
        if extra:
            flag = {"loggers": "logger"}.get(extra[0], extra[0]).replace("_", "-")
            raise ConfigError(f"--resume takes no --{flag}: the run keeps its own settings (its loggers too).")
        document = resolve_config(run_dir / "config.toml", {"train": allowed})
    else:
        split = {"folds": folds, "fold": fold if fold is not None else (0 if folds else None)}
        document = run_document(registry, config_file, model, loss, metric_names, dataset, data_root, sets,
                                train_flags, split)
        if fold is not None and not document.get("split", {}).get("folds"):
            raise ConfigError(f"--fold {fold} picks the validation fold of a K-fold split, and there is none: add "
                              "--folds K (or split.folds in the config). To train every fold, use 'segkit cv'.")
        run_dir = Path(out) if out else _default_out(document)
    config = validate_config(document, registry)

    if nproc_per_node is not None and nproc_per_node > 1:
        _launch(nproc_per_node, run_dir, fresh=not resume)
        return

    from segkit.train import train

    train(config, run_dir, registry, resume=bool(resume), extend_to=extend_to, quiet=quiet,
          echo=lambda m: click.echo(m, err=True))


def _launch(nproc: int, run_dir: Path, fresh: bool) -> None:
    """Run this same command in ``nproc`` processes through torchrun and exit with their status."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--nproc-per-node starts its own processes; under torchrun, drop it (torchrun's own "
                          "--nproc-per-node sets the number of processes).")
    from segkit.train.launch import launch, strip_option
    from segkit.train.runner import existing_run_message, holds_a_run

    if fresh and holds_a_run(run_dir):
        raise ConfigError(existing_run_message(run_dir))

    ctx = click.get_current_context()
    args = strip_option(ctx.meta[_ARGS_KEY], "--nproc-per-node")
    if fresh and "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(run_dir)]  # one default run directory for every process
    status = launch(nproc, args, ctx.meta[_ROOT_PLUGINS_KEY])
    if status:
        ctx.exit(status)


@click.command("cv")
@run_options
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Number of folds; the cases are cut in this many folds (stratified by lesion slices).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Where the folds go (DIR/fold-<k>/) with cv-report.json and cv-per-case.csv.")
@click.option("--fold", "only_folds", type=click.IntRange(min=0), multiple=True, metavar="K",
              help="Train only fold K (0-based, the fold-K folder), then stop; repeatable. Start one process per "
                   "fold to share a GPU or use several machines, then run the command without --fold to score.")
@plugin_option
def cv_command(config_file: str | None, model: str | None, loss: str | None, metric_names: tuple[str, ...],
               dataset: str | None, data_root: str | None, sets: tuple[str, ...], quiet: bool, folds: int, out: str,
               only_folds: tuple[int, ...], **train_flags: Any) -> None:
    """Cross-validate by case: train K fold runs, score every case with the model that never saw it.

    Takes the training options of 'segkit run'. Rerunning the same command continues an interrupted
    cross-validation. The K fold models then act as one ensemble in
    'segkit evaluate|predict|export DIR', with test-time augmentation and largest-component
    post-processing on where the out-of-fold scores show they help.
    """
    from segkit.config import validate_config
    from segkit.evaluation.cv import format_cv_report, run_cv

    registry = registry_from_context()
    document = run_document(registry, config_file, model, loss, metric_names, dataset, data_root, sets, train_flags)
    if document.get("split", {}).get("folds"):
        raise ConfigError("segkit cv sets split.folds and split.fold itself: use --folds K, not split.folds.")
    validate_config(document, registry)
    report = run_cv(document, registry, out, folds, quiet=quiet, echo=lambda m: click.echo(m, err=True),
                    device=train_flags.get("device") or document.get("train", {}).get("device", "auto"),
                    only=only_folds)
    if report is not None:
        click.echo(format_cv_report(report))


COMMANDS = [run_command, cv_command]
