"""Where should the tutorial U-Net's GPU training time go? A FLOP/byte (roofline) estimate, not a measurement.

Analytic: nothing runs on a GPU and the machine the script runs on does not matter. The
tutorial U-Net (``segkit_builtins.models.unet.UNet``) is built on PyTorch's ``meta``
device and one forward pass is traced with forward hooks (every Conv2d, ReLU, MaxPool2d
and Upsample call, in order). ``torch.cat`` is a functional call in ``UNet.forward``, so
the three concatenations are added by hand from that method: after the i-th upsample
comes ``cat([upsample(x), skip], dim=1)`` with skips ``dconv_down3``, ``dconv_down2``,
``dconv_down1`` (checked against the next convolution's input channels). Convolution
FLOPs are cross-checked per module against ``torch.utils.flop_counter.FlopCounterMode``
on a forward+backward of the meta model.

Every layer is split into the kernels eager PyTorch runs for it on CUDA (bf16 autocast,
channels_last), each with FLOPs and bytes moved for the whole batch at ``--dtype-bytes``
per element:

- conv: fprop (reads input + weight, writes output), dgrad (reads grad-output + weight,
  writes grad-input; not for the first conv, whose input needs no gradient), wgrad (reads
  input + grad-output, writes grad-weight). FLOPs: 2 x MACs each, so fwd+bwd = 3 x fwd.
- bias: PyTorch's cuDNN path adds the bias after the convolution (``output.add_(bias)``,
  reads + writes the output); backward sums the grad-output over N, H, W.
- ReLU (in place): reads + writes; backward (``threshold_backward``) reads grad-output and
  the saved output (the mask), writes grad-input.
- MaxPool2d 2x2: on CUDA it always runs ``max_pool2d_with_indices``: reads the input,
  writes the output and int64 indices (8 bytes each); backward reads grad-output and
  indices, writes grad-input.
- Upsample (bilinear, ``align_corners=True``): reads input, writes output; backward zero-fills
  grad-input, then scatters every grad-output element into 4 grad-input elements with
  atomicAdd. Its bytes are counted as if the atomics cost one read-modify-write of grad-input
  (ideal L2 caching), but atomicAdd on bf16/fp16 is a known slow path (pytorch/pytorch
  issues 57707 and 140096; also 48163, 60724) that a byte count cannot see: the row is flagged, and
  ``--atomic-slowdown`` shows what it costs if it runs k times slower than its roofline.
- cat: reads both inputs, writes the output; backward returns views (slices) of the
  grad, and the upsample's slice is copied to a contiguous tensor by the upsample backward
  (counted here as the cat's backward copy).
- skip-gradient accumulation: ``dconv_down1..3`` outputs feed both a max pool and a cat,
  so autograd adds their two gradients (reads 2, writes 1).
- per step: the fp32 input cast to bf16, autocast's weight casts (fp32 -> bf16 forward,
  bf16 -> fp32 grads backward), and Adam's foreach update in fp32. The loss is not modelled
  (a few passes over N x 1 x H x W logits: well under 1%), nor is the edge-replication pad that
  ``forward`` adds for sizes that are not multiples of 8.

Each kernel's roofline time is max(FLOPs / peak, bytes / bandwidth) for the batch; a
layer's time is the sum over its kernels. Bytes assume each tensor crosses HBM once per
kernel (no halo re-reads, no L2 reuse across kernels: at batch 64 most activations are
larger than the H100's 50 MB L2). So the bound is optimistic for every kernel: real kernels
reach a fraction of peak and bandwidth.

It then prices candidate changes that keep the model's math: conv + bias + ReLU fused,
conv backward epilogues, upsample + cat fused into the next conv's input, an atomic-free
upsample backward (or the upsample run in fp32 instead), fused skip-gradient accumulation,
1-byte max-pool indices, and CUDA graphs (launch overhead from the kernel count at
``--launch-us`` each), and asks what the convolutions' efficiency would have to be for
``--target-share`` of peak.

    .venv/bin/python benchmarks/unet_roofline.py [--image-size 256] [--batch-size 64] [--width 64]
        [--peak-tflops 989] [--bandwidth-tbs 3.35] [--dtype-bytes 2] [--json FILE]

Prints markdown tables and a summary; ``--json`` writes every layer and kernel.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from common import markdown_table

#: The skip tensor of each torch.cat in UNet.forward, in call order (read from the forward method):
#: cat([upsample(x), conv3]), cat([upsample(x), conv2]), cat([upsample(x), conv1]).
CAT_SKIPS = ["dconv_down3", "dconv_down2", "dconv_down1"]
#: The encoder outputs used twice (max pool and cat): their gradients are accumulated in backward.
SKIP_BLOCKS = {"dconv_down1", "dconv_down2", "dconv_down3"}
#: Kinds of layer counted as memory-bound element-wise work (everything but convolutions).
ELEMENTWISE = ("bias", "relu", "maxpool", "upsample", "cat", "grad-accum")

INDEX_BYTES = 8  # max_pool2d_with_indices stores int64 indices
FP32 = 4


@dataclass
class Kernel:
    """One GPU kernel (or one pass) of a layer, for the whole batch."""

    phase: str  # "fwd", "bwd" or "step"
    role: str  # e.g. "fprop", "dgrad", "relu_bwd": what the scenarios match on
    flops: float
    parts: dict[str, float]  # bytes moved, by tensor
    flag: str = ""

    @property
    def bytes(self) -> float:
        return sum(self.parts.values())

    def time(self, peak: float, bandwidth: float) -> float:
        return max(self.flops / peak, self.bytes / bandwidth)

    def memory_bound(self, peak: float, bandwidth: float) -> bool:
        return self.bytes / bandwidth >= self.flops / peak


@dataclass
class Layer:
    name: str
    kind: str  # conv, bias, relu, maxpool, upsample, cat, grad-accum, step
    shape: tuple[int, ...]  # output shape of the whole batch
    kernels: list[Kernel]
    info: dict[str, Any] = field(default_factory=dict)

    def flops(self, phase: str | None = None) -> float:
        return sum(k.flops for k in self.kernels if phase is None or k.phase == phase)

    def bytes(self, phase: str | None = None) -> float:
        return sum(k.bytes for k in self.kernels if phase is None or k.phase == phase)

    def time(self, peak: float, bandwidth: float) -> float:
        return sum(k.time(peak, bandwidth) for k in self.kernels)

    def bound(self, peak: float, bandwidth: float) -> str:
        kinds = {k.memory_bound(peak, bandwidth) for k in self.kernels}
        if kinds == {True}:
            return "memory"
        if kinds == {False}:
            return "compute"
        return "mixed"

    @property
    def flagged(self) -> str:
        return ", ".join(sorted({k.flag for k in self.kernels if k.flag}))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------- tracing the model


def trace(model: nn.Module, batch: int, image_size: int, in_channels: int) -> list[tuple[str, nn.Module, tuple, tuple]]:
    """Forward on the meta device; the leaf-module calls and the encoder blocks' outputs, in order."""
    events: list[tuple[str, nn.Module, tuple, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Upsample)) or name in SKIP_BLOCKS:
            def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
                events.append((name, mod, tuple(inputs[0].shape), tuple(output.shape)))
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.empty(batch, in_channels, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return events


def conv_layers(name: str, conv: nn.Conv2d, x: tuple, y: tuple, b: int, first: bool) -> list[Layer]:
    kh, kw = conv.kernel_size
    flops = 2.0 * numel(y) * (conv.in_channels // conv.groups) * kh * kw
    ex, ey, ew = numel(x), numel(y), conv.weight.numel()
    kernels = [Kernel("fwd", "fprop", flops, {"x": b * ex, "w": b * ew, "y": b * ey})]
    if not first:
        kernels.append(Kernel("bwd", "dgrad", flops, {"dy": b * ey, "w": b * ew, "dx": b * ex}))
    kernels.append(Kernel("bwd", "wgrad", flops, {"x": b * ex, "dy": b * ey, "dw": b * ew}))
    layers = [Layer(name, "conv", y, kernels, {"in_shape": x, "weight": tuple(conv.weight.shape)})]
    if conv.bias is not None:
        layers.append(Layer(f"{name} bias", "bias", y, [
            Kernel("fwd", "bias_fwd", ey, {"y read": b * ey, "y write": b * ey}),
            Kernel("bwd", "bias_bwd", ey, {"dy": b * ey, "db": b * conv.out_channels}),
        ]))
    return layers


def build_layers(model: nn.Module, args: argparse.Namespace) -> list[Layer]:
    """Every layer of one training step in forward order, with its forward and backward kernels."""
    b = args.dtype_bytes
    events = trace(model, args.batch_size, args.image_size, args.in_channels)
    block_out = {name: y for name, _, _, y in events if name in SKIP_BLOCKS}
    layers: list[Layer] = []
    first_conv = True
    pools = ups = 0
    pending_cat: Layer | None = None
    for name, module, x, y in events:
        if name in SKIP_BLOCKS:
            e = numel(y)
            layers.append(Layer(f"{name} skip grad +=", "grad-accum", y, [
                Kernel("bwd", "accum", e, {"grad a": b * e, "grad b": b * e, "sum": b * e})],
                {"note": "output used by maxpool and cat: autograd adds the two gradients"}))
            continue
        if isinstance(module, nn.Conv2d):
            if pending_cat is not None:
                if x != pending_cat.shape:
                    raise SystemExit(f"cat by hand gives {pending_cat.shape}, but {name} gets {x}: "
                                     "UNet.forward changed, update CAT_SKIPS")
                pending_cat = None
            new = conv_layers(name, module, x, y, b, first_conv)
            # a conv fed by a cat: remember the parts, for the "upsample+cat into the conv" scenario
            if layers and layers[-1].kind == "cat":
                new[0].info["cat_parts"] = layers[-1].info["parts"]
            layers += new
            first_conv = False
        elif isinstance(module, nn.ReLU):
            e = numel(y)
            layers.append(Layer(name, "relu", y, [
                Kernel("fwd", "relu_fwd", e, {"x": b * e, "y (in place)": b * e}),
                Kernel("bwd", "relu_bwd", e, {"dy": b * e, "mask (saved y)": b * e, "dx": b * e}),
            ]))
        elif isinstance(module, nn.MaxPool2d):
            pools += 1
            ex, ey = numel(x), numel(y)
            layers.append(Layer(f"maxpool#{pools}", "maxpool", y, [
                Kernel("fwd", "pool_fwd", 3.0 * ey, {"x": b * ex, "y": b * ey, "indices": INDEX_BYTES * ey}),
                Kernel("bwd", "pool_bwd", ey, {"dy": b * ey, "indices": INDEX_BYTES * ey, "dx": b * ex}),
            ], {"in_shape": x}))
        elif isinstance(module, nn.Upsample):
            ups += 1
            ex, ey = numel(x), numel(y)
            layers.append(Layer(f"upsample#{ups}", "upsample", y, [
                Kernel("fwd", "up_fwd", 9.0 * ey, {"x": b * ex, "y": b * ey}),
                Kernel("bwd", "up_zero", 0.0, {"dx zero-fill": b * ex}),
                Kernel("bwd", "up_scatter", 12.0 * ey, {"dy": b * ey, "dx read": b * ex, "dx write": b * ex},
                       flag="atomicAdd scatter (bf16/fp16 slow path)"),
            ], {"in_shape": x}))
            skip_name = CAT_SKIPS[ups - 1]
            skip = block_out[skip_name]
            out = (y[0], y[1] + skip[1], *y[2:])
            eu, es, eo = numel(y), numel(skip), numel(out)
            pending_cat = Layer(f"cat[upsample#{ups}, {skip_name}]", "cat", out, [
                Kernel("fwd", "cat_fwd", 0.0, {"upsampled": b * eu, "skip": b * es, "y": b * eo}),
                Kernel("bwd", "cat_bwd", 0.0, {"dy slice": b * eu, "contiguous copy": b * eu}),
            ], {"parts": {"low-res": numel(x), "skip": es}})
            layers.append(pending_cat)
        else:  # pragma: no cover
            raise AssertionError(type(module))
    if pending_cat is not None:
        raise SystemExit("a cat is not followed by a convolution: UNet.forward changed")
    return layers


def step_layers(model: nn.Module, args: argparse.Namespace) -> list[Layer]:
    """Per-step work outside the layers: input cast, autocast's weight casts, Adam (foreach, fp32)."""
    b = args.dtype_bytes
    params = [p for p in model.parameters()]
    count = sum(p.numel() for p in params)
    ex = args.batch_size * args.in_channels * args.image_size ** 2
    shape = (args.batch_size, args.in_channels, args.image_size, args.image_size)
    layers = [Layer("input cast fp32 -> bf16", "step", shape,
                    [Kernel("step", "cast", 0.0, {"x fp32": FP32 * ex, "x bf16": b * ex})])]
    casts = [Kernel("fwd", "cast", 0.0, {"w fp32": FP32 * p.numel(), "w bf16": b * p.numel()}) for p in params]
    casts += [Kernel("bwd", "cast", 0.0, {"dw bf16": b * p.numel(), "dw fp32": FP32 * p.numel()}) for p in params]
    layers.append(Layer(f"autocast weight casts ({len(params)} tensors)", "step", (count,), casts))
    # torch.optim.Adam(foreach) with weight_decay 0: lerp_(m, g), mul_(v), addcmul_(v, g, g), sqrt(v),
    # div_(bias correction), add_(eps), addcdiv_(p, m, denom): bytes per parameter, fp32
    adam = {"lerp m": 12, "mul v": 8, "addcmul v": 12, "sqrt": 8, "div_": 8, "add_ eps": 8, "addcdiv p": 16}
    layers.append(Layer("Adam step (foreach, fp32 state)", "step", (count,),
                        [Kernel("step", "optim", 2.0 * count, {op: n * count for op, n in adam.items()})],
                        {"launches": len(adam)}))
    return layers


def check_flops(model: nn.Module, layers: list[Layer], args: argparse.Namespace) -> dict[str, Any]:
    """Conv FLOPs from the layer walk vs FlopCounterMode on a meta forward+backward, per module."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(args.batch_size, args.in_channels, args.image_size, args.image_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().sum().backward()
    counts = counter.get_flop_counts()
    worst = 0.0
    for layer in layers:
        if layer.kind != "conv":
            continue
        ours = layer.flops()
        theirs = sum(counts.get(f"{type(model).__name__}.{layer.name}", {}).values())
        worst = max(worst, abs(ours - theirs) / max(theirs, 1.0))
    total = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return {"flop_counter_total": float(total), "max_relative_difference_per_conv": worst}


# ---------------------------------------------------------------- scenarios


def _drop(roles: set[str]) -> Callable[[list[Layer]], None]:
    def apply(layers: list[Layer]) -> None:
        for layer in layers:
            layer.kernels = [k for k in layer.kernels if k.role not in roles]
    return apply


def _bwd_epilogues(layers: list[Layer]) -> None:
    for layer in layers:
        layer.kernels = [k for k in layer.kernels if k.role != "bias_bwd"]  # summed in wgrad's epilogue
        for k in layer.kernels:
            if k.role == "relu_bwd":  # in the epilogue of the kernel producing the grad: only the mask read stays
                k.parts = {"mask (saved y)": k.parts["mask (saved y)"]}


def _upsample_cat_into_conv(layers: list[Layer], b: int) -> None:
    _drop({"up_fwd", "cat_fwd", "cat_bwd"})(layers)
    for layer in layers:
        parts = layer.info.get("cat_parts")
        if layer.kind == "conv" and parts:
            batch_elems = sum(parts.values())  # low-res + skip, read instead of the concatenated tensor
            for k in layer.kernels:
                if k.role in ("fprop", "wgrad"):
                    k.parts["x"] = b * batch_elems


def _gather_upsample_bwd(layers: list[Layer]) -> None:
    _drop({"up_zero"})(layers)
    for layer in layers:
        for k in layer.kernels:
            if k.role == "up_scatter":
                k.role, k.flag = "up_gather", ""
                k.parts = {"dy": k.parts["dy"], "dx write": k.parts["dx write"]}


def _fused_accumulation(layers: list[Layer]) -> None:
    accum = {layer.shape: layer for layer in layers if layer.kind == "grad-accum"}
    for layer in layers:
        if layer.kind == "maxpool" and layer.info["in_shape"] in accum:
            for k in layer.kernels:
                if k.role == "pool_bwd":  # reads the cat's grad slice and writes the sum
                    k.parts["other grad"] = k.parts["dx"]
    _drop({"accum"})(layers)


def _byte_indices(layers: list[Layer]) -> None:
    for layer in layers:
        for k in layer.kernels:
            if "indices" in k.parts:
                k.parts["indices"] /= INDEX_BYTES  # window position 0..3 in one byte


def _fp32_upsample(layers: list[Layer], b: int) -> None:
    """Cast the low-res tensor to fp32, upsample (and its backward) in fp32, cast back: fp32 atomics, more bytes."""
    for layer in layers:
        if layer.kind != "upsample":
            continue
        ex, ey = numel(layer.info["in_shape"]), numel(layer.shape)
        layer.kernels = [
            Kernel("fwd", "cast", 0.0, {"x": b * ex, "x fp32": FP32 * ex}),
            Kernel("fwd", "up_fwd", 9.0 * ey, {"x fp32": FP32 * ex, "y fp32": FP32 * ey}),
            Kernel("fwd", "cast", 0.0, {"y fp32": FP32 * ey, "y": b * ey}),
            Kernel("bwd", "cast", 0.0, {"dy": b * ey, "dy fp32": FP32 * ey}),
            Kernel("bwd", "up_zero", 0.0, {"dx zero-fill": FP32 * ex}),
            Kernel("bwd", "up_scatter_fp32", 12.0 * ey,
                   {"dy": FP32 * ey, "dx read": FP32 * ex, "dx write": FP32 * ex}, flag="fp32 atomicAdd scatter"),
            Kernel("bwd", "cast", 0.0, {"dx fp32": FP32 * ex, "dx": b * ex}),
        ]


def scenarios(b: int) -> list[tuple[str, str, Callable[[list[Layer]], None], bool]]:
    """(title, how, apply, part of the combined 'all' scenario)."""
    return [
        ("conv+bias+ReLU fused (forward epilogue)",
         "a conv kernel with a bias+ReLU epilogue (cuDNN graph-API runtime fusion, CUTLASS or Triton; not checked for "
         "these shapes): the bias add's and ReLU's separate read+write passes go",
         _drop({"bias_fwd", "relu_fwd"}), True),
        ("conv backward epilogues (dReLU into the grad producer, bias grad into wgrad)",
         "ReLU backward keeps only the mask read, inside the kernel that produces its grad; the bias-grad pass over dy "
         "goes (needs fused dgrad/wgrad kernels: not off the shelf in eager PyTorch)",
         _bwd_epilogues, True),
        ("upsample+cat fused into the next conv's input",
         "a conv whose input loader interpolates the low-res tensor and reads the skip directly (custom "
         "implicit-GEMM prologue): no upsampled or concatenated tensor, no grad-slice copy",
         lambda layers: _upsample_cat_into_conv(layers, b), True),
        ("upsample backward as an atomic-free gather",
         "each grad-input element sums its ~4x4 grad-output window: no zero-fill, no atomics "
         "(the atomic penalty itself is not in the roofline: see --atomic-slowdown)",
         _gather_upsample_bwd, True),
        ("skip-grad accumulation fused into maxpool backward",
         "max-pool backward adds the cat's grad slice as it writes",
         _fused_accumulation, True),
        ("maxpool with 1-byte window indices",
         "the 2x2 window position in int8 instead of int64 indices",
         _byte_indices, True),
        ("upsample in fp32 (casts around it; the alternative to the gather)",
         "fp32 atomics, which issue threads report much faster than bf16/fp16 ones (NVIDIA apex ran interpolation in "
         "fp32 for this reason), at the price of casts and twice the bytes: a cost in the roofline",
         lambda layers: _fp32_upsample(layers, b), False),
    ]


# ---------------------------------------------------------------- report


def totals(layers: list[Layer], peak: float, bandwidth: float) -> dict[str, float]:
    time = sum(layer.time(peak, bandwidth) for layer in layers)
    conv_time = sum(layer.time(peak, bandwidth) for layer in layers if layer.kind == "conv")
    elementwise_time = sum(layer.time(peak, bandwidth) for layer in layers if layer.kind in ELEMENTWISE)
    return {
        "time_s": time,
        "conv_time_s": conv_time,
        "elementwise_time_s": elementwise_time,
        "step_extras_time_s": time - conv_time - elementwise_time,
        "bytes": sum(layer.bytes() for layer in layers),
        "launches": sum(len(layer.kernels) if layer.kind != "step" or "launches" not in layer.info
                        else layer.info["launches"] for layer in layers),
    }


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="U-Net width w (the tutorial's 64)")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="HBM bandwidth in TB/s (H100 SXM HBM3: 3.35)")
    parser.add_argument("--dtype-bytes", type=int, default=2, help="bytes per activation element (bf16: 2)")
    parser.add_argument("--measured-images-per-second", type=float, default=789.0,
                        help="the reported eager measurement to compare with (789 images/s, H100, batch 64)")
    parser.add_argument("--target-share", type=float, default=0.35, help="the goal, as a share of peak")
    parser.add_argument("--mem-efficiency", type=float, default=0.8,
                        help="assumed share of --bandwidth-tbs real element-wise kernels reach, for the target check")
    parser.add_argument("--atomic-slowdown", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0],
                        help="if the atomic upsample backward ran k times slower than its roofline: what then")
    parser.add_argument("--launch-us", type=float, default=5.0, help="CPU cost of one kernel launch in microseconds")
    parser.add_argument("--top", type=int, default=12, help="rows in the 'largest layers' table")
    parser.add_argument("--json", type=Path, help="write everything here")
    args = parser.parse_args()

    from segkit_builtins.models.unet import UNet

    peak = args.peak_tflops * 1e12
    bandwidth = args.bandwidth_tbs * 1e12
    n = args.batch_size
    with torch.device("meta"):
        model = UNet(in_channels=args.in_channels, classes=args.classes, width=args.width)
    parameters = sum(p.numel() for p in model.parameters())
    layers = build_layers(model, args)
    extras = step_layers(model, args)
    check = check_flops(model, layers, args)
    everything = layers + extras
    base = totals(everything, peak, bandwidth)
    step_time = base["time_s"]

    conv_flops = sum(layer.flops() for layer in layers if layer.kind == "conv")
    conv_fwd_flops = sum(layer.flops("fwd") for layer in layers if layer.kind == "conv")
    all_flops = sum(layer.flops() for layer in everything)
    ridge = peak / bandwidth

    # ---- per-layer table
    rows = []
    records = []
    for layer in everything:
        t = layer.time(peak, bandwidth)
        flops, moved = layer.flops(), layer.bytes()
        intensity = flops / moved if moved else float("nan")
        note = layer.flagged
        rows.append([layer.name + (" (!)" if note else ""), layer.kind, shape_text(layer.shape),
                     flops / n / 1e9, moved / n / 1e6, intensity, layer.bound(peak, bandwidth), 100 * t / step_time])
        records.append({
            "name": layer.name, "kind": layer.kind, "shape": list(layer.shape),
            "gflop_fwd_per_image": layer.flops("fwd") / n / 1e9, "gflop_bwd_per_image": layer.flops("bwd") / n / 1e9,
            "mb_fwd_per_image": layer.bytes("fwd") / n / 1e6, "mb_bwd_per_image": layer.bytes("bwd") / n / 1e6,
            "flop_per_byte": intensity if moved else None, "bound": layer.bound(peak, bandwidth),
            "bound_time_ms_per_step": 1e3 * t, "time_share": t / step_time, "flag": note,
            "kernels": [{"phase": k.phase, "role": k.role, "gflop": k.flops / 1e9, "mb": k.bytes / 1e6,
                         "parts_mb": {p: v / 1e6 for p, v in k.parts.items()},
                         "bound_time_ms": 1e3 * k.time(peak, bandwidth),
                         "bound": "memory" if k.memory_bound(peak, bandwidth) else "compute", "flag": k.flag}
                        for k in layer.kernels],
        })
    headers = ["layer", "kind", "output shape (batch)", "GFLOP/image fwd+bwd", "MB/image moved", "FLOP/byte",
               "bound", "% of bound time"]
    print("## Tutorial U-Net roofline estimate (analysis, not a measurement)\n")
    print(f"width {args.width}, {parameters:,} parameters, {args.image_size}x{args.image_size}, batch {n}, "
          f"{args.dtype_bytes} bytes/element; peak {args.peak_tflops:g} TFLOP/s, {args.bandwidth_tbs:g} TB/s "
          f"(ridge {ridge:.0f} FLOP/byte). (!) = atomicAdd scatter: slow path not visible in bytes.\n")
    print(markdown_table(headers, rows))

    # ---- per kind
    kinds = {}
    for layer in everything:
        kind = kinds.setdefault(layer.kind, {"flops": 0.0, "bytes": 0.0, "time": 0.0, "count": 0})
        kind["flops"] += layer.flops()
        kind["bytes"] += layer.bytes()
        kind["time"] += layer.time(peak, bandwidth)
        kind["count"] += 1
    print("\n### By kind\n")
    print(markdown_table(["kind", "rows", "GFLOP/image", "MB/image", "bound ms/step", "% of bound time"],
                         [[kind, v["count"], v["flops"] / n / 1e9, v["bytes"] / n / 1e6, 1e3 * v["time"],
                           100 * v["time"] / step_time]
                          for kind, v in sorted(kinds.items(), key=lambda kv: -kv[1]["time"])]))

    print(f"\n### Largest {args.top} layers by bound time\n")
    order = sorted(range(len(everything)), key=lambda i: -everything[i].time(peak, bandwidth))[: args.top]
    print(markdown_table(headers, [rows[i] for i in order]))

    # ---- summary
    images_per_second = n / step_time
    share = conv_flops / n * images_per_second / peak
    measured_time = n / args.measured_images_per_second if args.measured_images_per_second else None
    compute_only = conv_flops / peak
    print("\n### Summary (estimate)\n")
    print(f"- FLOPs per image: {conv_flops / n / 1e9:.2f} GFLOP in convolutions fwd+bwd "
          f"(forward {conv_fwd_flops / n / 1e9:.2f}); FlopCounterMode: {check['flop_counter_total'] / n / 1e9:.2f} "
          f"(largest per-conv difference {100 * check['max_relative_difference_per_conv']:.3g}%); "
          f"element-wise and optimizer FLOPs add {(all_flops - conv_flops) / n / 1e9:.3f}.")
    print(f"- Bytes per image: {base['bytes'] / n / 1e9:.3f} GB moved per training step "
          f"(layers {sum(l.bytes() for l in layers) / n / 1e9:.3f}, per-step extras "
          f"{sum(l.bytes() for l in extras) / n / 1e9:.4f}).")
    print(f"- Roofline bound: {1e3 * step_time:.1f} ms per step of {n} -> {images_per_second:.0f} images/s = "
          f"{100 * share:.1f}% of peak if every kernel ran at its roofline "
          f"(convolutions alone at peak: {1e3 * compute_only:.1f} ms, {n / compute_only:.0f} images/s).")
    print(f"- Bound time: convolutions {100 * base['conv_time_s'] / step_time:.1f}%, memory-bound element-wise "
          "layers (ReLU, bias, upsample, cat, maxpool, skip-grad adds) "
          f"{100 * base['elementwise_time_s'] / step_time:.1f}%, "
          f"per-step extras {100 * base['step_extras_time_s'] / step_time:.1f}%.")
    measured = {}
    if measured_time:
        measured = {"images_per_second": args.measured_images_per_second, "step_time_s": measured_time,
                    "share_of_peak": conv_flops / n * args.measured_images_per_second / peak,
                    "roofline_over_measured_time": step_time / measured_time}
        print(f"- Reported measurement {args.measured_images_per_second:g} images/s = {1e3 * measured_time:.1f} ms "
              f"per step ({100 * measured['share_of_peak']:.1f}% of peak): the roofline bound is "
              f"{100 * measured['roofline_over_measured_time']:.0f}% of that time; the rest is kernels below "
              "their roofline (and anything this model leaves out).")

    # ---- candidates
    print("\n### Candidates (same math), roofline time saved per step\n")
    candidates = []
    for title, how, apply, _ in scenarios(args.dtype_bytes):
        changed = copy.deepcopy(everything)
        apply(changed)
        after = totals(changed, peak, bandwidth)
        saved = step_time - after["time_s"]
        candidates.append({"candidate": title, "how": how, "saved_ms_per_step": 1e3 * saved,
                           "saved_share": saved / step_time,
                           "saved_mb_per_image": (base["bytes"] - after["bytes"]) / n / 1e6,
                           "images_per_second": n / after["time_s"],
                           "share_of_peak": conv_flops / n * n / after["time_s"] / peak})
    combined = copy.deepcopy(everything)
    for _, _, apply, combine in scenarios(args.dtype_bytes):
        if combine:
            apply(combined)
    after_all = totals(combined, peak, bandwidth)
    candidates.sort(key=lambda c: -c["saved_ms_per_step"])
    rows = [[i + 1, c["candidate"], c["saved_mb_per_image"], c["saved_ms_per_step"], 100 * c["saved_share"],
             c["images_per_second"], 100 * c["share_of_peak"]] for i, c in enumerate(candidates)]
    rows.append(["", "all of the above but the fp32 upsample", (base["bytes"] - after_all["bytes"]) / n / 1e6,
                 1e3 * (step_time - after_all["time_s"]), 100 * (1 - after_all["time_s"] / step_time),
                 n / after_all["time_s"], 100 * conv_flops / after_all["time_s"] / peak])
    print(markdown_table(["rank", "candidate", "MB/image saved", "ms/step saved", "% of bound time",
                          "bound images/s after", "% of peak after"], rows))
    print()
    for c in candidates:
        print(f"- {c['candidate']}: {c['how']}.")

    # ---- upsample atomics sensitivity
    up_scatter = sum(k.time(peak, bandwidth) for layer in everything for k in layer.kernels if k.role == "up_scatter")
    print("\n### Upsample backward atomics (not visible in a byte count)\n")
    print(f"- The three atomicAdd scatters take {1e3 * up_scatter:.2f} ms per step at their roofline "
          f"({100 * up_scatter / step_time:.1f}% of the bound).\n")
    atomic_rows = []
    for k in args.atomic_slowdown:
        t = step_time + (k - 1) * up_scatter
        atomic_rows.append({"slowdown": k, "extra_ms_per_step": 1e3 * (k - 1) * up_scatter,
                            "images_per_second": n / t, "share_of_bound_time": k * up_scatter / t})
    print(markdown_table(["atomics k x slower than roofline", "extra ms/step", "bound images/s",
                          "% of step in upsample backward"],
                         [[r["slowdown"], r["extra_ms_per_step"], r["images_per_second"],
                           100 * r["share_of_bound_time"]]
                          for r in atomic_rows]))
    print()
    top_saving = candidates[0]["saved_ms_per_step"] / 1e3
    break_even = 1 + top_saving / up_scatter if up_scatter else float("nan")
    print(f"- At k >= {break_even:.1f} the atomic-free backward would save more than the top-ranked candidate "
          f"({candidates[0]['candidate']}).")
    fp32 = next((c for c in candidates if c["candidate"].startswith("upsample in fp32")), None)
    fp32_break_even = None
    if fp32 and up_scatter:
        fp32_break_even = 1 - fp32["saved_ms_per_step"] / 1e3 / up_scatter
        print(f"- Running the upsample in fp32 costs {-fp32['saved_ms_per_step']:.2f} ms per step in bytes: it pays "
              f"off only if the bf16 atomics run >= {fp32_break_even:.1f}x slower than their roofline (and the fp32 "
              "ones near theirs); the gather needs no such bet.")
    gap_k = None
    if measured_time:
        gap_k = 1 + (measured_time - step_time) / up_scatter if up_scatter else None
        print(f"- For the atomics alone to explain the whole gap to the reported {args.measured_images_per_second:g} "
              f"images/s they would have to run {gap_k:.0f}x slower than their roofline: a profile decides.")

    # ---- launches and CUDA graphs
    launches = base["launches"]
    launch_time = launches * args.launch_us * 1e-6
    print("\n### Kernel launches and CUDA graphs\n")
    print(f"- About {launches} kernel launches per step (one per kernel modelled; cuDNN may add a few), "
          f"{args.launch_us:g} us each = {1e3 * launch_time:.2f} ms of CPU time per step, against "
          + (f"{1e3 * measured_time:.1f} ms per step at the reported {args.measured_images_per_second:g} images/s "
             f"({100 * launch_time / measured_time:.1f}%) and " if measured_time else "")
          + f"{1e3 * step_time:.1f} ms at the roofline bound ({100 * launch_time / step_time:.1f}%). "
          "Launches overlap GPU work while the GPU is the bottleneck, so CUDA graphs can save at most this much.")

    # ---- the target
    target_time = conv_flops / (args.target_share * peak)
    print(f"\n### What {100 * args.target_share:.0f}% of peak needs (estimate)\n")
    target_rows = []
    for label, tot in (("as eager runs it", base), ("all candidates above", after_all)):
        other = tot["time_s"] - tot["conv_time_s"]
        entry = {"schedule": label, "other_time_ms": 1e3 * other}
        efficiencies = (("at full bandwidth", 1.0),
                        (f"at {100 * args.mem_efficiency:.0f}% of bandwidth", args.mem_efficiency))
        for eff_label, eff in efficiencies:
            left = target_time - other / eff
            need = tot["conv_time_s"] / left if left > 0 else float("inf")
            entry[eff_label] = need
        target_rows.append(entry)
    print(f"- {100 * args.target_share:.0f}% of {args.peak_tflops:g} TFLOP/s at "
          f"{conv_flops / n / 1e9:.1f} GFLOP/image = "
          f"{n / target_time:.0f} images/s = {1e3 * target_time:.1f} ms per step of {n}.\n")
    eff_keys = [k for k in target_rows[0] if k not in ("schedule", "other_time_ms")]
    print(markdown_table(["schedule", "non-conv roofline ms/step"]
                         + [f"conv efficiency needed, element-wise {k}" for k in eff_keys],
                         [[r["schedule"], r["other_time_ms"]] + [("impossible" if r[k] == float("inf") or r[k] > 1
                                                                  else f"{100 * r[k]:.0f}%") for k in eff_keys]
                          for r in target_rows]))
    print()
    print("- Conv efficiency = the convolution kernels' roofline time / their real time; element-wise kernels "
          "are assumed to reach the stated share of the bandwidth; the atomic penalty is not included.")
    implied = None
    if measured_time:
        other = (base["time_s"] - base["conv_time_s"]) / args.mem_efficiency
        implied = base["conv_time_s"] / (measured_time - other) if measured_time > other else None
        if implied:
            print(f"- Read backwards (an inference, not a measurement): if the element-wise kernels ran at "
                  f"{100 * args.mem_efficiency:.0f}% of the bandwidth and the atomics at their roofline, the reported "
                  f"{args.measured_images_per_second:g} images/s would mean the convolutions run at about "
                  f"{100 * implied:.0f}% of their roofline; a slower upsample backward would mean they run faster.")
    print(f"\nAll numbers are analytic estimates: nothing ran on a GPU. Peak {args.peak_tflops:g} TFLOP/s and "
          f"{args.bandwidth_tbs:g} TB/s are assumptions (H100 SXM, dense bf16, HBM3).")

    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "unet_roofline",
            "kind": "analytic estimate, not a measurement",
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "parameters": parameters,
            "ridge_flop_per_byte": ridge,
            "gflop_per_image": {"conv_fwd_bwd": conv_flops / n / 1e9, "conv_fwd": conv_fwd_flops / n / 1e9,
                                "flop_counter_mode": check["flop_counter_total"] / n / 1e9,
                                "all": all_flops / n / 1e9},
            "flop_check": check,
            "bytes_per_image": base["bytes"] / n,
            "roofline": {"step_time_s": step_time, "images_per_second": images_per_second, "share_of_peak": share,
                         "conv_time_share": base["conv_time_s"] / step_time,
                         "elementwise_time_share": base["elementwise_time_s"] / step_time,
                         "step_extras_time_share": base["step_extras_time_s"] / step_time,
                         "launches_per_step": launches, "launch_time_s": launch_time},
            "measured_reference": measured,
            "by_kind": {k: {"rows": v["count"], "gflop_per_image": v["flops"] / n / 1e9,
                            "mb_per_image": v["bytes"] / n / 1e6,
                            "bound_ms_per_step": 1e3 * v["time"], "time_share": v["time"] / step_time}
                        for k, v in kinds.items()},
            "candidates": candidates,
            "all_candidates": {"images_per_second": n / after_all["time_s"],
                               "share_of_peak": conv_flops / after_all["time_s"] / peak,
                               "saved_share": 1 - after_all["time_s"] / step_time},
            "upsample_atomics": {"roofline_ms_per_step": 1e3 * up_scatter, "sensitivity": atomic_rows,
                                 "break_even_slowdown": break_even, "fp32_break_even_slowdown": fp32_break_even,
                                 "slowdown_to_explain_measured_gap": gap_k},
            "target": {"share": args.target_share, "step_time_s": target_time, "images_per_second": n / target_time,
                       "conv_efficiency_needed": target_rows,
                       "implied_conv_efficiency_at_measurement": implied},
            "layers": records,
        }, indent=2))


if __name__ == "__main__":
    main()
