"""The iterative algorithms under the solvers, one module each (sigpy's ``alg`` layer): conjugate
gradients, the power iteration, FISTA, the primal–dual hybrid gradient (PDHG) and the two
total-variation solvers built on it. They know nothing about MRI: they take maps (``normal``,
``gradient``, ``prox``) or a :class:`sgilo.operators.base.LinearOperator`, batched over a leading
axis."""
