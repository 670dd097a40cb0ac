"""Gate parsing (strict, clear errors) and evaluation against parity entries."""

from __future__ import annotations

import pytest

from ganrt.benchmarks.gate import evaluate_gate, needs_real_data, parse_gate
from ganrt.errors import ConfigError


def test_parse_gate_reads_numbers_and_noise():
    checks = parse_gate("psnr>=40, fd_delta<=noise,max_abs_diff<2")
    assert [str(c) for c in checks] == ["psnr>=40", "fd_delta<=noise", "max_abs_diff<2"]
    assert needs_real_data(checks) and not needs_real_data(parse_gate("psnr>=40"))


@pytest.mark.parametrize("text, match", [
    ("", "empty --gate"),
    ("psnr>=40,", "empty clause"),
    ("psnr=>40", "cannot read gate clause 'psnr=>40'"),
    ("speed>=3", "unknown gate metric 'speed'.*known: psnr"),
    ("psnr>=forty", "'forty' is not a number"),
    ("psnr>=noise", "'noise' applies only to fd_ref, fd_delta"),
    ("psnr>=nan", "cannot be NaN"),
])
def test_parse_gate_rejects_bad_expressions(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_gate(text)


def test_evaluate_gate_reports_each_failed_clause_with_its_value():
    entry = {"psnr_db": 35.0, "max_abs_diff": 3.0, "fd_ref": 0.2, "fd_ref_noise": 0.1, "nonfinite": 0}
    assert evaluate_gate(parse_gate("psnr>=30,nonfinite==0"), entry) == []
    failures = evaluate_gate(parse_gate("psnr>=40,fd_ref<=noise,max_abs_diff<=3"), entry)
    assert failures == ["psnr>=40: measured 35", "fd_ref<=noise: measured 0.2 (noise 0.1)"]
    assert evaluate_gate(parse_gate("fd_delta<=1"), entry) == ["fd_delta<=1: not measured"]


def test_infinite_psnr_passes_any_finite_threshold():
    assert evaluate_gate(parse_gate("psnr>=1000"), {"psnr_db": float("inf")}) == []
