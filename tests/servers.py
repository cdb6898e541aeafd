"""The test suite's servers: the public launchers of ``anomalens.testing``."""

from anomalens.testing import chroma_binary, chroma_server, free_port, llama_server, running, wait_http  # noqa: F401
