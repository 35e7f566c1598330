"""Confusion counts and the metric accumulator, shared by training's validation and by evaluation.

    metrics   per-image confusion counts (per label with several labels; ignored pixels left out) and the
              on-device accumulator that scores them per image, per case and pooled

Modules are imported when used; importing this package imports nothing.
"""
