"""Measurements of the suite against a reference measured in the same run.

Run one with ``python -m benchmarks NAME`` (``--quick`` for a short run). Each benchmark is a
module ``benchmarks/NAME.py`` with ``run(quick: bool) -> dict`` and ``plot(result, path)``;
the runner writes ``benchmarks/results/NAME.json`` and ``NAME.png``.
"""
