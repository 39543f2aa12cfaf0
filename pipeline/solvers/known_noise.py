"""The noise level of the data being reconstructed, when the input measured it.

An ISMRMRD file with noise-measurement lines gives the noise std ``σ`` of one complex k-space
sample of one (pre-whitened) coil (:mod:`sgilo.pipeline.io.ismrmrd_noise`; ``E|n|² = σ²``). The
rules that follow the noise level, the default λ raised for noisy data and ``lam="auto"``'s
noise-based fallback (:mod:`sgilo.pipeline.solvers.lambda_rule`), then use that ``σ`` in place of
the estimate from the k-space corners (:func:`sgilo.pipeline.solvers.kspace_cv.
estimate_noise_sigma`), an upper bound that counts what image content reaches the corners as
noise. It reaches them through a context, as every solver and every split of the data that a
hold-out makes sees the same noise: :func:`sgilo.pipeline.reconstruct.reconstruct_study` sets it
around the solve of a study with a noise scan::

    with known_noise_sigma(study.noise_std):
        result = solve(y, op, method, ...)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SIGMA: ContextVar[float | None] = ContextVar("sgilo_known_noise_sigma", default=None)


@contextmanager
def known_noise_sigma(sigma: float | None) -> Iterator[None]:
    """Within the block, :func:`known_sigma` is ``sigma`` (the data's noise std in the units of
    ``y``; ``None``: not known, the corners' estimate is used). The previous value comes back
    after the block, also on an error.

    Raises:
        ValueError: ``sigma`` negative or not finite.
    """
    if sigma is not None and not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"noise sigma must be finite and >= 0, got {sigma!r}")
    token = _SIGMA.set(None if sigma is None else float(sigma))
    try:
        yield
    finally:
        _SIGMA.reset(token)


def known_sigma() -> float | None:
    """The known noise std of the data being reconstructed, or ``None``."""
    return _SIGMA.get()
