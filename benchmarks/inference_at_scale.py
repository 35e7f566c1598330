"""Inference at scale: one large CT-like volume through segkit's, MONAI's and nnU-Net's sliding windows.

Time and peak memory of Gaussian-blended sliding-window inference of ONE big volume (default
512x512x400 voxels: 400 MiB as float32) by three tools with the same model, patch, overlap, windows
per model call and blending (sigma 0.125 x patch), each in its own fresh child process:

- ``segkit``: ``segkit.inference.sliding_window.sliding_window_labels`` (a uint8 label map, computed
  slab by slab). Where it does not exist yet, ``sliding_window_logits`` (the whole (K, X, Y, Z)
  float32 logits) followed by the argmax, with a printed warning and ``(logits fallback)`` in the row.
- ``MONAI``: ``monai.inferers.sliding_window_inference`` (mode gaussian, sw_device and device cpu),
  then the argmax; ``MONAI buffered`` is the same call with ``buffer_steps=1, buffer_dim=-1``
  (windows gathered into a buffer one step along the last axis before they are written out).
- ``nnU-Net``: nnU-Net v2's ``nnUNetPredictor.predict_sliding_window_return_logits`` from its own
  venv (``--nnunet-python``), then the argmax. It is given the network directly instead of a trained
  model folder: ``predictor.network`` (the model below), ``predictor.configuration_manager`` a
  stand-in holding only ``patch_size``, ``predictor.label_manager`` a stand-in holding only
  ``num_segmentation_heads`` (4), ``predictor.allowed_mirroring_axes = None`` (read only when
  mirroring, which is off). Nothing else is read on that path (nnunetv2 2.8.1; ``list_of_parameters``,
  plans and dataset.json are only used by the file-based entry points). nnU-Net sends ONE window
  per model call (its predictor has no batch setting), keeps its sums in float16 on the CPU and uses
  tile_step_size = 1 - overlap; its window placement is segkit's (segkit follows nnU-Net's), MONAI's differs.

``--tools ... segkit-logits`` adds a row for segkit's older path, the whole float32 logits from
``sliding_window_logits`` and then the argmax, to show what the slabs save. ``segkit-channels-last`` adds
``segkit`` with the model as ``segkit predict`` prepares a 3D model on a CPU: its weights converted to
channels-last (``segkit.inference.memory_format``); the other rows run the model as saved.

The model: a plain 3D U-Net defined here (4 levels of 8/16/32/64 features, two 3x3x3 convolutions
with InstanceNorm and LeakyReLU per level, strided-convolution downsampling, transposed-convolution
upsampling, 4 output channels = background + 3 labels), random weights (seed 0: time and memory
do not depend on training). The parent traces it with ``torch.jit.trace`` and saves it; every child
``torch.jit.load``s the same file (a TorchScript saved by segkit's torch loads in nnU-Net's torch; a
child falls back to the state_dict and this file's class if it would not) and sets
``torch.set_num_threads(--threads)``.

The volume: ``--image CASE.nii.gz`` (a CT case in HU, e.g. one written by benchmarks/ct_volumes.py),
clipped to [-1000, 1000] HU and divided by 1000, or without it a smooth random volume of ``--shape``
(upsampled coarse noise in [-1, 1], seeded). It is saved once as float32 ``volume.npy`` in ``--work``
and every child ``np.load``s it whole, so each child holds the volume alike.

Memory: each child reads its peak resident memory (``VmHWM`` of /proc/self/status) right after its
imports and the model load, after two warm-up model calls on a batch of zero windows (the
TorchScript profiling runs; the same batch the tool will send), and right after the inference and
the argmax. The argmax of the tools that return logits goes slab by slab (8 planes of the first axis
at a time) into a uint8 map, so no tool is charged for a whole-volume int64 argmax. Seconds are the
inference call plus that argmax (the volume already loaded, the model warm). Each child saves its
label map; the parent reports the share of voxels where each tool agrees with segkit, and how many
windows each tool sent to the model (counted by wrapping it).

Patch 128x128x128 by default: a multiple of the U-Net's downsampling (8), near-isotropic like a
1 mm CT and near nnU-Net's usual CT patches; at overlap 0.5 it needs 7x7x6 = 294 windows for
512x512x400 (each voxel is seen by ~8 windows whatever the patch, so smaller patches only add calls
and borders). The model's own working memory for a batch of 2 such windows is ~0.8 GiB (the
"after warm-up" minus "after load" column); one such batch costs ~3 CPU-seconds here, so expect
roughly 5-10 minutes per tool on 2 idle cores at full size, and ~30-40 minutes for the four rows.

    .venv/bin/python benchmarks/inference_at_scale.py [--shape 512 512 400 | --image CT.nii.gz] \\
        [--patch 128 128 128] [--overlap 0.5] [--batch-size 2] [--threads 2] [--json FILE]
    .venv/bin/python benchmarks/inference_at_scale.py --quick     # 96x96x64, patch 32x64x64: checks it works
    ... --segkit-run RUN_DIR --image CT.nii.gz                      # also time `segkit predict` end to end

``--segkit-run`` adds a row for the real CLI: ``segkit predict RUN_DIR IMAGE --out DIR`` (its own
model, patch and normalisation from the run; CPU, no TTA) in a child wrapped in ``/usr/bin/time -v``
(its "Maximum resident set size"), wall seconds from start to exit (imports, reading and writing
the NIfTI included). It is not comparable voxel for voxel, so it has no agreement and no baseline.

Run it on a quiet machine; other work slows every tool alike, so compare the ratios. The work
folder keeps volume.npy and the label maps (about 0.9 GiB at full size); ``--clean`` removes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common import REPO, describe_machine, machine, markdown_table, proc_status_kib

TOOLS = ("segkit", "monai", "monai-buffered", "nnunet")
OPTIONAL_TOOLS = ("segkit-logits", "segkit-channels-last")  # segkit's whole-logits path + argmax; the model as
# `segkit predict` prepares a 3D model on a CPU (weights channels-last)
LABELS = {"segkit": "segkit", "segkit-logits": "segkit logits + argmax",
          "segkit-channels-last": "segkit, model channels-last", "monai": "MONAI",
          "monai-buffered": "MONAI buffered", "nnunet": "nnU-Net",
          "segkit-cli": "segkit predict (CLI)"}
CLASSES = 4  # background + 3 labels
FEATURES = (8, 16, 32, 64)
SIGMA_SCALE = 0.125
ARGMAX_SLAB = 8  # planes of the first spatial axis per argmax step
MIB = 1024 * 1024


# ----------------------------------------------------------------------------------------------------------- model

class ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by InstanceNorm and LeakyReLU; the first may stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True),
        )


class UNet3D(nn.Module):
    """A plain 3D U-Net: ``len(features)`` levels, (B, 1, X, Y, Z) -> (B, classes, X, Y, Z).

    Every spatial size must be a multiple of 2 ** (levels - 1).
    """

    def __init__(self, in_channels: int = 1, classes: int = CLASSES, features: tuple[int, ...] = FEATURES) -> None:
        super().__init__()
        self.down = nn.ModuleList([ConvBlock(in_channels, features[0])])
        self.down.extend(ConvBlock(features[i - 1], features[i], stride=2) for i in range(1, len(features)))
        self.up = nn.ModuleList(nn.ConvTranspose3d(features[i + 1], features[i], 2, stride=2)
                                for i in reversed(range(len(features) - 1)))
        self.merge = nn.ModuleList(ConvBlock(2 * features[i], features[i]) for i in reversed(range(len(features) - 1)))
        self.head = nn.Conv3d(features[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottom level is x itself
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class Counted(nn.Module):
    """The model, counting the windows it is given and the seconds spent inside it.

    Every tool runs the same model on the same windows, so the seconds outside it (the total less
    ``seconds``) are each inferer's own work: cutting, weighting, stitching, the argmax. The model's seconds
    vary by a few percent from one process to the next on a shared CPU, more than the inferers differ.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.windows = 0
        self.calls = 0
        self.seconds = 0.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.windows += batch.shape[0]
        self.calls += 1
        started = time.perf_counter()
        logits = self.model(batch)
        self.seconds += time.perf_counter() - started
        return logits


def save_model(work: Path, patch: tuple[int, ...], batch_size: int) -> dict[str, Any]:
    """Build the seeded U-Net, trace it on a batch of patches, save TorchScript and state_dict; check the trace."""
    torch.manual_seed(0)
    model = UNet3D().eval()
    example = torch.randn(batch_size, 1, *patch, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        other = example[:1] * 0.5 + 0.1  # another batch size and content: the trace must not have baked either in
        gap = max(float((traced(x) - model(x)).abs().max()) for x in (example, other))
    if gap > 1e-4:
        raise SystemExit(f"error: the traced model differs from the eager one by {gap:g}")
    traced.save(str(work / "model.pt"))
    torch.save(model.state_dict(), work / "model_state.pt")
    return {"architecture": f"UNet3D features {FEATURES}, InstanceNorm, LeakyReLU, {CLASSES} classes",
            "parameters": sum(p.numel() for p in model.parameters()), "trace_max_abs_diff": gap}


def load_model(work: Path) -> tuple[nn.Module, str]:
    """The saved TorchScript model, else (another torch cannot read it) the state_dict in this file's class."""
    try:
        return torch.jit.load(str(work / "model.pt"), map_location="cpu").eval(), "torchscript"
    except Exception as error:  # noqa: BLE001 - any failure to read: fall back, and say so
        print(f"warning: torch {torch.__version__} cannot load the TorchScript ({error!r}); using the state_dict",
              file=sys.stderr, flush=True)
        model = UNet3D()
        model.load_state_dict(torch.load(work / "model_state.pt", map_location="cpu"))
        return model.eval(), "state_dict"


# ---------------------------------------------------------------------------------------------------------- volume

def ct_volume(path: Path) -> np.ndarray:
    """A CT case as float32: HU clipped to [-1000, 1000], divided by 1000."""
    import nibabel as nib

    data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SystemExit(f"error: {path} has shape {data.shape}; a single-channel 3D volume is needed")
    np.clip(data, -1000.0, 1000.0, out=data)
    data /= 1000.0
    return data


def smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Coarse seeded noise (one value per 16 voxels) upsampled trilinearly, scaled into [-1, 1]."""
    import torch.nn.functional as F

    coarse = torch.randn(1, 1, *(n // 16 + 2 for n in shape), generator=torch.Generator().manual_seed(seed))
    volume = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0]
    volume.mul_(0.5).clamp_(-1.0, 1.0)
    return volume.numpy()


def centre_crop(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    starts = [max((n - s) // 2, 0) for n, s in zip(volume.shape, shape)]
    return np.ascontiguousarray(volume[tuple(slice(a, a + s) for a, s in zip(starts, shape))])


# ----------------------------------------------------------------------------------------------------------- child

def argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    """uint8 argmax over the channels of (K, X, Y, Z) logits, ARGMAX_SLAB planes of X at a time (no int64 volume)."""
    labels = torch.empty(logits.shape[1:], dtype=torch.uint8)
    for start in range(0, logits.shape[1], ARGMAX_SLAB):
        chunk = logits[:, start:start + ARGMAX_SLAB]
        # one pass per channel (the first of equal values wins, as argmax): torch's argmax over the channel axis
        # reduces across a large stride and costs ten times as long on a CPU, which would charge the tools that
        # return logits for more than their inference (segkit's labels use the same loop)
        best, index = chunk[0].clone(), torch.zeros(chunk.shape[1:], dtype=torch.uint8)
        for k in range(1, chunk.shape[0]):
            index.masked_fill_(chunk[k] > best, k)
            torch.maximum(best, chunk[k], out=best)
        labels[start:start + ARGMAX_SLAB] = index
    return labels


def run_child(args: argparse.Namespace) -> None:
    """One tool, one volume, in this fresh process; writes child-TOOL.json and labels-TOOL.npy into --work."""
    tool, work, patch = args.child, args.work, tuple(args.patch)
    torch.set_num_threads(args.threads)
    note, version = "", None
    if tool.startswith("segkit"):
        import segkit
        import segkit.inference.sliding_window as sw

        version = segkit.__version__
        if tool == "segkit-logits":
            note = "sliding_window_logits + argmax"
        elif not hasattr(sw, "sliding_window_labels"):
            note = "logits fallback"
            print("warning: segkit.inference.sliding_window has no sliding_window_labels yet; timing "
                  "sliding_window_logits(...) + argmax instead", file=sys.stderr, flush=True)
    elif tool.startswith("monai"):
        import monai
        from monai.inferers import sliding_window_inference

        version = monai.__version__
    elif tool == "nnunet":
        from importlib.metadata import version as installed_version
        from types import SimpleNamespace

        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        version = installed_version("nnunetv2")
    model, loaded_as = load_model(work)
    if tool == "segkit-channels-last":  # what `segkit predict` does to a 3D model on the CPU
        from segkit.inference.memory_format import prefer_channels_last

        model = prefer_channels_last(model, "cpu")
        note = "model weights channels-last (segkit predict on a CPU)"
    counted = Counted(model).eval()
    after_load = proc_status_kib("VmHWM")

    warm_batch = 1 if tool == "nnunet" else args.batch_size
    with torch.inference_mode():
        for _ in range(2):
            counted(torch.zeros(warm_batch, 1, *patch))
    after_warmup = proc_status_kib("VmHWM")
    counted.windows = counted.calls = 0
    counted.seconds = 0.0

    volume = np.load(work / "volume.npy")
    image = torch.from_numpy(volume)[None]  # (1, X, Y, Z): one channel
    rss_with_volume = proc_status_kib("VmRSS")
    started = time.perf_counter()
    with torch.inference_mode():
        if tool.startswith("segkit"):
            if tool == "segkit-logits" or note == "logits fallback":
                logits = sw.sliding_window_logits(counted, image, patch, overlap=args.overlap,
                                                  batch_size=args.batch_size, gaussian=True, sigma_scale=SIGMA_SCALE)
                labels = argmax_labels(logits)
                del logits
            else:
                labels = sw.sliding_window_labels(counted, image, patch, overlap=args.overlap,
                                                  batch_size=args.batch_size, gaussian=True, sigma_scale=SIGMA_SCALE)
        elif tool.startswith("monai"):
            buffered = {"buffer_steps": 1, "buffer_dim": -1} if tool == "monai-buffered" else {}
            logits = sliding_window_inference(image[None], patch, args.batch_size, counted, overlap=args.overlap,
                                              mode="gaussian", sigma_scale=SIGMA_SCALE, sw_device="cpu",
                                              device="cpu", **buffered)
            labels = argmax_labels(logits[0])
            del logits
        else:
            predictor = nnUNetPredictor(tile_step_size=1.0 - args.overlap, use_gaussian=True, use_mirroring=False,
                                        perform_everything_on_device=False, device=torch.device("cpu"),
                                        verbose=False, allow_tqdm=False)
            # The attributes predict_sliding_window_return_logits reads, instead of a trained model folder:
            predictor.network = counted
            predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
            predictor.label_manager = SimpleNamespace(num_segmentation_heads=CLASSES)
            predictor.allowed_mirroring_axes = None  # only read with use_mirroring=True
            logits = predictor.predict_sliding_window_return_logits(image)  # (K, X, Y, Z) float16
            labels = argmax_labels(logits)
            del logits
    seconds = time.perf_counter() - started
    peak = proc_status_kib("VmHWM")
    if labels.dtype != torch.uint8 or tuple(labels.shape) != volume.shape:
        raise SystemExit(f"error: {tool} returned {labels.dtype} {tuple(labels.shape)}, not uint8 {volume.shape}")
    np.save(work / f"labels-{tool}.npy", labels.numpy())
    result = {
        "tool": tool, "note": note, "seconds": seconds, "windows": counted.windows, "model_calls": counted.calls,
        "model_seconds": counted.seconds,
        "hwm_after_load_mib": after_load / 1024, "hwm_after_warmup_mib": after_warmup / 1024,
        "rss_with_volume_mib": rss_with_volume / 1024, "peak_hwm_mib": peak / 1024,
        "model_loaded_as": loaded_as, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": sys.version.split()[0], "tool_version": version,
    }
    (work / f"child-{tool}.json").write_text(json.dumps(result, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------- parent

def child_env(args: argparse.Namespace) -> dict[str, str]:
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # unused; set so nnU-Net does not warn
        env.setdefault(name, str(args.work / "nnunet-unused"))
    return env


def run_tool(tool: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh child for ``tool``; its JSON, or {"error": ...}."""
    python = str(args.nnunet_python) if tool == "nnunet" else sys.executable
    if tool == "nnunet" and not Path(python).is_file():
        return {"tool": tool, "error": f"no nnU-Net Python at {python} (--nnunet-python)"}
    (args.work / f"child-{tool}.json").unlink(missing_ok=True)
    command = [python, str(Path(__file__).resolve()), "--child", tool, "--work", str(args.work),
               "--patch", *map(str, args.patch), "--overlap", str(args.overlap),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    started = time.perf_counter()
    done = subprocess.run(command, env=child_env(args), capture_output=True, text=True, timeout=args.child_timeout)
    wall = time.perf_counter() - started
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    for line in warnings:
        print(f"  {LABELS[tool]}: {line}", flush=True)
    record = args.work / f"child-{tool}.json"
    if done.returncode != 0 or not record.is_file():
        tail = (done.stdout + done.stderr)[-2000:]
        return {"tool": tool, "error": f"exit {done.returncode}: {tail}"}
    result = json.loads(record.read_text())
    result["process_wall_seconds"] = wall
    return result


def run_segkit_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``segkit predict RUN IMAGE --out DIR`` in a child under /usr/bin/time -v: wall seconds and max RSS."""
    segkit = Path(sys.executable).parent / "segkit"
    if not segkit.is_file():
        segkit = Path(shutil.which("segkit") or "segkit")
    out = args.work / "segkit-cli-out"
    command = [str(segkit), "predict", str(args.segkit_run), str(args.image), "--out", str(out), "--overwrite",
               "--device", "cpu", "--no-tta", "--quiet", "--batch-size", str(args.batch_size)]
    timer = Path("/usr/bin/time")
    started = time.perf_counter()
    if timer.is_file():
        done = subprocess.run([str(timer), "-v", *command], env=child_env(args), capture_output=True, text=True,
                              timeout=args.child_timeout)
        seconds = time.perf_counter() - started
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        peak = int(found.group(1)) / 1024 if found else float("nan")
        how = "/usr/bin/time -v"
    else:  # poll the child's VmHWM until it exits
        process = subprocess.Popen(command, env=child_env(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        peak_kib = 0
        while process.poll() is None:
            try:
                text = Path(f"/proc/{process.pid}/status").read_text()
                peak_kib = max(peak_kib, int(re.search(r"VmHWM:\s+(\d+)", text).group(1)))
            except (OSError, AttributeError):
                pass
            time.sleep(0.05)
        stdout, stderr = process.communicate()
        done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        seconds = time.perf_counter() - started
        peak, how = peak_kib / 1024, "polled /proc/PID/status VmHWM"
    if done.returncode != 0:
        return {"tool": "segkit-cli", "error": f"exit {done.returncode}: {(done.stdout + done.stderr)[-2000:]}"}
    return {"tool": "segkit-cli", "seconds": seconds, "peak_hwm_mib": peak, "peak_measured_by": how,
            "command": " ".join(command), "note": "own model, patch and normalisation; whole CLI run"}


def agreement(work: Path, tools: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Share of voxels where each tool's label map equals segkit's; segkit's share of each label."""
    reference_path = work / "labels-segkit.npy"
    if not reference_path.is_file():
        return {}, {}
    reference = np.load(reference_path)
    shares = {str(label): float(np.count_nonzero(reference == label)) / reference.size for label in range(CLASSES)}
    agree = {}
    for tool in tools:
        path = work / f"labels-{tool}.npy"
        if tool != "segkit" and path.is_file():
            agree[tool] = float(np.count_nonzero(np.load(path) == reference)) / reference.size
    return agree, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="a CT case (.nii.gz, HU); default: a synthetic volume of --shape")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 400), help="synthetic volume size")
    parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128),
                        help="window size (multiples of 8, the U-Net's downsampling)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=2, help="windows per model call (nnU-Net: always 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every child")
    parser.add_argument("--tools", nargs="+", choices=TOOLS + OPTIONAL_TOOLS, default=list(TOOLS),
                        help="which rows (default: the four; segkit-logits adds segkit's whole-logits path)")
    parser.add_argument("--nnunet-python", type=Path, default=Path("/work/nnunet-venv/bin/python"),
                        help="Python of the venv with nnunetv2")
    parser.add_argument("--segkit-run", type=Path, help="also time `segkit predict RUN_DIR IMAGE` (needs --image)")
    parser.add_argument("--work", type=Path, help="folder for the model, volume and label maps "
                                                  "(default runs/inference-at-scale[-quick])")
    parser.add_argument("--child-timeout", type=float, default=None, help="seconds before a child is stopped")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--clean", action="store_true", help="delete volume.npy and the label maps at the end")
    parser.add_argument("--quick", action="store_true", help="96x96x64, patch 32x64x64: checks the script works")
    parser.add_argument("--child", choices=TOOLS + OPTIONAL_TOOLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if args.segkit_run and not args.image:
        parser.error("--segkit-run needs --image")
    if args.quick:
        args.shape, args.patch = (96, 96, 64), (32, 64, 64)
    args.work = (args.work or REPO / "runs" / ("inference-at-scale-quick" if args.quick else "inference-at-scale")
                 ).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    patch = tuple(args.patch)
    if any(n % 2 ** (len(FEATURES) - 1) for n in patch):
        parser.error(f"--patch {patch}: every size must be a multiple of {2 ** (len(FEATURES) - 1)}")
    torch.set_num_threads(args.threads)

    if args.image:
        volume = ct_volume(args.image)
        image_shape = tuple(volume.shape)  # what `segkit predict` reads whole
        source = f"{args.image} (HU clipped to [-1000, 1000], / 1000)"
        if args.quick:
            volume = centre_crop(volume, tuple(args.shape))
            source += f", centre {'x'.join(map(str, volume.shape))}"
    else:
        volume = smooth_volume(tuple(args.shape))
        source = "synthetic smooth noise (seed 0) in [-1, 1]"
    shape = tuple(volume.shape)
    volume_bytes = volume.size * 4
    np.save(args.work / "volume.npy", volume.astype(np.float32, copy=False))
    del volume
    model_info = save_model(args.work, patch, args.batch_size)
    print(f"volume {'x'.join(map(str, shape))} ({volume_bytes / MIB:.0f} MiB float32) from {source}; patch "
          f"{'x'.join(map(str, patch))}, overlap {args.overlap}, batch {args.batch_size}, {args.threads} threads; "
          f"{model_info['parameters']:,} parameters", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for tool in args.tools:
        result = run_tool(tool, args)
        results[tool] = result
        if "error" in result:
            print(f"  {LABELS[tool]}: FAILED {result['error']}", flush=True)
        else:
            print(f"  {LABELS[tool]}: {result['seconds']:.1f} s, {result['windows']} windows, peak "
                  f"{result['peak_hwm_mib']:.0f} MiB", flush=True)
    if args.segkit_run:
        results["segkit-cli"] = run_segkit_cli(args)
        cli = results["segkit-cli"]
        print(f"  {LABELS['segkit-cli']}: " + (f"FAILED {cli['error']}" if "error" in cli else
                                               f"{cli['seconds']:.1f} s, peak {cli['peak_hwm_mib']:.0f} MiB"),
              flush=True)
    agree, shares = agreement(args.work, args.tools)

    base = results.get("segkit", {}).get("seconds", float("nan"))
    base_outside = base - results.get("segkit", {}).get("model_seconds", float("nan"))
    cli_bytes = 4 * math.prod(image_shape) if args.image else volume_bytes
    rows = []
    for tool, r in results.items():
        name = LABELS[tool] + (" (logits fallback)" if tool == "segkit" and r.get("note") else "")
        if "error" in r:
            rows.append([name, "failed"] + [""] * 12)
            continue
        peak = r["peak_hwm_mib"]
        load = r.get("hwm_after_load_mib")
        if tool == "segkit-cli":  # its own model and the whole --image: no baseline, ratio or agreement
            rows.append([name, r["seconds"], None, None, None, None, None, peak, None, peak * MIB / cli_bytes, None,
                         None, None])
            continue
        outside = r["seconds"] - r.get("model_seconds", float("nan"))
        warm = r.get("hwm_after_warmup_mib")
        rows.append([name, r["seconds"], r.get("model_seconds"), outside, r.get("windows"), load, warm, peak,
                     (peak - warm) * MIB / volume_bytes if warm is not None else None, peak * MIB / volume_bytes,
                     r["seconds"] / base if not math.isnan(base) else float("nan"),
                     outside / base_outside if not math.isnan(base_outside) else float("nan"),
                     1.0 if tool == "segkit" else agree.get(tool)])
    headers = ["tool", "seconds", "in the model s", "outside the model s", "windows", "after load MiB",
               "after warm-up MiB", "peak MiB", "(peak - after warm-up) / volume", "peak / volume", "time / segkit",
               "outside / segkit's", "agrees with segkit"]
    table = markdown_table(headers, rows)
    print()
    print(table)
    import monai

    versions = {tool: r.get("tool_version") for tool, r in results.items() if r.get("tool_version")}
    nn_torch = results.get("nnunet", {}).get("torch")
    print(f"\nvolume {'x'.join(map(str, shape))} = {volume_bytes / MIB:.0f} MiB float32 ({source}); "
          f"{model_info['architecture']}, random weights, TorchScript; patch {'x'.join(map(str, patch))}, overlap "
          f"{args.overlap}, Gaussian sigma {SIGMA_SCALE} x patch, {args.batch_size} windows per call (nnU-Net 1), "
          f"{args.threads} threads, one fresh process per tool. MiB are VmHWM (peak resident); 'after load' is "
          f"imports + model, 'after warm-up' adds two model calls on one batch. segkit's labels: "
          + ", ".join(f"{label}: {share:.1%}" for label, share in shares.items())
          + f". MONAI {monai.__version__}" + (f", nnU-Net {versions['nnunet']} (torch {nn_torch})"
                                              if "nnunet" in versions else ""))
    if "segkit-cli" in results:
        how = results["segkit-cli"].get("peak_measured_by")
        print(f"segkit predict (CLI): the run's own model, window and normalisation on the whole --image "
              f"({'x'.join(map(str, image_shape))}), start to exit; peak by {how}")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": info, "monai": monai.__version__,
            "settings": {"shape": list(shape), "volume_bytes": volume_bytes, "source": source, "patch": list(patch),
                         "overlap": args.overlap, "batch_size": args.batch_size, "sigma_scale": SIGMA_SCALE,
                         "threads": args.threads, "quick": args.quick, "argmax_slab_planes": ARGMAX_SLAB,
                         "image_shape": list(image_shape) if args.image else None},
            "model": model_info, "results": results, "agreement_with_segkit": agree, "segkit_label_shares": shares,
            "table": table,
        }, indent=2) + "\n")
    if args.clean:
        for path in [args.work / "volume.npy", *args.work.glob("labels-*.npy")]:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
