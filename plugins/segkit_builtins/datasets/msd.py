"""A Medical Segmentation Decathlon folder (or an nnU-Net raw dataset) of NIfTI (or NRRD/MetaImage) volumes.

    DATASET/
      dataset.json                      channels ("modality" or "channel_names"), "labels", the training list
      imagesTr/CASE.nii.gz              one 3D volume, or 4D with channels last (the Decathlon's layout)
      imagesTr/CASE_0000.nii.gz, ...    or one 3D file per channel (nnU-Net's raw layout)
      labelsTr/CASE.nii.gz              voxel labels 0 .. C-1

``dataset.json`` gives the channel names, the label names and (Decathlon) the ``training`` list
of ``{"image", "label"}`` pairs, each relative to the dataset's folder and refused when it leads
out of it (:mod:`segkit.data.contained`); without a list (nnU-Net v2) every ``labelsTr`` file is a case
(of the ``file_ending`` dataset.json names, if it names one). NIfTI is read by nibabel; NRRD and
MetaImage files (``.nrrd``, ``.mha``, ...) by SimpleITK, the ``segkit[sitk]`` extra.
Both label forms are read: ``{"0": "background", "1": "tumour"}`` and ``{"background": 0,
"tumour": 1}``. Slices are served to 2D models by :class:`segkit.data.volume.VolumeDataset`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from segkit.data.contained import inside_folder
from segkit.data.volume_io import MAX_LABELS, volume_stem, volume_suffixes
from segkit.data.volume import VolumeDataset
from segkit.errors import DataError

__all__ = ["MSDDataset"]

LAYOUT = ("DATASET/dataset.json, DATASET/imagesTr/CASE.nii.gz (or CASE_0000.nii.gz, CASE_0001.nii.gz, ... one per "
          "channel) and DATASET/labelsTr/CASE.nii.gz")


def _suffix(path: Path) -> str:
    return path.name[len(volume_stem(path)):]


def _read_description(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}. Expected the Decathlon layout: {LAYOUT}")
    if not path.is_file():
        raise DataError(f"{root} has no dataset.json. Expected the Decathlon layout: {LAYOUT}")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(description, dict):
        raise DataError(f"{path} holds a {type(description).__name__}, not an object with 'labels' and 'modality'")
    return description


def _channels(description: dict[str, Any], path: Path) -> list[str]:
    table = description.get("channel_names", description.get("modality"))
    if not isinstance(table, dict) or not table:
        raise DataError(f"{path} names no channels: it needs 'modality' (Decathlon) or 'channel_names' (nnU-Net), "
                        'e.g. {"0": "MRI"}')
    try:
        order = sorted(table, key=int)
    except ValueError:
        raise DataError(f"{path}: the channel keys must be 0, 1, ..., got {sorted(table)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise DataError(f"{path}: the channel keys must be 0 .. {len(order) - 1} without gaps, got {order}")
    for key in order:
        if not isinstance(table[key], str) or not table[key].strip():
            field = "channel_names" if "channel_names" in description else "modality"
            raise DataError(f"{path}: {field}[{key!r}] is {table[key]!r}; a channel's name is a non-empty string, "
                            'e.g. "MRI" or "CT"')
    return [str(table[k]) for k in order]


def _labels(description: dict[str, Any], path: Path) -> list[str]:
    table = description.get("labels")
    if not isinstance(table, dict) or not table:
        raise DataError(f"{path} declares no labels: it needs e.g. \"labels\": {{\"0\": \"background\", \"1\": \"tumour\"}}")
    decathlon = all(str(k).isdigit() for k in table)  # value -> name; else nnU-Net v2: name -> value
    for key, value in table.items():
        if decathlon and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"{path}: labels[{key!r}] is {value!r}; a label's name is a non-empty string, e.g. "
                            '"tumour"')
        if not decathlon and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"{path}: labels[{key!r}] is {value!r}; labels map names to integer values (nnU-Net, "
                            'e.g. "tumour": 1) or values to names (Decathlon, e.g. "1": "tumour"); segkit does not '
                            "train nnU-Net's region labels (lists of values)")
    by_value = ({int(k): str(v) for k, v in table.items()} if decathlon else {int(v): str(k) for k, v in table.items()})
    if len(by_value) != len(table):
        raise DataError(f"{path}: labels gives one value two names ({table}); each value needs its own name")
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"{path}: the label values must be 0 .. {len(by_value) - 1} without gaps, got {sorted(by_value)}")
    if len(by_value) < 2:
        raise DataError(f"{path} declares only the background label; a segmentation needs at least one more")
    if len(by_value) > MAX_LABELS:
        raise DataError(f"{path} declares {len(by_value)} labels; segkit keeps label values in 8 bits, so at most "
                        f"{MAX_LABELS} (0 .. {MAX_LABELS - 1}, background included). Merge or drop labels in the "
                        "label files and in 'labels'")
    return [by_value[v] for v in range(len(by_value))]


def _channel_files(image: Path, channels: int) -> tuple[str, ...] | None:
    """``image`` itself, or its ``_0000``, ``_0001``, ... files; None when neither exists."""
    if image.is_file():
        return (str(image),)
    stem, suffix = volume_stem(image), _suffix(image)
    files = [image.with_name(f"{stem}_{c:04d}{suffix}") for c in range(channels)]
    if files and all(f.is_file() for f in files):
        return tuple(str(f) for f in files)
    return None


def _entry_path(entry: Any, number: int, key: str, path: Path) -> str:
    """``training[number][key]``: a non-empty path string; a DataError naming the file and the entry otherwise."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: training[{number}] is {entry!r}; each entry is an object such as "
                        '{"image": "./imagesTr/case.nii.gz", "label": "./labelsTr/case.nii.gz"}')
    if key not in entry:
        found = ", ".join(map(repr, entry)) or "nothing"
        raise DataError(f"{path}: training[{number}] has no {key!r} (it has {found}); each entry needs 'image' and "
                        "'label', paths relative to the dataset's folder")
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: training[{number}].{key} is {value!r} ({type(value).__name__}); it must be a path "
                        f"relative to the dataset's folder, e.g. \"./{'imagesTr' if key == 'image' else 'labelsTr'}/"
                        'case.nii.gz"')
    return value


def _listed_cases(root: Path, description: dict[str, Any], channels: int, path: Path) -> pd.DataFrame:
    training = description.get("training")
    if training is not None and not isinstance(training, list):
        raise DataError(f"{path}: 'training' is a {type(training).__name__}; it must be a list of "
                        '{"image": ..., "label": ...} entries (or left out: then every labelsTr/ file is a case)')
    ending = description.get("file_ending")
    if ending is not None and (not isinstance(ending, str) or not ending.startswith(".")):
        raise DataError(f"{path}: 'file_ending' is {ending!r}; it must be a suffix such as \".nii.gz\"")
    rows = []
    if training:
        for number, entry in enumerate(training):
            image, label = (inside_folder(_entry_path(entry, number, key, path), root,
                                          entry=f"training[{number}].{key}", source=path) for key in ("image", "label"))
            files = _channel_files(image, channels)
            if files is None:
                raise DataError(f"{path} lists the image {entry['image']}, which is not there ({image}, nor one "
                                f"{volume_stem(image)}_0000{_suffix(image)} file per channel); restore it or remove "
                                "its entry")
            if not label.is_file():
                raise DataError(f"{path} lists the label {entry['label']}, which is not there ({label}); restore it "
                                "or remove its entry")
            rows.append({"case": volume_stem(label), "image_paths": files, "label_path": str(label)})
    else:
        suffixes = (ending.lower(),) if ending else volume_suffixes()
        labels = sorted(p for p in (root / "labelsTr").glob("*") if p.name.lower().endswith(suffixes)
                        and not p.name.startswith("._")) if (root / "labelsTr").is_dir() else []
        for label in labels:
            files = _channel_files(root / "imagesTr" / label.name, channels)
            if files is None:
                raise DataError(f"{label} has no image: expected {root / 'imagesTr'}/{volume_stem(label)}_0000"
                                f"{_suffix(label)} (one file per channel) or {root / 'imagesTr' / label.name}")
            rows.append({"case": volume_stem(label), "image_paths": files, "label_path": str(label)})
    if not rows:
        raise DataError(f"{root} lists no training cases (no 'training' entries in dataset.json and no files in "
                        f"labelsTr/). Expected the Decathlon layout: {LAYOUT}")
    table = pd.DataFrame(rows)
    repeated = table["case"][table["case"].duplicated()].tolist()
    if repeated:
        raise DataError(f"{path} lists the case(s) {', '.join(repeated[:5])} more than once")
    return table


class MSDDataset(VolumeDataset):
    """The Decathlon's (or nnU-Net's raw) NIfTI layout, as 2D slices of its volumes.

    Args:
        root: the folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.
        slice_axis: 0, 1 or 2, the volume axis to slice along; None: the axis of the largest voxel
            spacing, the last axis when the spacing is the same along all three.
        pad_multiple: slices are padded with background to the dataset's largest in-plane size,
            rounded up to a multiple of this.
        cache: keep decoded slices in memory after the first read.
        context: 2.5D context: the ``k`` neighbouring slices on each side stacked as channels.

    The index has ``item`` (``CASE_NNN``), ``case``, ``slice`` and ``has_lesion``; the labels and
    channel names come from ``dataset.json``; ``spacing`` is (slice, row, column) in mm.
    """

    def __init__(self, root: str, slice_axis: int | None = None, pad_multiple: int = 16, cache: bool = False,
                 context: int = 0) -> None:
        folder = Path(root).expanduser()
        description = _read_description(folder)
        path = folder / "dataset.json"
        channels = _channels(description, path)
        labels = _labels(description, path)
        cases = _listed_cases(folder, description, len(channels), path)
        self.root = folder
        self.description = {k: v for k, v in description.items() if k not in ("training", "test")}
        super().__init__(cases, channels=channels, labels=labels, slice_axis=slice_axis, pad_multiple=pad_multiple,
                         cache=cache, context=context)
