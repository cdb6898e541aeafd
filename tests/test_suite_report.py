"""The suite's own instrument: ``make test`` writes every test's duration to a file and prints the 20
slowest tests and the seconds per file (tests/durations_report.py, docs/testing.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = """
import time

def test_quick():
    assert True

def test_sleepy():
    time.sleep(0.3)

def test_failing():
    assert 1 == 2
"""


def recipe(target: str) -> str:
    """The recipe lines of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", text, flags=re.M)
    assert m, f"the Makefile has no '{target}' rule"
    return m.group(1)


def test_make_test_and_check_write_the_duration_report(tmp_path):
    for target in ("test", "check"):
        line = next((ln for ln in recipe(target).splitlines() if "pytest" in ln), "")
        assert "--durations-file=" in line, f"make {target} runs pytest without the duration report: {line!r}"
    assert '-m "not slow"' in recipe("check")
    # the plugin itself, run by a real pytest on a small sample: the file lists every test with its
    # phases, and the terminal shows the slowest tests and the seconds per file
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    out = tmp_path / "report" / "durations.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}  # a run of its own
    env["PYTHONPATH"] = str(ROOT / "tests")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "durations_report", f"--durations-file={out}",
                          "-p", "no:cacheprovider", "test_sample.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1, res.stdout[-2000:]  # the failing sample test fails the run, as it should
    report = json.loads(out.read_text())
    rows = {r["test"]: r for r in report["durations"]}
    assert set(rows) == {f"test_sample.py::test_{n}" for n in ("quick", "sleepy", "failing")}
    assert report["durations"][0]["test"] == "test_sample.py::test_sleepy" and rows["test_sample.py::test_sleepy"][
        "call"] >= 0.3
    assert rows["test_sample.py::test_failing"]["outcome"] == "failed"
    assert report["files"]["test_sample.py"] >= 0.3 and report["tests"] == 3
    assert "slowest tests (setup + call + teardown" in res.stdout and "seconds per file" in res.stdout
