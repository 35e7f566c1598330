"""One training run from configuration to run directory, including resume and interrupts."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from segkit.config import RunConfig, monitored_metric
from segkit.errors import CheckpointError, ConfigError, SegkitError, TrainingError
from segkit.fileio import atomic_write_text
from segkit.progress import show_bars
from segkit.data.verify import verify_dataset
from segkit.train import assemble
from segkit.train.checkpoint import CheckpointPacer, checkpoint_payload, load_checkpoint, save_checkpoint
from segkit.train.device import cpu_load_note, describe_device, select_device
from segkit.train.distributed import DistContext
from segkit.train.device_loader import LoaderChoice, choose_loader
from segkit.train.volume_checks import check_patch_run
from segkit.train.volume_data import build_volume_data, data_preprocessing, is_volume_run, volume_cache_for
from segkit.train.events import RunEvents
from segkit.train.loop import EarlyStopping, capture_rng, restore_rng
from segkit.train.schedule import BudgetPlan, budget_message, plan_schedule, replan_message
from segkit.train.sizes import check_one_image_size
from segkit.train.runlock import RunLock
from segkit.train.run_info import batch_description, seed_everything, versions

from segkit.train.volume_figures import KeptSlices, volume_case_samples, volume_samples
from segkit.train.final import case_samples, final_validation, headline, per_image_note, prediction_samples
from segkit.train.rundir import (RunDirectory, ended_without_summary, existing_run_message, holds_a_run,
                                 readable_checkpoint, recovery_note, resume_state, stopped_reason)

__all__ = ["train", "seed_everything", "versions", "existing_run_message", "holds_a_run", "headline"]


def train(
    config: RunConfig,
    run_dir: str | Path,
    registry: Any,
    *,
    resume: bool = False,
    extend_to: int | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train as ``config`` says, writing everything to ``run_dir``; return the summary.

    ``extend_to`` (with ``resume``) trains a finished or interrupted run on to that many
    epochs: the learning-rate schedule is stretched to end there, continuing from the
    current step, and a time budget no longer applies.

    Under torchrun every process calls this; rank 0 alone writes the run directory
    (rank 0's ``run_dir`` is used everywhere), and the process group is left on return or error.
    """
    device = select_device(config.train.device)
    dist = DistContext.from_environment(device.type)
    try:
        if dist.active and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        run = RunDirectory(dist.broadcast(str(run_dir)))
        lock = RunLock(run.root)
        refusal = ""
        if dist.is_main:
            try:
                lock.acquire("resume" if resume else "start a run")
            except ConfigError as error:
                refusal = str(error)
        refusal = dist.broadcast(refusal)
        if refusal:
            raise ConfigError(refusal)
        if dist.is_main:  # this process now is the run's only writer
            run.remove_stale_temporaries()
        try:
            events = RunEvents(getattr(registry, "manager", None), str(run.root), config.train.loggers,
                               active=dist.is_main)
            try:
                return _train(config, run, registry, device, dist, events, resume=resume, extend_to=extend_to,
                              quiet=quiet, echo=echo)
            except SegkitError:  # refused before its first checkpoint: a new run leaves nothing behind
                if dist.is_main and not resume:
                    run.discard_unstarted()
                raise
            finally:
                events.close()
        finally:
            lock.release()
    finally:
        dist.close()


def _train(
    config: RunConfig,
    run: RunDirectory,
    registry: Any,
    device: torch.device,
    dist: DistContext,
    events: RunEvents,
    *,
    resume: bool,
    quiet: bool,
    echo: Callable[[str], None],
    extend_to: int | None = None,
) -> dict[str, Any]:
    say = echo if dist.is_main and not quiet else (lambda _message: None)

    state: dict[str, Any] | None = None
    if resume:
        state = resume_state(run)  # None: stopped before its first checkpoint, so it starts at epoch 1
    else:  # rank 0 looks before anyone writes; every rank stops if the directory is taken
        taken = dist.broadcast(dist.is_main and holds_a_run(run.root))
        if taken:
            raise ConfigError(existing_run_message(run.root))

    seed_everything(config.train.seed)
    dataset = assemble.build_dataset(config, registry)
    if config.train.verify_data:
        say(verify_dataset(dataset).describe())
    if getattr(dataset, "mask_note", None):
        say(dataset.mask_note)
    check_one_image_size(config, dataset)  # a 2D set of several sizes, refused before the run folder is made
    labels = assemble.fill_labels(config, dataset, registry)
    assemble.fill_model_defaults(config, dataset, registry)
    assemble.fill_dataset_defaults(config, registry)
    assemble.fill_monitor(config, dataset)
    if volumes := is_volume_run(config):  # a 3D run's memory is its patches'
        check_patch_run(config, dataset, registry, labels, device)
        assemble.check_volume_memory(config, dataset, registry, device)
    else:
        assemble.check_memory(config, dataset, registry, device)
    from segkit.data import read_splits

    split = (read_splits(run.splits, dataset.index) if resume and (state is not None or run.splits.is_file())
             else assemble.make_split(config, dataset))
    if config.split.by == "none":
        say("note: split.by = none holds nothing out: validation scores the training items themselves, so its "
            "scores say how well the model fits them, not how it does on unseen data")
    if state is None and dist.is_main:  # from here on a killed run (a volume cache half built) resumes
        run.write_start(config.to_dict(), dataset.index, split)
    if volumes:  # 3D: patches of the preprocessed volumes for training, whole volumes for validation
        if not dist.is_main:  # rank 0 builds the cache (below) while the others wait, then they reuse it
            dist.barrier()
        cache = volume_cache_for(config, dataset, say, quiet=quiet or not dist.is_main)
        if dist.is_main:
            dist.barrier()
        parts = build_volume_data(config, dataset, split, cache, device=device, rank=dist.rank,
                                  world_size=dist.world_size)
        loader, cases = LoaderChoice("workers", "3D patches read from the memory-mapped volume cache"), parts.cases
    else:
        loader = choose_loader(config, dataset, device)
        parts = assemble.build_data(config, dataset, split, rank=dist.rank, world_size=dist.world_size,
                                    pin_memory=device.type == "cuda", loader=loader.path, device=device)
        cases = {name: view.cases for name, view in parts.views.items()}

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    steps_per_epoch = math.ceil(len(parts.loaders["train"]) / config.train.accumulate)
    trainer = assemble.build_trainer(config, registry, parts.loaders, parts.samplers, cases, device,
                                     steps_per_epoch=steps_per_epoch, dist=dist, progress=show_bars(not quiet),
                                     labels=labels, initialise=not resume)
    if trainer.init_report is not None:
        say(trainer.init_report.describe())
    trainer.data_preprocessing = data_preprocessing(config, dataset, getattr(parts, "cache", None))
    trainer.ignores = bool(getattr(dataset, "ignores", False))
    model, optimizer, scheduler = trainer.module, trainer.optimizer, trainer.scheduler
    metrics = trainer.metrics
    stopper = EarlyStopping(config.train.patience)
    history: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []
    start_epoch = 1
    total_epochs = config.train.epochs  # a time budget replaces it with its plan after the first epoch
    train_seconds = 0.0
    ending_only = False  # trained to its end, killed before its summary: write the ending, train nothing

    if state is not None:
        model.load_state_dict(state.get("train_model_state") or state["model_state"])
        if trainer.ema is not None:
            trainer.ema.load_state_dict(state["model_state"], state.get("ema_steps", 0))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        history, timing = list(state["history"]), list(state["timing"])
        train_seconds = float(state.get("train_seconds", 0.0))
        restore_rng(state["rng"])
        start_epoch = int(state["epoch"]) + 1
        total_epochs = int(state.get("planned_epochs") or config.train.epochs)
        if extend_to is not None:
            if extend_to < start_epoch:
                raise ConfigError(f"--epochs {extend_to} is not more than the {state['epoch']} epoch(s) the run in "
                                  f"{str(run.root)!r} has trained; give a larger number to train it longer.")
            total_epochs = extend_to
            plan_schedule(trainer.scheduler, config.train, steps_per_epoch, total_epochs)
            stopper.bad_epochs = 0
            config.train.epochs, config.train.max_minutes = extend_to, 0.0
            if dist.is_main:
                run.write_config(config.to_dict())
        elif dist.broadcast(ended_without_summary(run, state, total_epochs)):
            ending_only = True
        elif start_epoch > total_epochs or state.get("finished"):
            raise CheckpointError(f"the run in {str(run.root)!r} already finished ({state['epoch']} epochs). "
                                  f"Train it longer with 'segkit run --resume {run.root} --epochs N'.")
        if dist.broadcast(dist.is_main and stopper.best_epoch > 0 and not readable_checkpoint(run.best)):
            say(f"note: {run.best} is missing or damaged, so the weights of the best epoch so far "
                f"({stopper.best_epoch}) are lost; the best of the epochs trained from now on becomes best.pt")
            stopper.best_value, stopper.best_epoch = -math.inf, 0
    elif dist.is_main:
        run.create()  # config.toml and splits.csv are written (write_start, above)
    dist.barrier()  # the run directory exists before any rank goes on

    def save_last(epoch: int, finished: bool = False) -> None:
        if not dist.is_main:
            return
        save_checkpoint(run.last, checkpoint_payload(config, epoch, trainer, {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
            "early_stopping": stopper.state_dict(),
            "history": history,
            "timing": timing,
            "rng": capture_rng(),
            "train_seconds": train_seconds,
            "finished": finished,
            "world_size": dist.world_size,
            "planned_epochs": total_epochs,
            **({"train_model_state": model.state_dict(), "ema_steps": trainer.ema.steps} if trainer.ema else {}),
        }))

    pacer = CheckpointPacer()
    pending_best: list[tuple[int, dict[str, Any]]] = []  # a best epoch whose best.pt waits for the next write

    def write_checkpoints(epoch: int, finished: bool) -> None:
        """best.pt (if a better epoch waits) and last.pt together, so the two always agree on disk."""
        with pacer.writing():
            for best_epoch, payload in pending_best:
                save_checkpoint(run.best, payload)
                events.checkpoint_saved(str(run.best), "best", best_epoch)
            pending_best.clear()
            save_last(epoch, finished=finished)
        events.checkpoint_saved(str(run.last), "last", epoch)

    if state is None:
        with pacer.writing():
            save_last(0)
    events.run_start(config.to_dict(), resumed=state is not None)
    n_train = len(parts.views["train"])
    say(f"training {config.model.name} with {config.loss.name} on {config.dataset.name}: {n_train} train / "
        f"{len(parts.views['val'])} val items, {batch_description(config, dist.world_size)}, "
        f"{describe_device(device)}, {loader.path} loader ({loader.reason}) -> {run.root}")
    if note := cpu_load_note(device, dist.world_size):  # threads on shared cores wait for each other
        say(note)
    if ending_only or (resume and state is None):
        say(recovery_note(run.root, start_epoch - 1 if ending_only else None))
    elif state is not None:
        say(f"resuming {run.root} at epoch {start_epoch} of {total_epochs}"
            + (" (extended: the learning-rate schedule now ends there)" if extend_to is not None else ""))
        trained_with = int(state.get("world_size", 1))
        if trained_with != dist.world_size:
            say(f"note: this run was trained in {trained_with} process(es) and resumes in {dist.world_size}; the "
                "global batch changes with the number of processes, so it will not match an uninterrupted run.")
    budget = config.train.max_minutes * 60
    if budget > 0:
        trainer.deadline = time.monotonic() + budget - train_seconds
    stopped = stopped_reason(start_epoch - 1, total_epochs, stopper.should_stop) if ending_only else "completed"
    completed = start_epoch - 1  # the epoch whose state last.pt holds
    loop_started = time.monotonic()
    budget_plan = BudgetPlan()
    try:
        epoch = start_epoch
        previous_end = loop_started  # when the last epoch's training and validation ended
        while epoch <= total_epochs and not ending_only:
            result = trainer.run_epoch(epoch)
            now = time.monotonic()
            if budget > 0 and config.train.epochs > 1:
                # Planned again after every epoch from how long epochs take now (train/schedule.py BudgetPlan).
                budget_plan.record(now - previous_end)
                fits = budget_plan.epochs(epoch, trainer.deadline - now, cap=sys.maxsize)
                planned = dist.broadcast(min(fits, config.train.epochs))
                if epoch == start_epoch or planned != total_epochs:
                    say(budget_message(config.train.max_minutes, epoch, budget_plan.epoch_seconds, planned,
                                       config.train.epochs, fits) if epoch == start_epoch else
                        replan_message(epoch, budget_plan.epoch_seconds, total_epochs, planned, config.train.epochs))
                    total_epochs = planned
                    plan_schedule(trainer.scheduler, config.train, steps_per_epoch, total_epochs)
            previous_end = now
            history.append(result.row)
            timing.append(result.timing)
            train_seconds += result.timing["train_seconds"]
            improved = stopper.update(result.monitored, epoch)
            if dist.is_main:
                run.write_metrics(history)
                run.write_timing(timing)
                events.epoch_end(epoch, result.row)
                finished = epoch == total_epochs or stopper.should_stop or trainer.out_of_time
                write_now = pacer.due(final=finished)
                if improved:  # the weights are copied only when their write waits for a later epoch
                    pending_best[:] = [(epoch, checkpoint_payload(config, epoch, trainer, {"metrics": result.row},
                                                                   snapshot=not write_now))]
                if write_now:
                    write_checkpoints(epoch, finished)
            completed = epoch
            monitor = config.metrics.monitor
            beside = per_image_note(result.row, monitor)
            say(f"epoch {epoch}/{total_epochs}  train_loss {result.row['train_loss']:.4f}  "
                f"val_loss {result.row['val_loss']:.4f}  val_{monitor} {result.monitored:.4f}{beside}"
                + ("  (best)" if improved else "") + f"  {result.timing['train_images_per_second']:.1f} img/s")
            if trainer.out_of_time:
                stopped = "time_limit"
                say(f"time limit of {config.train.max_minutes:g} minutes reached during epoch {epoch}; stopped after validating it")
                break
            if stopper.should_stop:
                stopped = "early_stopping"
                say(f"early stopping: no improvement of val_{monitor} for {config.train.patience} epochs")
                break
            epoch += 1
    except KeyboardInterrupt:
        dist.barrier()
        if run.last.is_file():  # the interrupt may have come during (and been held until the end of) a save
            completed = int(load_checkpoint(run.last)["epoch"])
        processes = f" --nproc-per-node {dist.world_size}" if dist.active else ""
        raise TrainingError(
            f"interrupted during epoch {completed + 1}. {run.last} holds the state after epoch {completed} (the interrupted "
            f"epoch's progress is discarded). Resume with: segkit run --resume {run.root}{processes}"
        ) from None
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(
            f"CUDA ran out of memory at batch size {config.train.batch_size}, image size "
            f"{config.train.image_size or 'native'}. Use a smaller --batch-size (and --set train.accumulate=N to keep "
            "the effective batch), --amp, a smaller --image-size or a lighter model. The last checkpoint is intact."
        ) from None

    loop_seconds = time.monotonic() - loop_started  # training and validation, this process's share of the run
    if budget > 0:
        say(f"time budget {config.train.max_minutes:g} min: {len(history) - start_epoch + 1} epochs trained and "
            f"validated in {loop_seconds / 60:.1f} min")
    best_row = next(row for row in history if row["epoch"] == stopper.best_epoch)
    dist.barrier()  # best.pt is written; every rank scores the best model on its share of validation
    trainer.load_inference_state(load_checkpoint(run.best, map_location=device)["model_state"])
    kept = KeptSlices(trainer) if volumes else None  # each volume is predicted once: the figures reuse its slice
    missed, lesion_slices, case_table = final_validation(trainer, keep=kept)
    monitor = config.metrics.monitor
    summary = {
        "headline": {"name": f"val_{monitor}", "value": stopper.best_value, "epoch": stopper.best_epoch},
        "lesion_slices": lesion_slices,
        "lesion_slices_empty_prediction": missed,
        "validation_items": "volumes" if volumes else "slices",  # what lesion_slices counts: a 3D run's items are volumes
        "loader": {"path": loader.path, "reason": loader.reason},
        "epochs_planned": total_epochs,
        "best_epoch": stopper.best_epoch,
        "best_per_image": {name: best_row[f"val_{name}"] for name in metrics},
        "best": {name: best_row[f"val_{name}"] for name in metrics},  # the old name of best_per_image, kept readable
        "best_global": {name: best_row[f"val_{name}_global"] for name in metrics},
        "monitor": f"val_{config.metrics.monitor}",
        "epochs_run": len(history),
        "stopped": stopped,
        "train_seconds": round(train_seconds, 2),
        "loop_seconds": round(loop_seconds, 2),
        "images_per_second": round(sum(t["train_images_per_second"] for t in timing) / max(len(timing), 1), 2),
        "device": describe_device(device),
        "processes": dist.world_size,
        "global_batch_size": config.train.batch_size * dist.world_size * config.train.accumulate,
        "versions": versions(),
    }
    if any(key.endswith("_case") for key in best_row):
        summary["best_per_case"] = {name: best_row[f"val_{name}_case"] for name in metrics}
    if dist.is_main:
        from segkit.train.plots import plot_curves, plot_predictions

        view = parts.views["val"]
        figure_options = {"display_channel": int(getattr(view, "display_channel", 0)),
                          "label_names": trainer.labels.foreground}
        plot_curves(history, list(metrics), run.root / "curves.png", monitor=f"val_{monitor}",
                    best_epoch=stopper.best_epoch, label_names=trainer.labels.foreground)
        samples = volume_samples(trainer, view, kept=kept) if volumes else prediction_samples(trainer, view)
        plot_predictions(samples, run.root / "predictions.png", **figure_options)
        if case_table is not None and dist.world_size == 1:
            val_table = run.root / "evaluation" / "training-val-per-case.csv"
            val_table.parent.mkdir(exist_ok=True)
            atomic_write_text(val_table, case_table.to_csv(index=False, float_format="%.6g"))
            metric = monitored_metric(monitor)
            samples = (volume_case_samples(trainer, view, case_table, metric, kept=kept) if volumes
                       else case_samples(trainer, view, case_table, metric))
            if samples:
                plot_predictions(samples, run.root / "cases.png", title="best and worst validation patients",
                                 **figure_options)
        run.write_summary(summary)
        events.run_end(summary)
        from segkit.evaluation.report import write_report

        write_report(run.root)
        echo(headline(summary, best_row, monitor, run.root))  # even with --quiet: where it went, how it scored
    dist.barrier()
    return summary

