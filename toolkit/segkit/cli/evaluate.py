"""``segkit evaluate``: score a trained run (or an ensemble of runs) per image, per case and globally."""

from __future__ import annotations

import json
from pathlib import Path

import click

from segkit.cli import HintedChoice, inference_options, plugin_option, registry_from_context


@click.command("evaluate")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--checkpoint", help="best, last, or a path to a .pt file. Default: best (last for a cross-validation).")
@click.option("--split", type=HintedChoice(["test", "val", "train", "all"]),
              help="Which items: a split of the run's splits.csv, or all. Default: test (all with --dataset).")
@click.option("--dataset", "dataset_name", help="Evaluate on this dataset instead of the run's (see 'segkit list dataset').")
@click.option("--data-root", type=click.Path(), help="Where that dataset (or the run's, if it moved) lives.")
@click.option("--threshold", type=float, help="Probability threshold. Default: the run's.")
@click.option("--tolerance", type=float, default=1.0, show_default=True,
              help="Surface Dice tolerance: a border pixel within this distance of the other mask's border counts "
                   "as matched (pixels, or the dataset's spacing).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as a JSON object.")
@inference_options("lcc: keep the largest connected component per case (3D), as Buda et al. 2019.",
                   "auto, cpu, cuda, cuda:N or mps.")
@plugin_option
def evaluate_command(runs: tuple[str, ...], checkpoint: str | None, split: str | None, dataset_name: str | None,
                     data_root: str | None, threshold: float | None, tta: bool | None, postprocess: str | None,
                     batch_size: int, device: str, tolerance: float, as_json: bool, quiet: bool) -> None:
    """Score RUN_DIR's model on its held-out cases, or an ensemble of several runs (probabilities averaged).

    Reports per-image mean, per-case (one 3D score per patient) mean and median, and
    global (pooled) Dice, IoU, precision and recall at the masks' own resolution, each
    label's with several labels, and per case HD95, average symmetric surface distance and
    surface Dice; writes the per-case scores to RUN_DIR/evaluation/.

    A directory written by 'segkit cv' stands for its K fold models as one ensemble, with
    the TTA and post-processing its out-of-fold scores chose; evaluate it on new cases
    (--dataset / --data-root): its own cases were each seen in training by K-1 of its models.
    """
    from segkit.evaluation.cv import REPORT_FILE, inference_settings, is_cv_directory
    from segkit.errors import ConfigError
    from segkit.evaluation.evaluate import evaluate_runs, format_report

    cv_dirs = [run for run in runs if is_cv_directory(run)]
    if cv_dirs and dataset_name is None and data_root is None:
        raise ConfigError(
            f"{cv_dirs[0]} is a cross-validation: every one of its cases was seen in training by all but one fold "
            f"model, so its own data cannot score the ensemble. Its out-of-fold scores are in "
            f"{cv_dirs[0]}/{REPORT_FILE}; pass --data-root (and --dataset) to score the ensemble on new cases."
        )
    sources, tta, postprocess, checkpoint = inference_settings(runs, tta, postprocess, checkpoint)
    report = evaluate_runs(
        sources, checkpoint=checkpoint, split=split, dataset_name=dataset_name, data_root=data_root,
        threshold=threshold, tta=tta, postprocess=postprocess, batch_size=batch_size, device=device, tolerance=tolerance,
        registry=registry_from_context(), progress=not quiet,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
        refuse_trained=f"cross-validation {cv_dirs[0]!r} cannot be scored on this data" if cv_dirs else "",
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report))
    from segkit.runs.report import write_report

    for run in runs:  # the run's report now includes this evaluation
        if (Path(run) / "config.toml").is_file() and not report.get("write_error"):
            try:
                write_report(run)
            except OSError:
                pass  # a read-only run: the scores are printed, the report stays as it was
    if report.get("write_error"):  # the scores are printed above; only the per-case file is missing
        click.echo(f"error: the per-case scores were not saved: {report['write_error']}", err=True)
        click.get_current_context().exit(1)


COMMANDS = [evaluate_command]
