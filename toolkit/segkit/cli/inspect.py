"""``segkit inspect``: look at a dataset before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from segkit.cli import plugin_option, registry_from_context


def _channel(index: int, names: tuple[str, ...] | None) -> str:
    """``FLAIR (1)`` where the dataset names its channels, else the index."""
    return f"{names[index]} ({index})" if names is not None and index < len(names) else str(index)


def _number(value: float) -> str:
    """``value`` in 4 significant digits, whole from 1,000 to 10 million (no exponent there)."""
    return f"{value:.0f}" if 1000 <= abs(value) < 1e7 else f"{value:.4g}"


def _row(name: str, values: list[str], width: int = 10) -> str:
    return f"    {name:<16}" + "".join(f"{v:>{width}}" for v in values)


def volume_lines(volumes: dict[str, Any]) -> list[str]:
    """The text lines of a volume dataset's summary (:func:`segkit.data.volume_summary.summarize_volumes`)."""
    lines = [(f"  volumes:       {volumes['cases']} cases, {len(volumes['channels'])} channel(s) "
             f"({', '.join(volumes['channels'])}), labels {', '.join(volumes['labels'])}"),
             "  per axis (file order), min / median / max:", _row("", [f"axis {a}" for a in range(3)], width=22)]
    for key, unit in (("shape", "voxels"), ("spacing", "mm")):
        ranges = volumes[key]
        cells = [" / ".join(_number(ranges[part][axis]) for part in ("min", "median", "max")) for axis in range(3)]
        lines.append(_row(f"{key} ({unit})", cells, width=22))
    lines.append(f"  anisotropy:    {volumes['anisotropy']:.3g} (largest / smallest median spacing); "
                 f"2D models slice along axis {volumes['slice_axis']}")
    sampling = volumes["intensity"]
    lines.append(f"  intensities:   raw values, up to {sampling['voxels_per_case']} voxels sampled per case "
                 f"(seed {sampling['seed']}); foreground: label > 0")
    lines.append(_row("", ["p0.5", "p50", "p99.5", "mean", "std"]))
    for channel in sampling["channels"]:
        for part in ("all", "foreground"):
            stats = channel[part]
            cells = ([_number(stats[k]) for k in ("p0.5", "p50", "p99.5", "mean", "std")] if stats is not None
                     else ["-"] * 5)
            lines.append(_row(f"{channel['channel']} {part}"[:16], cells))
    for channel in sampling["channels"]:
        scale = channel["scale"]
        if not scale["differs"]:
            continue
        text = (f"  scale warning: {channel['channel']}'s per-case span (99.5th - 0.5th percentile) goes from "
                f"{_number(scale['smallest']['span'])} ({scale['smallest']['case']}) to "
                f"{_number(scale['largest']['span'])} ({scale['largest']['case']}), x{_number(scale['ratio'])}: the cases "
                "store intensities on different scales, so each case needs its own normalisation (2D slices are "
                "scaled per case; 3D runs z-score each case")
        if channel["scheme_3d"] == "ct":
            text += (", except a channel named CT, which 3D runs clip by dataset-wide statistics: set its scheme "
                     "to zscore")
        lines.append(text + "); the pooled percentiles above mix those scales")
    lines.append("  label volumes: over the cases holding the label, mm^3 (voxels)")
    lines.append(_row("", ["mean", "median", "min", "max"], width=20) + "   absent in")
    for name, entry in volumes["label_volumes"].items():
        if entry["mm3"] is None:
            cells = ["-"] * 4
        else:
            cells = [f"{_number(entry['mm3'][k])} ({_number(entry['voxels'][k])})" for k in ("mean", "median", "min",
                                                                                          "max")]
        lines.append(_row(f"{entry['value']} {name}"[:16], cells, width=20) + f"   {entry['absent']} case(s)")
    return lines


@click.command("inspect")
@click.option("--dataset", "dataset_name", default="synthetic", show_default=True, help="Dataset name (see 'segkit list dataset').")
@click.option("--data-root", type=click.Path(), help="Where the dataset lives (its root or table file).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A dataset parameter (value parsed as TOML); repeatable.")
@click.option("--out", "--grid", "grid_path", type=click.Path(dir_okay=False),
              help="Write a sample grid PNG here. Without it, nothing is written.")
@click.option("--overwrite", is_flag=True, help="Replace the grid file when it exists.")
@click.option("--samples", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Slices per row in the grid (1 to 100).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--voxels-per-case", type=click.IntRange(1), default=10_000, show_default=True,
              help="Volume datasets: voxels sampled per case (seeded) for the intensity statistics.")
@click.option("--quiet", is_flag=True, help="No progress (bars on a terminal, a line every 30 s in a log).")
@plugin_option
def inspect_command(dataset_name: str, data_root: str | None, sets: tuple[str, ...], grid_path: str | None,
                    overwrite: bool, samples: int, as_json: bool, voxels_per_case: int, quiet: bool) -> None:
    """Count cases, images, lesion and empty slices, sizes, channels and mask values; with --out, draw a sample grid.

    The grid shows lesion slices in one row and empty ones in another, masks outlined. A volume
    dataset (msd) also gets its shapes, spacings, intensities and label volumes.
    """
    from segkit.config import parse_set
    from segkit.data.inspect import channel_names, sample_grid, summarize
    from segkit.data.volume import VolumeDataset
    from segkit.data.volume_summary import summarize_volumes
    from segkit.errors import ConfigError, os_error_message

    grid_file = Path(grid_path) if grid_path else None
    if grid_file is not None and grid_file.exists() and not overwrite:
        raise ConfigError(f"{grid_file} already exists; pass --overwrite to replace it, or --out another file.")

    registry = registry_from_context()
    params = {}
    for assignment in sets:
        _, key, value = parse_set(f"dataset.{assignment}")
        params[key] = value
    if data_root is not None:
        params[registry.get("dataset", dataset_name).data_root_parameter()] = data_root
    dataset = registry.build("dataset", dataset_name, **params)
    volumes = None
    if isinstance(dataset, VolumeDataset):  # one read per case gives the slice counts too
        both = summarize_volumes(dataset, voxels_per_case=voxels_per_case, progress=not quiet)
        summary, volumes = both["slices"], both["volumes"]
    else:
        summary = summarize(dataset, progress=not quiet)
    summary["grid"] = str(grid_file) if grid_file is not None else None
    names = channel_names(dataset)
    if names is not None:
        summary["channel_names"] = list(names)
    if volumes is not None:
        summary["volumes"] = volumes
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(f"dataset {dataset_name}: {summary['images']} images in {summary['cases']} cases")
        click.echo(f"  lesion slices: {summary['lesion_slices']}   empty slices: {summary['empty_slices']}")
        click.echo(f"  image sizes:   {', '.join(f'{k} ({v})' for k, v in summary['image_sizes'].items())}")
        click.echo(f"  channels:      {summary['channels']}")
        click.echo(f"  mask values:   {summary['mask_values']}")
        if summary["copied_channels"]:
            copied = summary["copied_channels"]
            shown = "; ".join(f"{case}: " + ", ".join(f"{_channel(a, names)} = {_channel(b, names)}" for a, b in pairs)
                              for case, pairs in list(copied.items())[:5])
            more = f"; and {len(copied) - 5} more" if len(copied) > 5 else ""
            click.echo(f"  copied channels: {len(copied)} case(s) store a channel as a copy of another in every slice, "
                       f"a missing sequence (see train.modality_dropout): {shown}{more}")
        if "labels" in summary:
            shown = ", ".join(f"{value} {name} ({summary['label_slices'].get(name, 0)} slices)" if value else
                              f"0 {name}" for value, name in enumerate(summary["labels"]))
            click.echo(f"  labels:        {shown}")
        if volumes is not None:
            for line in volume_lines(volumes):
                click.echo(line)
        click.echo(f"  sample grid:   {grid_file}" if grid_file is not None else
                   "  sample grid:   not drawn (pass --out FILE.png to draw one)")
    if grid_file is None:
        return
    try:  # the summary is printed first, so a failed write loses nothing
        sample_grid(dataset, grid_file, n=samples)
    except OSError as error:
        click.echo(f"error: the sample grid was not saved: {os_error_message(error, grid_file)}", err=True)
        click.get_current_context().exit(1)


COMMANDS = [inspect_command]
