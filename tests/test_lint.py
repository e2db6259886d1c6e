"""The code stays ruff-clean: CI fails on a lint error, not only a reviewer."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_check_and_format():
    for args in (
        ["check", "pipeline", "tests", "benchmarks"],
        ["format", "--check", "pipeline", "tests", "benchmarks"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
