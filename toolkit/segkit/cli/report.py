"""``segkit report``: one self-contained HTML page of a run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run", type=click.Path(file_okay=False))
def report_command(run: str) -> None:
    """Write RUN/report.html: headline, summary, curves, predictions, best and worst patients,
    sortable per-patient tables (validation and every evaluate) and the configuration.

    A run writes it when it ends and evaluate refreshes it; this command rebuilds it.
    """
    from segkit.errors import CheckpointError
    from segkit.runs.report import write_report

    root = Path(run)
    if not (root / "config.toml").is_file():
        raise CheckpointError(f"{run!r} is not a segkit run directory (no config.toml).")
    click.echo(str(write_report(root)))


COMMANDS = [report_command]
