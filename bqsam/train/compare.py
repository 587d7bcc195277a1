"""Comparison of methods over seeds: one table and one plot from run directories.

``bqsam compare`` collects run directories (each with ``config.json``, ``metrics.jsonl`` and
``summary.json``), optionally launching the missing method x seed runs one after another,
and writes to its output folder:

* ``comparison.md`` and ``comparison.csv``: per method, the number of completed runs and the
  mean +- sample standard deviation (ddof = 1; 0 for a single run) of the final deployed
  test accuracy, and of the final latent test accuracy as a diagnostic;
* ``curves.png``: deployed test accuracy per epoch, mean over seeds with a +-1 std band.

Runs that diverged or did not finish are listed in the table's notes, not averaged.

Example (needs run directories)::

    from bqsam.train.compare import collect_runs, summarize, markdown_table
    rows = summarize(collect_runs(["runs/"]))
    print(markdown_table(rows))
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .checkpoint import read_json, read_metrics, write_bytes_atomic, write_text_atomic
from .config import METHODS

__all__ = [
    "RunRecord",
    "MethodSummary",
    "collect_runs",
    "summarize",
    "markdown_table",
    "csv_table",
    "curves_figure",
    "launch_runs",
    "run_comparison",
]

logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One run directory: its method, seed, status and deployed-accuracy curve."""

    path: Path
    method: str
    seed: int
    status: str
    final_deployed_acc: float | None
    final_latent_acc: float | None
    epochs: list[int] = field(default_factory=list)
    deployed_acc: list[float] = field(default_factory=list)


@dataclass
class MethodSummary:
    """Final deployed and latent test accuracy of one method over its completed runs."""

    method: str
    runs: int
    deployed_mean: float
    deployed_std: float
    latent_mean: float
    latent_std: float
    seeds: list[int]
    incomplete: list[str]


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"run directory or folder not found: {path}")
        if _is_run_dir(path):
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and _is_run_dir(child))
        if not children:
            raise ValueError(f"no run directories found in {path}: expected folders with config.json")
        found.extend(children)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_run(path: Path) -> RunRecord:
    """Read one run directory; a run without ``summary.json`` has status ``incomplete``."""
    config = read_json(path / "config.json")
    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    metrics = read_metrics(path)
    status = summary.get("status", "incomplete")
    final = summary.get("final") or {}
    return RunRecord(
        path=path,
        method=config["method"],
        seed=int(config["seed"]),
        status=status,
        final_deployed_acc=final.get("deployed_test_acc") if status == "completed" else None,
        final_latent_acc=final.get("latent_test_acc") if status == "completed" else None,
        epochs=[int(row["epoch"]) for row in metrics],
        deployed_acc=[row["deployed_test_acc"] for row in metrics],
    )


def collect_runs(paths: Iterable[str | os.PathLike]) -> list[RunRecord]:
    """Read every run directory named in ``paths`` or directly inside a folder of ``paths``."""
    return [read_run(path) for path in _find_run_dirs(paths)]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize(records: Sequence[RunRecord]) -> list[MethodSummary]:
    """Aggregate the records per method, in the order sgd, sam, bc, br, bqsam."""
    methods = sorted({r.method for r in records}, key=lambda m: (METHODS.index(m) if m in METHODS else 99, m))
    rows = []
    for method in methods:
        mine = [r for r in records if r.method == method]
        done = [r for r in mine if r.status == "completed" and r.final_deployed_acc is not None]
        deployed = _mean_std([r.final_deployed_acc for r in done])
        latent = _mean_std([r.final_latent_acc for r in done])
        rows.append(
            MethodSummary(
                method=method,
                runs=len(done),
                deployed_mean=deployed[0],
                deployed_std=deployed[1],
                latent_mean=latent[0],
                latent_std=latent[1],
                seeds=sorted(r.seed for r in done),
                incomplete=[f"{r.path.name} ({r.status})" for r in mine if r not in done],
            )
        )
    return rows


def _percent(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(rows: Sequence[MethodSummary]) -> str:
    """Return the comparison as a Markdown table (accuracies in percent)."""
    lines = [
        "| method | runs | seeds | deployed test acc (%) | latent test acc (%) |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        seeds = ",".join(str(seed) for seed in row.seeds) or "-"
        lines.append(
            f"| {row.method} | {row.runs} | {seeds} | {_percent(row.deployed_mean, row.deployed_std)} "
            f"| {_percent(row.latent_mean, row.latent_std)} |"
        )
    notes = [f"- {row.method}: not averaged: {', '.join(row.incomplete)}" for row in rows if row.incomplete]
    text = "\n".join(lines) + "\n"
    text += "\nMean ± sample standard deviation over seeds of the final-epoch accuracy.\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def csv_table(rows: Sequence[MethodSummary]) -> str:
    """Return the comparison as CSV (accuracies as fractions)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["method", "runs", "seeds", "deployed_test_acc_mean", "deployed_test_acc_std",
         "latent_test_acc_mean", "latent_test_acc_std", "not_averaged"]
    )
    for row in rows:
        writer.writerow(
            [row.method, row.runs, " ".join(map(str, row.seeds)), repr(row.deployed_mean),
             repr(row.deployed_std), repr(row.latent_mean), repr(row.latent_std), "; ".join(row.incomplete)]
        )
    return buffer.getvalue()


def curves_figure(records: Sequence[RunRecord]):
    """Return a matplotlib Figure of deployed test accuracy per epoch, mean ± std per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for row in summarize(records):
        curves = [r for r in records if r.method == row.method and r.epochs]
        if not curves:
            continue
        length = min(len(r.epochs) for r in curves)
        epochs = curves[0].epochs[:length]
        means, stds = [], []
        for index in range(length):
            mean, std = _mean_std([r.deployed_acc[index] for r in curves])
            means.append(100 * mean)
            stds.append(100 * std)
        line = axes.plot(epochs, means, marker="o", markersize=3, label=f"{row.method} (n={len(curves)})")[0]
        axes.fill_between(
            epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
            color=line.get_color(), alpha=0.2, linewidth=0,
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("deployed test accuracy (%)")
    axes.set_title("Binary (deployed) model, mean ± std over seeds")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    return figure


def launch_runs(
    methods: Sequence[str], seeds: Sequence[int], base_config, runs_dir: Path
) -> list[Path]:
    """Train every method x seed that has no completed run in ``runs_dir``, one after another.

    A run directory with a checkpoint but no completed summary is resumed. Returns the run
    directories in launch order.
    """
    import dataclasses

    from .loop import TrainingDiverged, train

    configs = []
    for method in methods:
        for seed in seeds:
            out = runs_dir / f"{method}-s{seed}"
            # Resolve every config before the first run: invalid settings fail before any work.
            config = dataclasses.replace(base_config, method=method, seed=seed, out=str(out), resume=True)
            configs.append(config.resolved())
    paths = []
    for config in configs:
        out = Path(config.out)
        paths.append(out)
        summary_path = out / "summary.json"
        if summary_path.is_file() and read_json(summary_path).get("status") == "completed":
            logger.info("%s is complete; collecting it", out)
            continue
        logger.info("launching %s (method %s, seed %d)", out, config.method, config.seed)
        try:
            train(config)
        except TrainingDiverged as error:
            logger.error("%s diverged: %s", out, error)
    return paths


def _parse_list(text: str | None, name: str, cast=str) -> list:
    if not text:
        return []
    try:
        return [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise ValueError(f"--{name}={text!r} is invalid; expected a comma-separated list ({error})") from error


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Launch (``--methods``/``--seeds``) and collect (``--runs``) runs, write table and plot."""
    from .cli import config_from_args

    out = Path(args.out)
    methods = _parse_list(args.methods, "methods")
    seeds = _parse_list(args.seeds, "seeds", int)
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method {method!r} in --methods is invalid; valid: {', '.join(METHODS)}")
    if not methods and not args.runs:
        raise ValueError("nothing to compare: pass --runs DIR ... to collect, and/or --methods to launch")

    run_paths: list[str | os.PathLike] = list(args.runs)
    if methods:
        if not seeds:
            raise ValueError("--seeds is empty; pass e.g. --seeds 0,1,2")
        base = config_from_args(args, method=methods[0])
        run_paths.extend(launch_runs(methods, seeds, base, out / "runs"))

    records = collect_runs(run_paths)
    rows = summarize(records)
    markdown = markdown_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", markdown)
    write_text_atomic(out / "comparison.csv", csv_table(rows))
    buffer = io.BytesIO()
    curves_figure(records).savefig(buffer, format="png", dpi=120)
    write_bytes_atomic(out / "curves.png", buffer.getvalue())
    logger.info("wrote %s, %s and %s", out / "comparison.md", out / "comparison.csv", out / "curves.png")
    return {"markdown": markdown, "rows": rows, "records": records}
