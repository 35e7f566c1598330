"""``segkit plan``: a run configuration derived from the dataset and this machine, with the reason for each setting."""

from __future__ import annotations

from typing import Any

import click

from segkit.cli import HintedChoice, plugin_option, registry_from_context


def split_sets(sets: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` values as (dataset parameters, planner parameters): ``key=v`` and ``dataset.key=v`` are the
    dataset's, ``planner.key=v`` the planner's."""
    from segkit.config import parse_set
    from segkit.errors import ConfigError
    from segkit.tomlio import parse_toml_value

    dataset: dict[str, Any] = {}
    planner: dict[str, Any] = {}
    for assignment in sets:
        target, sep, raw = assignment.partition("=")
        if sep and target.strip().startswith("planner."):
            key = target.strip().removeprefix("planner.")
            if not key:
                raise ConfigError(f"--set {assignment!r}: name the planner's parameter, e.g. planner.dims=3d.")
            planner[key] = parse_toml_value(raw.strip())
            continue
        text = assignment if "." in target else f"dataset.{assignment}"
        section, key, value = parse_set(text)
        if section != "dataset":
            raise ConfigError(f"--set {assignment!r}: segkit plan takes the dataset's parameters (key=value or "
                              "dataset.key=value) and the planner's (planner.key=value); the run's settings are what "
                              "it plans: edit plan.toml, or override them with 'segkit run --config plan.toml --set'.")
        dataset[key] = value
    return dataset, planner


def plan_parameters(registry: Any, dataset_name: str, data_root: str | None,
                    sets: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dataset parameters, planner parameters) as ``segkit plan`` takes them: ``--set`` split by
    :func:`split_sets`, and ``--data-root`` (made absolute) under the dataset's data-root parameter."""
    import os

    dataset_params, planner_params = split_sets(sets)
    if data_root is not None:
        parameter = registry.get("dataset", dataset_name).data_root_parameter()
        dataset_params[parameter] = os.path.abspath(os.path.expanduser(data_root))
    return dataset_params, planner_params


@click.command("plan")
@click.option("--dataset", "dataset_name", default="synthetic", show_default=True,
              help="Dataset name (see 'segkit list dataset').")
@click.option("--data-root", type=click.Path(), help="Where the dataset lives (its root or table file).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A dataset parameter (key=value), or the planner's (planner.key=value); value parsed as TOML.")
@click.option("--minutes", type=float, default=15.0, show_default=True, help="The training time budget.")
@click.option("--device", type=HintedChoice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="The device the run will train on; the planner times its steps there.")
@click.option("--planner", "planner_name", default="default", show_default=True,
              help="The planner (see 'segkit list planner').")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for plan.toml and fingerprint.json.")
@click.option("--overwrite", is_flag=True, help="Replace plan.toml and fingerprint.json when they exist.")
@click.option("--quiet", is_flag=True, help="No progress while the dataset is read.")
@plugin_option
def plan_command(dataset_name: str, data_root: str | None, sets: tuple[str, ...], minutes: float, device: str,
                 planner_name: str, out: str, overwrite: bool, quiet: bool) -> None:
    """Plan a run from the dataset: write fingerprint.json and a commented plan.toml.

    The dataset is read once (after the data check) and a few training steps of the planned model
    are timed on --device, so sizes, batch and epochs fit the machine and the --minutes budget.
    'segkit run --config OUT/plan.toml' and 'segkit cv --config OUT/plan.toml' take the plan as it is.
    """
    from segkit.planning.make import make_plan

    registry = registry_from_context()
    dataset_params, planner_params = plan_parameters(registry, dataset_name, data_root, sets)
    outcome = make_plan(registry, dataset_name, dataset_params, planner_name, planner_params, minutes, device, out,
                        overwrite=overwrite, progress=not quiet)
    fp = outcome.fingerprint
    click.echo(f"dataset {dataset_name}: {fp['cases']} cases, {fp['items']} items, labels {', '.join(fp['labels'])}")
    for flag in fp["flags"]:
        click.echo(f"  flag: {flag}")
    document = outcome.plan.document()
    train = document.get("train", {})
    shape = train.get("patch_size") or (f"image size {train.get('image_size')}" if train.get("image_size")
                                        else "the slices' own size")
    click.echo(f"plan: model {document['model']['name']}, {shape}, batch {train.get('batch_size')}, "
               f"about {outcome.plan.epoch_seconds:.1f} s per epoch, epochs {train.get('epochs')} in "
               f"{minutes:g} min")
    for note in outcome.timing_notes:  # the epochs and batch above rest on timings that may be off
        click.echo(f"warning: {note}", err=True)
    click.echo(f"wrote {outcome.plan_path} and {outcome.fingerprint_path}")


COMMANDS = [plan_command]
