"""The benchmark entry point runs on a tiny configuration (timing itself is not asserted)."""

import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.training


def test_benchmarks_run_tiny(home, tmp_path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for row in ("1. overhead", "2. metric latency", "3a. submit → running", "3b. submit", "4. ingest cost"):
        assert row in text
    assert "| row | baseline | measured | ratio | target | met |" in text
