"""Research tools: benchmarks, parameter tuning, speed and prior evaluation, the natural-image
suite.

They measure and tune the production path (``sgilo.pipeline``, ``sgilo.operators``,
``sgilo.models``) and write the tables in docs/; the production path never imports them
(tests/test_layering.py). Reached from the command line through ``sgilo bench``, ``sgilo
scaling``, ``sgilo tune-classical``, ``sgilo tune-generative`` and ``sgilo evaluate-prior``.
"""
