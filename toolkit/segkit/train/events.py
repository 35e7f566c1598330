"""Telling plugins and loggers what a run does: the training lifecycle hooks of :mod:`segkit.components.hookspecs`.

:class:`RunEvents` calls every implementation of ``segkit_run_start``, ``segkit_epoch_end``,
``segkit_checkpoint_saved`` and ``segkit_run_end`` that the loaded plugins provide, plus the
built-in loggers a run asks for (``train.loggers``, ``--logger``), which are registered for
the run's duration only. Each implementation is called on its own: one that raises is
reported once as a warning and skipped for the rest of the run, so a broken logger never
stops training or loses work.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from segkit.components import hookspecs
from segkit.errors import ConfigError, unknown_name

__all__ = ["RunEvents", "LOGGERS", "check_loggers"]

LOGGERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("segkit.train.loggers:TensorBoardLogger", "tensorboard"),
    "mlflow": ("segkit.train.loggers:MLflowLogger", "mlflow"),
}
"""Built-in loggers: name -> (target, the package it needs)."""


def check_loggers(names: Sequence[str]) -> list[str]:
    """``names`` when each is a built-in logger whose package is installed; a ConfigError otherwise."""
    import importlib.util

    for name in names:
        if name not in LOGGERS:
            raise unknown_name("logger", name, LOGGERS)
        package = LOGGERS[name][1]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"--logger {name} needs the {package} package, which is not installed: "
                              f"pip install 'segkit[{name}]'.")
    return list(names)


class RunEvents:
    """The lifecycle hooks of one run, for the process that writes its directory.

    ``manager`` is the registry's pluggy PluginManager (None: no plugin hooks);
    ``loggers`` names built-in loggers to add for this run; ``active`` false makes every
    call a no-op (the other ranks of a distributed run).
    """

    def __init__(self, manager: Any, run_dir: str, loggers: Sequence[str] = (), active: bool = True) -> None:
        self.run_dir = str(run_dir)
        self.loggers: list[Any] = []
        self._failed: set[int] = set()
        self.manager = None
        if not active:
            return
        if manager is None:  # a registry built by hand: only this run's loggers
            import pluggy

            manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            manager.add_hookspecs(hookspecs)
        self.manager = manager
        import importlib

        for name in check_loggers(loggers):
            module_name, attr = LOGGERS[name][0].split(":")
            logger = getattr(importlib.import_module(module_name), attr)()
            self.loggers.append(logger)
            manager.register(logger, name=f"segkit-logger-{name}-{id(logger)}")

    def _call(self, hook: str, **kwargs: Any) -> None:
        if self.manager is None:
            return
        arguments = {"run_dir": self.run_dir, **kwargs}
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if id(impl.plugin) in self._failed:
                continue
            try:  # each implementation gets the arguments it names, as pluggy would pass them
                impl.function(*(arguments[name] for name in impl.argnames))
            except Exception as error:  # a logger must never stop training
                self._failed.add(id(impl.plugin))
                name = getattr(impl.plugin, "__name__", type(impl.plugin).__name__)
                warnings.warn(f"{name}.{hook} failed ({type(error).__name__}: {error}); it is skipped for the rest "
                              "of this run", RuntimeWarning, stacklevel=2)

    def run_start(self, config: dict[str, Any], resumed: bool) -> None:
        self._call("segkit_run_start", config=config, resumed=resumed)

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        self._call("segkit_epoch_end", epoch=epoch, row=dict(row))

    def checkpoint_saved(self, path: str, kind: str, epoch: int) -> None:
        self._call("segkit_checkpoint_saved", path=str(path), kind=kind, epoch=epoch)

    def run_end(self, summary: dict[str, Any]) -> None:
        self._call("segkit_run_end", summary=dict(summary))

    def close(self) -> None:
        """Unregister this run's loggers and let them flush."""
        for logger in self.loggers:
            if self.manager is not None and self.manager.is_registered(logger):
                self.manager.unregister(logger)
            close = getattr(logger, "close", None)
            if callable(close):
                close()
        self.loggers = []
