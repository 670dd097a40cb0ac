"""How busy the machine was while a benchmark ran, and whether a row's figures can be trusted.

``LoadMeter`` reads ``/proc/stat`` (every CPU's busy time) and this process's own CPU time around a timed
block: ``others`` is the share of the machine's CPU time that other processes used meanwhile (0 on a quiet
machine; 0.5 on 2 cores means a whole core went to someone else). ``unstable`` says why a row's samples are
not to be quoted: a wide spread (p90/median or median/min) or a machine busy with other work.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

SPREAD_P90_MEDIAN = 1.5  # p90 more than 1.5x the median: the row's calls disagree
SPREAD_MEDIAN_MIN = 2.0  # median more than 2x the fastest call: most calls were slowed down
OTHERS_BUSY = 0.25  # other processes took more than a quarter of the machine's CPU time


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of every CPU since boot, or None where /proc/stat is not readable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(x) for x in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class LoadMeter:
    """Use as a context manager around timed work; then read ``seconds`` (the block's wall time) and
    ``others`` (None where unmeasurable)."""

    others: float | None = None
    seconds: float = 0.0

    def __enter__(self) -> "LoadMeter":
        self._start = _cpu_jiffies()
        self._self = _own_cpu_seconds()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_jiffies()
        wall = self.seconds = time.perf_counter() - self._wall
        if self._start is None or end is None or wall <= 0:
            return
        hz = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self._start[0]) / hz
        total = (end[1] - self._start[1]) / hz
        own = _own_cpu_seconds() - self._self
        if total > 0:
            self.others = max(0.0, min(1.0, (busy - own) / total))


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def unstable(latency_ms: dict[str, float], others: float | None) -> list[str]:
    """Why a row's figures should not be quoted ([] when they can be)."""
    why = []
    median = latency_ms["median"]
    if median > 0 and latency_ms["p90"] / median > SPREAD_P90_MEDIAN:
        why.append(f"p90/median {latency_ms['p90'] / median:.2f} > {SPREAD_P90_MEDIAN}")
    if latency_ms["min"] > 0 and median / latency_ms["min"] > SPREAD_MEDIAN_MIN:
        why.append(f"median/min {median / latency_ms['min']:.2f} > {SPREAD_MEDIAN_MIN}")
    if others is not None and others > OTHERS_BUSY:
        why.append(f"other processes used {others:.0%} of the CPU")
    return why
