"""The ``segkit`` command line.

Every command accepts ``-p NAME`` (load a plugin module or ``.py`` file, or
``no:NAME`` to block one). A :class:`~segkit.errors.SegkitError` becomes one line
on stderr and exit status 2; anything else is a bug and shows its traceback.
Heavy libraries (torch, smp) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from segkit import __version__
from segkit.errors import OUTPUT_ERRNOS, SegkitError, os_error_message, unknown_name

__all__ = ["cli", "main", "plugin_option", "inference_options", "HintedChoice", "registry_from_context"]

_PLUGINS_KEY = "segkit.components.plugins"


class UserError(click.ClickException):
    """A :class:`SegkitError` shown the click way, with exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class OutputError(UserError):
    """An OS error while writing (no space, read-only, permissions): one line, exit status 1."""

    exit_code = 1


class HintedChoice(click.Choice):
    """A choice whose error suggests the closest valid value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in self.choices:
            return value
        name = param.opts[-1] if param is not None and param.opts else "option"
        error = unknown_name(f"value for {name}", str(value), [str(c) for c in self.choices])
        self.fail(str(error), param, ctx)


def _remember_plugins(ctx: click.Context, _param: click.Parameter, values: Sequence[str]) -> None:
    ctx.find_root().meta.setdefault(_PLUGINS_KEY, []).extend(values or ())


def plugin_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-p/--plugin`` to a command; values collect on the root context."""
    return click.option(
        "-p",
        "--plugin",
        "plugins",
        multiple=True,
        expose_value=False,
        callback=_remember_plugins,
        metavar="NAME",
        help="Load a plugin (module name or .py file); 'no:NAME' blocks one. Repeatable. Also SEGKIT_PLUGINS.",
    )(function)


def inference_options(postprocess_help: str, device_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--tta``, ``--postprocess``, ``--batch-size``, ``--device`` and ``--quiet``, shared by evaluate and predict."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--tta/--no-tta", default=None,
                         help="Average over the flips the model was trained with (augment light: horizontal; heavy: "
                              "horizontal, vertical and both; volumes: the three axes). Default: off, or a "
                              "cross-validation's choice (see 'segkit cv')."),
            click.option("--postprocess", type=HintedChoice(["none", "lcc"]), default=None,
                         help=postprocess_help + " Default: none, or a cross-validation's choice."),
            click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True),
            click.option("--device", default="auto", show_default=True, help=device_help),
            click.option("--quiet", is_flag=True, help="No progress (bars on a terminal, a line every 30 s in a log)."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def registry_from_context(ctx: click.Context | None = None):
    """The registry for the plugins named with ``-p`` on this command line."""
    from segkit.components.registry import get_registry, use_registry

    ctx = ctx or click.get_current_context()
    registry = get_registry(tuple(ctx.find_root().meta.get(_PLUGINS_KEY, [])))
    use_registry(registry)  # the volume formats and the like are found through the same plugins
    return registry


def worker_message(error: BaseException) -> str:
    """The message of ``error``; for one re-raised from a DataLoader worker, its own message without the worker's traceback.

    PyTorch re-raises a worker's exception in the main process with the same type and a
    message holding the worker's whole traceback; the user needs the last part only.
    """
    message = str(error)
    if "Original Traceback (most recent call last)" not in message:
        return message
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    start = message.rfind(marker)
    own = message[start + len(marker):].strip() if start >= 0 else message.strip().splitlines()[-1]
    return f"{own} (in a data loader worker process)"


class SegkitGroup(click.Group):
    """A group that turns user errors into one clean line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SegkitError as error:
            raise UserError(worker_message(error)) from None
        except OSError as error:
            if error.errno not in OUTPUT_ERRNOS:
                raise  # not where the user asked us to write: a bug, shown with its traceback
            raise OutputError(os_error_message(error)) from None
        finally:
            if "segkit.components.registry" in sys.modules:  # a command in this process (tests) leaves no registry
                sys.modules["segkit.components.registry"].use_registry(None)


@click.group(cls=SegkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segkit")
@plugin_option
def cli() -> None:
    """segkit: train, evaluate and use segmentation models assembled from plugins.

    \b
    segkit list                      every dataset, model, loss and metric
    segkit run --model unet --loss bce_dice
    segkit evaluate runs/<run>       scores on held-out cases
    segkit predict runs/<run> images/ --out masks/
    """


def _register_commands() -> None:
    """Add every command; the command modules import nothing heavy at module level."""
    from segkit.cli import catalog, evaluate, export, inspect, plan, predict, report, train

    for module in (catalog, train, evaluate, predict, export, inspect, plan, report):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def _show_as_note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """segkit's own notices (a UserWarning raised in segkit or its built-in plugins) as one line, ``note: ...``;
    any other warning as Python shows it (file, line and source)."""
    parts = Path(filename).parts
    if issubclass(category, UserWarning) and ("segkit" in parts or "segkit_builtins" in parts):
        click.echo(f"note: {message}", err=True)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    warnings.showwarning = _show_as_note
    cli.main(args=list(argv) if argv is not None else None, prog_name="segkit")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
