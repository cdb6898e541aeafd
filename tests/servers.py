"""The test suite's servers: the public launchers of ``anomalens.testing``."""

from anomalens.testing import (  # noqa: F401
    chroma_binary, chroma_server, free_port, llama_server, running, vllm_missing, vllm_server, wait_http)
