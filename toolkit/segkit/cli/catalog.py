"""``segkit list`` and ``segkit info``: what can be assembled, without importing torch."""

from __future__ import annotations

import json
import shutil
import textwrap

import click

from segkit.cli import plugin_option, registry_from_context
from segkit.components.registry import KINDS, Registry, normalize_kind

EXTRA_LISTS = ("encoder", "plugin")


def _table(rows: list[tuple[str, str, str]], width: int) -> list[str]:
    name_w = max((len(r[0]) for r in rows), default=4)
    plugin_w = max((len(r[2]) for r in rows), default=6)
    summary_w = max(20, width - name_w - plugin_w - 6)
    lines = []
    for name, summary, plugin in rows:
        short = textwrap.shorten(summary, summary_w, placeholder="...") if summary else ""
        lines.append(f"  {name:<{name_w}}  {short:<{summary_w}}  {plugin}")
    return lines


def _print_components(registry: Registry, kind: str | None, pattern: str | None) -> None:
    width = shutil.get_terminal_size((120, 24)).columns
    kinds = KINDS if kind is None else (kind,)
    for each in kinds:
        found = registry.list(each, pattern)
        click.echo(f"{each} ({len(found)})")
        rows = [(c.name, c.summary, c.plugin.label if c.plugin.name == "builtins" else f"{c.plugin.name} ({c.plugin.label})") for c in found]
        for line in _table(rows, width):
            click.echo(line)
        click.echo()


def _print_plugins(rows: list[dict[str, str]]) -> None:
    """One line per plugin, each column as wide as its longest value, so long names keep the columns aligned."""
    cells = [(r["name"], f"{r['distribution']} {r['version']}", r["module"],
              f"BROKEN: {r['error']}" if r["error"] else "ok") for r in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(3)] if cells else [0, 0, 0]
    for name, source, module, status in cells:
        click.echo(f"  {name:<{widths[0]}}  {source:<{widths[1]}}  {module:<{widths[2]}}  {status}")


def _report_broken(registry: Registry) -> None:
    for plugin in registry.broken:
        click.echo(
            f"warning: plugin {plugin.name!r} ({plugin.label}, module {plugin.module}) failed to load: {plugin.error}",
            err=True,
        )


@click.command("list")
@click.argument("kind", required=False)
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob, e.g. '*unet*'.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@plugin_option
def list_command(kind: str | None, pattern: str | None, as_json: bool) -> None:
    """List components: every KIND, or one of dataset, model, loss, metric, planner, encoders, plugins."""
    kind = normalize_kind(kind, EXTRA_LISTS) if kind else None
    if kind == "encoder":
        from segkit_builtins.models.smp_models import list_encoders

        names = list_encoders(pattern)
        click.echo(json.dumps(names) if as_json else "\n".join(names))
        return
    registry = registry_from_context()
    if kind == "plugin":
        rows = [
            {"name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version, "error": p.error}
            for p in [*registry.plugins, *registry.broken]
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            _print_plugins(rows)
        return
    if as_json:
        click.echo(json.dumps([c.as_row() for c in registry.list(kind, pattern)], indent=2))
    else:
        _print_components(registry, kind, pattern)
    _report_broken(registry)


@click.command("info")
@click.argument("kind")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@plugin_option
def info_command(kind: str, name: str, as_json: bool) -> None:
    """Show one component: summary, documentation, parameters, plugin and source file."""
    info = registry_from_context().get(kind, name).describe()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=repr))
        return
    click.echo(f"{info['kind']} {info['name']}: {info['summary']}")
    click.echo(f"  plugin:  {info['plugin']} ({info['distribution']} {info['version']})")
    click.echo(f"  target:  {info['target']}")
    click.echo(f"  file:    {info['file']}")
    click.echo("\nparameters:")
    name_w = max((len(p["name"]) for p in info["parameters"]), default=0)
    type_w = max((len(p["type"]) for p in info["parameters"]), default=0)
    for p in info["parameters"]:
        default = "(required)" if p["required"] else repr(p["default"])
        click.echo(f"  {p['name']:<{name_w}}  {p['type']:<{type_w}}  default {default}")
    if not info["parameters"]:
        click.echo("  (none)")
    if info["doc"]:
        click.echo("\n" + info["doc"])


COMMANDS = [list_command, info_command]
