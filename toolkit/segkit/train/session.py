"""One training run as a short list of named steps, each a method a custom run can override.

:meth:`RunSession.run` is the whole run, as nnU-Net's ``run_training`` is: check_directory, prepare_data,
build_trainer, restore, on_run_start, then per epoch train_epoch, plan_budget and on_epoch_end, and
on_train_end (final validation, summary, figures, report). Each step reads and sets the session's
attributes (dataset, split, loaders, trainer, history, the epoch plan), so a variant overrides one step.
The plugins' training hooks (:mod:`segkit.train.events`) are called from these steps;
:func:`segkit.train.runner.train` holds the run lock and the process group around it.

Why it is long: every step of a run is a method of this one class, so that a variant subclasses it and
overrides a single step; each method is short, their sum is not.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from segkit.config import RunConfig, monitored_metric
from segkit.data import read_splits
from segkit.data.verify import verify_dataset
from segkit.device import cpu_load_note, describe_device
from segkit.errors import CheckpointError, ConfigError, TrainingError
from segkit.figures.plots import plot_curves, plot_predictions
from segkit.fileio import atomic_write_text
from segkit.progress import show_bars
from segkit.runs.checkpoint import (
    CheckpointPacer,
    checkpoint_payload,
    load_checkpoint,
    save_checkpoint,
)
from segkit.runs.report import write_report
from segkit.runs.rundir import (
    RunDirectory,
    ended_without_summary,
    existing_run_message,
    holds_a_run,
    readable_checkpoint,
    recovery_note,
    resume_state,
    stopped_reason,
)
from segkit.train import assemble
from segkit.train.device_loader import LoaderChoice, choose_loader
from segkit.train.distributed import DistContext
from segkit.train.events import RunEvents
from segkit.train.final import (
    case_samples,
    final_validation,
    headline,
    per_image_note,
    prediction_samples,
)
from segkit.train.loop import EarlyStopping, EpochResult, capture_rng, restore_rng
from segkit.train.run_info import batch_description, seed_everything, versions
from segkit.train.schedule import (
    BudgetPlan,
    budget_message,
    plan_schedule,
    replan_message,
)
from segkit.train.sizes import check_one_image_size
from segkit.train.volume_checks import check_patch_run
from segkit.train.volume_data import (
    build_volume_data,
    data_preprocessing,
    is_volume_run,
    volume_cache_for,
)
from segkit.train.volume_figures import KeptSlices, volume_case_samples, volume_samples

__all__ = ["RunSession"]


class RunSession:
    """A run of ``config`` into ``run`` (a :class:`~segkit.runs.rundir.RunDirectory` whose lock the caller holds).

    ``resume`` continues it from ``last.pt``; ``extend_to`` (with ``resume``) trains it on to that many
    epochs. Rank 0 alone writes; every rank runs every step.
    """

    def __init__(self, config: RunConfig, run: RunDirectory, registry: Any, device: torch.device,
                 dist: DistContext, events: RunEvents, *, resume: bool, quiet: bool, echo: Callable[[str], None],
                 extend_to: int | None = None) -> None:
        self.config, self.run_dir, self.registry, self.device = config, run, registry, device
        self.dist, self.events, self.resume, self.quiet, self.echo = dist, events, resume, quiet, echo
        self.extend_to = extend_to
        self.say: Callable[[str], None] = echo if dist.is_main and not quiet else (lambda _message: None)
        self.state: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.timing: list[dict[str, Any]] = []
        self.start_epoch, self.total_epochs = 1, config.train.epochs  # a time budget re-plans total_epochs
        self.train_seconds, self.ending_only = 0.0, False
        self.pacer = CheckpointPacer()
        self.pending_best: list[tuple[int, dict[str, Any]]] = []  # a best epoch whose best.pt waits for a write

    def run(self) -> dict[str, Any]:
        """The whole run; returns the summary (see :meth:`on_train_end`)."""
        self.check_directory()
        self.prepare_data()
        self.build_trainer()
        self.restore()
        self.on_run_start()
        self.train_epochs()
        return self.on_train_end()

    # --- before training -----------------------------------------------------------------------------

    def check_directory(self) -> None:
        """A resumed run's state (None: stopped before its first checkpoint); a new run's folder must be free."""
        if self.resume:
            self.state = resume_state(self.run_dir)
        elif self.dist.broadcast(self.dist.is_main and holds_a_run(self.run_dir.root)):
            raise ConfigError(existing_run_message(self.run_dir.root))  # every rank stops if the folder is taken

    def prepare_data(self) -> None:
        """The dataset, checked; its labels and the config completed from it; the split; the loaders (3D: the volume
        cache, random patches, whole validation volumes)."""
        config, registry, run, dist = self.config, self.registry, self.run_dir, self.dist
        seed_everything(config.train.seed)
        dataset = self.dataset = assemble.build_dataset(config, registry)
        if config.train.verify_data:
            self.say(verify_dataset(dataset).describe())
        if getattr(dataset, "mask_note", None):
            self.say(dataset.mask_note)
        check_one_image_size(config, dataset)  # a 2D set of several sizes, refused before the run folder is made
        self.labels = assemble.fill_labels(config, dataset, registry)
        assemble.fill_model_defaults(config, dataset, registry)
        assemble.fill_dataset_defaults(config, registry)
        assemble.fill_monitor(config, dataset)
        if volumes := is_volume_run(config):  # a 3D run's memory is its patches'
            check_patch_run(config, dataset, registry, self.labels, self.device)
            assemble.check_volume_memory(config, dataset, registry, self.device)
        else:
            assemble.check_memory(config, dataset, registry, self.device)
        self.volumes = volumes

        split = (read_splits(run.splits, dataset.index) if self.resume and (self.state is not None or run.splits.is_file())
                 else assemble.make_split(config, dataset))
        if config.split.by == "none":
            self.say("note: split.by = none holds nothing out: validation scores the training items themselves, so "
                     "its scores say how well the model fits them, not how it does on unseen data")
        if self.state is None and dist.is_main:  # from here on a killed run (a volume cache half built) resumes
            run.write_start(config.to_dict(), dataset.index, split)
        if volumes:  # 3D: patches of the preprocessed volumes for training, whole volumes for validation
            if not dist.is_main:  # rank 0 builds the cache (below) while the others wait, then they reuse it
                dist.barrier()
            cache = volume_cache_for(config, dataset, self.say, quiet=self.quiet or not dist.is_main)
            if dist.is_main:
                dist.barrier()
            self.parts = build_volume_data(config, dataset, split, cache, device=self.device, rank=dist.rank,
                                           world_size=dist.world_size)
            self.loader = LoaderChoice("workers", "3D patches read from the memory-mapped volume cache")
            self.cases = self.parts.cases
        else:
            self.loader = choose_loader(config, dataset, self.device)
            self.parts = assemble.build_data(config, dataset, split, rank=dist.rank, world_size=dist.world_size,
                                             pin_memory=self.device.type == "cuda", loader=self.loader.path,
                                             device=self.device)
            self.cases = {name: view.cases for name, view in self.parts.views.items()}

    def build_trainer(self) -> None:
        """The :class:`~segkit.train.loop.Trainer` (model, loss, metrics, optimizer, schedule) and early stopping."""
        config = self.config
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        self.steps_per_epoch = math.ceil(len(self.parts.loaders["train"]) / config.train.accumulate)
        trainer = self.trainer = assemble.build_trainer(
            config, self.registry, self.parts.loaders, self.parts.samplers, self.cases, self.device,
            steps_per_epoch=self.steps_per_epoch, dist=self.dist, progress=show_bars(not self.quiet),
            labels=self.labels, initialise=not self.resume)
        if trainer.init_report is not None:
            self.say(trainer.init_report.describe())  # --init-from: what was loaded, what starts afresh
        trainer.data_preprocessing = data_preprocessing(config, self.dataset, getattr(self.parts, "cache", None))
        trainer.ignores = bool(getattr(self.dataset, "ignores", False))
        self.stopper = EarlyStopping(config.train.patience)

    def restore(self) -> None:
        """A resumed run's weights, optimizer, schedule, history and generators from ``last.pt`` (extended to
        ``extend_to`` epochs, or found trained to its end and only its ending to write); a new run's folder."""
        state, config, trainer, run, dist = self.state, self.config, self.trainer, self.run_dir, self.dist
        if state is None:
            if dist.is_main:
                run.create()  # config.toml and splits.csv are written (write_start, in prepare_data)
            dist.barrier()  # the run directory exists before any rank goes on
            return
        trainer.module.load_state_dict(state.get("train_model_state") or state["model_state"])
        if trainer.ema is not None:
            trainer.ema.load_state_dict(state["model_state"], state.get("ema_steps", 0))
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history, self.timing = list(state["history"]), list(state["timing"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self.total_epochs = int(state.get("planned_epochs") or config.train.epochs)
        if self.extend_to is not None:
            if self.extend_to < self.start_epoch:
                raise ConfigError(f"--epochs {self.extend_to} is not more than the {state['epoch']} epoch(s) the run "
                                  f"in {str(run.root)!r} has trained; give a larger number to train it longer.")
            self.total_epochs = self.extend_to
            plan_schedule(trainer.scheduler, config.train, self.steps_per_epoch, self.total_epochs)
            self.stopper.bad_epochs = 0
            config.train.epochs, config.train.max_minutes = self.extend_to, 0.0
            if dist.is_main:
                run.write_config(config.to_dict())
        elif dist.broadcast(ended_without_summary(run, state, self.total_epochs)):
            self.ending_only = True  # trained to its end, killed before its summary: write the ending only
        elif self.start_epoch > self.total_epochs or state.get("finished"):
            raise CheckpointError(f"the run in {str(run.root)!r} already finished ({state['epoch']} epochs). "
                                  f"Train it longer with 'segkit run --resume {run.root} --epochs N'.")
        if dist.broadcast(dist.is_main and self.stopper.best_epoch > 0 and not readable_checkpoint(run.best)):
            self.say(f"note: {run.best} is missing or damaged, so the weights of the best epoch so far "
                     f"({self.stopper.best_epoch}) are lost; the best of the epochs trained from now on becomes best.pt")
            self.stopper.best_value, self.stopper.best_epoch = -math.inf, 0
        dist.barrier()

    def on_run_start(self) -> None:
        """The epoch-0 checkpoint of a new run, the run-start hook, and the lines that say what runs where."""
        config, dist, state = self.config, self.dist, self.state
        if state is None:
            with self.pacer.writing():
                self.save_last(0)
        self.events.run_start(config.to_dict(), resumed=state is not None)
        self.say(f"training {config.model.name} with {config.loss.name} on {config.dataset.name}: "
                 f"{len(self.parts.views['train'])} train / {len(self.parts.views['val'])} val items, "
                 f"{batch_description(config, dist.world_size)}, {describe_device(self.device)}, {self.loader.path} "
                 f"loader ({self.loader.reason}) -> {self.run_dir.root}")
        if note := cpu_load_note(self.device, dist.world_size):  # threads on shared cores wait for each other
            self.say(note)
        if self.ending_only or (self.resume and state is None):
            self.say(recovery_note(self.run_dir.root, self.start_epoch - 1 if self.ending_only else None))
        elif state is not None:
            self.say(f"resuming {self.run_dir.root} at epoch {self.start_epoch} of {self.total_epochs}"
                     + (" (extended: the learning-rate schedule now ends there)" if self.extend_to is not None else ""))
            trained_with = int(state.get("world_size", 1))
            if trained_with != dist.world_size:
                self.say(f"note: this run was trained in {trained_with} process(es) and resumes in "
                         f"{dist.world_size}; the global batch changes with the number of processes, so it will not "
                         "match an uninterrupted run.")

    # --- the epochs ------------------------------------------------------------------------------------

    def train_epochs(self) -> None:
        """Epochs until the plan, early stopping or the time budget ends them; Ctrl-C and CUDA's out-of-memory as
        one clear error each, the last checkpoint intact."""
        config = self.config
        self.budget = config.train.max_minutes * 60
        if self.budget > 0:
            self.trainer.deadline = time.monotonic() + self.budget - self.train_seconds
        self.stopped = (stopped_reason(self.start_epoch - 1, self.total_epochs, self.stopper.should_stop)
                        if self.ending_only else "completed")
        self.completed = self.start_epoch - 1  # the epoch whose state last.pt holds
        self.loop_started = self.previous_end = time.monotonic()  # previous_end: when the last epoch ended
        self.budget_plan = BudgetPlan()
        try:
            epoch = self.start_epoch
            while epoch <= self.total_epochs and not self.ending_only:
                result = self.train_epoch(epoch)
                self.plan_budget(epoch)
                if self.on_epoch_end(epoch, result):
                    break
                epoch += 1
        except KeyboardInterrupt:
            self.dist.barrier()
            run = self.run_dir
            if run.last.is_file():  # the interrupt may have come during (and been held until the end of) a save
                self.completed = int(load_checkpoint(run.last)["epoch"])
            processes = f" --nproc-per-node {self.dist.world_size}" if self.dist.active else ""
            raise TrainingError(
                f"interrupted during epoch {self.completed + 1}. {run.last} holds the state after epoch "
                f"{self.completed} (the interrupted epoch's progress is discarded). Resume with: segkit run --resume "
                f"{run.root}{processes}") from None
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(
                f"CUDA ran out of memory at batch size {config.train.batch_size}, image size "
                f"{config.train.image_size or 'native'}. Use a smaller --batch-size (and --set train.accumulate=N to "
                "keep the effective batch), --amp, a smaller --image-size or a lighter model. The last checkpoint is "
                "intact.") from None
        self.loop_seconds = time.monotonic() - self.loop_started  # training and validation, this process's share
        if self.budget > 0:
            self.say(f"time budget {config.train.max_minutes:g} min: {len(self.history) - self.start_epoch + 1} epochs "
                     f"trained and validated in {self.loop_seconds / 60:.1f} min")

    def train_epoch(self, epoch: int) -> EpochResult:
        """One epoch's training and validation (:meth:`segkit.train.loop.Trainer.run_epoch`)."""
        return self.trainer.run_epoch(epoch)

    def plan_budget(self, epoch: int) -> None:
        """With a time budget: the epochs that fit, planned again from how long epochs take now (:class:`BudgetPlan`),
        the learning-rate schedule stretched or shrunk to end with them."""
        now = time.monotonic()
        config, trainer = self.config, self.trainer
        if self.budget > 0 and config.train.epochs > 1:
            self.budget_plan.record(now - self.previous_end)
            fits = self.budget_plan.epochs(epoch, trainer.deadline - now, cap=sys.maxsize)
            planned = self.dist.broadcast(min(fits, config.train.epochs))
            if epoch == self.start_epoch or planned != self.total_epochs:
                seconds = self.budget_plan.epoch_seconds
                self.say(budget_message(config.train.max_minutes, epoch, seconds, planned, config.train.epochs, fits)
                         if epoch == self.start_epoch else
                         replan_message(epoch, seconds, self.total_epochs, planned, config.train.epochs))
                self.total_epochs = planned
                plan_schedule(trainer.scheduler, config.train, self.steps_per_epoch, self.total_epochs)
        self.previous_end = now

    def on_epoch_end(self, epoch: int, result: EpochResult) -> bool:
        """Record the epoch (metrics.csv, timing.csv, hooks, checkpoints), say it; True when the run stops here."""
        config, trainer, stopper = self.config, self.trainer, self.stopper
        self.history.append(result.row)
        self.timing.append(result.timing)
        self.train_seconds += result.timing["train_seconds"]
        improved = stopper.update(result.monitored, epoch)
        if self.dist.is_main:
            self.run_dir.write_metrics(self.history)
            self.run_dir.write_timing(self.timing)
            self.events.epoch_end(epoch, result.row)
            finished = epoch == self.total_epochs or stopper.should_stop or trainer.out_of_time
            write_now = self.pacer.due(final=finished)
            if improved:  # the weights are copied only when their write waits for a later epoch
                self.pending_best[:] = [(epoch, checkpoint_payload(config, epoch, trainer, {"metrics": result.row},
                                                                    snapshot=not write_now))]
            if write_now:
                self.write_checkpoints(epoch, finished)
        self.completed = epoch
        monitor = config.metrics.monitor
        self.say(f"epoch {epoch}/{self.total_epochs}  train_loss {result.row['train_loss']:.4f}  "
                 f"val_loss {result.row['val_loss']:.4f}  val_{monitor} {result.monitored:.4f}"
                 f"{per_image_note(result.row, monitor)}" + ("  (best)" if improved else "")
                 + f"  {result.timing['train_images_per_second']:.1f} img/s")
        if trainer.out_of_time:
            self.stopped = "time_limit"
            self.say(f"time limit of {config.train.max_minutes:g} minutes reached during epoch {epoch}; stopped after "
                     "validating it")
            return True
        if stopper.should_stop:
            self.stopped = "early_stopping"
            self.say(f"early stopping: no improvement of val_{monitor} for {config.train.patience} epochs")
            return True
        return False

    # --- checkpoints -----------------------------------------------------------------------------------

    def save_last(self, epoch: int, finished: bool = False) -> None:
        """``last.pt``: everything a resume needs (rank 0 writes)."""
        if not self.dist.is_main:
            return
        trainer = self.trainer
        save_checkpoint(self.run_dir.last, checkpoint_payload(self.config, epoch, trainer, {
            "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
            "early_stopping": self.stopper.state_dict(), "history": self.history, "timing": self.timing,
            "rng": capture_rng(), "train_seconds": self.train_seconds, "finished": finished,
            "world_size": self.dist.world_size, "planned_epochs": self.total_epochs,
            **({"train_model_state": trainer.module.state_dict(), "ema_steps": trainer.ema.steps} if trainer.ema else {}),
        }))

    def write_checkpoints(self, epoch: int, finished: bool) -> None:
        """best.pt (if a better epoch waits) and last.pt together, so the two always agree on disk."""
        with self.pacer.writing():
            for best_epoch, payload in self.pending_best:
                save_checkpoint(self.run_dir.best, payload)
                self.events.checkpoint_saved(str(self.run_dir.best), "best", best_epoch)
            self.pending_best.clear()
            self.save_last(epoch, finished=finished)
        self.events.checkpoint_saved(str(self.run_dir.last), "last", epoch)

    # --- after training --------------------------------------------------------------------------------

    def on_train_end(self) -> dict[str, Any]:
        """The best epoch's weights scored on validation once more; summary.json, the figures, report.html, the
        run-end hook and the headline line. Returns the summary."""
        config, dist, stopper, trainer = self.config, self.dist, self.stopper, self.trainer
        best_row = next(row for row in self.history if row["epoch"] == stopper.best_epoch)
        dist.barrier()  # best.pt is written; every rank scores the best model on its share of validation
        trainer.load_inference_state(load_checkpoint(self.run_dir.best, map_location=self.device)["model_state"])
        kept = KeptSlices(trainer) if self.volumes else None  # each volume predicted once: the figures reuse its slice
        missed, lesion_slices, case_table = final_validation(trainer, keep=kept)
        summary = self.summary(best_row, missed, lesion_slices)
        if dist.is_main:
            self.write_figures(case_table, kept)
            self.run_dir.write_summary(summary)
            self.events.run_end(summary)

            write_report(self.run_dir.root)
            self.echo(headline(summary, best_row, config.metrics.monitor, self.run_dir.root))  # even with --quiet
        dist.barrier()
        return summary

    def summary(self, best_row: dict[str, Any], missed: int, lesion_slices: int) -> dict[str, Any]:
        """What summary.json holds: the headline, the best epoch's scores, how the run went and on what."""
        config, stopper, metrics = self.config, self.stopper, self.trainer.metrics
        monitor = config.metrics.monitor
        summary = {
            "headline": {"name": f"val_{monitor}", "value": stopper.best_value, "epoch": stopper.best_epoch},
            "lesion_slices": lesion_slices,
            "lesion_slices_empty_prediction": missed,
            "validation_items": "volumes" if self.volumes else "slices",  # what lesion_slices counts
            "loader": {"path": self.loader.path, "reason": self.loader.reason},
            "epochs_planned": self.total_epochs,
            "best_epoch": stopper.best_epoch,
            "best_per_image": {name: best_row[f"val_{name}"] for name in metrics},
            "best": {name: best_row[f"val_{name}"] for name in metrics},  # the old name of best_per_image
            "best_global": {name: best_row[f"val_{name}_global"] for name in metrics},
            "monitor": f"val_{monitor}",
            "epochs_run": len(self.history),
            "stopped": self.stopped,
            "train_seconds": round(self.train_seconds, 2),
            "loop_seconds": round(self.loop_seconds, 2),
            "images_per_second": round(sum(t["train_images_per_second"] for t in self.timing)
                                       / max(len(self.timing), 1), 2),
            "device": describe_device(self.device),
            "processes": self.dist.world_size,
            "global_batch_size": config.train.batch_size * self.dist.world_size * config.train.accumulate,
            "versions": versions(),
        }
        if any(key.endswith("_case") for key in best_row):
            summary["best_per_case"] = {name: best_row[f"val_{name}_case"] for name in metrics}
        return summary

    def write_figures(self, case_table: Any, kept: Any) -> None:
        """curves.png, predictions.png and (one process) the validation per-case table and cases.png."""

        trainer, root, monitor = self.trainer, self.run_dir.root, self.config.metrics.monitor
        view = self.parts.views["val"]
        options = {"display_channel": int(getattr(view, "display_channel", 0)), "label_names": trainer.labels.foreground}
        plot_curves(self.history, list(trainer.metrics), root / "curves.png", monitor=f"val_{monitor}",
                    best_epoch=self.stopper.best_epoch, label_names=trainer.labels.foreground)
        samples = volume_samples(trainer, view, kept=kept) if self.volumes else prediction_samples(trainer, view)
        plot_predictions(samples, root / "predictions.png", **options)
        if case_table is None or self.dist.world_size != 1:
            return
        val_table = root / "evaluation" / "training-val-per-case.csv"
        val_table.parent.mkdir(exist_ok=True)
        atomic_write_text(val_table, case_table.to_csv(index=False, float_format="%.6g"))
        metric = monitored_metric(monitor)
        samples = (volume_case_samples(trainer, view, case_table, metric, kept=kept) if self.volumes
                   else case_samples(trainer, view, case_table, metric))
        if samples:
            plot_predictions(samples, root / "cases.png", title="best and worst validation patients", **options)
