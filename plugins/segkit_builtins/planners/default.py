"""The built-in planner: a run configuration from a dataset's fingerprint and steps timed on this machine.

Each decision is a small function of the fingerprint (or of a measurement) and says why in one
line; docs/plan.md explains the rules and where they follow or depart from nnU-Net's heuristics.
2D data and the slices of volumes get the smp U-Net of segkit's cross-validated CPU recipes
(configs/lgg-cpu.toml, configs/hippocampus-cpu.toml); volumes on a GPU get ``unet3d`` on patches.

Why it is long: it holds every decision of the default planner, in the order of docs/plan.md's table, so
one file reads as the plan; the rules with arithmetic of their own live in the modules beside it
(cpu_batch, epoch_time, image_patches, network3d).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from segkit.config import task_loss
from segkit.errors import ConfigError
from segkit.planning.contract import Plan, PlanRequest, StepTiming

from segkit_builtins.planners.cpu_batch import THROUGHPUT_SHARE, candidate_batches, efficient_batch, interleaved_timings
from segkit_builtins.planners.epoch_time import (CV_FOLDS, CV_SHARES, FEW_CASES, RUN_SHARES, epoch_2d, epoch_3d, epoch_patches,
                                                 sliding_windows, training_items, measured_note)
from segkit_builtins.planners.image_patches import MAX_PATCH, keep_pixels, median_size
from segkit_builtins.planners.network3d import Resampling, fit_patch, shrink_patch, target_spacing, topology

__all__ = ["DefaultPlanner"]

#: The 2D model of segkit's CPU recipes: batch norm learns from scratch, the narrow decoder is fast.
MODEL_2D = {"name": "smp_unet", "encoder_name": "resnet18", "decoder_channels": [128, 64, 32, 16, 16]}
#: Pixels per 2D batch: the LGG recipe's 16 slices of 128x128 on a CPU, four times that on a GPU.
BATCH_PIXELS = {"cpu": 16 * 128 * 128, "cuda": 4 * 16 * 128 * 128}
MAX_BATCH_SHARE = 0.05
"""A batch holds at most this share of the training items (nnU-Net's 5% cap), but at least 2."""
MEMORY_SHARE = 0.5
"""The share of the device's free memory one training step may take, by train/footprint.py's estimate."""
EPOCH_HEADROOM = 1.5
"""train.epochs is the measured estimate times this: the run re-plans its epochs after the first one."""
SMALLEST_IMAGE = 64
"""The smallest planned 2D size: smp's encoders divide by 32, and batch norm needs more than one value per channel."""
MAX_PLANNED_EPOCHS = 1000
"""nnU-Net's epochs: more than this is not planned, however short an epoch is."""

def _accepts(request: PlanRequest, parameter: str) -> bool:
    return any(p.name == parameter for p in request.registry.get("dataset", request.dataset_name).parameters())


class DefaultPlanner:
    """Plans 2D, 2.5D or 3D runs within a time budget.

    Args:
        dims: ``auto`` (3D on patches for volumes on a GPU, else 2.5D or 2D slices), ``2d`` or ``3d``.
        timing_seconds: how long each measurement of training steps runs (a few seconds).
        min_epochs: a 2D image size is halved (down to 64) until the budget holds this many epochs.
        timing_rounds: on a CPU, how many times each candidate 2D batch is timed, in alternating order.
        encoder_weights: a local file of weights for the 2D model's ResNet-18 encoder (as smp's
            ``encoder_weights``; nothing is downloaded): the plan's model starts from them.
    """

    def __init__(self, dims: Literal["auto", "2d", "3d"] = "auto", timing_seconds: float = 2.0,
                 min_epochs: int = 8, timing_rounds: int = 2, encoder_weights: str | None = None) -> None:
        if dims not in ("auto", "2d", "3d"):
            raise ConfigError(f"planner default: dims must be auto, 2d or 3d, got {dims!r}")
        if not 0 < timing_seconds <= 60 or min_epochs < 1 or timing_rounds < 1:
            raise ConfigError("planner default: timing_seconds must be in (0, 60], min_epochs and timing_rounds at "
                              "least 1")
        self.dims, self.timing_seconds, self.min_epochs = dims, timing_seconds, min_epochs
        self.timing_rounds = timing_rounds
        self.encoder_weights = encoder_weights

    def plan(self, request: PlanRequest) -> Plan:
        """The plan for ``request`` (see the module docstring)."""
        fp = request.fingerprint
        volumes = fp["kind"] == "volumes"
        dims = self.dims
        if dims == "3d" and not volumes:
            raise ConfigError(f"planner default: dims = 3d needs a dataset of volumes; {request.dataset_name!r} "
                              "holds 2D images. Use dims = 2d or auto.")
        if dims == "auto":
            dims = "3d" if volumes and request.device == "cuda" else "2d"
        plan = Plan()
        self._data(plan, request, dims)
        self._task(plan, request)
        timing = self._network_3d(plan, request) if dims == "3d" else self._network_2d(plan, request)
        self._dice_per_image(plan, request, dims)
        self._training(plan, request, dims, timing)
        return plan

    # --- the data ---------------------------------------------------------------------------------------

    def _data(self, plan: Plan, request: PlanRequest, dims: str) -> None:
        fp = request.fingerprint
        plan.set("dataset", "name", request.dataset_name, "the dataset this plan was made from")
        for key, value in request.dataset_params.items():
            plan.set("dataset", key, value, "as given to segkit plan")
        per_case = fp["items_per_case"]["median"]
        if dims == "3d":
            plan.note("3D: the model trains on patches of the volumes (train.patch_size); 2.5D context does not apply.")
        elif _accepts(request, "context") and per_case > 1 and "context" not in request.dataset_params:
            if fp.get("slice_numbers", True):
                plan.set("dataset", "context", 1, f"2.5D: cases hold {per_case:g} slices (median), so each slice "
                         "comes with its neighbours above and below as channels")
            else:
                plan.note(f"No 2.5D context: cases hold {per_case:g} images (median) but no slice order (no slice "
                          "numbers), so each image is segmented on its own.")
        if _accepts(request, "normalize") and "normalize" not in request.dataset_params:
            ratios = [c["case_p99"]["ratio"] for c in fp["intensity"] if (c.get("case_p99") or {}).get("ratio")]
            spread = f"the cases' 99th percentiles differ up to x{max(ratios):.2f}" if ratios else "as nnU-Net does"
            plan.set("dataset", "normalize", "case", f"each case's channels scaled to one intensity scale ({spread})")
        elif fp["kind"] == "volumes":
            schemes = ", ".join(f"{c['channel']}: {c.get('scheme_3d', 'zscore')}" for c in fp["intensity"])
            plan.note("Normalisation: 2D slices of volumes are scaled per case by their 0.5th-99.5th percentiles, "
                      f"and 3D runs normalise each channel by its scheme ({schemes}); segkit has no setting to add.")
        if fp["kind"] == "volumes":
            grid = self._grid(fp)
            if dims == "3d" and grid.target is not None:
                plan.set("train", "target_spacing", [round(t, 4) for t in grid.target], "every case resampled to "
                         f"{grid.why}, as nnU-Net resamples; predictions come back on each case's own grid")
            elif dims == "3d":
                plan.note(f"Target spacing: {grid.why}.")
            else:
                plan.note(f"Target spacing: slices are taken as stored (a 2D run has no resampling; a 3D plan would "
                          f"resample to {grid.why if grid.target is not None else 'nothing: ' + grid.why}).")
        if dims == "2d" and _accepts(request, "cache") and "cache" not in request.dataset_params:
            pixels = sum(int(k.split("x")[0]) * int(k.split("x")[1]) * n for k, n in fp["image_sizes"].items())
            stored = pixels * (fp["in_channels"] + 1)
            if stored < 0.25 * request.free_bytes:
                plan.set("dataset", "cache", True, f"decoded slices kept in memory: about {stored / 2**20:.0f} MiB")

    @staticmethod
    def _grid(fp: dict[str, Any]) -> Resampling:
        """The voxel grid a 3D run of this dataset trains on: a target spacing and the cases' shapes there."""
        geometry = fp.get("case_geometry")
        if geometry:
            return target_spacing(geometry["shape"], geometry["spacing"])
        # a fingerprint without per-case geometry (written by an older segkit): the medians as they are
        spacing = [float(s) for s in fp["spacing"]["median"]]
        return Resampling(None, spacing, [int(round(s)) for s in fp["shape"]["median"]],
                          [int(s) for s in fp["shape"]["max"]], "the cases' own spacing (no per-case geometry)")

    def _task(self, plan: Plan, request: PlanRequest) -> None:
        labels = request.fingerprint["labels"]
        binary = len(labels) == 2
        mode = "binary" if binary else "multiclass"
        plan.set("task", "mode", mode, f"{len(labels) - 1} foreground label(s) ({', '.join(labels[1:])}): "
                 + ("one sigmoid output" if binary else "softmax over the labels, as nnU-Net trains"))
        loss = task_loss(binary)
        plan.set("loss", "name", loss, ("BCE + Dice" if binary else "cross-entropy + Dice") +
                 ": the task's loss (segkit's loss = auto), nnU-Net's Dice + CE")
        plan.set("metrics", "names", ["dice", "iou"], "Dice and IoU per case, pooled and per image")
        cases = int(request.fingerprint["cases"])
        if cases < 2:
            plan.set("split", "by", "none", "a single case: nothing to hold out, so validation scores the training "
                     "case itself (not an unseen-data score)")
            return
        plan.set("split", "by", "case", "no case in two splits: slices of one case are not independent")
        if cases < FEW_CASES:
            plan.set("split", "test_fraction", 0.0, f"{cases} cases: too few to hold out a test set as well as a "
                     "validation set; score the validation cases (segkit evaluate --split val) or new data")

    @staticmethod
    def _dice_per_image(plan: Plan, request: PlanRequest, dims: str) -> None:
        """Binary 2D data whose every image holds the label, trained on whole images: the loss's Dice term per
        image, averaged (``loss.per_image``), as the images are scored, rather than pooled over the batch."""
        fp = request.fingerprint
        patches = plan.get("train", "patch_size") is not None
        if dims != "2d" or patches or len(fp["labels"]) != 2 or fp["empty"]["items_share"] > 0:
            return
        plan.set("loss", "per_image", True, "every image holds the label: the Dice term per image, averaged, so a "
                 "small object weighs as much as a large one, as a mean Dice per image scores them (measured on "
                 "two sets' folds, docs/benchmarks/fold-arms.md)")

    # --- 2D ---------------------------------------------------------------------------------------------

    def _channels_2d(self, plan: Plan, request: PlanRequest) -> int:
        context = plan.get("dataset", "context", request.dataset_params.get("context", 0))
        return int(request.fingerprint["in_channels"]) * (2 * int(context) + 1)

    def _native_2d(self, request: PlanRequest) -> tuple[int, int, bool]:
        """The slices' common size ``(H, W)`` and whether all items share it."""
        fp = request.fingerprint
        if fp["kind"] == "volumes":
            h, w = fp["slice_size"]
            return int(h), int(w), True
        sizes = fp["image_sizes"]
        common = max(sizes, key=sizes.get)
        h, w = (int(v) for v in common.split("x"))
        return h, w, len(sizes) == 1

    def _batch_2d(self, request: PlanRequest, model: dict[str, Any], channels: int, shape: tuple[int, int]) -> tuple[int, str]:
        """A batch of about :data:`BATCH_PIXELS`, at most 5% of the training items, within the memory estimate."""
        from segkit.train.footprint import training_footprint

        fp = request.fingerprint
        pixels = shape[0] * shape[1]
        wanted = max(2, min(64, round(BATCH_PIXELS[request.device] / pixels)))
        cap = max(2, int(MAX_BATCH_SHARE * fp["items"] * RUN_SHARES[0]))
        batch = min(wanted, cap)
        why = (f"{BATCH_PIXELS[request.device]:,} pixels per batch, about {BATCH_PIXELS[request.device] // pixels} "
               f"slices of {shape[0]}x{shape[1]}" + (" (at most 64)" if wanted == 64 else ""))
        if batch < wanted:
            why += f", capped at 5% of the ~{int(fp['items'] * 0.75)} training slices (nnU-Net's cap)"
        training = training_items(fp)
        if training < batch:
            batch = training
            why += f"; the training split holds only {training} item(s)"
        classes = 1 if len(fp["labels"]) == 2 else len(fp["labels"])
        params = {k: v for k, v in model.items() if k != "name"}
        footprint = training_footprint(lambda: request.registry.build("model", model["name"], in_channels=channels,
                                                                      classes=classes, **params),
                                       channels, shape[0], shape[1])
        if footprint is not None and footprint.activation_bytes_per_image:
            room = MEMORY_SHARE * request.free_bytes - footprint.state_bytes
            fits = int(room // footprint.activation_bytes_per_image)
            if fits < batch:
                batch = max(1, fits)
                why += f"; memory (train/footprint.py's estimate) holds {fits}"
        return batch, why

    def _network_2d(self, plan: Plan, request: PlanRequest) -> StepTiming:
        """The model, image size and batch; returns the timing of the chosen ones."""
        fp = request.fingerprint
        plan.set("model", "name", MODEL_2D["name"], "segkit's cross-validated 2D recipes' model: batch norm learns "
                 "from scratch in few epochs")
        plan.set("model", "encoder_name", MODEL_2D["encoder_name"], "a small encoder: fast steps, many epochs")
        if self.encoder_weights:
            plan.set("model", "encoder_weights", self.encoder_weights, "the local encoder weights given to segkit plan "
                     "(planner.encoder_weights): the encoder starts from them instead of from scratch")
        plan.set("model", "decoder_channels", MODEL_2D["decoder_channels"], "half smp's decoder width (1.45x faster "
                 "steps, docs/benchmarks/lgg-recipes.md), 16 at the last stage")
        channels = self._channels_2d(plan, request)
        h, w, same = self._native_2d(request)
        tiny = min(-(-h // 32), -(-w // 32)) < 2  # padded to 32: the encoder's deepest map would be 1 pixel
        side = 0 if same and not tiny else max(SMALLEST_IMAGE, round(max(h, w) / 32) * 32)
        budget = request.minutes * 60
        best = None
        while True:
            shape = (h, w) if side == 0 else (side, side)
            batch, why = self._batch_2d(request, MODEL_2D, channels, shape)
            document = {**plan.document(), "train": {"device": request.device, "image_size": side}}
            if request.device == "cpu":
                timings = interleaved_timings(lambda b: request.time_steps(document, b, shape, self.timing_seconds),
                                              candidate_batches(batch), self.timing_rounds)
                timing = efficient_batch(timings)
                if len(timings) > 1:
                    rates = ", ".join(f"{t.batch_size}: {t.batch_size / t.seconds_per_step:.0f}" for t in timings)
                    why = (f"the smallest batch within {1 - THROUGHPUT_SHARE:.0%} of the best measured images/s "
                           f"(batch: images/s {rates}), so the budget holds more optimizer steps; at most {why}")
                batch = timing.batch_size
            else:
                timing = request.time_steps(document, batch, shape, self.timing_seconds)
            timing = self._with_loading(request, {**document, "train": {**document["train"], "batch_size": batch}},
                                        timing)
            epoch = epoch_2d(fp["items"], timing)
            best = (side, shape, batch, why, timing, epoch)
            smaller = (side or max(h, w)) // 2
            if budget / epoch >= self.min_epochs or smaller < SMALLEST_IMAGE:
                break
            side = smaller // 32 * 32
        side, shape, batch, why, timing, epoch = best
        keep = keep_pixels(fp, side / max(h, w) if side else 1.0) if fp["kind"] == "images" else None
        if keep is not None:
            return self._patches_2d(plan, request, channels, keep)
        native = f"{h}x{w}"
        if side == 0:
            size_why = f"the slices' own size, {native}" + (" (padded to the model's multiple)" if h % 32 or w % 32 else "")
        elif same and side == SMALLEST_IMAGE and tiny:
            size_why = (f"{native} enlarged to {side}x{side}: smp's encoder divides by 32, and a 1x1 deepest map makes "
                        "batch norm fail on a batch of one slice (an epoch's last batch can be one)")
        elif same:
            size_why = (f"{native} halved until the budget holds {self.min_epochs} epochs "
                        f"({timing.seconds_per_step:.2f} s per step of {batch} at {side}x{side}, measured)")
        elif side < (start := max(SMALLEST_IMAGE, round(max(h, w) / 32) * 32)):
            size_why = (f"the images differ in size (most are {native}): all resized, {start} halved until the "
                        f"budget holds {self.min_epochs} epochs: {side}x{side} ({timing.seconds_per_step:.2f} s per "
                        f"step of {batch}, measured; docs/benchmarks/size-rule.md)")
        else:
            size_why = (f"the images differ in size (most are {native}): all resized to {side}x{side}, at least "
                        f"{SMALLEST_IMAGE} so the encoder's deepest map keeps 2x2 pixels")
        plan.set("train", "image_size", side, size_why)
        plan.set("train", "batch_size", batch, why)
        plan.epoch_seconds = epoch
        plan.cv_epoch_seconds = epoch_2d(fp["items"], timing, CV_SHARES)
        plan.fitting_hint = self._hint(timing, epoch, request)
        return timing

    def _patches_2d(self, plan: Plan, request: PlanRequest, channels: int, keep: str) -> StepTiming:
        """Patches at the images' own size: the largest square patch (a multiple of 32, at most the median image's
        shorter side and :data:`MAX_PATCH`) whose epochs the budget holds :attr:`min_epochs` times."""
        fp = request.fingerprint
        median = median_size(fp)
        side = max(SMALLEST_IMAGE, min(MAX_PATCH[request.device], min(median)) // 32 * 32)
        budget = request.minutes * 60
        while True:
            shape = (side, side)
            batch, why = self._batch_2d(request, MODEL_2D, channels, shape)
            document = {**plan.document(), "train": {"device": request.device, "patch_size": [side, side]}}
            timing = request.time_steps(document, batch, shape, self.timing_seconds)
            timing = self._with_loading(request, {**document, "train": {**document["train"], "batch_size": batch}},
                                        timing)
            epoch = epoch_patches(fp["items"], timing, median)
            if budget / epoch >= self.min_epochs or side // 2 < SMALLEST_IMAGE:
                break
            side = side // 2 // 32 * 32
        plan.set("train", "patch_size", [side, side],
                 f"patches at the images' own size, since {keep}: the largest multiple of 32 within the median image "
                 f"({median[0]}x{median[1]}) and {MAX_PATCH[request.device]} whose epochs the budget holds "
                 f"{self.min_epochs} times; validation slides windows over whole images")
        plan.set("train", "batch_size", batch, why)
        plan.epoch_seconds = epoch
        plan.cv_epoch_seconds = epoch_patches(fp["items"], timing, median, CV_SHARES)
        plan.fitting_hint = self._hint(timing, epoch, request)
        return timing

    def _with_loading(self, request: PlanRequest, document: dict[str, Any], timing: StepTiming) -> StepTiming:
        """``timing`` with the seconds per batch of the run's data path, where the request can measure them."""
        if request.time_loading is None:
            return timing
        return dataclasses.replace(timing, seconds_per_load=request.time_loading(document, self.timing_seconds / 2))

    # --- 3D ---------------------------------------------------------------------------------------------

    def _network_3d(self, plan: Plan, request: PlanRequest) -> StepTiming:
        """unet3d's stages, the patch and the batch; returns the timing of the chosen ones."""
        fp = request.fingerprint
        grid = self._grid(fp)
        spacing, median, largest = grid.spacing, grid.shape, grid.largest
        width = 32 if request.device == "cuda" else 16
        classes = 1 if len(fp["labels"]) == 2 else len(fp["labels"])
        patch = list(median)
        while True:
            net = topology(patch, spacing)
            fitted = fit_patch(patch, net.total_stride, largest)
            params = {"spatial_dims": 3, "width": width, "max_width": 320, "stages": net.stages,
                      "kernel_sizes": net.kernels, "strides": net.strides, "deep_supervision": True}
            footprint = self._footprint_3d(params, fp["in_channels"], classes, fitted, request)
            if footprint is None or footprint.total(2) <= MEMORY_SHARE * request.free_bytes:
                break
            smaller = shrink_patch(patch, spacing, median)
            if smaller is None:
                break
            patch = smaller
        batch, batch_why = 2, "nnU-Net's smallest batch, 2 patches per step"
        if request.device == "cuda" and footprint is not None:
            voxels = fp["cases"] * math.prod(median)
            cap = max(2, int(MAX_BATCH_SHARE * voxels / math.prod(fitted)))
            while batch < cap and footprint.total(batch + 1) <= MEMORY_SHARE * request.free_bytes:
                batch += 1
            batch_why = (f"as many patches as half the GPU's free memory holds (train/footprint.py's estimate), at "
                         f"most 5% of the dataset's voxels ({cap} patches), as nnU-Net sizes its batch")
        plan.set("model", "name", "unet3d", "nnU-Net's 3D U-Net: instance norm, LeakyReLU, per-axis kernels and strides")
        plan.set("model", "spatial_dims", 3, "a 3D model on patches of the volumes")
        plan.set("model", "width", width, "channels of the first stage: nnU-Net's 32 on a GPU" if width == 32
                 else "channels of the first stage: half nnU-Net's 32, for a CPU's time")
        plan.set("model", "max_width", 320, "nnU-Net's cap on a stage's channels")
        plan.set("model", "stages", net.stages, f"pooling while every pooled axis keeps at least 4 voxels of the "
                 f"{fitted} patch")
        plan.set("model", "kernel_sizes", net.kernels, "3 along an axis, 1 while its spacing is more than twice the "
                 f"finest ({'target' if grid.target else 'median'} spacing {[round(s, 3) for s in spacing]} mm)")
        plan.set("model", "strides", net.strides, "stride 2 on axes not coarser than twice the finest spacing, so thick "
                 "slices are pooled last")
        plan.set("model", "deep_supervision", True, "a loss at every decoder resolution, as nnU-Net trains")
        shrunk = patch != median
        plan.set("train", "patch_size", fitted, f"the median case ({'x'.join(map(str, median))} voxels"
                 + (" once resampled) " if grid.target else ") ")
                 + ("shrunk until a step fits half the free memory, then " if shrunk else "")
                 + f"rounded to the network's total stride {net.total_stride}, within the largest case")
        plan.set("train", "batch_size", batch, batch_why)
        document = {**plan.document(), "train": {"device": request.device, "patch_size": fitted, "batch_size": batch}}
        windows = sliding_windows(median, fitted)
        timing = request.time_steps(document, batch, tuple(fitted), self.timing_seconds, min(batch, windows))
        timing = self._with_loading(request, document, timing)
        plan.epoch_seconds = epoch_3d(fp["cases"], timing, median)
        plan.cv_epoch_seconds = epoch_3d(fp["cases"], timing, median, CV_SHARES)
        plan.fitting_hint = self._hint(timing, plan.epoch_seconds, request)
        return timing

    @staticmethod
    def _footprint_3d(params: dict[str, Any], channels: int, classes: int, patch: list[int],
                      request: PlanRequest) -> Any:
        """One 3D training step's memory by train/footprint.py's estimate (None when it cannot tell)."""
        from segkit.train.footprint import training_footprint

        footprint = training_footprint(
            lambda: request.registry.build("model", "unet3d", in_channels=channels, classes=classes, **params),
            channels, patch[1], patch[2], depth=patch[0])
        if footprint is None or footprint.activation_bytes_per_image is None:
            return None
        return footprint

    # --- training ---------------------------------------------------------------------------------------

    @staticmethod
    def _hint(timing: StepTiming, epoch: float, request: PlanRequest) -> str:
        minutes = math.ceil(epoch * 1.2 / 60)
        return (f"one epoch takes about {epoch:.0f} s here ({timing.seconds_per_batch:.2f} s per batch of "
                f"{timing.batch_size}, measured); --minutes {minutes} or more would fit one")

    def _training(self, plan: Plan, request: PlanRequest, dims: str, timing: StepTiming) -> None:
        fp = request.fingerprint
        budget = request.minutes * 60
        fits = max(0, int(budget // plan.epoch_seconds)) if plan.epoch_seconds else 0
        share = 1 - fp["empty"]["items_share"]
        if dims == "3d":
            fraction, why = 0.33, "nnU-Net's share of patches centred on a foreground voxel"
        elif share < 0.5 and fits < 50:
            fraction, why = 0.67, (f"{share:.0%} of the slices hold a label and the budget holds ~{fits} epochs: "
                                   "twice nnU-Net's 0.33, so few epochs still see much foreground")
        else:
            fraction, why = 0.33, f"nnU-Net's 0.33 ({share:.0%} of the slices hold a label)"
        plan.set("train", "foreground_fraction", fraction, why)
        copied = len(fp["copied_channels"])
        if 0 < copied < fp["cases"] and dims == "2d":  # in every case it is the format (grey in RGB files), not a gap
            plan.set("train", "modality_dropout", 0.15, f"{copied} of {fp['cases']} cases store a missing sequence "
                     "as a copy of another: training slices lose a sequence now and then (configs/lgg-cpu.toml)")
        plan.set("train", "augment", "light" if fits < 100 else "heavy",
                 "nnU-Net-like rotations, scaling, flips and intensity changes" if fits < 100 else
                 "many epochs: elastic deformation as well")
        plan.set("train", "optimizer", "adamw", "AdamW: converges in few epochs (segkit's recipes)")
        plan.set("train", "lr", 1e-3, "AdamW's usual rate")
        plan.set("train", "weight_decay", 1e-4, "light regularisation")
        plan.set("train", "scheduler", "cosine", "decays to 0 as the budget ends (the run re-plans after epoch 1)")
        plan.set("train", "warmup_epochs", 0.5, "half an epoch of warm-up (at most 10% of the run)")
        epochs = max(1, min(MAX_PLANNED_EPOCHS, math.ceil(fits * EPOCH_HEADROOM)))
        cv_fits = int(budget // plan.cv_epoch_seconds)
        plan.set("train", "epochs", epochs,
                 f"~{fits} epochs of {plan.epoch_seconds:.1f} s fit in {request.minutes:g} min ({measured_note(timing)}"
                 f"; a fold of segkit cv --folds {CV_FOLDS}: ~{cv_fits}); x{EPOCH_HEADROOM} headroom, the budget decides"
                 + (f", at most nnU-Net's {MAX_PLANNED_EPOCHS}" if epochs == MAX_PLANNED_EPOCHS else ""))
        plan.set("train", "max_minutes", float(request.minutes), "the time budget given to segkit plan")
        plan.set("train", "device", request.device, "the device the steps were timed on")
        plan.set("train", "workers", 0 if request.device == "cpu" else 2,
                 "loading in the main process: worker processes take CPU from training" if request.device == "cpu"
                 else "two loader processes feed the GPU")
