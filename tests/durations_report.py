"""Where the suite's time goes: a pytest plugin that writes every test's setup, call and teardown
seconds to a JSON file and prints the 20 slowest tests and the time per file at the end.

``make test`` and ``make check`` turn it on with ``--durations-file PATH``. The slowest list counts a
test's setup too: a module's fitted models are built in its first test's setup, so pytest's own
``--durations`` (one line per phase) splits the cost of a file across lines that are easy to miss.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

SHOWN = 20
PHASES = ("setup", "call", "teardown")


def pytest_addoption(parser):
    parser.addoption("--durations-file", default=None, metavar="PATH",
                     help="write every test's setup/call/teardown seconds to PATH (JSON) and print the "
                          f"{SHOWN} slowest tests and the seconds per file at the end")


def pytest_configure(config):
    path = config.getoption("durations_file", None)
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller hears every worker's reports
        config.pluginmanager.register(DurationReport(Path(path)), "anomalens-durations-report")


class DurationReport:
    """Collects the phase durations of each test and writes them when the session ends."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.time()
        self.tests: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report):
        t = self.tests.setdefault(report.nodeid, {"outcome": "passed", **{p: 0.0 for p in PHASES}})
        t[report.when] = round(report.duration, 3)
        node = getattr(report, "node", None)  # under pytest-xdist: the worker that ran it
        if node is not None and getattr(node, "gateway", None) is not None:
            t["worker"] = node.gateway.id
        if report.failed:
            t["outcome"] = "failed"
        elif report.skipped and t["outcome"] == "passed":
            t["outcome"] = "skipped"

    def summary(self) -> dict:
        rows = [{"test": k, "seconds": round(sum(v[p] for p in PHASES), 3), **v} for k, v in self.tests.items()]
        rows.sort(key=lambda r: -r["seconds"])
        files: dict[str, float] = defaultdict(float)
        for r in rows:
            files[r["test"].split("::")[0]] += r["seconds"]
        return {"wall_seconds": round(time.time() - self.started, 1), "tests": len(rows),
                "test_seconds": round(sum(r["seconds"] for r in rows), 1),
                "files": dict(sorted(((f, round(s, 1)) for f, s in files.items()), key=lambda x: -x[1])),
                "durations": rows}

    def pytest_terminal_summary(self, terminalreporter):
        s = self.summary()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(s, indent=1) + "\n")
        tr = terminalreporter
        tr.write_sep("=", f"{SHOWN} slowest tests (setup + call + teardown, seconds)")
        for r in s["durations"][:SHOWN]:
            tr.write_line(f"{r['seconds']:8.1f}  {r['test']}  (setup {r['setup']:.1f}, call {r['call']:.1f})")
        tr.write_sep("-", "seconds per file")
        for f, sec in s["files"].items():
            tr.write_line(f"{sec:8.1f}  {f}")
        tr.write_line(f"{s['tests']} tests, {s['test_seconds']:.0f} s in tests, {s['wall_seconds']:.0f} s wall; "
                      f"every duration: {self.path}")
