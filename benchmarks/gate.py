"""Parity gates: ``"psnr>=40,fd_delta<=noise"`` -> checks applied to each variant's parity entry.

Grammar: comma-separated clauses ``METRIC OP VALUE``; OP is one of ``>= <= > < ==``; VALUE is a number, or
``noise`` for the FD metrics (their measured noise floor: the reference against itself with other seeds).

    metric        meaning (per variant, against the torch fp32 reference on the same seeds)
    psnr          PSNR over the whole batch, dB (inf when identical)
    min_psnr      the worst image's PSNR, dB
    max_abs_diff  largest |difference|, uint8 levels
    mean_abs_diff mean |difference|, levels
    frac_gt_1     fraction of pixel values off by more than one level
    nonfinite     NaN/Inf count in the raw output
    fd_ref        FD(variant, reference)                 noise: FD(reference, reference on other seeds)
    fd_delta      |FD(variant, real) - FD(reference, real)|   noise: |FD(ref other seeds, real) - FD(ref, real)|
    fid_ref, fid_delta   the same with the standard Inception weights (bench --inception-weights)
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

from ganrt.errors import ConfigError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
METRICS = {  # gate name -> key in a parity entry
    "psnr": "psnr_db", "min_psnr": "min_image_psnr_db", "max_abs_diff": "max_abs_diff",
    "mean_abs_diff": "mean_abs_diff", "frac_gt_1": "frac_gt_1", "nonfinite": "nonfinite",
    "fd_ref": "fd_ref", "fd_delta": "fd_delta", "fid_ref": "fid_ref", "fid_delta": "fid_delta",
}
NOISE = {"fd_ref": "fd_ref_noise", "fd_delta": "fd_delta_noise", "fid_ref": "fid_ref_noise",
         "fid_delta": "fid_delta_noise"}
DEFAULT_GATE = "nonfinite==0,psnr>=30"
_CLAUSE = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|==|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Check:
    metric: str
    op: str
    value: float | str  # a number or "noise"

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}" if isinstance(self.value, float) else \
            f"{self.metric}{self.op}{self.value}"


def parse_gate(text: str) -> list[Check]:
    """Parse strictly; a ConfigError names the bad clause and what was expected."""
    if text is None or not str(text).strip():
        raise ConfigError("empty --gate: expected comma-separated 'metric OP value' clauses, e.g. "
                          "'psnr>=40,fd_delta<=noise'")
    checks = []
    for clause in str(text).split(","):
        if not clause.strip():
            raise ConfigError(f"--gate {text!r} has an empty clause (a stray comma?)")
        m = _CLAUSE.match(clause)
        if not m:
            raise ConfigError(f"cannot read gate clause {clause.strip()!r}: expected 'metric OP value' with OP one "
                              f"of {', '.join(OPS)}, e.g. 'psnr>=40'")
        metric, op, raw = m.groups()
        if metric not in METRICS:
            raise ConfigError(f"unknown gate metric {metric!r} in {clause.strip()!r}; known: {', '.join(METRICS)}")
        if raw == "noise":
            if metric not in NOISE:
                raise ConfigError(f"'noise' applies only to {', '.join(NOISE)}, not to {metric!r}")
            value: float | str = "noise"
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"gate clause {clause.strip()!r}: {raw!r} is not a number (or 'noise')") from None
            if math.isnan(value):
                raise ConfigError(f"gate clause {clause.strip()!r}: the threshold cannot be NaN")
        checks.append(Check(metric, op, value))
    return checks


def needs_real_data(checks: list[Check]) -> bool:
    return any(c.metric in ("fd_delta", "fid_delta") for c in checks)


def evaluate_gate(checks: list[Check], entry: dict[str, Any]) -> list[str]:
    """The failed clauses for one variant's parity entry (empty: passed), each with the measured value."""
    failures = []
    for c in checks:
        measured = entry.get(METRICS[c.metric])
        threshold = entry.get(NOISE[c.metric]) if c.value == "noise" else c.value
        if measured is None or threshold is None:
            failures.append(f"{c}: not measured")
            continue
        if not OPS[c.op](float(measured), float(threshold)):
            failures.append(f"{c}: measured {float(measured):.4g}"
                            + (f" (noise {float(threshold):.4g})" if c.value == "noise" else ""))
    return failures
