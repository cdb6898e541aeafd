"""Application settings, read from the environment (prefix ``ANOMALENS_``) or a ``.env`` file.

Library objects take explicit arguments; ``Settings`` only supplies their defaults for the
application layers (CLI, demo, reasoners, store).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DETECTOR", "MAX_TRAIN_ROWS", "Settings", "get_settings"]

# The default detector of ``Investigator.fit``, the CLI and the demo: the most robust over every classical
# set in ../shared/data, not the best on a few (evals/results/tabular_all.md: the highest mean AUROC with
# the smallest worst-case gap to PyOD's KNN). Kept here, with no heavy imports, for the CLI's start-up.
DEFAULT_DETECTOR = "ensemble"
# rows a tabular detector trains on at most: beyond it a uniform sample (said in the fit summary and
# the saved config); fit time grows with the rows, a model's quality stops growing long before
MAX_TRAIN_ROWS = 200_000


class Settings(BaseSettings):
    """Process-wide configuration.

    Attributes:
        device: ``"auto"`` picks CUDA when present, else CPU; or a torch device string. The device of
            detectors that ``Investigator.fit`` builds by name (unless given as a parameter).
        progress: progress bars over epochs for detectors that ``Investigator.fit`` builds by name.
        llm: reasoner backend: ``openai`` (any OpenAI-compatible server such as vLLM),
            ``local`` (in-process embedded model), ``template`` (no LLM).
        llm_base_url / llm_model / llm_api_key / llm_timeout: the OpenAI-compatible endpoint
            (an empty model asks the server for the model it serves).
        llm_tool_choice: how the chat's tool-calling model picks tools: ``required`` (constrained:
            every step is a tool call or the final answer, decoded under the tool schemas; for
            any model vLLM serves) or ``auto`` (the model decides; for models that call tools well).
            Unset: the model's own mode (``required`` for a server, ``auto`` for the local 1.5B model,
            whose prompt llama.cpp then reuses from step to step).
        llm_concurrency: explanation requests in flight at once to an OpenAI-compatible server
            (batch analysis), so a vLLM server batches them; the embedded model runs one at a time.
        llm_local_engine: ``auto`` (llama.cpp when installed, else transformers), ``llama_cpp``
            or ``transformers``; llm_local_model: the model they run by name (``smollm2-135m``, packaged;
            ``qwen2.5-coder-1.5b``, fetched once into a cache: ``anomalens.llm.models``); llm_local_path:
            any GGUF file instead (``ANOMALENS_LLM_LOCAL_PATH``; ``ANOMALENS_LLM_MODEL_PATH`` still read);
            llm_local_tools: whether the chat offers the local model its tools (unset: the named model's
            default, off for a file of your own); llm_threads: the CPU threads
            the embedded llama.cpp engine computes on (unset: one per core; fewer on a host shared
            with other work, where llama.cpp's threads wait for each other on a busy core).
        llm_max_tokens: the most tokens one drafted explanation or answer may hold (a reply cut off
            there is re-asked or replaced by the template's claims); fewer make a slow CPU answer sooner.
        vlm_base_url / vlm_model / vlm_api_key: an OpenAI-compatible endpoint serving a vision-language
            model (vLLM: ``vllm serve Qwen/Qwen2.5-VL-7B-Instruct``, docs/reasoners.md) that explains the
            cases with pictures (images) from the image, the detector's map and the nearest normal
            image; unset: images are explained like any case, from their evidence as text.
        chroma_url: a chroma server URL; unset means the embedded store.
    """

    model_config = SettingsConfigDict(env_prefix="ANOMALENS_", env_file=".env", extra="ignore", frozen=True)

    device: str = "auto"
    progress: bool = False
    llm: Literal["openai", "local", "template"] = "local"
    llm_base_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str = ""
    llm_api_key: str = "EMPTY"
    llm_timeout: float = 60.0
    llm_tool_choice: Literal["auto", "required"] | None = None
    llm_concurrency: int = Field(8, ge=1, le=256)
    llm_local_engine: Literal["auto", "llama_cpp", "transformers"] = "auto"
    llm_local_model: str = "smollm2-135m"
    llm_local_path: str | None = Field(None, validation_alias=AliasChoices(
        "ANOMALENS_LLM_LOCAL_PATH", "ANOMALENS_LLM_MODEL_PATH", "llm_local_path"))
    llm_local_tools: bool | None = None
    llm_threads: int | None = Field(None, ge=1, le=1024)
    llm_max_tokens: int = Field(400, ge=32, le=8192)
    vlm_base_url: str | None = None
    vlm_model: str = ""
    vlm_api_key: str | None = None
    chroma_url: str | None = None


def get_settings() -> Settings:
    """Read the settings afresh from the environment."""
    return Settings()
