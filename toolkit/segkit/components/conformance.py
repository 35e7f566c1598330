"""Conformance checks for plugin authors.

Run them in your plugin's tests; each raises ``AssertionError`` saying what is wrong::

    from segkit.testing import check_model
    def test_my_model():
        check_model(MyModel(in_channels=3, classes=1))

or check everything your installed package registers, built through segkit's registry
exactly as ``segkit run`` builds it, one test per component, with segkit's pytest plugin
(:mod:`segkit.components.pytest_plugin`, loaded by pytest wherever segkit is installed)::

    import pytest
    pytestmark = pytest.mark.segkit_plugin("my-segkit-plugin", params={"dataset:mydata": {"root": "tests/data"}})
    def test_conforms(segkit_component):
        segkit_component.check()

or in one test: ``check_components("my-segkit-plugin", params=...)``.

The contracts are in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch

from segkit.components.extension_checks import check_augmentation, check_volume_format

__all__ = ["check_dataset", "check_volume_dataset", "check_loss", "check_metric", "check_model", "check_volume_model",
           "check_augmentation", "check_volume_format", "check_component", "check_components", "component_keys"]


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_model(
    model: torch.nn.Module,
    in_channels: int = 3,
    classes: int = 1,
    size: tuple[int, ...] = (64, 64),
    odd_size: tuple[int, ...] | None = (70, 90),
) -> None:
    """A model maps ``(N, in_channels, H, W)`` to finite logits ``(N, classes, H, W)`` and trains.

    Checked at ``size`` and at ``odd_size`` (not a multiple of 32, so models must pad
    or otherwise cope; None skips it), in training mode with a batch of 2, and a backward
    pass must give finite gradients. The model's mode and gradients are restored afterwards.
    The sizes may have three axes, ``(D, H, W)``, for a volume model (:func:`check_volume_model`).

    A model with deep supervision may return, in training mode, a tuple ``(main, aux_1, ...)``:
    the main logits at the input size, then logits ``(N, classes, ...)``, each no larger than the
    one before; in eval mode it must return the main logits alone.
    """
    assert isinstance(model, torch.nn.Module), f"a model must be a torch.nn.Module, got {type(model).__name__}"
    declared = getattr(model, "spatial_dims", 2)
    if declared != len(size):
        checker = "check_volume_model" if declared == 3 else "check_model"
        raise AssertionError(f"the model declares spatial_dims={declared} but is checked on {len(size)}-D inputs "
                             f"of size {tuple(size)}: use {checker}")
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.train()
    try:
        for shape in (size, odd_size) if odd_size else (size,):
            x = torch.rand((2, in_channels, *shape), generator=_seeded()).to(device)
            where = f"for input {(2, in_channels, *shape)}"
            output = model(x)
            out = _main_output(output, classes, tuple(shape), where)
            out.float().mean().backward()
            params = [p for p in model.parameters() if p.requires_grad]
            assert params, "the model has no trainable parameters"
            grads = [p.grad for p in params if p.grad is not None]
            assert grads, f"backward {where} reached no parameter: is the output detached?"
            assert all(torch.isfinite(g).all() for g in grads), f"backward {where} gave NaN or infinite gradients"
            model.zero_grad(set_to_none=True)
            if isinstance(output, torch.Tensor):
                continue
            model.eval()
            with torch.no_grad():
                evaluated = model(x)
            model.train()
            assert isinstance(evaluated, torch.Tensor), (
                f"in eval mode forward must return one logits tensor {where}, got {type(evaluated).__name__}")
            assert tuple(evaluated.shape) == (2, classes, *shape), (
                f"eval-mode output shape {tuple(evaluated.shape)} {where}, expected {(2, classes, *shape)}")
    finally:
        model.train(was_training)


def check_volume_model(
    model: torch.nn.Module,
    in_channels: int = 1,
    classes: int = 1,
    size: tuple[int, int, int] = (16, 16, 16),
    odd_size: tuple[int, int, int] | None = (17, 19, 21),
) -> None:
    """:func:`check_model` for a 3D model: ``(N, in_channels, D, H, W)`` to logits ``(N, classes, D, H, W)``.

    Such a model says so with the attribute ``spatial_dims = 3``; checked at an even and an odd size.
    """
    check_model(model, in_channels, classes, size, odd_size)


def _main_output(out: Any, classes: int, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """The main logits of a training-mode output (a tensor, or deep supervision's tuple), checked."""
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    assert outputs and all(isinstance(o, torch.Tensor) for o in outputs), (
        f"forward must return one tensor (or, with deep supervision, a tuple of them) {where}, "
        f"got {type(out).__name__}")
    main = outputs[0]
    expected = (2, classes, *shape)
    assert tuple(main.shape) == expected, f"output shape {tuple(main.shape)} {where}, expected {expected}"
    previous = shape
    for k, aux in enumerate(outputs[1:], start=1):
        sizes = tuple(aux.shape[2:])
        assert aux.shape[:2] == main.shape[:2] and len(sizes) == len(shape) and all(
            a <= b for a, b in zip(sizes, previous)), (
            f"deep-supervision output {k} has shape {tuple(aux.shape)} {where}: expected (2, {classes}, ...) "
            f"no larger than {previous}")
        previous = sizes
    for k, value in enumerate(outputs):
        label = "output" if k == 0 else f"deep-supervision output {k}"
        assert value.is_floating_point(), f"{label} dtype {value.dtype} {where}: logits must be float"
        assert torch.isfinite(value).all(), f"{label} {where} holds NaN or infinite values"
    assert not (float(main.detach().min()) >= 0 and float(main.detach().max()) <= 1), (
        f"every output value {where} lies in [0, 1]: it looks like probabilities (a sigmoid or softmax "
        "at the end of forward). segkit models return logits; segkit applies the sigmoid itself."
    )
    return main if len(outputs) == 1 else sum(o.float().mean() for o in outputs)


def _loss_case(mode: str = "binary") -> tuple[torch.Tensor, torch.Tensor]:
    """A small fixed batch and confident correct logits for it, in the layout of ``mode``.

    binary: one image with a square lesion, one without. multiclass: three label values,
    two squares of labels 1 and 2 in the first image. multilabel: two overlapping labels.
    """
    if mode == "binary":
        target = torch.zeros(2, 1, 16, 16)
        target[0, 0, 4:10, 5:12] = 1.0
        return target, 4.0 * (2.0 * target - 1.0)
    if mode == "multiclass":
        target = torch.zeros(2, 1, 16, 16)
        target[0, 0, 2:7, 3:9] = 1.0
        target[0, 0, 9:14, 6:13] = 2.0
        one_hot = torch.nn.functional.one_hot(target[:, 0].long(), 3).permute(0, 3, 1, 2).float()
        return target, 8.0 * one_hot - 4.0
    target = torch.zeros(2, 2, 16, 16)
    target[0, 0, 2:10, 3:11] = 1.0
    target[0, 1, 6:14, 6:14] = 1.0
    return target, 4.0 * (2.0 * target - 1.0)


def check_loss(loss: torch.nn.Module, mode: str = "binary") -> None:
    """A loss returns a finite scalar, is differentiable and ranks predictions sensibly.

    On a fixed batch in the layout of ``mode`` (see :mod:`segkit.labels`; binary: a lesion
    in one image, none in the other) the loss of a confident correct prediction must be
    lower than that of an uncertain one, which must be lower than that of a confident wrong one.
    """
    target, good = _loss_case(mode)
    wrong = -good if mode != "multiclass" else good.roll(1, dims=1)
    predictions = {"correct": good, "uncertain": torch.zeros_like(good), "wrong": wrong}
    values = {}
    for label, logits in predictions.items():
        logits = logits.clone().requires_grad_(True)
        value = loss(logits, target.clone())
        assert isinstance(value, torch.Tensor), f"a loss must return a tensor, got {type(value).__name__}"
        assert value.ndim == 0, f"a loss must return a scalar, got shape {tuple(value.shape)}"
        assert torch.isfinite(value), f"loss of the {label} prediction is {value.item()}"
        value.backward()
        assert logits.grad is not None, f"loss of the {label} prediction is not differentiable w.r.t. the logits"
        assert torch.isfinite(logits.grad).all(), f"gradient for the {label} prediction holds NaN or infinity"
        values[label] = float(value.detach())
    where = "" if mode == "binary" else f" in {mode} mode"
    assert values["correct"] < values["uncertain"] < values["wrong"], (
        f"lower must be better{where}: expected loss(correct) < loss(uncertain) < loss(wrong), got {values}"
    )


def check_metric(metric: Any) -> None:
    """A metric scores count tensors element-wise in [0, 1], with 1.0 for perfect predictions.

    Also checked: ``higher_is_better`` is True, an empty mask predicted empty scores
    1.0, and scalar and 2-D count tensors keep their shape.
    """
    assert getattr(metric, "higher_is_better", None) is True, "a metric needs the attribute higher_is_better = True"
    assert callable(getattr(metric, "score", None)), "a metric needs a method score(tp, fp, fn, tn)"
    tp, fp, fn, tn = torch.randint(0, 50, (4, 3, 5), generator=_seeded())
    scores = metric.score(tp, fp, fn, tn)
    assert isinstance(scores, torch.Tensor), f"score must return a tensor, got {type(scores).__name__}"
    assert tuple(scores.shape) == (3, 5), (
        f"score must be element-wise: counts of shape (3, 5) gave {tuple(scores.shape)}"
    )
    assert scores.is_floating_point(), f"scores must be float, got {scores.dtype}"
    assert ((scores >= 0) & (scores <= 1)).all(), f"scores must lie in [0, 1], got {scores.flatten().tolist()}"
    cases = {
        "a perfect prediction": (12, 0, 0, 88),
        "an empty mask predicted empty": (0, 0, 0, 100),
    }
    for label, counts in cases.items():
        value = metric.score(*(torch.tensor(c) for c in counts))
        assert tuple(value.shape) == (), f"scalar counts must give a scalar score, got shape {tuple(value.shape)}"
        assert float(value) == 1.0, f"{label} (tp, fp, fn, tn = {counts}) must score 1.0, got {float(value)}"


def check_dataset(dataset: Any, max_items: int = 4) -> None:
    """A dataset has items, an index and yields float32 ``(C, H, W)`` images with ``(1, H, W)`` masks.

    Checks ``len > 0``, an ``index`` DataFrame with ``item``, ``case`` and
    ``has_lesion`` columns and one row per item, and the first ``max_items`` items:
    image float32 ``(C, H, W)``, mask float32 ``(1, H, W)`` with values in {0, 1} (label
    values ``0 .. len(labels) - 1`` for a dataset with a ``labels`` attribute of more than
    two names), and ``has_lesion`` matching the raw mask from ``read(i)`` when the dataset has one.
    """
    n = len(dataset)
    assert n > 0, "the dataset is empty"
    index = getattr(dataset, "index", None)
    assert index is not None and hasattr(index, "columns"), "a dataset needs an index DataFrame"
    missing = [c for c in ("item", "case", "has_lesion") if c not in index.columns]
    assert not missing, f"the index lacks the columns {missing}; it has {list(index.columns)}"
    assert len(index) == n, f"the index has {len(index)} rows for {n} items"
    for i in range(min(max_items, n)):
        sample = dataset[i]
        assert isinstance(sample, tuple) and len(sample) == 2, f"item {i} must be a pair (image, mask)"
        image, mask = sample
        for label, value in (("image", image), ("mask", mask)):
            assert isinstance(value, torch.Tensor), (
                f"item {i}: {label} must be a torch.Tensor, got {type(value).__name__}"
            )
            assert value.dtype == torch.float32, f"item {i}: {label} must be float32, got {value.dtype}"
        assert image.ndim == 3, f"item {i}: image must be (C, H, W), got shape {tuple(image.shape)}"
        assert mask.ndim == 3 and mask.shape[0] == 1, f"item {i}: mask must be (1, H, W), got shape {tuple(mask.shape)}"
        assert image.shape[1:] == mask.shape[1:], (
            f"item {i}: image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in size"
        )
        classes = len(getattr(dataset, "labels", None) or (0, 1))
        allowed = torch.arange(classes, dtype=mask.dtype)
        assert torch.isin(mask, allowed).all(), (
            f"item {i}: mask values must be {'0 or 1' if classes == 2 else f'label values 0..{classes - 1}'}, "
            f"got {mask.unique().tolist()}")
        assert torch.isfinite(image).all(), f"item {i}: image holds NaN or infinite values"
        if callable(getattr(dataset, "read", None)):
            _, raw_mask = dataset.read(i)
            has_lesion = bool(index["has_lesion"].iloc[i])
            assert bool((raw_mask > 0).any()) == has_lesion, (
                f"item {i}: index says has_lesion={has_lesion} but the mask from read({i}) disagrees"
            )
    if hasattr(dataset, "cases_table"):
        check_volume_dataset(dataset)


def check_volume_dataset(dataset: Any) -> None:
    """The volume form (:class:`segkit.data.volume.VolumeDataset`): cases, their slices, spacing and channels.

    Checks that every case of ``cases_table`` has exactly its extent along ``slice_axis`` as
    items, numbered 0 .. n-1; that ``channel_names`` names every channel of a slice; that
    ``spacing`` is None or three positive numbers; and that the first case's slices come out at
    ``slice_shape``.
    """
    table = dataset.cases_table
    for column in ("case", "image_paths", "label_path", "shape", "spacing"):
        assert column in table.columns, f"cases_table lacks the column {column!r}; it has {list(table.columns)}"
    assert len(dataset.channel_names) == dataset.slice_channels, (
        f"{len(dataset.channel_names)} channel names for {dataset.slice_channels} channels per slice")
    axis = dataset.slice_axis
    assert axis in (0, 1, 2), f"slice_axis must be 0, 1 or 2, got {axis!r}"
    counts = dataset.index.groupby("case")["slice"].agg(["count", "min", "max"])
    for row in table.itertuples(index=False):
        extent = int(row.shape[axis])
        got = counts.loc[str(row.case)] if str(row.case) in counts.index else None
        assert got is not None and int(got["count"]) == extent and int(got["min"]) == 0 and int(got["max"]) == extent - 1, (
            f"case {row.case!r} has {extent} slices along axis {axis} but the index holds "
            f"{0 if got is None else int(got['count'])} items for it")
    spacing = dataset.spacing
    assert spacing is None or (len(spacing) == 3 and all(float(s) > 0 for s in spacing)), (
        f"spacing must be None or (slice, row, column) > 0, got {spacing!r}")
    first = str(table["case"].iloc[0])
    position = int(dataset.index.index[dataset.index["case"] == first][0])
    image, mask = dataset.read_raw(position)
    assert image.shape[:2] == tuple(dataset.slice_shape) == mask.shape, (
        f"case {first!r}: slice of {image.shape[:2]} / mask {mask.shape}, expected slice_shape {dataset.slice_shape}")


KINDS_IN_ORDER = ("volume_format", "augmentation", "dataset", "loss", "metric", "model")
"""The order components are checked in: cheap checks first."""


def component_keys(distribution: str, registry: Any | None = None) -> list[str]:
    """``"kind:name"`` of every component the installed ``distribution`` registers, cheap kinds first."""
    from segkit.components.registry import get_registry

    registry = registry or get_registry()
    return [f"{kind}:{name}" for kind in KINDS_IN_ORDER for name in registry.names(kind)
            if registry.get(kind, name).plugin.distribution == distribution]


def check_component(key: str, params: dict[str, Any] | None = None, registry: Any | None = None) -> Any:
    """Build the component ``"kind:name"`` through the registry, as ``segkit run`` does, and check it.

    ``params`` are its constructor arguments (models get ``in_channels=3, classes=1`` unless given; a model
    with the attribute ``spatial_dims = 3`` is checked on volumes by :func:`check_volume_model`).
    A model with a ``classes`` parameter is also checked with ``classes=3`` (multi-class), and a
    loss with a ``mode`` parameter in its ``multiclass`` and ``multilabel`` modes (:mod:`segkit.labels`).
    Returns the built component; an ``AssertionError`` says what is wrong, naming ``key`` and its distribution.
    """
    from segkit.components.registry import get_registry

    registry = registry or get_registry()
    kind, _, name = key.partition(":")
    assert kind in KINDS_IN_ORDER and name, f"{key!r} is not of the form kind:name with kind one of {KINDS_IN_ORDER}"
    component = registry.get(kind, name)
    distribution = component.plugin.distribution
    arguments = dict(params or {})
    missing = [p.name for p in component.parameters() if p.required and p.name not in arguments]
    assert not missing, (f"{key} from {distribution} needs {', '.join(missing)}: pass them as "
                         f"params={{{key!r}: {{{missing[0]!r}: ...}}}}")
    names = {p.name for p in component.parameters()}
    if kind == "model":
        arguments = {"in_channels": 3, "classes": 1, **arguments}
    try:
        built = registry.build(kind, name, **arguments)
        torch.manual_seed(0)
        if kind == "model":
            _check_model_as_declared(built, arguments["in_channels"], arguments["classes"])
        else:
            {"loss": check_loss, "metric": check_metric, "dataset": check_dataset, "augmentation": check_augmentation,
             "volume_format": check_volume_format}[kind](built)
        if kind == "model" and "classes" in names and "classes" not in (params or {}):
            several = registry.build(kind, name, **{**arguments, "classes": 3})  # multi-class: C outputs
            _check_model_as_declared(several, arguments["in_channels"], 3, odd=False)
        if kind == "loss" and "mode" in names and "mode" not in (params or {}):
            for mode in ("multiclass", "multilabel"):
                check_loss(registry.build(kind, name, **{**arguments, "mode": mode}), mode)
    except AssertionError as error:
        raise AssertionError(f"{key} from {distribution}: {error}") from None
    return built


def _check_model_as_declared(model: torch.nn.Module, in_channels: int, classes: int, odd: bool = True) -> None:
    """:func:`check_volume_model` for a model with ``spatial_dims = 3``, else :func:`check_model`."""
    if getattr(model, "spatial_dims", 2) == 3:
        check_volume_model(model, in_channels, classes, **({} if odd else {"odd_size": None}))
    else:
        check_model(model, in_channels, classes, **({} if odd else {"odd_size": None}))


def check_components(distribution: str, params: dict[str, dict[str, Any]] | None = None,
                     registry: Any | None = None) -> list[str]:
    """Run the matching check on every component the installed ``distribution`` registers.

    Components are built through the registry (models with ``in_channels=3, classes=1``).
    ``params`` maps ``"kind:name"`` to constructor arguments, e.g. a dataset's ``root``; a
    component with required arguments and no entry fails with a message saying so.
    Returns the checked ``"kind:name"`` keys; an ``AssertionError`` names the failing one.
    For one test per component, use the pytest plugin's ``segkit_component`` instead
    (:mod:`segkit.components.pytest_plugin`).
    """
    keys = component_keys(distribution, registry)
    assert keys, f"the installed distribution {distribution!r} registers no segkit components (is it installed?)"
    for key in keys:
        check_component(key, (params or {}).get(key), registry)
    return keys
