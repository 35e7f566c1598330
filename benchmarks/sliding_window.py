"""Sliding-window inference: segkit's against MONAI's ``sliding_window_inference``, same model, volume and settings.

One randomly initialised 3D U-Net (``monai.networks.nets.UNet``, seeded; speed and agreement do not
depend on training), two volumes: (a) a real hippocampus case read with nibabel (z-scored), with
patches small enough that several windows are needed; (b) a synthetic volume (default 160x160x96,
patch 96x96x64); (c) the same volume through a 1x1x1 convolution instead of the U-Net, so that the
time is the inferers' own (cutting windows, weighting, summing). Both inferers get the same patch, overlap, batch size (windows per model call) and
Gaussian blending (sigma 0.125 x patch); one untimed warm-up call each, then they alternate for
``--repeats`` rounds. The table gives the median (min, max) seconds per volume, windows per second
(windows counted by wrapping the model) and the agreement of the logits: max |difference| and the
share of voxels whose argmax label agrees. A last column runs MONAI with segkit's Gaussian weights
(``roi_weight_map``), so what remains is window placement alone.

    python benchmarks/sliding_window.py [--repeats 5] [--threads 2] [--batch-size 4] [--overlap 0.5]
    python benchmarks/sliding_window.py --quick      # a smoke run with tiny sizes; its numbers mean nothing

Other work on the machine slows both sides alike; compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common import REPO, describe_machine, machine, markdown_table, median


class Counted(torch.nn.Module):
    """The model, counting the windows it is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.windows = 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.windows += batch.shape[0]
        return self.model(batch)


def build_model(channels: tuple[int, ...], classes: int, seed: int, norm: str) -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=classes, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=1, norm=norm)
    return net.eval()


def hippocampus_volume(root: Path, case: str | None) -> tuple[str, torch.Tensor]:
    import nibabel

    files = sorted((root / "imagesTr").glob("hippocampus_*.nii.gz"))
    if not files:
        raise SystemExit(f"no hippocampus_*.nii.gz under {root / 'imagesTr'}; give --data-root")
    path = next((f for f in files if f.name.startswith(case + ".")), None) if case else files[0]
    if path is None:
        raise SystemExit(f"no case {case!r} under {root / 'imagesTr'}")
    data = torch.from_numpy(nibabel.load(path).get_fdata(dtype="float32"))
    data = (data - data.mean()) / data.std().clamp_min(1e-8)
    return path.name.split(".")[0], data[None]


def measure(name: str, model: Counted, image: torch.Tensor, patch: tuple[int, ...], args: argparse.Namespace,
            ) -> dict[str, object]:
    from monai.inferers import sliding_window_inference

    from segkit.inference.sliding_window import gaussian_importance, sliding_window_logits

    def ours() -> torch.Tensor:
        return sliding_window_logits(model, image, patch, overlap=args.overlap, batch_size=args.batch_size,
                                     gaussian=True, sigma_scale=0.125)

    def theirs(**options: object) -> torch.Tensor:
        with torch.no_grad():
            return sliding_window_inference(image[None], patch, args.batch_size, model, overlap=args.overlap,
                                            mode="gaussian", sigma_scale=0.125, **options)[0]

    sides: dict[str, Callable[[], torch.Tensor]] = {"segkit": ours, "monai": theirs}
    outputs, windows, seconds = {}, {}, {side: [] for side in sides}
    for side, run in sides.items():  # warm-up, and the windows each side uses
        model.windows = 0
        outputs[side] = run()
        windows[side] = model.windows
    for _ in range(args.repeats):
        for side, run in sides.items():
            start = time.perf_counter()
            run()
            seconds[side].append(time.perf_counter() - start)
    placed = theirs(roi_weight_map=gaussian_importance(patch))
    a, b = outputs["segkit"], outputs["monai"]
    result: dict[str, object] = {
        "volume": name, "shape": list(image.shape[1:]), "patch": list(patch), "logit_std": float(a.std()),
        "max_abs_diff": float((a - b).abs().max()), "argmax_agree": float((a.argmax(0) == b.argmax(0)).float().mean()),
        "placement_only_max_abs_diff": float((a - placed).abs().max()),
        "placement_only_argmax_agree": float((a.argmax(0) == placed.argmax(0)).float().mean()),
    }
    for side in sides:
        result[side] = {"windows": windows[side], "seconds": seconds[side], "median_s": median(seconds[side]),
                        "windows_per_s": windows[side] / median(seconds[side])}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--case", default=None, help="hippocampus case id (default: the first one)")
    parser.add_argument("--hippocampus-patch", type=int, nargs=3, default=(32, 32, 32))
    parser.add_argument("--synthetic-size", type=int, nargs=3, default=(160, 160, 96))
    parser.add_argument("--synthetic-patch", type=int, nargs=3, default=(96, 96, 64))
    parser.add_argument("--channels", type=int, nargs="+", default=(8, 16, 32, 64), help="U-Net channels per level")
    parser.add_argument("--norm", choices=("instance", "batch"), default="instance",
                        help="U-Net normalisation: instance (MONAI's default; per-window statistics, so the logits "
                             "depend on where the windows lie) or batch (eval mode: fixed, translation-equivariant)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per model call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (the sides alternate); the median counts")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks the script works")
    args = parser.parse_args()
    if args.quick:
        args.hippocampus_patch, args.synthetic_size, args.synthetic_patch = (16, 16, 16), (40, 40, 24), (24, 24, 16)
        args.repeats, args.channels = 1, (4, 8)
    torch.set_num_threads(args.threads)

    model = Counted(build_model(tuple(args.channels), classes=3, seed=0, norm=args.norm))
    case, hippocampus = hippocampus_volume(args.data_root, args.case)
    synthetic = torch.randn(1, *args.synthetic_size, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    pointwise = Counted(torch.nn.Conv3d(1, 3, 1).eval())  # next to no model: what the inferers themselves cost
    results = [
        measure(f"hippocampus {case}", model, hippocampus, tuple(args.hippocampus_patch), args),
        measure("synthetic", model, synthetic, tuple(args.synthetic_patch), args),
        measure("synthetic, 1x1x1 conv model", pointwise, synthetic, tuple(args.synthetic_patch), args),
    ]

    rows = []
    for r in results:
        mine, peer = r["segkit"], r["monai"]
        for side, numbers in (("segkit", mine), ("MONAI", peer)):
            rows.append([r["volume"], "x".join(map(str, r["shape"])), "x".join(map(str, r["patch"])), side,
                         numbers["windows"], (f"{numbers['median_s']:.3f} ({min(numbers['seconds']):.3f}, "
                                              f"{max(numbers['seconds']):.3f})"), numbers["windows_per_s"]])
        rows.append([r["volume"], "", "", "MONAI / segkit time", "", f"{peer['median_s'] / mine['median_s']:.2f}", ""])
    print(markdown_table(["volume", "shape", "patch", "inferer", "windows", "median s (min, max)", "windows/s"], rows))
    print()
    print(markdown_table(["volume", "logit std", "max abs diff", "argmax agrees", "placement only: max abs diff",
                          "argmax agrees"],
                         [[r["volume"], r["logit_std"], r["max_abs_diff"], r["argmax_agree"],
                           r["placement_only_max_abs_diff"], r["placement_only_argmax_agree"]] for r in results]))
    import monai

    print(f"\nMONAI UNet channels {tuple(args.channels)}, {args.norm} norm, 1 residual unit, random weights (seed 0); overlap "
          f"{args.overlap}, batch {args.batch_size}, Gaussian sigma 0.125 x patch; {args.repeats} alternating rounds "
          f"after 1 warm-up each; MONAI {monai.__version__}")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "machine": info, "monai": monai.__version__,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
