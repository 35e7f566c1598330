"""The generic trainer: any registered model, loss and metrics, one epoch loop.

Per step it moves the batch to the device, runs the model under autocast where
mixed precision applies, steps the optimizer (with accumulation, clipping and a
gradient scaler for fp16) and accumulates loss and metric counts *on the device*:
the host synchronises only every ``log_every`` steps and at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segkit.config import RunConfig
from segkit.data.batch_transforms import NamedTransform, apply_transforms, transform_generator
from segkit.device import autocast_dtype, use_channels_last
from segkit.errors import TrainingError
from segkit.inference.sliding_window import SlidingWindowInferer
from segkit.labels import Labels, neutral_outputs
from segkit.runs.window import WindowSettings
from segkit.scoring.metrics import MetricAccumulator
from segkit.train.deep_supervision import supervised_loss
from segkit.train.distributed import DistContext
from segkit.train.ema import WeightAverage

__all__ = ["EarlyStopping", "Trainer", "EpochResult", "capture_rng", "restore_rng"]


@dataclass
class EarlyStopping:
    """Tracks the best value of the monitored metric and epochs without improvement."""

    patience: int
    best_value: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value``; return True when it is a new best."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch, self.bad_epochs = state["best_value"], state["best_epoch"], state["bad_epochs"]


def capture_rng() -> dict[str, Any]:
    """Every random number generator's state, in types ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class EpochResult:
    """What one epoch measured: its metrics row and its timing row."""

    row: dict[str, Any]
    timing: dict[str, Any]
    monitored: float


class Trainer:
    """Trains ``model`` with ``loss_fn`` on the loaders, reporting ``metrics`` each epoch."""

    def __init__(
        self,
        config: RunConfig,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        metrics: dict[str, Any],
        loaders: dict[str, Any],
        samplers: dict[str, Any],
        cases: dict[str, list[str]],
        device: torch.device,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        dist: DistContext | None = None,
        progress: bool = True,
        log_every: int = 10,
        labels: Labels | None = None,
        transforms: Sequence[NamedTransform] = (),
    ) -> None:
        self.config, self.settings = config, config.train
        self.labels = labels or Labels()
        self.device = device
        self.dist = dist or DistContext()
        self.module = model  # the plain module: what checkpoints hold
        self.model = self.dist.wrap(model, device)
        if self.settings.compile:
            self.model = torch.compile(self.model)
        self.loss_fn = loss_fn.to(device)
        self.metrics = metrics
        self.loaders, self.samplers, self.cases = loaders, samplers, cases
        self.optimizer, self.scheduler = optimizer, scheduler

        self.amp_dtype = autocast_dtype(device, self.settings.amp, self.settings.amp_dtype)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.channels_last = use_channels_last(self.settings.channels_last, device, model)
        self.progress = progress and self.dist.is_main
        self.log_every = max(1, log_every)
        #: Runs trained on patches (``train.patch_size``): validation predicts each whole image or volume by
        #: sliding windows of the patch (:meth:`infer`); None for runs on whole images.
        window = WindowSettings.from_train(self.settings)
        self.inferer = SlidingWindowInferer(window, batch_size=self.settings.batch_size) if window else None
        #: Whether masks may hold ignored pixels (a dataset's ignore_label or region of interest): see :meth:`loss`.
        self.ignores = False
        self.deadline: float | None = None  # time.monotonic() after which training stops at the next step
        self.out_of_time = False
        self.data_timing: tuple[float, int] = (0.0, 0)  # the last epoch's seconds waiting for batches, and its steps

        self.ema = WeightAverage(self.module, self.settings.ema_decay) if self.settings.ema_decay > 0 else None
        #: ``train.transforms``: registered batch transforms applied on the device after the preset's augmentation.
        self.transforms = list(transforms)

    @property
    def inference_module(self) -> torch.nn.Module:
        """The weights that validation, best.pt and everything downstream use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.module

    def load_inference_state(self, state: dict[str, Any]) -> None:
        """Load weights to evaluate and predict with (e.g. best.pt's) into the model and its EMA."""
        self.module.load_state_dict(state)
        if self.ema is not None:
            self.ema.module.load_state_dict(state)

    def infer(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits of a validation batch: the model on the batch, or for a run trained on patches on each whole
        image or volume by Gaussian-weighted sliding windows of the training patch size."""
        return model(images) if self.inferer is None else self.inferer(model, images)

    def loss(self, outputs: Any, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of the model's outputs (logits, or a deep-supervision tuple) against label-value masks, and the
        main logits; with :attr:`ignores`, ignored pixels (:data:`~segkit.labels.IGNORE`) count for nothing."""
        if self.ignores:
            outputs, masks = neutral_outputs(outputs, masks, self.labels)
        return supervised_loss(self.loss_fn, outputs, self.labels.loss_target(masks))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=non_blocking)

    def _bar(self, loader: Any, description: str) -> Any:
        if not self.progress:
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, desc=description, leave=False, dynamic_ncols=True, unit="batch")

    def train_epoch(self, epoch: int) -> tuple[float, dict[str, Any], float, int]:
        """One pass over the training split; returns loss, metric values, seconds and images seen."""
        self.model.train()
        self.samplers["train"].set_epoch(epoch)
        loader = self.loaders["train"]
        accumulator = MetricAccumulator(self.metrics, threshold=self.config.metrics.threshold, labels=self.labels)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        first_bad = torch.full((), -1, device=self.device, dtype=torch.long)
        seen, accumulate = 0, self.settings.accumulate
        steps = len(loader)
        started = waiting = time.perf_counter()
        data_seconds, steps_done = 0.0, 0
        bar = self._bar(loader, f"epoch {epoch} train")
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, masks, indices) in enumerate(bar):
            data_seconds += time.perf_counter() - waiting  # the step waited this long for its batch
            steps_done += 1
            images, masks = self._to_device(images, masks)
            if self.transforms:
                generator = transform_generator(self.settings.seed, epoch, step, self.dist.rank)
                images, masks = apply_transforms(self.transforms, images, masks, generator)
            sync = (step + 1) % accumulate == 0 or step + 1 == steps
            with self.dist.no_sync(self.model, skip=not sync), self._autocast():
                loss, logits = self.loss(self.model(images), masks)
            self.scaler.scale(loss / accumulate).backward() if self.scaler.is_enabled() else (loss / accumulate).backward()
            if sync:
                self._step_optimizer()
            detached = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), torch.full_like(first_bad, step), first_bad)
            loss_sum += detached.double() * images.shape[0]
            seen += images.shape[0]
            accumulator.update(logits.detach(), masks, [self.cases["train"][i] for i in indices.tolist()])
            if self.deadline is not None and self.dist.any(time.monotonic() > self.deadline):
                self.out_of_time = True
                if not sync:  # do not drop the gradients accumulated so far
                    self._step_optimizer()
                break
            if (step + 1) % self.log_every == 0 or step + 1 == steps:
                self._check_finite(first_bad, epoch)
                if self.progress:
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", img_s=f"{seen / max(elapsed, 1e-9):.1f}",
                                    data=f"{data_seconds / max(elapsed, 1e-9):.0%}")
            waiting = time.perf_counter()
        self._check_finite(first_bad, epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        self.data_timing = (data_seconds, steps_done)
        total_loss, total_seen = self.dist.sum_scalars(loss_sum, seen)
        accumulator = self.dist.gather_accumulator(accumulator)
        return total_loss / total_seen, accumulator.compute(), seconds, total_seen

    def _step_optimizer(self) -> None:
        """Clip, step (through the scaler for fp16), zero the gradients and advance the schedule."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.settings.grad_clip)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.module)

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad_step = int(first_bad.item())
        if self.dist.any(bad_step >= 0):  # every rank stops, not only the one that saw it
            where = f"step {bad_step + 1}" if bad_step >= 0 else "a step of another process"
            raise TrainingError(
                f"the loss became NaN or infinite at epoch {epoch}, {where}. The run stopped; the last good "
                "checkpoint is intact. Try a lower --lr, --set train.grad_clip=1.0, or --no-amp."
            )

    @torch.inference_mode()
    def evaluate(self, split: str = "val", keep: Callable[..., None] | None = None) -> tuple[float, MetricAccumulator]:
        """Loss and metric counts on a split, without gradients, with :attr:`inference_module`'s weights.

        ``keep``, when given, is called with each batch's images, masks, logits and case names: what the final
        validation's figures reuse instead of predicting the volumes again.
        """
        self.model.eval()
        model = self.ema.module if self.ema is not None else self.model
        accumulator = MetricAccumulator(self.metrics, threshold=self.config.metrics.threshold, labels=self.labels)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        for images, masks, indices in self._bar(self.loaders[split], split):
            images, masks = self._to_device(images, masks)
            with self._autocast():
                logits = self.infer(model, images)
                loss, _ = self.loss(logits, masks)
            loss_sum += loss.double() * images.shape[0]
            seen += images.shape[0]
            cases = [self.cases[split][i] for i in indices.tolist()]
            accumulator.update(logits, masks, cases)
            if keep is not None:
                keep(images, masks, logits, cases)
        total_loss, total_seen = self.dist.sum_scalars(loss_sum, seen)
        return total_loss / max(total_seen, 1), self.dist.gather_accumulator(accumulator)

    def run_epoch(self, epoch: int) -> EpochResult:
        """Train one epoch, then validate; the row for metrics.csv and the row for timing.csv."""
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_scores, seconds, seen = self.train_epoch(epoch)
        val_started = time.perf_counter()
        val_loss, val_accumulator = self.evaluate("val")
        val_scores = val_accumulator.compute()
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
        for name in self.metrics:
            row[f"train_{name}"] = train_scores["per_image"][name]["mean"]
        for name in self.metrics:
            row[f"val_{name}"] = val_scores["per_image"][name]["mean"]
            row[f"val_{name}_global"] = val_scores["global"][name]
            if val_scores.get("per_case"):
                row[f"val_{name}_case"] = val_scores["per_case"][name]["mean"]
        for label, scores in val_scores.get("per_class", {}).items():  # several labels: each one's
            for name in self.metrics:
                row[f"val_{name}_global_{label}"] = scores["global"][name]
                if scores.get("per_case"):
                    row[f"val_{name}_case_{label}"] = scores["per_case"][name]["mean"]
        timing = {
            "epoch": epoch,
            "train_seconds": round(seconds, 3),
            "train_images_per_second": round(seen / max(seconds, 1e-9), 2),
            "val_seconds": round(time.perf_counter() - val_started, 3),
            "train_steps": self.data_timing[1],
            "train_data_seconds": round(self.data_timing[0], 3),
        }
        monitored = row[f"val_{self.config.metrics.monitor}"]
        return EpochResult(row, timing, monitored)
