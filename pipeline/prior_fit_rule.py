"""The thresholds of the prior-fit tests, by a slice's acceleration and kind of data.

A generative reconstruction's prior-fit report (:mod:`sgilo.pipeline.prior_fit`) counts a slice as
unlike the prior's training images where its held-out ratio is above the margin ``τ(R)``
(:func:`prior_margin`) or, from :data:`UNEXPLAINED_FROM` on, its unexplained fraction ``u`` is
above the limit ``θ(R)`` (:func:`unexplained_limit`); ``auto`` (:mod:`sgilo.pipeline.method_choice`)
keeps a classical method there. Both are chosen on a tuning set that no benchmark scores
(:mod:`sgilo.pipeline.research.auto_margin`, docs/GENERATIVE.md), per acceleration and per kind of
data (one coil, or more), as tables of ``(R, value)`` pairs, log-linear in ``R`` between them and
constant outside.
"""

from __future__ import annotations

import math

#: the prior margin ``τ(R)`` of data with more than one coil, by a slice's acceleration ``R`` (all
#: k-space samples over the measured ones): ``(R, τ)`` pairs, log-linear in ``R`` between them and
#: constant outside. A prior-fit ratio above ``τ(R)`` says the data is unlike the prior's training
#: images (``auto`` keeps the classical method). It grows with ``R`` because fewer measured outer
#: columns lie near the centre, so the held-out ones sit where a generator is weakest even on data
#: it knows (:mod:`sgilo.pipeline.prior_fit`); chosen per acceleration on a tuning set that no
#: benchmark scores (:mod:`sgilo.pipeline.research.auto_margin`, docs/GENERATIVE.md). The 8× margin
#: was 1.5 until the output's final step kept only the model image's trusted band
#: (:mod:`sgilo.pipeline.solvers.trusted_band`); re-measured with it, 3.0 (auto's mean loss on the
#: 24 8-coil 8× tuning rows 0.43 dB at θ = 0.09, against 1.05 at 1.5)
PRIOR_MARGINS: tuple[tuple[float, float], ...] = ((4.0, 2.0), (8.0, 3.0))
#: the same for data of one coil (single-coil, or a SENSE file with one map). At 8× one coil's
#: one or two held-out columns make the ratio far noisier than several coils' views of the same
#: columns (0.9–2.6 on axial brains the prior wins by 0.2–3.8 dB). With the limit ``θ`` of
#: :data:`UNEXPLAINED_LIMIT` (chosen on all 8× rows together with one margin for both kinds),
#: each kind's rows choose their own 8× margin by the same rule: one coil τ = 3 (auto's mean
#: loss there 0.18 dB; 0.25 at τ = 1.8, which rejected one more slice, one the prior won by
#: 1.6 dB), 8 coils τ = 1.5 (0.40 dB, as at 1.8 and 2.0; docs/GENERATIVE.md); re-measured
#: with the trusted band, one coil τ = 3 again (0.28 dB at θ = 0.09). The 4× margin of both
#: kinds was 1.0 behind a second generative fit (``auto``'s ``second_fit_below``); re-measured
#: with the band, the first fit alone at τ = 2.0 lost least on the 48 4× tuning rows (0.30 dB
#: mean, one coil 0.40, 8 coils 0.20; the second fit at τ = 1.0: 0.41, 0.46, 0.35), so the
#: second fit is off by default and τ(4×) = 2.0 for both kinds
SINGLE_COIL_PRIOR_MARGINS: tuple[tuple[float, float], ...] = ((4.0, 2.0), (8.0, 3.0))
#: the unexplained fraction ``u`` (:mod:`sgilo.pipeline.prior_fit`) above which a slice accelerated
#: at least :data:`UNEXPLAINED_FROM` times counts as unlike the prior's training images; chosen on
#: all 8× rows of the same tuning set together with one 8× margin for both kinds of data, 1.8
#: (docs/GENERATIVE.md; each kind's own margin came after, at this θ). Data of more than one coil
#: keep it at every acceleration
UNEXPLAINED_LIMIT = 0.09
#: ``θ(R)`` for data of one coil: ``(R, θ)`` pairs as :data:`SINGLE_COIL_PRIOR_MARGINS`. A kind
#: of data gets a limit of its own where its rows choose one that loses less than the joint θ by
#: more than what they resolve (:func:`sgilo.pipeline.research.auto_margin.choose_kind_limit`):
#: the 24 single-coil 8× rows (trusted band) at τ 3 lose 0.22 dB at θ 0.10 against 0.28 at 0.09
#: (the 8-coil rows 0.43 at 0.06–0.09, the 4× rows of each kind 0.08–0.09 within 0.01 dB:
#: joint θ; docs/GENERATIVE.md, "A limit per kind of data")
SINGLE_COIL_UNEXPLAINED_LIMITS: tuple[tuple[float, float], ...] = (
    (4.0, UNEXPLAINED_LIMIT),
    (8.0, 0.10),
)
#: the lowest acceleration at which ``u`` is judged. It was 6 (8× data only) while a second
#: generative fit decided at 4×; with the first fit alone at 4× (τ 2.0), the same θ = 0.09 on
#: the 48 4× tuning rows lowered auto's mean loss to the best single method from 0.30 to
#: 0.14 dB (one coil 0.40 → 0.22, 8 coils 0.20 → 0.06; worst loss to the best classical
#: 1.76 → 1.63 dB; θ 0.08–0.09 best at every τ, docs/GENERATIVE.md). The tuning mask's 4× is
#: 4.7 realised; fastMRI random 4× masks of 128 columns realise 2.9–5.8 (5–95 %: 3.3–4.9), so
#: the limit applies from 3×
UNEXPLAINED_FROM = 3.0


def unexplained_limit(acceleration: float, *, multi_coil: bool) -> float | None:
    """``θ(R)`` for a slice accelerated ``R`` ≥ :data:`UNEXPLAINED_FROM` times:
    :data:`UNEXPLAINED_LIMIT` for data of more than one coil, of
    :data:`SINGLE_COIL_UNEXPLAINED_LIMITS` for one coil; ``None`` below (``u`` is then
    reported, not judged)."""
    if float(acceleration) < UNEXPLAINED_FROM:
        return None
    if multi_coil:
        return UNEXPLAINED_LIMIT
    return _log_linear(SINGLE_COIL_UNEXPLAINED_LIMITS, acceleration)


def prior_margin(acceleration: float, *, multi_coil: bool) -> float:
    """``τ(R)`` for an acceleration ``R`` (≥ 1): of :data:`PRIOR_MARGINS` for data of more
    than one coil, of :data:`SINGLE_COIL_PRIOR_MARGINS` for one coil (single-coil data, or
    multi-coil data with one coil map)."""
    return _log_linear(PRIOR_MARGINS if multi_coil else SINGLE_COIL_PRIOR_MARGINS, acceleration)


def _log_linear(table: tuple[tuple[float, float], ...], acceleration: float) -> float:
    """The value of ``(R, value)`` pairs at ``R``: log-linear in ``R`` between them, constant
    outside."""
    points = [(math.log(r), t) for r, t in table]
    x = math.log(max(float(acceleration), 1.0))
    if x <= points[0][0]:
        return points[0][1]
    for (r0, t0), (r1, t1) in zip(points[:-1], points[1:], strict=True):
        if x <= r1:
            return t0 + (t1 - t0) * (x - r0) / (r1 - r0)
    return points[-1][1]


#: ``auto`` keeps a classical method on a single-coil slice accelerated less than
#: :data:`NOISE_LIMIT_BELOW` times whose estimated noise level ``σ̂/s`` (the noise std over the
#: data scale; a noise scan's σ where the input has one) is above this. At single-coil 4× and
#: 12 dB SGILO fell 1.7 dB below the best classical method on average over the 24 tuning slices
#: of both default sets (0.3 at 20 dB; it led at 8× at both), and every method's held-out error is
#: then the noise, so the held-out ratio cannot tell (docs/GENERATIVE.md, "Single-coil data at
#: 12 dB"). Chosen on those 48 single-coil 4× rows at 12 and 20 dB
#: (:func:`sgilo.pipeline.research.auto_margin.measure` with ``snr_db``) as the smallest limit
#: within 0.05 dB of the lowest mean loss: 0.33 dB against 0.47 without it
SINGLE_COIL_NOISE_LIMIT = 0.09
#: the noise limit applies below this acceleration: the geometric middle of the tuning set's 4×
#: and 8× (at 8× SGILO led at every noise level measured, 10–30 dB)
NOISE_LIMIT_BELOW = 4.0 * math.sqrt(2.0)


def noise_limit(acceleration: float, *, multi_coil: bool) -> float | None:
    """The limit of ``σ̂/s`` above which ``auto`` keeps a classical method on a slice
    accelerated ``R`` times: :data:`SINGLE_COIL_NOISE_LIMIT` for data of one coil below
    :data:`NOISE_LIMIT_BELOW`, else ``None`` (not judged)."""
    if multi_coil or float(acceleration) >= NOISE_LIMIT_BELOW:
        return None
    return SINGLE_COIL_NOISE_LIMIT
