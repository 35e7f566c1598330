"""Exporting a trained model to ONNX or TorchScript, and running ONNX exports.

Both formats take images ``(N, C, H, W)`` float32 (8-bit pixels divided by
``scale``) of any batch size, height and width, and return logits
``(N, out_channels, H, W)``: one channel for binary models, one per label value
(softmax) or per foreground label (sigmoid) for models with several labels, as the
metadata's ``labels``, ``mode`` and ``output`` say. The models pad inputs to a multiple of their stride inside
``forward``; the export wraps them so that this padding (and the crop back) is
computed from the input's shape in the graph, not frozen at the example's size.

segkit's preprocessing travels with the file: ONNX ``metadata_props``, or a
``segkit.json`` extra file in TorchScript; ``context`` there is the 2.5D context
``k`` (the input then stacks slices ``n - k .. n + k`` as channels) and
``normalize`` the per-case intensity rule the pixels go through before the
division (:mod:`segkit.data.intensity`). onnx and onnxruntime are optional
(``pip install segkit[export]``) and imported only here.

Why it is long: both formats share one wrapper (stride padding traced from the input's shape), one
metadata record and one check that the written file gives the model's logits back; reading an export
lives apart, in :mod:`segkit.inference.onnx_file`.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkit import __version__
from segkit.data.intensity import PERCENTILE, TARGET
from segkit.errors import CheckpointError, unknown_name
from segkit.fileio import atomic_write_bytes
from segkit.inference.cv_sources import CHECKPOINT, expand_sources, is_cv_directory
from segkit.inference.onnx_file import (
    ONNX_FORMAT,
    _require,
    load_onnx_predictor,
    read_onnx_metadata,
)
from segkit.inference.sources import checkpoint_context, checkpoint_normalize
from segkit.labels import Labels
from segkit.runs.checkpoint import (
    build_model_from_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)
from segkit.runs.window import WindowSettings

__all__ = [
    "FORMATS",
    "ONNX_FORMAT",
    "ExportWrapper",
    "EnsembleExport",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "load_onnx_predictor",
    "read_onnx_metadata",
    "portable_metadata",
]

FORMATS: tuple[str, ...] = ("onnx", "torchscript")
TORCHSCRIPT_FORMAT = "segkit-torchscript-1"
TORCHSCRIPT_EXTRA = "segkit.json"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # dynamic batch, height and width with the padding inside the graph


def max_opset() -> int:
    """The newest ONNX opset this torch can write."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return DEFAULT_OPSET



class ExportWrapper(nn.Module):
    """A model whose padding to ``size_multiple`` (and ``min_size``) follows the input shape when traced.

    In eager mode it simply calls the model. When traced (ONNX or TorchScript), the
    input sizes are traced values, so the replicate padding and the crop back are
    recorded as shape arithmetic; the model's own padding then always sees a
    multiple of its stride and adds nothing.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.size_multiple = int(getattr(model, "size_multiple", 1) or 1)
        self.min_size = int(getattr(model, "min_size", 0) or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # a 3D patch model: its sliding windows always have the patch size, nothing to pad
            return self.model(x)
        height, width = x.shape[2], x.shape[3]
        if not isinstance(height, torch.Tensor):  # eager: the model pads and crops itself
            return self.model(x)
        pad_h = torch.clamp(self.min_size - height, min=0)
        pad_w = torch.clamp(self.min_size - width, min=0)
        pad_h = pad_h + torch.remainder(-(height + pad_h), self.size_multiple)
        pad_w = pad_w + torch.remainder(-(width + pad_w), self.size_multiple)
        padded = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        return self.model(padded)[..., :height, :width]


def _load(source: str | os.PathLike[str], checkpoint: str,
          registry: Any | None = None) -> tuple[nn.Module, dict[str, Any], Path]:

    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"run directory or checkpoint {str(path)!r} does not exist.")
    if path.is_dir() and not ((path / "config.toml").is_file() or (path / "checkpoints").is_dir()):
        raise CheckpointError(f"{str(path)!r} is not a segkit run directory (no config.toml, no checkpoints/).")
    checkpoint_path = resolve_checkpoint(path, checkpoint)
    payload = load_checkpoint(checkpoint_path)
    return build_model_from_checkpoint(payload, registry).float().eval(), payload, checkpoint_path


class EnsembleExport(nn.Module):
    """Several models as one: logits of the mean of their probabilities.

    The output keeps the single-model contract, so an exported cross-validation ensemble is
    used exactly like an exported run: for sigmoid outputs (binary, multilabel) the logit of
    the mean probability; for softmax outputs (``multiclass``) the log of the mean
    probabilities, whose softmax is that mean.
    """

    def __init__(self, models: list[nn.Module], multiclass: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(ExportWrapper(m) for m in models)
        self.multiclass = bool(multiclass)
        multiples = [m.size_multiple for m in self.members]
        self.size_multiple = int(np.lcm.reduce(multiples)) if multiples else 1
        self.min_size = max((m.min_size for m in self.members), default=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiclass:
            probability = torch.stack([torch.softmax(member(x), dim=1) for member in self.members]).mean(dim=0)
            return torch.log(probability.clamp_min(1e-7))
        probability = torch.stack([torch.sigmoid(member(x)) for member in self.members]).mean(dim=0)
        probability = probability.clamp(1e-7, 1 - 1e-7)
        return torch.log(probability) - torch.log1p(-probability)


def _load_export(source: str | os.PathLike[str], checkpoint: str | None,
                 registry: Any | None = None) -> tuple[nn.Module, dict[str, Any], Path, dict[str, str]]:
    """The model to export: a run's, or a ``segkit cv`` directory's fold models as one ensemble.

    Returns the model, the (first) checkpoint's payload and path, and extra metadata.
    """

    if not is_cv_directory(source):
        model, payload, path = _load(source, checkpoint or "best", registry)
        return model, payload, path, {}
    folds, chosen = expand_sources([source])
    loaded = [_load(fold, checkpoint or CHECKPOINT, registry) for fold in folds]
    chosen = chosen or {}
    labels = _labels(loaded[0][1])
    extra = {
        "ensemble": json.dumps([str(path.resolve()) for _model, _payload, path in loaded]),
        "recommended_tta": "true" if chosen.get("tta") else "false",
        "recommended_postprocess": str(chosen.get("postprocess", "none")),
        "output": (f"log of the mean softmax probabilities (N, {labels.out_channels}, H, W) of the ensemble's "
                   "models; each pixel's label is the channel with the largest value" if labels.mode == "multiclass"
                   else f"logits (N, {labels.out_channels}, H, W) of the mean probability of the ensemble's models; "
                   "present where sigmoid(logits) >= threshold"),
    }
    model = EnsembleExport([model for model, _payload, _path in loaded], labels.mode == "multiclass").eval()
    return model, loaded[0][1], loaded[0][2], extra


def _stacking_note(context: int) -> str:
    """How the channels of a 2.5D context model's input are stacked, for the metadata ('' without context)."""
    if not context:
        return ""
    width = 2 * context + 1
    return (f"; C holds {width} slices of one case, n-{context} .. n+{context} in that order, each with C / {width} "
            "channels; past a case's first or last slice the edge slice repeats")


def _normalize_note(normalize: str) -> str:
    """How the pixels are rescaled before the division by ``scale``, for the metadata ('' when they are not)."""
    if normalize == "none":
        return ""

    return (f"; before that, each channel of each case is multiplied by {TARGET:g} / its {PERCENTILE:g}th percentile "
            "of non-zero pixels over all slices of the case, rounded and clipped to 0..255 (normalize = case)")


def _metadata(payload: dict[str, Any], checkpoint_path: Path, fmt: str) -> dict[str, str]:

    prep = payload.get("preprocessing", {})
    config = payload["config"]
    in_channels = prep.get("in_channels") or config["model"].get("in_channels")
    context = checkpoint_context(config, checkpoint_path)
    normalize = checkpoint_normalize(config, checkpoint_path)
    run_dir = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
    labels = _labels(payload)
    return {
        "segkit_format": fmt,
        "image_size": str(int(prep.get("image_size") or 0)),
        "in_channels": str(int(in_channels)) if in_channels is not None else "",
        "context": str(context),
        "normalize": normalize,
        "threshold": repr(float(prep.get("threshold", config["metrics"]["threshold"]))),
        "scale": repr(float(prep.get("scale", 255.0))),
        "model": str(config["model"]["name"]),
        "dataset": str((config.get("dataset") or {}).get("name", "")),
        "model_params": json.dumps({k: v for k, v in config["model"].items() if k != "name"}),
        "source_run": str(run_dir.resolve()),
        "checkpoint": checkpoint_path.name,
        "epoch": str(payload.get("epoch", "")),
        "augment": str((config.get("train") or {}).get("augment", "")),  # which flips test-time augmentation may use
        "segkit_version": __version__,
        "input": "images (N, C, H, W) float32 = pixels / scale; any N, H, W; resize to image_size first when it "
                 "is not 0" + _stacking_note(context) + _normalize_note(normalize),
        "labels": json.dumps(list(labels.names)),
        "mode": labels.mode,
        **({"regions": json.dumps(labels.to_dict()["regions"])} if labels.regions else {}),
        "output": _output_note(labels),
        **_window_metadata(WindowSettings.from_record(prep, config, checkpoint_path), prep, context, normalize),
    }


def _window_metadata(window: WindowSettings | None, prep: dict[str, Any], context: int,
                     normalize: str) -> dict[str, str]:
    """What the export of a model trained on patches carries beyond the whole-image keys: its window (patch size
    and overlap); for a 3D model also the volume preprocessing (intensity schemes and statistics, target
    spacing) and the slicing of its training volumes. Empty for models of whole images."""
    if window is None:
        return {}
    if window.dims == 2:
        return {**window.to_metadata(),
                "input": ("images (N, C, H, W) float32 = pixels / scale, at their own size (any H, W): the model "
                          f"was trained on {'x'.join(map(str, window.patch_size))} patches, and segkit predicts a whole "
                          "image by Gaussian-weighted sliding windows of patch_size, overlap window_overlap"
                          + _stacking_note(context) + _normalize_note(normalize))}
    patch = window.patch_size
    volume = prep.get("volume") or {}
    return {
        **window.to_metadata(),
        "volume": json.dumps(volume),
        "slice_axis": str(int(prep.get("slice_axis", 2))),
        "slice_shape": json.dumps([int(n) for n in prep.get("slice_shape") or [0, 0]]),
        "input": (f"patches (N, C, {', '.join(map(str, patch))}) float32 of a volume normalised per channel by its "
                  f"scheme ({', '.join(volume.get('schemes') or ['zscore'])}; the statistics in 'volume') after "
                  "resampling to volume.target_spacing when it is set; segkit predicts a whole volume by "
                  f"Gaussian-weighted sliding windows of this size, overlap window_overlap"),
    }


def _relative(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` (the export's), or its name alone where no relative path exists."""
    try:
        return os.path.relpath(Path(path).resolve(), folder.resolve())
    except ValueError:  # another drive on Windows
        return Path(path).name


def portable_metadata(metadata: dict[str, str], folder: Path) -> dict[str, str]:
    """The metadata with its local paths (the source run, an ensemble's checkpoints, a model's weights file)
    relative to ``folder``, where the export is written, so the file holds no absolute paths of this machine."""
    portable = dict(metadata)
    if portable.get("source_run"):
        portable["source_run"] = _relative(portable["source_run"], folder)
    if "ensemble" in portable:
        portable["ensemble"] = json.dumps([_relative(p, folder) for p in json.loads(portable["ensemble"])])
    if portable.get("model_params"):
        params = json.loads(portable["model_params"])
        portable["model_params"] = json.dumps({k: _relative(v, folder) if isinstance(v, str) and os.path.isabs(v) else v
                                               for k, v in params.items()})
    return portable


def _labels(payload: dict[str, Any]) -> Labels:
    """What the checkpoint's output channels mean (binary for checkpoints from before multi-class)."""
    return Labels.from_dict(payload.get("preprocessing", {}).get("labels"))


def _output_note(labels: Labels) -> str:
    """The metadata's description of the model's output."""
    if labels.mode == "binary":
        return "logits (N, 1, H, W); lesion probability = sigmoid(logits), lesion where probability >= threshold"
    names = ", ".join(f"{v} {name}" for v, name in enumerate(labels.names))
    if labels.mode == "multiclass":
        return (f"logits (N, {labels.out_channels}, H, W), channel v for label value v ({names}); probabilities = "
                "softmax over the channels, each pixel's label = the channel with the largest logit")
    if labels.regions:
        regions = ", ".join(f"{k} {name} = label values {list(values)}" for k, (name, values) in enumerate(labels.regions))
        return (f"logits (N, {labels.out_channels}, H, W), channel k for region k ({regions}; label values: {names}); "
                "each region's probability = sigmoid(its logit), present where probability >= threshold (regions "
                "overlap)")
    return (f"logits (N, {labels.out_channels}, H, W), channel k for label value k + 1 ({names}); each label's "
            "probability = sigmoid(its logit), present where probability >= threshold (labels may overlap)")


def _example(model: nn.Module, metadata: dict[str, str]) -> torch.Tensor:
    channels = int(metadata["in_channels"] or 3)
    window = WindowSettings.from_metadata(metadata)
    if window is not None and window.dims == 3:  # a 3D model: one patch
        return torch.rand(1, channels, *window.patch_size, generator=torch.Generator().manual_seed(0))
    size = max(window.patch_size) if window is not None else (int(metadata["image_size"]) or 64)
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    size = max(size, int(getattr(model, "min_size", 0) or 0))
    size += -size % multiple
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0))


def _check_sizes(example: torch.Tensor) -> list[tuple[int, ...]]:
    """Two input shapes unlike the example (batch, height and width all change; for a 3D patch model, whose
    windows always have the patch size, the batch) to verify an export."""
    if example.dim() == 5:
        return [(2, *example.shape[1:]), (3, *example.shape[1:])]
    n, c, h, w = example.shape
    return [(2, c, h + 5, w + 3), (1, c, max(h // 2 + 1, 9), w + 11)]


def _members(model: nn.Module) -> str:
    """``the model`` or ``the N fold models``, for the phase notes."""
    return f"the {len(model.members)} fold models" if isinstance(model, EnsembleExport) else "the model"


def export_onnx(source: str | os.PathLike[str], out: str | os.PathLike[str], checkpoint: str | None = None,
                opset: int = DEFAULT_OPSET, verify: bool = True, registry: Any | None = None,
                note: Callable[[str], None] = lambda _message: None) -> dict[str, Any]:
    """Export a run's model to ONNX with dynamic batch, height and width and segkit metadata.

    A 3D model (a run with ``train.patch_size``) is exported for windows of its patch size (any batch);
    segkit's predictor runs the sliding-window loop around it, as it does around the checkpoint.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra
    package and records the padding arithmetic of :class:`ExportWrapper`.
    With ``verify`` (and onnxruntime installed) the export is run at two other
    input sizes and compared with PyTorch. ``note`` hears of each phase as it starts (a
    5-fold ensemble takes half a minute on two CPU cores). Returns a report dict.
    """
    onnx = _require("onnx", "exporting to ONNX")
    model, payload, checkpoint_path, extra = _load_export(source, checkpoint, registry)
    note(f"export: tracing {_members(model)} to ONNX (opset {opset})")
    metadata = portable_metadata(_metadata(payload, checkpoint_path, ONNX_FORMAT) | extra, Path(out).parent)
    wrapper = ExportWrapper(model).eval()
    example = _example(model, metadata)
    buffer = io.BytesIO()
    axes = {0: "batch"} if example.dim() == 5 else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the legacy exporter's notices
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": axes, "logits": axes})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    out = Path(out)
    atomic_write_bytes(out, proto.SerializeToString())
    report: dict[str, Any] = {"path": str(out), "format": "onnx", "metadata": metadata, "checkpoint": str(checkpoint_path)}
    if verify and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        note(f"export: checking {out} against PyTorch at {len(_check_sizes(example))} other input sizes")
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        report["max_abs_diff"] = _compare(model, lambda x: session.run(None, {"images": x.numpy()})[0], example)
    return report


def export_torchscript(source: str | os.PathLike[str], out: str | os.PathLike[str], checkpoint: str | None = None,
                       verify: bool = True, registry: Any | None = None,
                       note: Callable[[str], None] = lambda _message: None) -> dict[str, Any]:
    """Export a run's model to TorchScript (``torch.jit.trace``), with the preprocessing in ``segkit.json``."""
    model, payload, checkpoint_path, extra = _load_export(source, checkpoint, registry)
    note(f"export: tracing {_members(model)} to TorchScript")
    metadata = portable_metadata(_metadata(payload, checkpoint_path, TORCHSCRIPT_FORMAT) | extra, Path(out).parent)
    wrapper = ExportWrapper(model).eval()
    example = _example(model, metadata)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notices about Python values
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata, indent=2)})
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    report: dict[str, Any] = {"path": str(out), "format": "torchscript", "metadata": metadata,
                              "checkpoint": str(checkpoint_path)}
    if verify:
        note(f"export: checking {out} against PyTorch at {len(_check_sizes(example))} other input sizes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            loaded = torch.jit.load(str(out), map_location="cpu")
        report["max_abs_diff"] = _compare(model, lambda x: loaded(x).numpy(), example)
    return report


def _compare(model: nn.Module, exported: Any, example: torch.Tensor) -> float:
    """Largest absolute logit difference between PyTorch and an export over two unseen input shapes."""
    worst = 0.0
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for shape in _check_sizes(example):
            x = torch.rand(shape, generator=generator)
            expected = model(x).numpy()
            got = np.asarray(exported(x))
            if got.shape != expected.shape:
                raise RuntimeError(f"export gives shape {got.shape} for input {shape}, PyTorch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_model(source: str | os.PathLike[str], out: str | os.PathLike[str], fmt: str = "onnx",
                 checkpoint: str | None = None, **options: Any) -> dict[str, Any]:
    """Export in ``fmt`` (``onnx`` or ``torchscript``); ``checkpoint`` None means best (last for a cross-validation)."""
    if fmt == "onnx":
        return export_onnx(source, out, checkpoint, **options)
    if fmt == "torchscript":
        return export_torchscript(source, out, checkpoint, **options)
    raise unknown_name("export format", fmt, FORMATS)
