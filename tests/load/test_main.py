"""`python -m pipeline.load OUTPUT`: the summary, its help, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.load.__main__ import main
from tests.conftest import REPO


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.load [-h] output")
    assert "is not a dnaembed output" not in out


def test_a_summary_and_its_errors(run_dir, capsys, tmp_path):
    uri, _ = run_dir
    assert main([uri]) == 0
    out = capsys.readouterr().out
    assert f"{uri}: model" in out and "dim 8, 4 shards" in out and "windows 60" in out
    assert main([str(tmp_path / "nothing")]) == 2
    assert "is not a dnaembed output" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_the_module_runs_as_a_program():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.load", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage: python -m pipeline.load" in proc.stdout
