"""The ``anomalens`` command: through Typer's runner, as a subprocess, and in a real terminal (tmux).

Every run uses the template reasoner (``ANOMALENS_LLM=template``) so the tests exercise the
command line, not a model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_fixtures import cases, metrics
from typer.testing import CliRunner

from anomalens.cli import app

ENV = {"ANOMALENS_LLM": "template"}
runner = CliRunner()


def cli(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env=ENV)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    train = metrics(600, 0)
    train["label"] = 0
    train["host"] = [f"h{i}" for i in range(len(train))]
    train.to_csv(d / "train.csv", index=False)
    test = cases().rename_axis("id").reset_index()
    test.to_csv(d / "test.csv", index=False)
    test.to_parquet(d / "test.parquet")
    (d / "latin1.csv").write_bytes(b"\xffcpu,memory\n1,2\n")
    (d / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    (d / "dup.csv").write_text("cpu,cpu,memory\n" + "".join(f"{i},{i + 1},{i % 7}\n" for i in range(40)))
    res = cli("fit", str(d / "train.csv"), "--out", str(d / "model"), "-d", "autoencoder", "--label-column", "label",
              "--exclude", "host", "-p", "epochs=40", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["features"] == 6 and summary["rows"] == 600 and summary["exemplars"] == 600
    return d


def test_every_command_has_help():
    import re

    from anomalens.cli import app

    for cmd in ("fit", "analyze", "chat", "demo", "eval"):
        res = cli(cmd, "--help")
        assert res.exit_code == 0 and "Usage" in res.output and len(res.output) > 200
    assert all(c in cli("--help").output for c in ("fit", "analyze", "chat", "demo", "eval"))
    # every bracketed word an option's help holds is printed (rich markup ate "[ray]" of
    # "pip install 'anomalens[ray]'", issue 40 #15)
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        shown = re.sub(r"[\s│]+", "", cli(name, "--help").output)
        for param in command.params:
            for word in re.findall(r"\\?\[\w+\]", getattr(param, "help", None) or ""):
                assert word.lstrip("\\") in shown, (name, param.name, word)


def test_analyze_reports_the_injected_case_first(files):
    res = cli("analyze", str(files / "model"), str(files / "test.csv"), "--id-column", "id", "--top", "3", "--json")
    assert res.exit_code == 0, res.output
    reports = json.loads(res.stdout)
    assert len(reports) == 3 and reports[0]["evidence"]["case_id"] == "c7"
    assert reports[0]["evidence"]["attributions"][0]["unit"] == "memory"
    assert reports[0]["explanation"]["grounded"] and reports[0]["explanation"]["source"] == "template"
    one = cli("analyze", str(files / "model"), str(files / "test.parquet"), "--id-column", "id", "--row", "c7")
    assert one.exit_code == 0 and "Case c7: ANOMALOUS" in one.stdout and "memory" in one.stdout
    by_pos = json.loads(cli("analyze", str(files / "model"), str(files / "test.csv"), "--row", "7", "--json").stdout)
    assert by_pos[0]["evidence"]["case_id"] == "7" and by_pos[0]["evidence"]["verdict"]["anomalous"]


def test_chat_with_piped_input(files):
    script = "why is this anomalous?\n/neighbors 2\n/compare c3\nis latency also involved?\n/feature mem\n/quit\n"
    res = cli("chat", str(files / "model"), str(files / "test.csv"), "--id-column", "id", "--row", "c7",
              "--checkpoint", str(files / "chat.sqlite"), input=script)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Case c7: ANOMALOUS" in out and "you> /neighbors 2" in out
    assert "The closest normal exemplar is exemplar:" in out and "Against case c3" in out
    assert "'latency' is" in out and "must be one of the 6 training features" in out
    res = cli("chat", str(files / "model"), "--thread", "case-c7", "--checkpoint", str(files / "chat.sqlite"),
              "--json", input="/restore\n")
    turn = json.loads(res.stdout.strip().splitlines()[-1])
    assert turn["tools"] == ["restore_case"] and turn["explanation"]["claims"][0]["cites"] == ["restoration"]


@pytest.mark.parametrize("args, message", [
    (("fit", "missing.csv", "--out", "m"), "DATA must be an existing CSV or Parquet file, got 'missing.csv'"),
    (("fit", "{d}/train.csv", "--out", "{d}/m2", "--label-column", "lbl"), "column 'lbl' is not in the data"),
    (("fit", "{d}/train.csv", "--out", "{d}/m2"), "feature columns must be numeric; ['host']"),
    (("fit", "{d}/train.csv", "--out", "{d}/m2", "--exclude", "host", "-d", "vea"), "unknown detector 'vea'"),
    (("fit", "{d}/train.csv", "--out", "{d}/m2", "--exclude", "host", "-p", "epochs"), "--param must look like"),
    (("analyze", "{d}/nomodel", "{d}/test.csv"), "DIR must be a folder written by 'anomalens fit'"),
    (("analyze", "{d}/model", "{d}/test.csv", "--row", "99"), "--row must be a row position in 0..39"),
    (("analyze", "{d}/model", "{d}/train.csv", "--id-column", "nope"), "column 'nope' is not in the data"),
    (("analyze", "{d}/model", "{d}"), "DATA must be a CSV or Parquet file, got the folder"),
    (("chat", "{d}/model", "{d}/test.csv"), "--row is required with DATA"),
    (("chat", "{d}/model", "--thread", "never"), "holds no saved conversation"),
    (("eval", "nonsense"), "benchmark must be one of"),
    # issue 40 #18, #19: silent loss and wrong exit codes
    (("fit", "{d}/dup.csv", "--out", "{d}/m3"), "columns of 'dup.csv' must have distinct names, got ['cpu'] more than once"),
    (("score", "{d}/model", "{d}/test.csv", "--out", "{d}/test.csv"), "--out must not be an input file"),
    (("score", "{d}/model", "{d}/latin1.csv", "--out", "{d}/o.csv"), "its header is not UTF-8 text"),
    (("score", "{d}/model", "{d}/broken.parquet", "--out", "{d}/o.csv"), "cannot read 'broken.parquet' as Parquet"),
    (("fit", "{d}/train.csv", "--out", "{d}/m2", "--exclude", "host", "-d", "autoencoder", "-p", "dropout=1.5"),
     "dropout must be a probability in [0, 1), got 1.5"),
    (("score", "{d}/model", "{d}/test.csv", "--out", "/proc/scores.csv"), "--out must be in a folder this process can write"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(files, args, message):
    res = cli(*[a.format(d=files) for a in args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert "Traceback" not in res.output


def _command() -> list[str]:
    script = Path(sys.executable).parent / "anomalens"
    return [str(script)] if script.exists() else [sys.executable, "-m", "anomalens.cli"]


def test_as_a_subprocess(files):
    env = {**os.environ, **ENV}
    res = subprocess.run([*_command(), "analyze", str(files / "model"), str(files / "test.csv"), "--id-column", "id",
                          "--top", "1", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["evidence"]["case_id"] == "c7"
    res = subprocess.run([*_command(), "chat", str(files / "model"), str(files / "test.csv"), "--row", "7",
                          "--checkpoint", str(files / "sub.sqlite")], input="/score\n", capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0 and "The case is anomalous" in res.stdout, res.stderr
    bad = subprocess.run([*_command(), "analyze", str(files / "model"), str(files / "nope.csv")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such file" in bad.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for the terminal test")
def test_chat_in_a_real_terminal(files):
    """A real exchange in a tmux pane: prompt, question, answer, command, quit."""
    session = f"anomalens-test-{os.getpid()}"
    cmd = " ".join([*_command(), "chat", str(files / "model"), str(files / "test.csv"), "--id-column", "id",
                    "--row", "c7", "--checkpoint", str(files / "tty.sqlite")])
    env = {**os.environ, **ENV}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", cmd], check=True, env=env)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session, "-S", "-200"], capture_output=True,
                              text=True).stdout

    def wait_for(text: str, timeout: float = 120) -> str:
        end = time.time() + timeout
        while time.time() < end:
            s = screen()
            if text in s:
                return s
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared on the terminal:\n{screen()}")

    try:
        wait_for("you>")
        subprocess.run(["tmux", "send-keys", "-t", session, "why is this anomalous?", "Enter"], check=True)
        s = wait_for("accounts for")
        assert "The case is anomalous" in s and "'memory' is" in s and "(template, verified)" in s
        subprocess.run(["tmux", "send-keys", "-t", session, "/neighbors 2", "Enter"], check=True)
        s = wait_for("The second-closest normal exemplar is")
        assert "tools: nearest_exemplars" in s
        # line editing and history (readline; issue 40 #14): the up arrow brings the last question back
        subprocess.run(["tmux", "send-keys", "-t", session, "Up"], check=True)
        end = time.time() + 10
        while time.time() < end and screen().count("you> /neighbors 2") < 2:
            time.sleep(0.2)
        assert screen().count("you> /neighbors 2") == 2, screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "C-u"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)
        end = time.time() + 30
        while time.time() < end and subprocess.run(["tmux", "has-session", "-t", session],
                                                   capture_output=True).returncode == 0:
            time.sleep(0.3)
        assert subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_eval_works_from_any_directory(tmp_path):
    env = {**os.environ, **ENV}
    res = subprocess.run([*_command(), "eval", "calibration", "-h"], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "usage" in res.stdout and "--draws" in res.stdout, res.stderr
    # a runner whose main reads sys.argv itself
    res = subprocess.run([*_command(), "eval", "series_ab", "-h"], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "--tree" in res.stdout and "anomalens eval series_ab" in res.stdout, res.stderr
    bad = subprocess.run([*_command(), "eval", "nosuch"], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "benchmark must be one of" in bad.stderr


def test_eval_lists_every_benchmark_of_the_checkout():
    """Every runner in evals/ (a module with a main) is reachable as `anomalens eval NAME`."""
    from anomalens.cli import EVALS

    root = Path(__file__).resolve().parent.parent / "evals"
    runners = {p.stem for p in root.glob("*.py") if "\ndef main(" in p.read_text()}
    assert runners and runners == set(EVALS), sorted(runners ^ set(EVALS))
