"""A few real training steps of a planned run, and its data path, timed on this machine.

:func:`time_training_steps`: the run's configuration is completed as ``segkit run`` completes it
(labels, loss mode, model channels), its model, loss, optimizer and metrics are built (the model and
inputs channels-last where ``train.channels_last`` says the run trains so), and steps
(forward, loss, backward, optimizer step, the batch's metric counts, as the trainer does each
step) run on random inputs of the planned batch and shape: the model's cost. One warm-up step is
not timed; then steps run until about ``seconds`` have passed (at least two). Inference forwards
of the same inputs (validation's cost) are timed after them.

:func:`time_loading`: the training batches of the data path ``segkit run`` builds for the same
configuration (reading, transforms, augmentation), timed in their steady state.

:class:`TimingWatch`: whether the timings measured this machine at rest. Other work on the CPU
makes every timing slower, and a plan built on them degenerate (a plan timed under load once
measured 811 s an epoch against 88 s quiet, and planned batch 64 for 2 epochs): the watch notes a
load average that shows other work keeping the cores busy, and steps, or repeated timings of the same
steps, that disagree by :data:`DISAGREEMENT` or more; ``segkit plan`` prints its notes and writes them
into plan.toml.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from segkit.config import resolve_config, validate_config
from segkit.data.augment3d import augment_volumes
from segkit.device import autocast_dtype, load_average, select_device, usable_cores, use_channels_last
from segkit.planning.contract import StepTiming
from segkit.scoring.metrics import MetricAccumulator
from segkit.train import assemble
from segkit.train.assemble import (
    build_loss,
    build_metrics,
    build_model,
    fill_labels,
    fill_model_defaults,
)
from segkit.train.deep_supervision import supervised_loss
from segkit.train.device_loader import choose_loader
from segkit.train.schedule import build_optimizer
from segkit.data.augment_presets import volume_settings
from segkit.train.volume_data import is_volume_run

__all__ = ["time_training_steps", "time_loading", "MAX_TIMED_STEPS", "TimingWatch", "DISAGREEMENT"]

MAX_TIMED_STEPS = 10
FORWARD_SHARE_OF_TIME = 0.25
"""The share of ``seconds`` spent timing inference forwards after the training steps."""


DISAGREEMENT = 2.0
"""Timings this many times apart (the slowest and fastest step of one timing, or two timings of the same
steps) did not measure one machine at rest: on a quiet machine they stay well within it."""


class TimingWatch:
    """What the timings of one plan saw of the machine: the load average as each ended, and how far timings
    of the same steps lay apart. :meth:`notes` says, one line each, why they may not measure it at rest.

    ``load`` and ``cores`` are read from the machine unless given (tests give them).
    """

    def __init__(self, device: str, *, cores: int | None = None, load: Callable[[], float | None] | None = None) -> None:
        self.device, self.cores, self._load = device, cores or usable_cores(), load or load_average
        self.loads: list[float] = []  # the load average minus this process's own threads, as each timing ended
        self.spreads: list[tuple[float, str]] = []  # (slowest / fastest, what was timed)
        self._medians: dict[str, list[float]] = {}

    def record(self, key: str, what: str, samples: list[float], threads: int) -> None:
        """One timing of ``what`` (``key`` names the steps: the same key, the same steps) of ``samples`` seconds,
        made by ``threads`` threads, which the load average counts too."""
        load = self._load()
        if load is not None:
            self.loads.append(max(0.0, load - threads))
        if min(samples) > 0 and max(samples) / min(samples) >= DISAGREEMENT:
            self.spreads.append((max(samples) / min(samples), f"the steps of one timing of {what}"))
        medians = self._medians.setdefault(key, [])
        medians.append(statistics.median(samples))
        if len(medians) > 1 and min(medians) > 0 and max(medians) / min(medians) >= DISAGREEMENT:
            self.spreads.append((max(medians) / min(medians), f"repeated timings of {what}"))

    def notes(self) -> list[str]:
        """One line per sign that the timings (and so the batch, size and epochs planned from them) are off."""
        notes = []
        busy = max(self.loads, default=0.0)
        if self.device == "cpu" and busy > self.cores / 2:
            notes.append(f"other work kept this machine busy while the steps were timed (load average {busy:.1f} "
                         f"beside this plan's own threads, on {self.cores} cores): the times measured, and the "
                         "batch, image size and epochs planned from them, may be several times off; plan again "
                         "when the machine is quiet")
        if self.spreads:
            ratio, what = max(self.spreads)
            notes.append(f"{what} lay {ratio:.1f}x apart ({DISAGREEMENT:g}x or more: the machine was not at "
                         "rest): the batch, image size and epochs planned from them may be off; plan again when "
                         "the machine is quiet")
        return notes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(call: Any, device: torch.device, seconds: float, watch: TimingWatch | None = None,
           key: str = "", what: str = "") -> tuple[float, int]:
    """The median seconds of ``call()`` after one untimed warm-up, over about ``seconds`` (2 to 10 calls);
    ``watch`` records the calls' times as ``key`` (the steps) and ``what`` (their description)."""

    def once() -> float:
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        return time.perf_counter() - start

    once()  # warm-up: allocations, kernel choice, first reads
    timed = [once()]
    started = time.perf_counter()
    while len(timed) < 2 or (time.perf_counter() - started < seconds and len(timed) < MAX_TIMED_STEPS):
        timed.append(once())
    if watch is not None:
        watch.record(key, what, timed, torch.get_num_threads() if device.type == "cpu" else 1)
    return statistics.median(timed), len(timed)


def time_training_steps(document: dict[str, dict[str, Any]], dataset: Any, registry: Any, device_name: str,
                        batch_size: int, shape: tuple[int, ...], seconds: float = 2.0,
                        forward_batch: int | None = None, watch: TimingWatch | None = None) -> StepTiming:
    """Time training steps of ``document``'s model and loss on ``batch_size`` random inputs of ``shape``,
    then inference forwards of ``forward_batch`` (default ``batch_size``) such inputs; ``watch`` sees them."""

    config = validate_config(resolve_config(None, document), registry)
    labels = fill_labels(config, dataset, registry)
    fill_model_defaults(config, dataset, registry)
    device = select_device(device_name)
    torch.manual_seed(0)
    model = build_model(config, registry).to(device).train()
    channels_last = use_channels_last(config.train.channels_last, device, model)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:  # as the trainer does: the model's weights and each batch channels-last
        model = model.to(memory_format=layout)
    loss_fn = build_loss(config, registry).to(device)
    optimizer = build_optimizer(model.parameters(), config.train)
    channels = int(config.model.params.get("in_channels", dataset.in_channels))
    images = torch.rand((batch_size, channels, *shape), device=device).contiguous(memory_format=layout)
    masks = torch.randint(0, labels.classes, (batch_size, 1, *shape), device=device).float()
    target = labels.loss_target(masks)
    dtype = autocast_dtype(device, config.train.amp, config.train.amp_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    metrics = build_metrics(config, registry)
    cases = [str(k) for k in range(batch_size)]

    def step() -> None:  # as the trainer's: the update, then the batch's metric counts
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, logits = supervised_loss(loss_fn, model(images), target)
        loss.backward()
        optimizer.step()
        accumulator = MetricAccumulator(metrics, threshold=config.metrics.threshold, labels=labels)
        accumulator.update(logits.detach(), masks, cases)

    key = json.dumps([document, batch_size, list(shape)], sort_keys=True, default=str)
    what = f"{config.model.name} at batch {batch_size}, {'x'.join(map(str, shape))}"
    seconds_per_step, steps = _timed(step, device, seconds, watch, key, f"training steps of {what}")
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    forward_batch = batch_size if forward_batch is None else max(1, int(forward_batch))
    inputs = images[:forward_batch] if forward_batch <= batch_size else torch.rand(
        (forward_batch, *images.shape[1:]), device=device).contiguous(memory_format=layout)
    model.eval()

    @torch.inference_mode()
    def forward() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(inputs)

    seconds_per_forward, _ = _timed(forward, device, seconds * FORWARD_SHARE_OF_TIME, watch,
                                    key + f"-forward-{forward_batch}", f"inference forwards of {what}")
    return StepTiming(seconds_per_step, steps, batch_size, tuple(shape), peak,
                      seconds_per_forward=seconds_per_forward, forward_batch=forward_batch)


def time_loading(document: dict[str, dict[str, Any]], registry: Any, device_name: str,
                 seconds: float = 1.0) -> float:
    """Seconds per training batch of the data path ``segkit run`` builds for ``document``, in steady state.

    2D: the run's own training loader (the loader path it would choose, its transforms, augmentation
    and modality dropout) over the first batches of an epoch: a first pass warms it (decoding into
    the dataset's cache, starting workers), a second pass over the same batches is timed, as later
    epochs read them. 3D: the run's batched augmentation of random patches of the planned batch and
    size on the device; reading patches from the memory-mapped cache is not timed (no cache exists
    before the run preprocesses the volumes).
    """

    config = validate_config(resolve_config(None, document), registry)
    device = select_device(device_name)
    dataset = assemble.build_dataset(config, registry)
    labels = assemble.fill_labels(config, dataset, registry)
    assemble.fill_dataset_defaults(config, registry)
    if is_volume_run(config):
        return _time_volume_augmentation(config, int(dataset.in_channels), labels.classes, device, seconds)

    choice = choose_loader(config, dataset, device)
    parts = assemble.build_data(config, dataset, assemble.make_split(config, dataset), loader=choice.path,
                                device=device)
    loader = parts.loaders["train"]
    parts.samplers["train"].set_epoch(1)
    count, started = 0, time.perf_counter()
    for _batch in loader:  # the warm pass decides how many batches the timed pass reads
        count += 1
        if count >= MAX_TIMED_STEPS + 1 or (count >= 3 and time.perf_counter() - started >= seconds):
            break
    _sync(device)
    started = time.perf_counter()
    for timed, _batch in enumerate(loader, start=1):
        if timed >= count:
            break
    _sync(device)  # batches made on a GPU (the device path) are done
    return (time.perf_counter() - started) / count


def _time_volume_augmentation(config: Any, channels: int, classes: int, device: torch.device,
                              seconds: float) -> float:
    """Seconds per batch of a 3D run's augmentation (:mod:`segkit.data.augment3d`) on ``device``."""

    settings = volume_settings(config.train.augment)
    if settings.is_identity:
        return 0.0
    shape = (config.train.batch_size, 1, *config.train.patch_size)
    images = torch.rand((shape[0], channels, *shape[2:]), device=device)
    masks = torch.randint(0, max(2, classes), shape, device=device).float()
    generator = torch.Generator().manual_seed(0)
    seconds_per_batch, _ = _timed(lambda: augment_volumes(images, masks, generator, settings), device, seconds)
    return seconds_per_batch
