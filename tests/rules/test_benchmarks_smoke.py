"""The rules and alert-latency benchmarks run at a tiny size and end with their JSON line (not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MOSQUITTO

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str) -> dict[str, Any]:
    """Run a benchmark script; its last line, parsed."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def test_rules_benchmark_smoke() -> None:
    figures = run("rules.py", "--rooms", "3", "--readings", "1000", "--seconds", "0.2", "--repeats", "1")
    assert {"evals_per_s", "throughput_with_rules_ratio"} <= set(figures)
    assert figures["evals_per_s"] > 0 and figures["throughput_with_rules_ratio"] > 0
    assert figures["rooms"] == 3 and figures["protections_per_room"] == 12  # every protection has inputs


@pytest.mark.skipif(MOSQUITTO is None, reason="the benchmark starts its own Mosquitto")
def test_alert_latency_benchmark_smoke() -> None:
    figures = run("alert_latency.py", "--trials", "3", "--load", "50", "--rooms", "1")
    assert {"alert_p50_ms", "alert_p99_ms"} <= set(figures)
    assert figures["trials"] == 3
    assert 0 < figures["alert_p50_ms"] <= figures["alert_p99_ms"]
