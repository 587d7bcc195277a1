"""Benchmarks of bqsam: step-time ratios, trainer throughput, batched sweeps, Lanczos.

These are scripts, not part of the installed package. Run them from the repository root:

    python benchmarks/run.py                 # every benchmark, full size
    python benchmarks/run.py sam_step --quick --out sam_step.json

docs/benchmarks.md records the numbers, the machine and what limits each ratio.
"""
