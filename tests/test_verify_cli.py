"""`bqsam verify` end to end: quick run, report files, exit status and invalid usage."""

import argparse
import json

import pytest

from verify import cli
from verify.suites import SUITES

REPORT_KEYS = {"id", "theorem", "problem", "method", "empirical", "bound", "ratio", "passed", "control"}
SUMMARY_KEYS = {"total", "passed", "failed", "controls", "seconds"}


def _args(out, suites=None, quick=True, data_dir=None):
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    argv = ["--out", str(out)]
    if quick:
        argv.append("--quick")
    for name in suites or []:
        argv += ["--suite", name]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify-report")
    status = cli.main(_args(out))
    return status, out


def test_quick_run_exits_zero(quick_run):
    status, _ = quick_run
    assert status == 0


def test_quick_run_has_enough_checks(quick_run):
    _, out = quick_run
    document = json.loads((out / "report.json").read_text())
    assert document["summary"]["total"] >= 40
    assert document["summary"]["failed"] == 0


def test_report_json_schema(quick_run):
    _, out = quick_run
    document = json.loads((out / "report.json").read_text())
    assert set(document) == {"checks", "summary"}
    assert set(document["summary"]) == SUMMARY_KEYS
    for check in document["checks"]:
        assert set(check) == REPORT_KEYS
        assert isinstance(check["passed"], bool)
        assert isinstance(check["control"], bool)
        assert check["id"].count("/") >= 3


def test_report_summary_counts(quick_run):
    _, out = quick_run
    document = json.loads((out / "report.json").read_text())
    checks, counts = document["checks"], document["summary"]
    assert counts["total"] == len(checks)
    assert counts["passed"] == sum(c["passed"] for c in checks)
    assert counts["failed"] == counts["total"] - counts["passed"]
    assert counts["controls"] == sum(c["control"] for c in checks)
    assert counts["seconds"] > 0


def test_check_ids_unique(quick_run):
    _, out = quick_run
    ids = [c["id"] for c in json.loads((out / "report.json").read_text())["checks"]]
    assert len(ids) == len(set(ids))


def test_every_theorem_has_control(quick_run):
    _, out = quick_run
    checks = json.loads((out / "report.json").read_text())["checks"]
    theorems = {c["theorem"] for c in checks}
    controlled = {c["theorem"] for c in checks if c["control"]}
    assert theorems - controlled == set()


@pytest.mark.parametrize(
    "theorem",
    ["one-step inequality", "T1", "T2", "T3a", "T3b", "T4", "T5", "S1", "S2", "S3", "perturbation diminishment"],
)
def test_theorem_is_covered(quick_run, theorem):
    _, out = quick_run
    checks = json.loads((out / "report.json").read_text())["checks"]
    assert any(c["theorem"] == theorem and not c["control"] for c in checks)
    assert any(c["theorem"] == theorem and c["control"] for c in checks)


def test_report_md_sections(quick_run):
    _, out = quick_run
    text = (out / "report.md").read_text()
    for heading in ("## What is checked", "## Problems and constants", "## How a check is evaluated",
                    "## Results by theorem", "## Negative controls", "## Limits"):
        assert heading in text


def test_reports_leave_no_temporary_files(quick_run):
    _, out = quick_run
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]


def test_tight_case_ratio_is_one(quick_run):
    _, out = quick_run
    checks = {c["id"]: c for c in json.loads((out / "report.json").read_text())["checks"]}
    tight = checks["T1/quadratic-1d/sam/eta=1L^-1,rho=0.1,w0=rho,tight"]
    assert tight["passed"]
    assert tight["empirical"] <= 1e-10


def test_unknown_suite_lists_valid_names(tmp_path, capsys):
    status = cli.main(_args(tmp_path, suites=["no-such-suite"]))
    message = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert "no-such-suite" in message
    for name in SUITES:
        assert name in message


def test_cifar_suite_needs_data_dir(tmp_path, capsys):
    status = cli.main(_args(tmp_path, suites=["cifar"]))
    assert status == cli.EXIT_USAGE
    assert "--data-dir" in capsys.readouterr().err


def test_missing_data_dir_rejected(tmp_path, capsys):
    status = cli.main(_args(tmp_path, suites=["cifar"], data_dir=tmp_path / "absent"))
    assert status == cli.EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def test_bqsam_entry_point_dispatches(tmp_path):
    from bqsam.cli import main

    assert main(["verify", "--quick", "--suite", "tightness", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.json").is_file()


def test_failed_check_gives_nonzero_exit(tmp_path, monkeypatch):
    from verify.suites import tightness

    real_sam_two_cycle = tightness.sam_two_cycle

    def broken_derivation():
        derivation = real_sam_two_cycle()
        derivation.check = False
        return derivation

    monkeypatch.setattr(tightness, "sam_two_cycle", broken_derivation)
    assert cli.main(_args(tmp_path, suites=["tightness"])) == cli.EXIT_FAILED
    document = json.loads((tmp_path / "report.json").read_text())
    failed = [c["id"] for c in document["checks"] if not c["passed"]]
    assert failed == ["T1/symbolic/sam/two-cycle-derivation"]


@pytest.mark.slow
def test_cifar_suite_on_real_images(tmp_path, cifar10_dir):
    assert cli.main(_args(tmp_path, suites=["cifar"], data_dir=cifar10_dir)) == 0
