"""The encoding counters of ISMRMRD imaging lines that split one file into volumes.

A *volume* is one value of each of :data:`VOLUME_COUNTERS` (contrast = echo, cardiac/temporal
phase, repetition, set); each volume is read as its own k-space study. ``average`` is not a volume
counter: repeated lines are averaged; ``slice`` and ``kspace_encode_step_{1,2}`` place the lines
inside a volume.

Volume names: the file stem when the file holds one volume; otherwise the stem plus, for each
counter that takes more than one value in the file, ``_<letter><value>`` with the letters of
:data:`LETTERS` (``scan_c1_r0``: contrast 1, repetition 0).

A selection (``{"repetition": {0, 2}, "contrast": {1}}``; text form ``"repetition=0,2;
contrast=1"``, see :func:`parse_selection`) keeps the volumes whose counters are all in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

VOLUME_COUNTERS = ("contrast", "phase", "repetition", "set")
LETTERS = {"contrast": "c", "phase": "p", "repetition": "r", "set": "s"}
#: most volumes one file may give (a counter is 16 bits: 65536^4 keys could be declared)
MAX_VOLUMES = 256

Selection = dict[str, frozenset[int]]


def parse_selection(text: str) -> Selection:
    """``"repetition=0,2;contrast=1"`` → ``{"repetition": {0, 2}, "contrast": {1}}``.

    Raises:
        ValueError: an unknown counter, a counter named twice, or a value that is not a
            non-negative integer.
    """
    selection: dict[str, frozenset[int]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in VOLUME_COUNTERS:
            raise ValueError(
                f"bad volume selection {part!r}: expected COUNTER=V[,V...] with COUNTER one of "
                f"{', '.join(VOLUME_COUNTERS)}"
            )
        if name in selection:
            raise ValueError(f"bad volume selection: {name} named twice")
        try:
            numbers = frozenset(int(v) for v in values.split(","))
        except ValueError as exc:
            raise ValueError(f"bad volume selection {part!r}: values must be integers") from exc
        if not numbers or min(numbers) < 0:
            raise ValueError(f"bad volume selection {part!r}: values must be >= 0")
        selection[name] = numbers
    if not selection:
        raise ValueError(f"empty volume selection {text!r}")
    return selection


def volume_keys(idx: np.ndarray) -> np.ndarray:
    """The volume key of each line: int64 ``(lines, 4)``, the :data:`VOLUME_COUNTERS` of the
    ``idx`` records ``idx`` (the acquisition table's encoding counters)."""
    return np.stack([idx[name].astype(np.int64) for name in VOLUME_COUNTERS], axis=1)


def varying(keys: np.ndarray) -> list[str]:
    """The counters that take more than one value among ``keys`` ``(lines, 4)``."""
    return [n for j, n in enumerate(VOLUME_COUNTERS) if np.unique(keys[:, j]).size > 1]


def volume_name(stem: str, key: tuple[int, ...], names: list[str]) -> str:
    """``stem`` plus ``_<letter><value>`` for each counter of ``names`` (the varying ones)."""
    parts = [f"{LETTERS[n]}{key[VOLUME_COUNTERS.index(n)]}" for n in names]
    return "_".join([stem, *parts])


def selected(key: tuple[int, ...], selection: Selection | None) -> bool:
    """Whether a volume key is kept by ``selection`` (``None`` keeps all)."""
    if not selection:
        return True
    return all(key[VOLUME_COUNTERS.index(n)] in values for n, values in selection.items())


def check_selection(text: str) -> str:
    """``text`` if it is a valid selection (:func:`parse_selection`; raises ``ValueError``
    otherwise), for command-line options that pass the text on."""
    parse_selection(text)
    return text.strip()


_SELECTION: ContextVar[Selection | None] = ContextVar("ismrmrd_volume_selection", default=None)


def current_selection() -> Selection | None:
    """The selection in force (:func:`volume_selection`), or ``None`` (all volumes)."""
    return _SELECTION.get()


@contextmanager
def volume_selection(selection: str | Selection | None) -> Iterator[Selection | None]:
    """Put a selection (text or parsed; ``None``: all volumes) in force for the block: the
    ISMRMRD reader keeps only the volumes it selects."""
    parsed = parse_selection(selection) if isinstance(selection, str) else selection
    token = _SELECTION.set(parsed)
    try:
        yield parsed
    finally:
        _SELECTION.reset(token)
