"""The iterative algorithms under the solvers, one module each (sigpy's ``alg`` layer): conjugate
gradients, the power iteration, FISTA and the primal–dual total-variation solver. They know
nothing about MRI: they take maps (``normal``, ``gradient``, ``prox``) or a
:class:`sgilo.operators.base.LinearOperator`, batched over a leading axis."""
