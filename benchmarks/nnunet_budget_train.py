"""Train one nnU-Net v2 fold for a fixed number of minutes, then predict its validation cases.

Runs with the Python of a separate environment that has ``nnunetv2`` (never segkit's own: nnU-Net
is a benchmark baseline, not a dependency). ``nnunet_side_by_side.py`` calls it once per
configuration and fold, with nnU-Net's ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``
set; it can also be run by hand:

    nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... \\
        /path/to/nnunet-venv/bin/python benchmarks/nnunet_budget_train.py \\
        --dataset 4 --configuration 3d_fullres --fold 0 --minutes 15 --threads 2

What changes against ``nnUNetv2_train -device cpu`` (everything else is nnU-Net's own trainer:
its plans, network, loss, deep supervision, augmentation, SGD + poly schedule, EMA checkpointing
and final validation with mirroring):

- Training stops when the time budget is spent, counted from the first training step to the end
  of the last epoch (train + nnU-Net's per-epoch pseudo-validation), as segkit's
  ``train.max_minutes`` counts it. Preprocessing, unpacking and the final validation are outside.
- The poly learning-rate schedule is fitted to the budget, as segkit fits its cosine: after the
  first and second epoch the number of epochs is set to what the remaining time holds, so the
  learning rate reaches (nearly) zero when the time is up. Without this, nnU-Net's 1000-epoch
  schedule would stop at its start, with the learning rate still high: an unfair baseline.
- An epoch is ``--iterations`` batches (nnU-Net: 250) so that the budget is used to within a
  short epoch; validation draws ``--val-iterations`` batches (nnU-Net: 50).
- ``--batch-size`` replaces the plan's batch (nnU-Net sizes it for a GPU: 274 slices of 56x40 in
  ``2d`` on the hippocampus, which a CPU trains at about 13 s per step).
- torch uses ``--threads`` threads; data augmentation runs in ``nnUNet_n_proc_DA`` background
  processes (the caller sets it).
- ``--no-mirroring`` predicts the validation cases without nnU-Net's test-time mirroring (one pass
  instead of four in 2D, eight in 3D): a plan sized for a GPU (a 640x896 patch in ``2d`` for 800x540
  ultrasound images) takes minutes per image on a CPU with it. Off by default.

Prints one JSON line at the end: epochs, seconds of training, of validation, the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name


class nnUNetTrainerTimeBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming of trainer classes)
    """nnU-Net's trainer with a wall-clock budget and its poly schedule fitted to that budget."""

    budget_seconds = 900.0
    iterations_per_epoch = 50
    val_iterations_per_epoch = 5

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.training_seconds = 0.0
        self.epoch_seconds: list[float] = []

    def _fit_schedule(self, spent: float) -> None:
        """Set the number of epochs (and the poly schedule's end) to what the budget holds."""
        per_epoch = self.epoch_seconds[-1]
        done = self.current_epoch  # on_epoch_end has counted the finished epoch
        planned = done + max(0, math.floor((self.budget_seconds - spent) / per_epoch))
        self.num_epochs = max(done, planned, 1)
        self.lr_scheduler.max_steps = self.num_epochs
        self.print_to_log_file(f"time budget {self.budget_seconds:.0f} s: epoch took {per_epoch:.1f} s, "
                               f"{self.num_epochs} epochs planned")

    def run_training(self) -> None:
        self.on_train_start()
        started = time.monotonic()
        while self.current_epoch < self.num_epochs:
            epoch_started = time.monotonic()
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            now = time.monotonic()
            self.epoch_seconds.append(now - epoch_started)
            spent = now - started
            if len(self.epoch_seconds) <= 2:
                self._fit_schedule(spent)
            if spent + self.epoch_seconds[-1] > self.budget_seconds * 1.02:
                break  # the next epoch would overrun the budget
        self.training_seconds = time.monotonic() - started
        self.on_train_end()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="nnU-Net dataset id or name (e.g. 4)")
    parser.add_argument("--configuration", required=True, help="2d, 3d_fullres, ...")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--iterations", type=int, default=50, help="training batches per epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="validation batches per epoch")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="replace the plan's batch size (0: nnU-Net's own); the results folder is then "
                             "nnUNetPlans_bN, the preprocessed data the same")
    parser.add_argument("--no-mirroring", action="store_true",
                        help="predict the validation cases without test-time mirroring")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    nnUNetTrainerTimeBudget.budget_seconds = args.minutes * 60
    nnUNetTrainerTimeBudget.iterations_per_epoch = args.iterations
    nnUNetTrainerTimeBudget.val_iterations_per_epoch = args.val_iterations

    name = maybe_convert_to_dataset_name(int(args.dataset) if args.dataset.isdigit() else args.dataset)
    base = join(nnUNet_preprocessed, name)
    plans = load_json(join(base, "nnUNetPlans.json"))
    plans["continue_training"] = False  # what nnUNetv2_train passes for a new training
    if args.batch_size:
        plans["configurations"][args.configuration]["batch_size"] = args.batch_size
        plans["plans_name"] = f"{plans['plans_name']}_b{args.batch_size}"
    trainer = nnUNetTrainerTimeBudget(plans=plans,
                                      configuration=args.configuration, fold=args.fold,
                                      dataset_json=load_json(join(base, "dataset.json")),
                                      device=torch.device("cpu"))
    trainer.run_training()
    if args.no_mirroring:
        trainer.inference_allowed_mirroring_axes = None  # the predictor then runs one pass per window
    started = time.monotonic()
    trainer.perform_actual_validation(save_probabilities=False)
    validation_seconds = time.monotonic() - started
    print(json.dumps({
        "configuration": args.configuration, "fold": args.fold, "epochs": len(trainer.epoch_seconds),
        "iterations_per_epoch": args.iterations, "batch_size": trainer.batch_size,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "training_seconds": round(trainer.training_seconds, 1),
        "epoch_seconds": [round(s, 1) for s in trainer.epoch_seconds],
        "validation_seconds": round(validation_seconds, 1), "mirroring": not args.no_mirroring,
        "output_folder": trainer.output_folder,
    }))


if __name__ == "__main__":
    main()
