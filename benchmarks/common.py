"""Timing helpers and the result records shared by the benchmarks.

On a shared, noisy machine an absolute time is unreliable, so every benchmark measures the
configurations it compares side by side in one process. It interleaves them and reports
each ratio as min / median / max over the repeats, where the ratio of a repeat divides
two timings taken in that same repeat.

Example:
    >>> import time
    >>> from benchmarks.common import paired_timings, summarize
    >>> times = paired_timings(lambda: None, {"b": lambda: time.sleep(1e-3)}, repeats=3)
    >>> sorted(times["wall"]), len(times["wall"]["b"])
    (['b', 'baseline:b'], 3)
    >>> summarize([3.0, 1.0, 2.0])
    {'min': 1.0, 'median': 2.0, 'max': 3.0, 'values': [3.0, 1.0, 2.0]}
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = [
    "SCALES",
    "Row",
    "BenchmarkResult",
    "CLOCKS",
    "paired_timings",
    "summarize",
    "ratios",
    "machine_info",
    "check_scale",
]

# "full": the default run (all benchmarks < 10 minutes); "quick": < 1 minute in all;
# "smoke": tiny sizes for the test suite, whose numbers mean nothing.
SCALES = ("full", "quick", "smoke")


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Return min, median and max of ``values`` with the raw values."""
    if not values:
        raise ValueError("summarize needs at least one value, got an empty list")
    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "values": values}


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Divide two timing lists repeat by repeat (both measured in the same repeats)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"timing lists differ in length: {len(numerator)} and {len(denominator)}")
    return [n / d for n, d in zip(numerator, denominator)]


# time.perf_counter and time.process_time. On a shared machine the process CPU time leaves
# out the time spent waiting for a core, so its ratios scatter less. It counts the spinning
# of extra threads and misses work done on a GPU, so GPU runs use the wall clock.
CLOCKS = ("wall", "cpu")


def paired_timings(
    baseline: Callable[[], Any],
    tasks: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Time every task next to its own run of ``baseline`` and return both, per repeat.

    Each repeat visits the tasks round-robin, and the start rotates by one per repeat. For
    each task it times one call of ``baseline`` and one call of the task back to back: the
    baseline first on even repeats and second on odd ones. The two calls of a pair take a
    fraction of a second, which keeps slow changes of the machine load out of their ratio.
    The garbage collector runs before each call and is disabled during it. ``synchronize``
    (for example ``torch.cuda.synchronize``) runs before the clocks start and stop.

    Returns ``{clock: {task: [...], "baseline:" + task: [...]}}`` for each clock in
    ``CLOCKS``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got {repeats} and {warmup}")
    wait = synchronize if synchronize is not None else (lambda: None)
    for function in (baseline, *tasks.values()):
        for _ in range(warmup):
            function()
        wait()

    def timed(function: Callable[[], Any]) -> tuple[float, float]:
        gc.collect()
        gc.disable()
        try:
            wait()
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            wait()
            return time.perf_counter() - wall, time.process_time() - cpu
        finally:
            gc.enable()

    names = list(tasks)
    keys = names + [f"baseline:{name}" for name in names]
    seconds: dict[str, dict[str, list[float]]] = {clock: {key: [] for key in keys} for clock in CLOCKS}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            if repeat % 2 == 0:
                base, task = timed(baseline), timed(tasks[name])
            else:
                task, base = timed(tasks[name]), timed(baseline)
            for index, clock in enumerate(CLOCKS):
                seconds[clock][name].append(task[index])
                seconds[clock][f"baseline:{name}"].append(base[index])
    return seconds


@dataclass
class Row:
    """One reported quantity: its values over the repeats and the target it is held to.

    ``target`` is a comparison such as ``"<= 2.1"`` or ``">= 10"``, checked on the median.
    ``floor`` is the physical lower bound of the quantity where one exists.
    """

    quantity: str
    values: list[float]
    unit: str = "x"
    target: str | None = None
    floor: float | None = None
    note: str = ""
    min: float = field(init=False)
    median: float = field(init=False)
    max: float = field(init=False)
    met: bool | None = field(init=False)

    def __post_init__(self) -> None:
        stats = summarize(self.values)
        self.values = stats["values"]
        self.min, self.median, self.max = stats["min"], stats["median"], stats["max"]
        self.met = None if self.target is None else _meets(self.median, self.target)


def _meets(value: float, target: str) -> bool:
    operator, _, bound = target.partition(" ")
    limit = float(bound)
    if operator == "<=":
        return value <= limit
    if operator == ">=":
        return value >= limit
    if operator == "<":
        return value < limit
    if operator == ">":
        return value > limit
    raise ValueError(f"target must read '<= X', '>= X', '< X' or '> X', got {target!r}")


@dataclass
class BenchmarkResult:
    """The outcome of one benchmark: table rows, its settings, raw timings and notes."""

    name: str
    rows: list[Row]
    settings: dict[str, Any]
    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        output = ""
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Describe the machine and the software that produced the numbers."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15_min": load,
        "cuda_available": torch.cuda.is_available(),
    }
