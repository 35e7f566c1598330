"""Whether a run's model takes the input the run feeds it: one check for all three kinds of run.

A run feeds its model one of three inputs, decided by ``train.patch_size`` and the dataset:

- whole 2D images or slices (no patch size), resized or at their own size: a 2D model;
- 2D patches of images at their own size (two numbers): a 2D model;
- 3D patches of volumes (three numbers, a volume dataset): a 3D model.

A model says how many spatial dimensions it takes with the attribute ``spatial_dims`` (2 when it has none, as
smp's models). Both checks run at assembly, before anything is written, where a mismatch would otherwise fail
inside the model's first forward pass in epoch 1 (or after the volume cache was built).
"""

from __future__ import annotations

from typing import Any

import torch

from segkit.config import RunConfig
from segkit.data.volume import VolumeDataset
from segkit.errors import ConfigError

__all__ = ["check_model_input", "check_run_input", "input_dims", "model_dims"]


def input_dims(config: RunConfig) -> int:
    """The spatial dimensions of what the run feeds its model: 3 for patches of volumes, else 2."""
    return 3 if len(config.train.patch_size) == 3 else 2


def model_dims(model: torch.nn.Module) -> int:
    """The spatial dimensions ``model`` takes (its ``spatial_dims``; 2 when it does not say)."""
    return int(getattr(model, "spatial_dims", 2))


def check_run_input(config: RunConfig, dataset: Any) -> None:
    """A :class:`ConfigError` for a 3D patch size on a dataset that serves 2D images (it has no volumes to cut)."""
    if input_dims(config) == 3 and not isinstance(dataset, VolumeDataset):
        raise ConfigError(f"train.patch_size trains a 3D model on patches of volumes, but dataset "
                          f"{config.dataset.name!r} serves 2D images. Use a volume dataset (e.g. msd), or leave "
                          "train.patch_size out to train a 2D model.")


def check_model_input(model: torch.nn.Module, config: RunConfig, dataset: Any) -> None:
    """A :class:`ConfigError` when ``model``'s spatial dimensions differ from the input the run feeds it, with what
    would work: the dataset's kind decides the advice. Checks the run's input first (:func:`check_run_input`)."""
    check_run_input(config, dataset)
    dims, wanted = model_dims(model), input_dims(config)
    if dims == wanted:
        return
    name, patch = config.model.name, list(config.train.patch_size)
    if dims == 3:
        if isinstance(dataset, VolumeDataset):
            fix = ("give train.patch_size three numbers (e.g. [64, 64, 64]) to train it on patches of the volumes, or "
                   "choose a 2D model to train on their slices")
        else:
            fix = (f"dataset {config.dataset.name!r} serves 2D images: choose a 2D model (segkit list models), or a "
                   "volume dataset (e.g. msd) with a train.patch_size of three numbers")
        fed = f"2D patches ({patch})" if patch else "2D images"
        raise ConfigError(f"model {name!r} is a 3D model of volumes (spatial_dims = 3), but this run feeds it {fed}; "
                          f"{fix}.")
    if dims == 2:
        raise ConfigError(f"model {name!r} is a 2D model of images (spatial_dims = 2) but train.patch_size {patch} has "
                          "3 numbers, a 3D patch; use a 3D model (e.g. --model unet3d, whose spatial_dims is 3), or "
                          f"leave train.patch_size out to train {name!r} on the volumes' slices.")
    raise ConfigError(f"model {name!r} declares spatial_dims = {dims}, but a run feeds its model 2D images or patches, "
                      "or 3D patches of volumes: choose a model of 2 or 3 spatial dimensions.")
