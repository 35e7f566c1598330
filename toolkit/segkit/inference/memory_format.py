"""The memory layout a model predicts fastest in: channels-last for 3D convolutions on the CPU.

oneDNN, which runs torch's convolutions on the CPU, is written for channels-last ("NDHWC") data; a 3D model whose
weights are stored channels-first makes every convolution reorder its input and output. Converting the weights
once makes the activations channels-last throughout: a plain 3D U-Net (8-64 features, 128^3 windows, 2 threads)
spent 15% less time in the model over a 512x512x400 volume, with the same labels on every voxel and logits equal
to 2e-5 (docs/benchmarks/volumes-at-scale.md). Not measured on GPUs, so only the CPU is converted. The choice follows
the weights: torch's convolutions run channels-last when the weight is, whatever the input's layout.
Training's layout is ``train.channels_last`` (:func:`segkit.device.use_channels_last`: 2D models only).
"""

from __future__ import annotations

import torch

from segkit.device import has_3d_weights

__all__ = ["prefer_channels_last"]


def prefer_channels_last(model: object, device: torch.device | str) -> object:
    """``model`` with its weights in channels-last 3D layout when it is a torch module with 3D convolutions that
    runs on the CPU (converted in place, and returned); anything else is returned unchanged.

    Only inference should call this: it changes the strides of the model's parameters (not their values).
    """
    if not isinstance(model, torch.nn.Module) or torch.device(device).type != "cpu" or not has_3d_weights(model):
        return model
    return model.to(memory_format=torch.channels_last_3d)
