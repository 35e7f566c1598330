"""The generic trainer: a run as named steps (session), its loop, data, schedule and checks."""

from segkit.train.runner import train

__all__ = ["train"]
