"""The output end of a ``segkit cv`` result's fold models: the last decoder stage and the head.

For each fold's last checkpoint (an smp model with a ``decoder`` and a ``segmentation_head``):
its per-case Dice on the fold's validation patients, how many channels of the last decoder
stage ever fire on those slices (after its ReLU), and how many weights of the head's
convolution are positive. The head turns the stage's non-negative activations into the lesion
logit, so a head with few positive weights has few ways to say "lesion". The question it answers:
is a fold model that never predicts lesion stuck because channels died, or because of its head?

    python benchmarks/notes/2026-11-lgg-recipe/cv_output_head.py runs/lgg-cpu-cv
    python benchmarks/notes/2026-11-lgg-recipe/cv_output_head.py runs/cv-a runs/cv-b --folds 1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/common.py
from common import markdown_table  # noqa: E402
from segkit.evaluation.cv import fold_directory, fold_model, fold_state, read_cv
from segkit.errors import CheckpointError
from segkit.evaluation.evaluate import build_metric_set, evaluate_predictor
from segkit.components.registry import get_registry

DEAD_SHARE = 1e-3  # a channel positive on fewer than this share of the pixels counts as dead


def smp_network(model: torch.nn.Module) -> torch.nn.Module:
    """The smp network inside a segkit model (or the model itself), with its decoder blocks and head."""
    for candidate in (model, getattr(model, "model", None)):
        if hasattr(candidate, "segmentation_head") and hasattr(getattr(candidate, "decoder", None), "blocks"):
            return candidate
    raise SystemExit(f"error: {type(model).__name__} is not an smp model with decoder blocks and a segmentation "
                     "head; this script reads only those.")


def fold_row(cv_dir: Path, fold: int, registry, metrics) -> list:
    data, predictor = fold_model([cv_dir], fold, registry, device="cpu")
    network = smp_network(predictor.members[0].info["model"])
    positive: list[torch.Tensor] = []  # per batch: pixels above 0, per channel
    pixels: list[int] = []  # per batch: pixels per channel

    def record(module, inputs, output) -> None:
        positive.append((output > 0).sum(dim=(0, 2, 3)))
        pixels.append(output[:, 0].numel())

    handle = network.decoder.blocks[-1].register_forward_hook(record)
    try:
        dice = evaluate_predictor(predictor, data, metrics, postprocess="none").per_case_table()["dice"].mean()
    finally:
        handle.remove()
    share = torch.stack(positive).sum(dim=0) / sum(pixels)
    head = network.segmentation_head[0]
    weights = head.weight.detach().flatten()
    return [f"{cv_dir.name} fold {fold}", f"{dice:.3f}", f"{int((share < DEAD_SHARE).sum())} of {len(share)}",
            f"{float(share.min()):.3f} - {float(share.max()):.3f}",
            f"{int((weights > 0).sum())} of {weights.numel()}", f"{float(weights[weights > 0].sum()):.2f}",
            f"{float(head.bias.detach().flatten()[0]):+.3f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+", help="directories written by 'segkit cv'")
    parser.add_argument("--folds", default="", help="fold numbers from 0, separated by commas (default: all trained)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    registry = get_registry()
    metrics = build_metric_set(registry)
    rows = []
    for cv_dir in args.cv_dirs:
        try:
            folds = int(read_cv(cv_dir)["folds"])
        except CheckpointError as error:
            sys.exit(f"error: {error}")
        chosen = [int(k) for k in args.folds.split(",") if k.strip()] or list(range(folds))
        for k in chosen:
            if fold_state(fold_directory(cv_dir, k)) != "done":  # segkit cv's own rule for a finished fold
                print(f"{cv_dir} fold {k}: not finished, skipped", file=sys.stderr)
                continue
            rows.append(fold_row(cv_dir, k, registry, metrics))
            print(f"{cv_dir} fold {k} read", file=sys.stderr, flush=True)
    print(markdown_table(["fold model", "val per-case Dice (no LCC)", "dead last-stage channels",
                          "share of pixels active, per channel", "positive head weights", "their sum", "head bias"],
                         rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
