"""The short soak (``bench/soak.py --short --check``): clients churn while messages flow,
and the service ends with no connection, group, task or descriptor more than it began
with. The full-size run and its numbers are in docs/reliability.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_short_soak_leaks_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--short", "--check"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no leak" in result.stdout, result.stdout
