"""The test suite's servers: the public launchers of ``anomalens.testing``."""

from anomalens.testing import (  # noqa: F401
    chroma_binary, chroma_server, free_port, llama_server, running, vllm_missing, vllm_server, wait_http)


def vllm_or_skip(tmp_path_factory, launcher, name: str):
    """A fixture's body for a vLLM CPU server: skip with the reason where it cannot start, else yield the
    URL of ``launcher(folder)`` (``vllm_server``, ``vllm_vision_server``) until the fixture ends."""
    import pytest

    reason = vllm_missing()
    if reason:
        pytest.skip(reason)
    with launcher(tmp_path_factory.mktemp(name)) as url:
        yield url
