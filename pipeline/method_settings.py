"""The settings a user may give a reconstruction method, checked before anything is read.

A method's settings are the fields of its config (``CSGMConfig``, ``ILOConfig``, ``SGILOConfig``;
SGILO's ``chains`` is ``--samples``; ``AutoConfig`` for ``auto``) or, for the classical solvers,
the keyword arguments of their functions in :mod:`sgilo.pipeline.solvers.classical` that take
plain values (``lam``, ``iterations``, ...; not the generator, the callback or tensor
arguments). They reach :func:`sgilo.pipeline.methods.solve` as ``solver_options``.

``check_settings(method, {"lam": 3e-3})`` validates names and values with pydantic (for the
classical solvers, a model built from the function's signature and type hints) and returns the
settings as JSON values; a wrong one raises :class:`SettingError` naming the field and what is
allowed. ``parse_assignment("steps=[100,100]")`` reads the ``FIELD=VALUE`` of ``--set``: the value
as JSON when it parses, else the text itself.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

#: fields a method's user may not set: they come from other options (``--samples``)
RESERVED: dict[str, frozenset[str]] = {"sgilo": frozenset({"chains"})}
#: classical-solver keyword arguments that are not settings (``dtype``: the precision the
#: generative final step asks of ℓ1-wavelet; the classical method runs as sigpy, complex128)
_NOT_SETTINGS = frozenset({"rng", "callback", "dtype"})


class SettingError(ValueError):
    """A setting that a method does not take, or a value it refuses; ``field`` names it
    (``""``: the settings together)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` → ``(FIELD, VALUE)``, VALUE parsed as JSON when it parses (``3e-3``,
    ``[100,100]``, ``true``, ``null``), else kept as text. Raises ``ValueError`` without ``=``
    or a field name."""
    field, sep, value = text.partition("=")
    field = field.strip()
    if not sep or not field:
        raise ValueError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except ValueError:
        return field, value


def _without_tensors(hint: Any) -> Any | None:
    """``hint`` with ``torch.Tensor`` (and ``Progress``-like callables) taken out of a union;
    ``None`` when nothing settable is left."""
    import torch

    if hint is torch.Tensor:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(hint) if a is not torch.Tensor]
        if not kept or kept == [type(None)]:
            return None
        return typing.Union[tuple(kept)]  # noqa: UP007 - built from a runtime list
    return hint


def _classical_model(method: str) -> type[BaseModel]:
    """A pydantic model of the classical solver's plain keyword arguments and their
    defaults."""
    from sgilo.pipeline.solvers.classical import CLASSICAL

    function = CLASSICAL[method]
    hints = typing.get_type_hints(function)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(function).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or name in _NOT_SETTINGS:
            continue
        hint = _without_tensors(hints.get(name, Any))
        if hint is not None:
            fields[name] = (hint, param.default)
    config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=False)
    return create_model(f"{method}-settings", __config__=config, **fields)


def settings_model(method: str) -> type[BaseModel]:
    """The pydantic model that validates ``method``'s settings."""
    from sgilo.pipeline.methods import METHODS

    if method == "csgm":
        from sgilo.pipeline.solvers.csgm import CSGMConfig

        return CSGMConfig
    if method == "ilo":
        from sgilo.pipeline.solvers.ilo import ILOConfig

        return ILOConfig
    if method == "sgilo":
        from sgilo.pipeline.solvers.sgilo import SGILOConfig

        return SGILOConfig
    if method == "auto":
        from sgilo.pipeline.method_choice import AutoConfig

        return AutoConfig
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return _classical_model(method)


def settable_fields(method: str) -> list[str]:
    """The names ``method`` takes as settings, in the config's order."""
    reserved = RESERVED.get(method, frozenset())
    return [f for f in settings_model(method).model_fields if f not in reserved]


def check_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate ``settings`` for ``method``; returns them as JSON values (tuples as lists), only
    the fields given. Raises :class:`SettingError` (the first wrong field, one line)."""
    model = settings_model(method)
    names = settable_fields(method)
    for field in settings:
        if field not in names:
            allowed = ", ".join(names) or "none"
            why = " (it is set by --samples)" if field in RESERVED.get(method, ()) else ""
            raise SettingError(field, f"{method} has no field {field!r}{why} (fields: {allowed})")
    try:
        config = model(**settings)
    except ValidationError as exc:
        errors = exc.errors()
        loc = errors[0].get("loc") or ()
        field = str(loc[0]) if loc else ""
        # a union (``float | Literal["auto"] | None``) fails once per member: say each
        messages: list[str] = []
        for error in errors:
            where = error.get("loc") or ()
            text = " ".join(str(error.get("msg", exc)).split())
            if (str(where[0]) if where else "") == field and text not in messages:
                messages.append(text)
        message = ", or ".join(messages)
        where = f"{method} field {field!r}" if field else method
        raise SettingError(field, f"{where}: {message}") from None
    return config.model_dump(mode="json", include=set(settings))
