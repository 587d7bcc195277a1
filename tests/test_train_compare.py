"""Tests of the method comparison (bqsam.train.compare): tables, plot, launching runs."""

from __future__ import annotations

import csv
import io
import logging
import statistics

import pytest
import torch

from bqsam.cli import main as bqsam_main
from bqsam.train.checkpoint import write_json_atomic, write_metrics_atomic
from bqsam.train.compare import collect_runs, csv_table, curves_figure, markdown_table, summarize
from bqsam.train.loop import METRIC_COLUMNS


def write_run(directory, method, seed, curve, status="completed"):
    """Write the files of a finished run with a given deployed-accuracy curve."""
    rows = [
        {"epoch": i + 1, "train_loss": 1.0, "train_acc": 0.5, "deployed_test_loss": 1.0,
         "deployed_test_acc": acc, "latent_test_loss": 1.0, "latent_test_acc": acc + 0.01,
         "lr": 0.1, "seconds": 1.0}
        for i, acc in enumerate(curve)
    ]
    write_json_atomic(directory / "config.json", {"method": method, "seed": seed})
    write_metrics_atomic(directory, rows, METRIC_COLUMNS)
    summary = {"status": status, "final": rows[-1] if status == "completed" else {}}
    write_json_atomic(directory / "summary.json", summary)


@pytest.fixture
def run_folder(tmp_path):
    write_run(tmp_path / "sgd-s0", "sgd", 0, [0.3, 0.5])
    write_run(tmp_path / "sgd-s1", "sgd", 1, [0.4, 0.7])
    write_run(tmp_path / "bqsam-s0", "bqsam", 0, [0.2, 0.6])
    write_run(tmp_path / "bqsam-s1", "bqsam", 1, [0.3, 0.62])
    write_run(tmp_path / "bqsam-s2", "bqsam", 2, [0.1, 0.64])
    write_run(tmp_path / "bqsam-s3", "bqsam", 3, [0.1], status="diverged")
    return tmp_path


def test_summary_mean_and_sample_std(run_folder):
    rows = {row.method: row for row in summarize(collect_runs([run_folder]))}
    assert list(rows) == ["sgd", "bqsam"]
    assert rows["sgd"].runs == 2
    assert rows["sgd"].deployed_mean == pytest.approx(0.6)
    assert rows["sgd"].deployed_std == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert rows["bqsam"].runs == 3
    assert rows["bqsam"].seeds == [0, 1, 2]
    assert rows["bqsam"].deployed_mean == pytest.approx(0.62)
    assert rows["bqsam"].latent_mean == pytest.approx(0.63)
    assert rows["bqsam"].incomplete == ["bqsam-s3 (diverged)"]


def test_markdown_and_csv_tables(run_folder):
    rows = summarize(collect_runs([run_folder]))
    markdown = markdown_table(rows)
    assert "| sgd | 2 | 0,1 | 60.00 ± 14.14 |" in markdown
    assert "| bqsam | 3 | 0,1,2 | 62.00 ± 2.00 |" in markdown
    assert "bqsam-s3 (diverged)" in markdown
    table = list(csv.DictReader(io.StringIO(csv_table(rows))))
    assert [row["method"] for row in table] == ["sgd", "bqsam"]
    assert float(table[1]["deployed_test_acc_mean"]) == pytest.approx(0.62)


def test_single_run_has_zero_std(tmp_path):
    write_run(tmp_path / "bc-s0", "bc", 0, [0.42])
    (row,) = summarize(collect_runs([tmp_path / "bc-s0"]))
    assert (row.runs, row.deployed_mean, row.deployed_std) == (1, 0.42, 0.0)


def test_curves_figure_has_one_line_per_method(run_folder):
    figure = curves_figure(collect_runs([run_folder]))
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert labels == ["sgd (n=2)", "bqsam (n=4)"]
    xs, ys = figure.axes[0].lines[0].get_data()
    assert list(xs) == [1, 2]
    assert list(ys) == pytest.approx([35.0, 60.0])


def test_compare_command_collects_run_dirs(run_folder, tmp_path, capsys):
    out = tmp_path / "table"
    assert bqsam_main(["compare", "--runs", str(run_folder), "--out", str(out)]) == 0
    assert "| bqsam | 3 |" in capsys.readouterr().out
    assert (out / "comparison.md").read_text().startswith("| method |")
    assert (out / "comparison.csv").read_text().startswith("method,runs")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--methods", "sgd,adamw"], "method 'adamw' in --methods is invalid"),
        ([], "nothing to compare"),
        (["--runs", "does-not-exist"], "run directory or folder not found"),
        (["--methods", "sgd", "--seeds", "one"], "--seeds='one' is invalid"),
    ],
)
def test_compare_rejects_invalid_arguments(arguments, message, tmp_path, caplog):
    assert bqsam_main(["compare", *arguments, "--out", str(tmp_path / "x")]) == 2
    assert message in caplog.text


def test_compare_launches_missing_runs(cifar10_dir, tmp_path, caplog, capsys):
    previous = torch.get_num_threads()
    out = tmp_path / "launched"
    arguments = [
        "compare", "--methods", "sgd,bc", "--seeds", "0,1", "--data-dir", str(cifar10_dir),
        "--model", "smallcnn", "--epochs", "1", "--train-subset", "64", "--test-subset", "50",
        "--batch-size", "32", "--threads", "1", "--out", str(out),
    ]
    try:
        assert bqsam_main(arguments) == 0
        first = capsys.readouterr().out
        assert "| sgd | 2 | 0,1 |" in first
        assert "| bc | 2 | 0,1 |" in first
        assert sorted(p.name for p in (out / "runs").iterdir()) == ["bc-s0", "bc-s1", "sgd-s0", "sgd-s1"]

        caplog.clear()
        caplog.set_level(logging.INFO, logger="bqsam.train.compare")
        assert bqsam_main(arguments) == 0  # everything is complete: collect only
        assert caplog.text.count("is complete; collecting it") == 4
        assert capsys.readouterr().out == first
    finally:
        torch.set_num_threads(previous)
