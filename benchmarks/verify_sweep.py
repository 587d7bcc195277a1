"""``bqsam verify`` wall time, and its batched sweeps against one configuration at a time.

The verification suites run each sweep through :func:`verify.runner.run_sweep`: one
``BinarySAM`` param group per step size (``batched=True``) and one row per (rho, lam)
configuration, so ``G`` step sizes times ``C`` rows run as one tensor computation. This
benchmark

1. runs ``bqsam verify`` in this process (``--quick`` settings at the quick and smoke
   scales) and records the arguments and time of every ``run_sweep`` call it makes;
2. replays a sample of the recorded calls, side by side: the batched call as recorded,
   then configurations of it one at a time, each as its own ``run_sweep`` with one step
   size and one row (the same optimizer, problem, start point and step count);
3. estimates the one-configuration-at-a-time time of a call as its configuration count
   times the mean time of its sampled single configurations, and the speed-up of a class
   of calls (deterministic, stochastic) as ``sum(one at a time) / sum(batched)`` over its
   sampled calls, per repeat;
4. scales the recorded sweep time of each class by its speed-up and adds the time the
   suites spend outside ``run_sweep`` to estimate the whole ``bqsam verify`` run one
   configuration at a time.

Calls are sampled evenly within each class and configurations evenly within each call,
so the speed-ups are estimates. The JSON output contains every timing.

Example:
    >>> from benchmarks.verify_sweep import run
    >>> result = run("smoke", repeats=1)       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .common import BenchmarkResult, Row, check_scale

__all__ = ["SweepCall", "recorded_sweeps", "run"]

logger = logging.getLogger(__name__)

SPEEDUP_TARGET = ">= 10"
WALL_TARGET = "<= 120"

# Per scale: verify settings, sampled calls per class (deterministic, stochastic), sampled
# configurations per call, repeats.
SIZES = {
    "full": dict(quick=False, calls=6, configs=2, repeats=3),
    "quick": dict(quick=True, calls=2, configs=1, repeats=2),
    "smoke": dict(quick=True, calls=1, configs=1, repeats=1),
}


@dataclass
class SweepCall:
    """One ``run_sweep`` call of a verification run: its arguments and time (seconds)."""

    kwargs: dict[str, Any]
    seconds: float

    @property
    def groups(self) -> int:
        return len(self.kwargs["etas"])

    @property
    def rows(self) -> int:
        return len(self.kwargs["rhos"])

    @property
    def configurations(self) -> int:
        return self.groups * self.rows

    @property
    def stochastic(self) -> bool:
        return self.kwargs.get("sampling") is not None

    def label(self) -> str:
        problem = type(self.kwargs["problem"]).__name__
        return f"{problem}/{self.kwargs['method'].name}/{self.groups}x{self.rows}"


def _bind(function: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return every argument of a ``run_sweep`` call by name."""
    import inspect

    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


@contextlib.contextmanager
def recorded_sweeps() -> Iterator[list[SweepCall]]:
    """Record every ``verify.runner.run_sweep`` call made inside the block.

    The recorder replaces ``run_sweep`` in ``verify.runner`` and in every loaded
    ``verify`` module that imported it by name, and puts the original back on exit.
    """
    runner = importlib.import_module("verify.runner")
    original = runner.run_sweep
    calls: list[SweepCall] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        arguments = _bind(original, args, kwargs)
        started = time.perf_counter()
        result = original(*args, **kwargs)
        calls.append(SweepCall(arguments, time.perf_counter() - started))
        return result

    patched = []
    for name, module in list(sys.modules.items()):
        if (name == "verify" or name.startswith("verify.")) and getattr(module, "run_sweep", None) is original:
            setattr(module, "run_sweep", recording)
            patched.append(module)
    try:
        yield calls
    finally:
        for module in patched:
            setattr(module, "run_sweep", original)


def _missing_default_suites() -> list[str]:
    from verify.suites import DEFAULT_SUITES

    return [name for name in DEFAULT_SUITES if importlib.util.find_spec(f"verify.suites.{name}") is None]


def _run_verify(quick: bool) -> tuple[float, list[SweepCall], list[str]]:
    """Run ``bqsam verify`` in this process; return its seconds, sweep calls and notes."""
    from bqsam.cli import main as bqsam_main

    # Import the suites first, so that the recorder also replaces their own references.
    from verify.suites import DEFAULT_SUITES

    notes = []
    missing = _missing_default_suites()
    suites = [name for name in DEFAULT_SUITES if name not in missing]
    for name in suites:
        importlib.import_module(f"verify.suites.{name}")
    argv = ["verify", *(["--quick"] if quick else [])]
    if missing:
        argv += [arg for name in suites for arg in ("--suite", name)]
        notes.append(f"suites not present yet, left out of the wall time: {', '.join(missing)}")

    # The command prints one table line per check; keep only its closing summary line.
    printed = io.StringIO()
    with tempfile.TemporaryDirectory() as out, recorded_sweeps() as calls, contextlib.redirect_stdout(printed):
        started = time.perf_counter()
        status = bqsam_main([*argv, "--out", out])
        seconds = time.perf_counter() - started
    command = "bqsam " + " ".join(argv)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    notes.append(f"`{command}` ran in process in {seconds:.1f} s with exit status {status}")
    if lines:
        notes.append(f"its last output line: {lines[-1].split('; reports in')[0]}")
    return seconds, calls, notes


def _single_configuration(call: SweepCall, group: int, row: int) -> dict[str, Any]:
    """Return ``run_sweep`` arguments that run configuration ``(group, row)`` of ``call`` alone."""
    kwargs = dict(call.kwargs)
    w0 = torch.as_tensor(kwargs["w0"])
    kwargs["w0"] = w0 if w0.dim() == 1 else w0[row]
    kwargs["etas"] = [list(call.kwargs["etas"])[group]]
    kwargs["rhos"] = [list(call.kwargs["rhos"])[row]]
    kwargs["lams"] = [list(call.kwargs["lams"])[row]]
    if call.stochastic:
        kwargs["sampling"] = [list(call.kwargs["sampling"])[group]]
    return kwargs


def _fresh(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy call arguments with a new minibatch generator, so replays draw like the original."""
    kwargs = dict(kwargs)
    if kwargs.get("generator") is not None:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    return kwargs


def _evenly(count: int, size: int) -> list[int]:
    if size >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(size - 1, 1)) for i in range(size)})


def _timed(function: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def _sample_calls(calls: list[SweepCall], per_class: int) -> list[SweepCall]:
    """Pick up to ``per_class`` calls evenly from the deterministic and the stochastic calls."""
    chosen = []
    for stochastic in (False, True):
        members = [call for call in calls if call.stochastic == stochastic]
        chosen += [members[i] for i in _evenly(len(members), per_class)]
    return chosen


def _replay(calls: list[SweepCall], sizes: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    """Time the sampled calls batched and one configuration at a time, ``repeats`` times."""
    from verify.runner import run_sweep

    plans = []
    for call in _sample_calls(calls, sizes["calls"]):
        picks = _evenly(call.configurations, sizes["configs"])
        plans.append((call, [(index // call.rows, index % call.rows) for index in picks]))

    records = []
    for repeat in range(repeats):
        for call, picks in plans:
            batched = _timed(lambda: run_sweep(**_fresh(call.kwargs)))
            singles = [
                _timed(lambda g=g, r=r: run_sweep(**_fresh(_single_configuration(call, g, r)))) for g, r in picks
            ]
            records.append(
                {
                    "repeat": repeat,
                    "call": call.label(),
                    "stochastic": call.stochastic,
                    "configurations": call.configurations,
                    "steps": call.kwargs["steps"],
                    "batched_wall": batched[0],
                    "batched_cpu": batched[1],
                    "single_wall": [s[0] for s in singles],
                    "single_cpu": [s[1] for s in singles],
                }
            )
    return records


def _class_speedup(records: list[dict[str, Any]], clock: str) -> float:
    """Return ``sum(one at a time) / sum(batched)`` over ``records`` (one class, one repeat)."""
    single = sum(r["configurations"] * sum(r[f"single_{clock}"]) / len(r[f"single_{clock}"]) for r in records)
    return single / sum(r[f"batched_{clock}"] for r in records)


def _speedups(
    records: list[dict[str, Any]], calls: list[SweepCall], verify_seconds: float, clock: str
) -> dict[str, list[float]]:
    """Return per-repeat speed-ups of each call class, of all sweeps, and of the whole run.

    The sweeps of a class take ``S_class`` seconds batched in the verification run (as
    recorded); one configuration at a time they would take ``S_class * speedup_class``.
    The whole run adds the time the suites spend outside ``run_sweep``, unchanged.
    """
    recorded = {
        stochastic: sum(c.seconds for c in calls if c.stochastic == stochastic) for stochastic in (False, True)
    }
    outside = verify_seconds - sum(recorded.values())
    result: dict[str, list[float]] = {"deterministic": [], "stochastic": [], "sweeps": [], "verify": []}
    for repeat in sorted({r["repeat"] for r in records}):
        estimated = 0.0
        for stochastic, label in ((False, "deterministic"), (True, "stochastic")):
            chosen = [r for r in records if r["repeat"] == repeat and r["stochastic"] == stochastic]
            if not chosen:
                continue
            speedup = _class_speedup(chosen, clock)
            result[label].append(speedup)
            estimated += recorded[stochastic] * speedup
        result["sweeps"].append(estimated / sum(recorded.values()))
        result["verify"].append((estimated + outside) / verify_seconds)
    return result


def run(scale: str = "full", repeats: int | None = None) -> BenchmarkResult:
    """Time ``bqsam verify`` and the speed-up of its batched sweeps."""
    check_scale(scale)
    started = time.perf_counter()
    sizes = SIZES[scale]
    repeats = repeats or sizes["repeats"]
    threads = torch.get_num_threads()

    verify_seconds, calls, notes = _run_verify(sizes["quick"])
    # run_verification sets one thread for the sweeps; the replay does the same.
    torch.set_num_threads(1)
    try:
        records = _replay(calls, sizes, repeats) if calls else []
    finally:
        torch.set_num_threads(threads)

    sweep_seconds = sum(call.seconds for call in calls)
    rows = [
        Row(
            "bqsam verify wall time",
            [verify_seconds],
            unit="s",
            target=WALL_TARGET if not sizes["quick"] else None,
        ),
        Row("run_sweep share of verify time", [sweep_seconds / verify_seconds], unit="frac"),
    ]
    if records:
        speedups = _speedups(records, calls, verify_seconds, "cpu")
        rows.append(Row("verify: one-at-a-time / batched (estimate)", speedups["verify"], target=SPEEDUP_TARGET))
        rows.append(Row("all sweeps: one-at-a-time / batched", speedups["sweeps"]))
        for label in ("deterministic", "stochastic"):
            if speedups[label]:
                rows.append(Row(f"{label} sweeps: one-at-a-time / batched", speedups[label]))
        wall = _speedups(records, calls, verify_seconds, "wall")
        rows.append(Row("all sweeps: one-at-a-time / batched (wall)", wall["sweeps"]))
    else:
        notes.append("the verification run made no run_sweep call, so there is no speed-up to measure")

    notes.append(
        f"{len(calls)} run_sweep calls, {sum(c.configurations for c in calls)} configurations; "
        f"replayed up to {sizes['calls']} deterministic and {sizes['calls']} stochastic calls, up to "
        f"{sizes['configs']} configurations each; speed-ups by process CPU time, weighted by each class's "
        "recorded sweep time"
    )
    settings = {
        "verify_quick": sizes["quick"],
        "sampled_calls": sizes["calls"],
        "sampled_configurations_per_call": sizes["configs"],
        "repeats": repeats,
        "replay_threads": 1,
    }
    raw = {
        "verify_seconds": verify_seconds,
        "calls": [
            {"call": c.label(), "configurations": c.configurations, "stochastic": c.stochastic, "seconds": c.seconds}
            for c in calls
        ],
        "replay": records,
    }
    return BenchmarkResult(
        name="verify", rows=rows, settings=settings, raw=raw, notes=notes, seconds=time.perf_counter() - started
    )
