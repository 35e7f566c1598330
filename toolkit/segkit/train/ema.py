"""An exponential moving average (EMA) of a model's weights, for ``train.ema_decay``.

After every optimizer step the average moves towards the trained weights:
``average = rate * average + (1 - rate) * weights``, for parameters and floating-point
buffers (batch-norm statistics) alike; integer buffers are copied. The rate ramps up as
``min(decay, (1 + steps) / (10 + steps))``, so the random initial weights are forgotten
within the first steps instead of weighing on a short run (0.5, 0.55, 0.58, ... 0.9 after
80 steps, 0.99 after 890). Validation, best.pt and every exported or predicted model use the
average; last.pt also keeps the trained weights, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running average of ``model``'s weights; ``module`` is a model holding it, in eval mode."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"an EMA decay must lie strictly between 0 and 1, got {decay}")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def rate(self) -> float:
        """The share of the old average kept at the next update."""
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer step)."""
        keep = self.rate()
        trained = model.state_dict()
        for name, average in self.module.state_dict().items():
            if average.is_floating_point():
                average.lerp_(trained[name].detach().to(average.dtype), 1.0 - keep)
            else:
                average.copy_(trained[name])
        self.steps += 1

    def load_state_dict(self, state: dict[str, Any], steps: int) -> None:
        self.module.load_state_dict(state)
        self.steps = int(steps)
