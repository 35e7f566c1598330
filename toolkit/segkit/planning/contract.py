"""What a planner receives and returns: the request (fingerprint, budget, a way to time steps) and the plan.

A planner is a component of kind ``planner``: its target, called with the planner's parameters,
returns an object with ``plan(request: PlanRequest) -> Plan``. The plan is data: settings of
segkit's run configuration, each with the reason it was chosen, plus notes for what segkit runs
cannot do (they become comments in ``plan.toml``). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Setting", "Plan", "PlanRequest", "StepTiming", "SECTION_ORDER"]

SECTION_ORDER: tuple[str, ...] = ("dataset", "task", "model", "loss", "metrics", "split", "train")
"""The order of the sections in ``plan.toml``: the data first, the training last."""


@dataclass(frozen=True)
class Setting:
    """One key of the run configuration, its value and the one-line reason it was chosen."""

    section: str
    key: str
    value: Any
    reason: str


@dataclass(frozen=True)
class StepTiming:
    """Training steps of one model, batch and input shape, timed on the planning machine.

    ``seconds_per_step``: the median of the timed steps (after one untimed warm-up step);
    ``peak_bytes``: the device's peak memory during them (CUDA only, else None);
    ``seconds_per_forward``: the median of timed inference forwards (eval mode, no gradients) of
    ``forward_batch`` inputs of the same shape, what validation costs per batch;
    ``seconds_per_load``: what the run's data path takes per training batch (reading, augmentation),
    set by a planner from ``PlanRequest.time_loading``; None where it was not measured.
    """

    seconds_per_step: float
    steps: int
    batch_size: int
    shape: tuple[int, ...]
    peak_bytes: int | None = None
    seconds_per_forward: float | None = None
    forward_batch: int | None = None
    seconds_per_load: float | None = None

    @property
    def seconds_per_batch(self) -> float:
        """A training batch: its step, plus its loading where that was measured (a CPU does both in turn)."""
        return self.seconds_per_step + (self.seconds_per_load or 0.0)


@dataclass
class Plan:
    """A planner's answer: settings with reasons, notes, and the measured cost of one epoch."""

    settings: list[Setting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    epoch_seconds: float = 0.0
    """One epoch (training and validation) of a ``segkit run`` of the plan, as measured; more than the budget
    is refused with what would fit."""
    cv_epoch_seconds: float | None = None
    """The same for a fold of ``segkit cv --folds 5`` (80% of the cases train, 20% validate), where the
    planner estimates it."""
    fitting_hint: str = ""
    """What would fit in the budget, for the refusal when one epoch does not (e.g. ``--set train.image_size=64``)."""

    def set(self, section: str, key: str, value: Any, reason: str) -> None:
        """Add (or replace) ``section.key`` with its reason."""
        self.settings = [s for s in self.settings if (s.section, s.key) != (section, key)]
        self.settings.append(Setting(section, key, value, reason))

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """The planned value of ``section.key``, or ``default`` where the plan does not set it."""
        return next((s.value for s in self.settings if (s.section, s.key) == (section, key)), default)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def document(self) -> dict[str, dict[str, Any]]:
        """The settings as a configuration document (sections in :data:`SECTION_ORDER`)."""
        document: dict[str, dict[str, Any]] = {}
        for section in SECTION_ORDER:
            values = {s.key: s.value for s in self.settings if s.section == section}
            if values:
                document[section] = values
        return document


@dataclass(frozen=True)
class PlanRequest:
    """Everything a planner may use.

    ``fingerprint``: :func:`segkit.planning.fingerprint.fingerprint_dataset`'s dict; ``dataset``: the
    dataset object it was taken from; ``dataset_name`` and ``dataset_params``: how to build it again
    (the plan's ``[dataset]``); ``minutes``: the time budget; ``device``: ``cpu`` or ``cuda``;
    ``free_bytes``: the device's free memory; ``time_steps(document, batch_size, shape, seconds=2.0,
    forward_batch=None)`` runs a few real training steps (for about ``seconds``) of the run ``document``
    describes on inputs of ``shape`` (spatial sizes, 2 or 3), then inference forwards of
    ``forward_batch`` inputs (default ``batch_size``), and returns a :class:`StepTiming`;
    ``time_loading(document, seconds=1.0)`` returns the seconds per training batch of the data path
    ``segkit run`` builds for ``document`` (see :func:`segkit.planning.timing.time_loading`);
    ``registry``: the component registry.
    """

    fingerprint: Mapping[str, Any]
    dataset: Any
    dataset_name: str
    dataset_params: Mapping[str, Any]
    minutes: float
    device: str
    free_bytes: int
    time_steps: Callable[..., StepTiming]
    registry: Any
    time_loading: Callable[..., float] | None = None
