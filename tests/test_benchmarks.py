"""Smoke runs of the benchmarks in benchmarks/ at tiny sizes, so the command cannot rot.

The numbers of a smoke run mean nothing. These tests check that every benchmark runs,
returns finite values in its rows and writes the JSON that docs/benchmarks.md describes.
They also check the shared timing and summary helpers.
"""

import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

common = importlib.import_module("benchmarks.common")
runner = importlib.import_module("benchmarks.run")


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- helpers


def test_summarize_min_median_max():
    stats = common.summarize([3.0, 1.0, 2.0, 10.0])
    assert stats["min"] == 1.0
    assert stats["median"] == 2.5
    assert stats["max"] == 10.0
    assert stats["values"] == [3.0, 1.0, 2.0, 10.0]


def test_ratios_divide_repeat_by_repeat():
    assert common.ratios([2.0, 6.0], [1.0, 3.0]) == [2.0, 2.0]


@pytest.mark.parametrize(
    "target, median, met",
    [("<= 2.1", 2.1, True), ("<= 2.1", 2.2, False), (">= 10", 9.9, False), (">= 10", 12.0, True), ("< 0.1", 0.1, False)],
)
def test_row_checks_target_on_median(target, median, met):
    row = common.Row("q", [0.0, median, 100.0], target=target)
    assert row.median == median
    assert row.met is met


def test_paired_timings_alternate_and_rotate():
    order = []
    baseline = lambda: order.append("base")  # noqa: E731
    tasks = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    times = common.paired_timings(baseline, tasks, repeats=2, warmup=0)
    assert order == ["base", "a", "base", "b", "b", "base", "a", "base"]
    assert sorted(times) == ["cpu", "wall"]
    assert sorted(times["wall"]) == ["a", "b", "baseline:a", "baseline:b"]
    assert all(len(values) == 2 for values in times["cpu"].values())


def test_paired_timings_measure_the_slower_task():
    times = common.paired_timings(lambda: None, {"slow": lambda: time.sleep(0.01)}, repeats=2, warmup=0)
    assert min(times["wall"]["slow"]) >= 0.009
    assert max(times["wall"]["baseline:slow"]) < min(times["wall"]["slow"])


def test_format_table_lists_every_row():
    result = common.BenchmarkResult("demo", [common.Row("x / y", [1.0, 2.0], target="<= 2.1")], {}, {})
    table = runner.format_table([result])
    assert "x / y" in table
    assert "yes" in table


# ----------------------------------------------------------------------------- invalid usage


@pytest.mark.parametrize(
    "call",
    [
        lambda: common.summarize([]),
        lambda: common.ratios([1.0], [1.0, 2.0]),
        lambda: common.paired_timings(lambda: None, {"a": lambda: None}, repeats=0),
        lambda: common.Row("q", [1.0], target="about 2"),
        lambda: common.check_scale("huge"),
    ],
)
def test_helpers_reject_invalid_input(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("argv", [["no_such_benchmark"], ["--repeats", "0"], ["--threads", "0"]])
def test_run_rejects_invalid_arguments(argv, capsys):
    with pytest.raises(SystemExit) as error:
        runner.main(argv)
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "unknown benchmark" in message or "must be >= 1" in message


# ----------------------------------------------------------------------------- smoke runs


def _assert_finite_rows(result):
    assert result.rows
    for row in result.rows:
        for value in row.values:
            assert math.isfinite(value), f"{result.name}: {row.quantity} has {value}"


def test_sam_step_smoke_reports_every_method():
    sam_step = importlib.import_module("benchmarks.sam_step")
    result = sam_step.run("smoke", repeats=1)
    _assert_finite_rows(result)
    quantities = [row.quantity for row in result.rows]
    for method in sam_step.METHODS:
        assert f"{method} / SGD" in quantities
    assert "bqsam-ste / sam (binarization)" in quantities


def test_lanczos_smoke_counts_products():
    lanczos = importlib.import_module("benchmarks.lanczos")
    result = lanczos.run("smoke", repeats=1)
    _assert_finite_rows(result)
    counts = [row for row in result.rows if row.unit == "HVP"]
    assert all(value >= 1 for row in counts for value in row.values)


def test_first_within_finds_first_close_estimate():
    lanczos = importlib.import_module("benchmarks.lanczos")
    assert lanczos.first_within([1.0, 1.9, 1.9995, 2.0], 2.0) == 3
    assert lanczos.first_within([1.0, 1.5], 2.0) is None


def test_verify_smoke_records_and_replays_sweeps():
    verify_sweep = importlib.import_module("benchmarks.verify_sweep")
    result = verify_sweep.run("smoke", repeats=1)
    _assert_finite_rows(result)
    assert result.raw["calls"], "the verification run made no run_sweep call"
    assert result.raw["replay"]


def test_recorder_restores_run_sweep():
    verify_runner = importlib.import_module("verify.runner")
    verify_sweep = importlib.import_module("benchmarks.verify_sweep")
    original = verify_runner.run_sweep
    with verify_sweep.recorded_sweeps():
        assert verify_runner.run_sweep is not original
    assert verify_runner.run_sweep is original


def test_trainer_smoke_on_random_images(tmp_path):
    trainer = importlib.import_module("benchmarks.trainer")
    result = trainer.run("smoke", repeats=1, data_dir=tmp_path)
    _assert_finite_rows(result)
    assert any("random uint8 images" in note for note in result.notes)
    shares = [row for row in result.rows if row.quantity.endswith("data-loading share")]
    assert len(shares) == len(trainer.METHODS)
    assert all(0 <= value <= 1 for row in shares for value in row.values)


def test_run_command_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "lanczos", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Lanczos / power HVPs" in completed.stdout
    payload = json.loads(out.read_text())
    assert payload["scale"] == "smoke"
    assert payload["machine"]["torch"] == torch.__version__
    assert "lanczos" in payload["benchmarks"]
