"""``auto``'s classical output: the candidates blended with weights fitted on held-out k-space.

When ``auto`` (:mod:`sgilo.pipeline.method_choice`) does not keep the generative method on a
slice, it has the classical candidates' fits on ``K`` folds that together hold out every
measured outer column once. Keeping the candidate with the lowest held-out error picks the wrong
one often: ℓ1-wavelet and TV at their defaults differ by 0.5–2 dB on many slices, and a few
outer columns (the ones nearest the centre carry most of the error) cannot rank them reliably.
Their errors are only partly shared, though, so a convex combination of the two usually lands
near the better one and sometimes beats both. The classical output is therefore the
stacked estimate (Breiman, "Stacked regressions", 1996, with the weights on the simplex)

    x = Σ_j w_j x_j,    w = argmin_{w ≥ 0, Σ_j w_j = 1} Σ_k ‖M_k ⊙ (A Σ_j w_j x_j⁽ᵏ⁾ − y)‖²,

where ``x_j`` is candidate ``j`` refitted on every sample, ``x_j⁽ᵏ⁾`` the same candidate fitted
without fold ``k`` and ``M_k`` the mask of fold ``k``'s held-out samples. The objective is the
quadratic ``wᵀ G w − 2 cᵀ w + const`` with

    G_ij = Σ_k Re⟨M_k A x_i⁽ᵏ⁾, M_k A x_j⁽ᵏ⁾⟩,    c_j = Σ_k Re⟨M_k A x_j⁽ᵏ⁾, M_k y⟩,

(:func:`fold_gram`), minimised exactly over the simplex by trying every support
(:func:`simplex_weights`; at most four candidates). The held-out samples' noise is independent of
the fits: it adds its energy to every ``w``'s objective and a cross term of mean zero, and the
weights are a few numbers fitted on thousands of samples. ``w`` at a vertex is the old choice
(one candidate).

Measured on the tuning sets of :mod:`sgilo.pipeline.research.auto_margin` (images no benchmark
scores) by :mod:`sgilo.pipeline.research.classical_blend_eval`: docs/GENERATIVE.md, "The
classical blend".
"""

from __future__ import annotations

import itertools

import torch

from sgilo.pipeline.solvers.kspace_split import SplitPart


def fold_gram(part: SplitPart, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``G`` ``(B, N, N)`` and ``c`` ``(B, N)`` of the module docstring for one fold: the real
    inner products of the candidates' predictions of ``part``'s held-out samples (``images``: N
    complex ``(B, H, W)`` fitted on ``part.fit_y``) with each other and with the held-out data;
    float64 on the CPU. The predictions stay in the data's precision (one k-space array per
    candidate, as large as ``y``); the sums are taken in float64."""
    batch = part.held_y.shape[0]
    predictions = [part.held_op.A(x.to(part.held_y.dtype)) for x in images]
    n = len(predictions)
    gram = torch.zeros(batch, n, n, dtype=torch.float64)
    cross = torch.zeros(batch, n, dtype=torch.float64)
    for i in range(n):
        cross[:, i] = _real_inner(predictions[i], part.held_y)
        for j in range(i, n):
            gram[:, i, j] = gram[:, j, i] = _real_inner(predictions[i], predictions[j])
    return gram, cross


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re⟨a, b⟩`` per slice of two complex ``(B, …)`` arrays: float64 ``(B,)`` on the CPU."""
    product = (a.conj() * b).real.reshape(a.shape[0], -1)
    return product.sum(dim=1, dtype=torch.float64).cpu()


def simplex_weights(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """Per slice, ``argmin wᵀ G w − 2 cᵀ w`` over ``w ≥ 0, Σ w = 1``: float64 ``(B, N)`` from
    ``gram`` ``(B, N, N)`` and ``cross`` ``(B, N)``. Every support is tried (its equality-
    constrained minimum, kept if non-negative); the lowest objective wins, ties to the smaller
    support. Exact for the few candidates ``auto`` has (2^N − 1 supports)."""
    gram, cross = gram.to(torch.float64), cross.to(torch.float64)
    batch, n = cross.shape
    weights = torch.zeros(batch, n, dtype=torch.float64)
    for b in range(batch):
        scale = float(gram[b].diagonal().max().clamp_min(1e-300))
        g, c = gram[b] / scale, cross[b] / scale
        best, best_w = float("inf"), None
        for size in range(1, n + 1):
            for support in itertools.combinations(range(n), size):
                w = _on_support(g, c, list(support))
                if w is None:
                    continue
                value = float(w @ g @ w - 2 * c @ w)
                if value < best - 1e-12 * abs(value):  # a tie keeps the smaller support
                    best, best_w = value, w
        weights[b] = best_w
    return weights


def _on_support(g: torch.Tensor, c: torch.Tensor, support: list[int]) -> torch.Tensor | None:
    """The minimiser of ``wᵀ g w − 2 cᵀ w`` with ``Σ w = 1`` and ``w`` zero off ``support``
    (the KKT system), or ``None`` when it is singular or has a negative entry."""
    k = len(support)
    gs, cs = g[support][:, support], c[support]
    kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    kkt[:k, :k], kkt[:k, k], kkt[k, :k] = 2 * gs, 1.0, 1.0
    rhs = torch.cat([2 * cs, torch.ones(1, dtype=torch.float64)])
    try:
        solution = torch.linalg.solve(kkt, rhs)
    except RuntimeError:  # singular: two candidates predict the same samples identically
        return None
    if not bool(torch.isfinite(solution).all()) or bool((solution[:k] < -1e-12).any()):
        return None
    w = torch.zeros(len(c), dtype=torch.float64)
    w[support] = solution[:k].clamp_min(0)
    return w / w.sum()


def blend_label(names: tuple[str, ...], weights: list[float]) -> str:
    """The name of a slice's classical output: the candidates with a weight, the heaviest first,
    joined by ``+`` (``"tv+l1-wavelet"``); one name where one candidate has all the weight."""
    used = sorted(
        (i for i, w in enumerate(weights) if w > 0), key=lambda i: (-weights[i], names[i])
    )
    return "+".join(names[i] for i in used)
