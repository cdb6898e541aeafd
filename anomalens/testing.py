"""Real local servers for tests and benchmarks, started on 127.0.0.1 (a free port) and stopped: chroma, llama.cpp.

Public so that the test suite and ``evals/`` share one launcher (neither puts the other on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["chroma_binary", "chroma_server", "free_port", "llama_server", "running", "wait_http"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server did not answer {url} within {timeout}s")


@contextlib.contextmanager
def running(cmd: list[str], health: str, timeout: float, log: Path, env: dict | None = None):
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_http(health, proc, timeout)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def chroma_binary() -> str | None:
    local = Path(sys.executable).parent / "chroma"
    return str(local) if local.exists() else shutil.which("chroma")


@contextlib.contextmanager
def chroma_server(tmp: Path):
    port = free_port()
    cmd = [chroma_binary(), "run", "--path", str(tmp / "chroma"), "--host", "127.0.0.1", "--port", str(port)]
    with running(cmd, f"http://127.0.0.1:{port}/api/v2/heartbeat", 60, tmp / "chroma.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def llama_server(tmp: Path, model_path: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2),
           "--model_alias", "smollm2-135m"]
    with running(cmd, f"http://127.0.0.1:{port}/v1/models", 120, tmp / "llama.log"):
        yield f"http://127.0.0.1:{port}/v1"
