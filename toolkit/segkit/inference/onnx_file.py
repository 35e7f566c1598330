"""A segkit ONNX export read back: its metadata, its graph and a predictor, all checked as untrusted input.

ONNX files are shared and downloaded, so before onnxruntime opens one segkit checks that it is a
segkit export (its metadata), that no tensor keeps its data in an external file (segkit writes
exports whole, so such a reference could only read data from elsewhere), and that the graph's
input and output have the shapes the metadata describes. See docs/robustness.md.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.data.intensity import NORMALIZE
from segkit.data.preprocess_record import volume_record_problem
from segkit.errors import CheckpointError, ConfigError, SegkitError
from segkit.inference.predictor import Member, Predictor
from segkit.labels import Labels
from segkit.runs.window import WindowSettings

__all__ = ["ONNX_FORMAT", "read_onnx_metadata", "check_graph_shapes", "load_onnx_predictor"]

ONNX_FORMAT = "segkit-onnx-1"


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SegkitError(f"{purpose} needs the optional package {module!r}, which is not installed: "
                          "pip install 'segkit[export]'") from None


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The segkit metadata of an ONNX file; a :class:`CheckpointError` when it is not a segkit export."""
    onnx = _require("onnx", "reading an ONNX file")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"ONNX file {str(path)!r} is empty (0 bytes); export it again with "
                              "'segkit export RUN_DIR --format onnx --out FILE'.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"{str(path)!r} is not a readable ONNX file ({type(exc).__name__}): it is truncated "
                              "or corrupt, or not ONNX; export it again with 'segkit export RUN_DIR --format onnx "
                              "--out FILE'.") from None
    _refuse_external_data(proto, path)
    metadata = {p.key: p.value for p in proto.metadata_props}
    if metadata.get("segkit_format") != ONNX_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a segkit export: its ONNX metadata has no segkit_format "
                              f"{ONNX_FORMAT!r}, so segkit does not know its preprocessing. Export runs with "
                              "'segkit export RUN_DIR --format onnx --out FILE'.")
    return metadata


def _refuse_external_data(proto: Any, path: Path) -> None:
    """A CheckpointError when any tensor of the model points at data outside the file.

    segkit writes its exports whole (weights inside the file), so an external-data reference
    (``../../secret``, ``/etc/...``) means a foreign or tampered file; onnxruntime would open it.
    """
    import onnx

    graphs, seen = [proto.graph], 0
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
        graphs += [a.g for n in graph.node for a in n.attribute if a.HasField("g")]
        graphs += [g for n in graph.node for a in n.attribute for g in a.graphs]
        for tensor in tensors:
            seen += 1
            if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
                location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
                raise CheckpointError(f"{str(path)!r} keeps the tensor {tensor.name!r} in an external file "
                                      f"({location!r}); segkit exports hold their weights inside the file and "
                                      "never read data from elsewhere. Export the run again with 'segkit export'.")


def _graph_dims(value_info: Any) -> list[int | None]:
    """The static sizes of an ONNX input or output (None where a size is symbolic)."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def check_graph_shapes(proto_or_session: Any, labels: Labels, in_channels: int | None, path: Any,
                       patch: list[int] | None = None) -> None:
    """A CheckpointError when the graph's input or output does not have the shape its segkit metadata describes.

    ``patch``: a 3D model's patch size from its metadata; its graph maps ``(N, C, *patch)`` to ``(N, K, *patch)``.
    """
    outputs = list(proto_or_session.graph.output)
    inputs = [i for i in proto_or_session.graph.input
              if i.name not in {t.name for t in proto_or_session.graph.initializer}]
    if len(outputs) != 1 or len(inputs) != 1:
        raise CheckpointError(f"{str(path)!r} has {len(inputs)} input(s) and {len(outputs)} output(s); a segkit "
                              "export has one image input and one logits output.")
    out, inp = _graph_dims(outputs[0]), _graph_dims(inputs[0])
    if patch:
        if len(out) != 5 or len(inp) != 5 or any(d is not None and d != p for d, p in zip(inp[2:], patch, strict=True)):
            raise CheckpointError(f"{str(path)!r} maps an input of shape {inp} to {out}, but its metadata describes a "
                                  f"3D model of patches {patch}: (N, C, {', '.join(map(str, patch))}) to logits of that "
                                  "size. The file was edited; export the run again with 'segkit export'.")
    elif len(out) != 4 or len(inp) != 4:
        raise CheckpointError(f"{str(path)!r} maps a {len(inp)}-D input to a {len(out)}-D output; a segkit export "
                              "maps images (N, C, H, W) to logits (N, channels, H, W).")
    if out[1] is not None and out[1] != labels.out_channels:
        raise CheckpointError(f"{str(path)!r} outputs {out[1]} channel(s) but its metadata describes "
                              f"{labels.out_channels} ({labels.mode}, labels {', '.join(labels.names)}); the file "
                              "was edited or assembled by hand. Export the run again with 'segkit export'.")
    if in_channels is not None and inp[1] is not None and inp[1] != in_channels:
        raise CheckpointError(f"{str(path)!r} takes {inp[1]} input channel(s) but its metadata says "
                              f"{in_channels}; the file was edited. Export the run again with 'segkit export'.")


def _metadata_context(metadata: dict[str, str], path: str | os.PathLike[str]) -> int:
    """The 2.5D context of an export's metadata; 0 for exports made before segkit recorded it."""
    return _metadata_number(metadata, "context", "0", int, path, lambda v: v >= 0, "an integer >= 0") or 0


def _metadata_normalize(metadata: dict[str, str], path: str | os.PathLike[str]) -> str:
    """The intensity rule of an export's metadata; ``none`` for exports made before segkit recorded it."""

    value = metadata.get("normalize") or "none"
    if value not in NORMALIZE:
        raise CheckpointError(f"{str(path)!r} has the metadata normalize {value!r}; expected one of "
                              f"{', '.join(NORMALIZE)}.")
    return value


def _metadata_number(metadata: dict[str, str], key: str, default: str, kind: type, path: Any, valid: Any,
                     expected: str) -> Any:
    """``metadata[key]`` as ``kind``, checked by ``valid``; None for an empty value; a CheckpointError otherwise."""
    text = metadata.get(key, default)
    if text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise CheckpointError(f"{str(path)!r} has the metadata {key} {text!r}; expected {expected}. The file's "
                              "metadata was edited; export it again with 'segkit export'.")
    return value


def load_onnx_predictor(path: str | os.PathLike[str], tta: bool = False, threshold: float | None = None,
                        batch_size: int | None = None):
    """A :class:`~segkit.inference.predictor.Predictor` running a segkit ONNX export with onnxruntime on the CPU."""

    metadata = read_onnx_metadata(path)
    labels = _metadata_labels(metadata, path)
    in_channels = _metadata_number(metadata, "in_channels", "", int, path, lambda v: v >= 1, "an integer >= 1")
    window = WindowSettings.from_metadata(metadata, path)
    volume_info = _volume_info(metadata, path) if window is not None and window.dims == 3 else None
    onnx = _require("onnx", "reading an ONNX file")
    check_graph_shapes(onnx.load(str(path), load_external_data=False), labels, in_channels, path,
                       list(window.patch_size) if volume_info else None)
    onnxruntime = _require("onnxruntime", "running an ONNX model")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(None, {input_name: array})[0])

    image_size = _metadata_number(metadata, "image_size", "0", int, path, lambda v: v >= 0, "an integer >= 0") or 0
    threshold = _metadata_number(metadata, "threshold", "0.5", float, path, lambda v: 0 < v < 1,
                                 "a number between 0 and 1")
    member = Member(
        name=metadata.get("model", "onnx"),
        source=str(path),
        image_size=image_size,
        in_channels=in_channels,
        threshold=threshold,
        run=run,
        info={"metadata": metadata, "session": session, **({**volume_info, "model": run} if volume_info else {})},
        context=_metadata_context(metadata, path),
        normalize=_metadata_normalize(metadata, path),
        labels=labels,
        window=window,
    )
    return Predictor([member], tta=tta, threshold=threshold, batch_size=batch_size)


def _volume_info(metadata: dict[str, str], path: str | os.PathLike[str]) -> dict[str, Any]:
    """A 3D export's member info, as a checkpoint gives it: ``config`` (the augmentation test-time mirroring
    reads) and ``preprocessing`` (slicing, normalisation, target spacing). The window is the member's own."""
    _check_volume_record(metadata, path)
    try:
        volume = json.loads(metadata.get("volume") or "{}")
        slice_shape = json.loads(metadata.get("slice_shape") or "[0, 0]")
        axis = int(metadata.get("slice_axis", "2"))
        valid = isinstance(volume, dict) and axis in (0, 1, 2)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise CheckpointError(f"{str(path)!r} has 3D metadata (volume {metadata.get('volume')!r}, slice_axis "
                              f"{metadata.get('slice_axis')!r}) that segkit cannot use; the file's "
                              "metadata was edited. Export the run again with 'segkit export'.")
    train = {"augment": metadata.get("augment", "")}
    return {"config": {"train": train, "dataset": {"name": metadata.get("dataset", "volumes")}},
            "preprocessing": {"volume": volume, "slice_axis": axis, "slice_shape": slice_shape}}


def _check_volume_record(metadata: dict[str, str], path: str | os.PathLike[str]) -> None:
    """A CheckpointError naming the metadata key when a 3D export's slicing or volume preprocessing (intensity
    schemes and statistics, target spacing) is not what segkit writes (:mod:`segkit.data.preprocess_record`)."""

    decoded: dict[str, Any] = {}
    for key in ("volume", "slice_axis", "slice_shape"):
        if key in metadata:
            try:
                decoded[key] = json.loads(metadata[key])
            except ValueError:
                raise CheckpointError(f"{str(path)!r}: metadata field {key!r} is {metadata[key]!r}, which is not "
                                      "JSON; the file's metadata was edited. Export the run again with 'segkit "
                                      "export'.") from None
    try:
        channels = int(metadata["in_channels"]) if metadata.get("in_channels") else None
    except ValueError:
        channels = None  # reported with the other 2D keys
    problem = volume_record_problem(decoded, channels)
    if problem is not None:
        raise CheckpointError(f"{str(path)!r}: metadata field {problem[0]!r} {problem[1]}; the file's metadata was "
                              "edited. Export the run again with 'segkit export'.")


def _metadata_labels(metadata: dict[str, str], path: str | os.PathLike[str]) -> Labels:
    """The labels an export records; binary for exports from before multi-class."""
    if "labels" not in metadata and "mode" not in metadata:
        return Labels()
    try:
        names = json.loads(metadata.get("labels", '["background", "lesion"]'))
        return Labels.from_dict({"names": names, "mode": metadata.get("mode", "binary"),
                                 "regions": json.loads(metadata.get("regions", "{}"))})
    except (ValueError, TypeError, AttributeError, ConfigError):
        raise CheckpointError(f"{str(path)!r} has the metadata labels {metadata.get('labels')!r} and mode "
                              f"{metadata.get('mode')!r}, which do not describe its output. The file's metadata was "
                              "edited; export it again with 'segkit export'.") from None
