"""Parameters of a component target, read from its signature, and checks of user values.

Values come from TOML (typed) or from ``--set`` (parsed as TOML), so the checks
are about types, not about parsing strings.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from segkit.errors import ConfigError, unknown_name

__all__ = ["Parameter", "signature_parameters", "accepts_extra", "passthrough_signature", "check_params", "type_name",
           "coerce_value", "require_positive_ints", "check_numbers"]

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Parameter:
    """One keyword parameter: name, annotation (or None) and default (``inspect.Parameter.empty`` when required)."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is _EMPTY

    @property
    def type_label(self) -> str:
        return type_name(self.annotation)

    @property
    def default_label(self) -> str:
        return "(required)" if self.required else repr(self.default)


def _callable_for_signature(target: Callable[..., Any]) -> Callable[..., Any]:
    return target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]


def _signature(target: Callable[..., Any]) -> inspect.Signature:
    """The signature segkit reads: a class's ``__init__`` (none for a class without one), else the function's.

    A target's ``__signature__`` is honoured, so one that passes ``**kwargs`` on to a library can
    list those parameters (:func:`passthrough_signature`).
    """
    if inspect.isclass(target) and target.__init__ is object.__init__:  # type: ignore[misc]
        return inspect.Signature()  # object.__init__'s (*args, **kwargs) accepts nothing
    return inspect.signature(_callable_for_signature(target))


def signature_parameters(target: Callable[..., Any]) -> list[Parameter]:
    """The named keyword parameters of ``target`` (a class's ``__init__`` or a function)."""
    function = _callable_for_signature(target)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: show them unchecked
        hints = {}
    params = []
    for index, param in enumerate(_signature(target).parameters.values()):
        if index == 0 and inspect.isclass(target) and param.name == "self":
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue
        annotation = hints.get(param.name)
        if annotation is None and param.annotation is not _EMPTY and not isinstance(param.annotation, str):
            annotation = param.annotation  # listed by __signature__ with the annotation itself
        params.append(Parameter(param.name, annotation, param.default))
    return params


def accepts_extra(target: Callable[..., Any]) -> bool:
    """Whether ``target`` takes ``**kwargs`` that its signature does not list (then unknown keys pass through)."""
    return any(p.kind is p.VAR_KEYWORD for p in _signature(target).parameters.values())


def passthrough_signature(
    target: Callable[..., Any],
    wrapped: Callable[..., Any],
    exclude: Iterable[str] = (),
    extra: Iterable[inspect.Parameter] = (),
) -> inspect.Signature:
    """``target``'s signature with its ``**kwargs`` replaced by the keyword parameters of ``wrapped``.

    For a target that hands ``**kwargs`` on to a library (``smp.Unet``): set the result as the
    target's ``__signature__`` and ``segkit info`` lists those parameters, and a misspelt one
    is refused before any work like any other unknown key. ``exclude``: parameters of
    ``wrapped`` the target does not accept; ``extra``: further parameters it does.
    """
    own = _signature(target)
    try:
        hints = typing.get_type_hints(wrapped)
    except Exception:
        hints = {}
    named = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in named} | set(exclude) | {"self"}
    added = [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                          annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(wrapped).parameters.values()
        if p.name not in taken and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    added += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in extra if p.name not in taken]
    return own.replace(parameters=[*named, *added])


def type_name(annotation: Any) -> str:
    """A short, readable name for an annotation: ``int``, ``float | None``, ``list[int]``."""
    if annotation is None:
        return "any"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


_NO = object()


def coerce_value(value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` where that is lossless, else ``_NO``.

    An int passes for a float; a list passes for a tuple; nothing else is converted.
    """
    if annotation is None or annotation is Any:
        return value
    if annotation is type(None):
        return value if value is None else _NO
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            converted = coerce_value(value, arg)
            if converted is not _NO:
                return converted
        return _NO
    if origin is typing.Literal:
        return value if value in typing.get_args(annotation) else _NO
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return _NO
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item_type = args[0] if len(args) == 1 or origin is not tuple else None
        items = [coerce_value(v, item_type) if item_type is not None else v for v in value]
        if any(item is _NO for item in items):
            return _NO
        return tuple(items) if origin is tuple else list(items)
    if annotation in (list, tuple):  # a bare ``tuple`` (MONAI's ``act: tuple | str``) takes a TOML list
        return annotation(value) if isinstance(value, (list, tuple)) else _NO
    if origin is dict or annotation is dict:
        return value if isinstance(value, dict) else _NO
    if annotation is bool:
        return value if isinstance(value, bool) else _NO
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if annotation is float:
        if isinstance(value, bool):
            return _NO
        return float(value) if isinstance(value, (int, float)) else _NO
    if annotation is str:
        return value if isinstance(value, str) else _NO
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else _NO
    return value


def check_params(
    what: str, target: Callable[..., Any], params: Mapping[str, Any], hint: str | None = None,
    extra: Iterable[Parameter] = (),
) -> dict[str, Any]:
    """Check ``params`` against ``target``'s signature and return them coerced.

    An unknown key (when the target takes no ``**kwargs``) or a value of the wrong
    type raises :class:`ConfigError` / ``UnknownNameError`` listing the valid keys with types.
    ``extra``: parameters segkit handles itself for every component of a kind (``dataset.cases``).
    """
    known = {p.name: p for p in [*signature_parameters(target), *extra]}
    valid = ", ".join(f"{p.name}: {p.type_label}" for p in known.values()) or "(none)"
    checked: dict[str, Any] = {}
    for key, value in params.items():
        param = known.get(key)
        if param is None:
            if accepts_extra(target):
                checked[key] = value
                continue
            raise unknown_name(f"parameter of {what}", key, known, hint, listing=f"Valid parameters: {valid}.")
        converted = coerce_value(value, param.annotation)
        if converted is _NO:
            raise ConfigError(
                f"parameter {key!r} of {what} must be {param.type_label}, got {value!r} "
                f"({type(value).__name__}). Valid parameters: {valid}." + (f" {hint}" if hint else "")
            )
        checked[key] = converted
    missing = [p.name for p in known.values() if p.required and p.name not in params]
    if missing:
        raise ConfigError(
            f"{what} needs the parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}. Valid parameters: {valid}."
            + (f" {hint}" if hint else "")
        )
    return checked


def require_positive_ints(owner: str, **values: Any) -> None:
    """A :class:`ConfigError` naming the first of ``values`` that is not an integer >= 1 (``owner``: who asks)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{owner}: {name} must be an integer >= 1, got {value!r}")


def check_spacing(spacing: Any, where: str) -> tuple[float, ...] | None:
    """A dataset's ``spacing`` parameter as 2 or 3 positive floats, or None; a :class:`ConfigError` otherwise."""
    if spacing is None:
        return None
    values = list(spacing) if isinstance(spacing, (list, tuple)) else None
    if not values or len(values) not in (2, 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"{where}: spacing must be the physical size of a pixel as [row, column] or, with the "
                          f"distance between slices, [slice, row, column], all positive (e.g. [3.0, 0.5, 0.5] in mm); "
                          f"got {spacing!r}")
    return tuple(float(v) for v in values)



_INT64_MAX = 2**63 - 1


def _bad_number(value: Any) -> str | None:
    """Why ``value`` (or a number inside a list, tuple or table) cannot be used; None when it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if isinstance(value, int) and abs(value) > _INT64_MAX:
        return f"{value} does not fit a 64-bit integer (the largest is 2**63 - 1)"
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((reason for reason in map(_bad_number, items) if reason), None)


def check_numbers(what: str, params: Mapping[str, Any]) -> None:
    """A :class:`ConfigError` for the first parameter holding an infinite, NaN or beyond-64-bit number.

    No component can use such a value (torch, numpy and OpenCV take 64-bit integers and finite
    sizes, rates and fractions), so it is refused before anything is built.
    """
    for key, value in params.items():
        reason = _bad_number(value)
        if reason:
            raise ConfigError(f"parameter {key!r} of {what}: {reason}; give a finite value in the range it means.")
