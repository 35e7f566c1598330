"""The generic trainer and the run directory it writes."""

from segkit.train.runner import train

__all__ = ["train"]
