"""What the ``anomalens`` commands share: the Typer app, consoles, options, the error guard, reading tables, loading a model.

Plain text (rich tables) for people, ``--json`` for machines. Bad input ends with one line on
stderr (``error: ...``) and a non-zero exit: 2 for bad input or usage, 1 for a failed backend
(LLM or chroma server). The LLM comes from the environment (``ANOMALENS_LLM`` ...) or from
``--llm openai --base-url ... --model ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from anomalens.errors import AnomalensError, BackendError
from anomalens.text import clip, for_terminal, strip_control

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Explainable anomaly analysis: fit on normal data, analyze cases, investigate them in a chat.")
out = Console()
err = Console(stderr=True)

LlmOpt = Annotated[Optional[str], typer.Option(
    "--llm", help="reasoner: openai | local | template (default: ANOMALENS_LLM, else local)")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="served model name (default: the server's first)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]
IdColOpt = Annotated[Optional[str], typer.Option("--id-column", help="column holding case ids (not a feature)")]
EngineOpt = Annotated[str, typer.Option(help="local (this process) or ray (a Ray cluster's workers read and score; "
                                        "pip install 'anomalens\\[ray]')")]  # \\[: rich markup would eat [ray]
AddressOpt = Annotated[Optional[str], typer.Option(help="engine ray: the cluster to join ('auto', ray://HOST:PORT); "
                                                   "default: RAY_ADDRESS, else a new local cluster")]
WorkersOpt = Annotated[Optional[int], typer.Option(min=1, help="engine ray: scoring actors (default: the cluster's "
                                                   "CPUs less one)")]


class CliError(Exception):
    """A one-line error for the user; exit code 2."""


def error_line(message: object) -> str:
    """One line of an error message: control characters stripped, clipped, markup escaped."""
    text = str(message).strip()
    return for_terminal(text.splitlines()[0] if text else "failed", 600)


def print_error(message: object) -> None:
    err.print(f"[red]error:[/] {error_line(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


def shown(value: object, max_len: int = 80):
    """A rich Text of untrusted text: printed as itself (no markup), control characters stripped."""
    from rich.text import Text

    return Text(clip(strip_control(value), max_len))


def guard(fn):
    """Run a command body; expected failures become one line on stderr and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BackendError as exc:
            fail(str(exc), 1)
        except (AnomalensError, CliError) as exc:
            fail(str(exc), 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


# ---------------------------------------------------------------- data
def read_table(path: Path):
    """A DataFrame from CSV/TSV or Parquet."""
    import pandas as pd

    if not path.exists():
        raise CliError(f"DATA must be an existing CSV or Parquet file, got {str(path)!r} (no such file)")
    if path.is_dir():
        raise CliError(f"DATA must be a CSV or Parquet file, got the folder {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                return pd.read_parquet(path)
            except ImportError as exc:
                raise CliError(f"reading Parquet needs pyarrow: pip install 'anomalens[parquet]' ({exc})") from exc
        if suffix in (".csv", ".tsv", ".txt", ".gz"):
            from anomalens.modalities.tabular import check_csv_header

            sep = "\t" if ".tsv" in path.name.lower() else ","
            check_csv_header(path, path.name, sep=sep)
            return pd.read_csv(path, sep=sep)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CliError(f"cannot read {str(path)!r}: {str(exc).splitlines()[0]}") from exc
    raise CliError(f"DATA must end in .csv, .tsv or .parquet, got {path.name!r}")


def select_features(frame, *, label_column: str | None = None, exclude: list[str] | None = None,
                    id_column: str | None = None, features: list[str] | None = None):
    """(feature frame, case ids) of a table (``modalities.tabular.select_columns``)."""
    from anomalens.modalities.tabular import select_columns

    return select_columns(frame, label_column=label_column, exclude=exclude, id_column=id_column, features=features)


BIG_CSV_BYTES = 256 << 20  # a CSV larger than this is sampled while it is read


def is_big_table(path: Path, max_rows: int) -> bool:
    """Whether a table is read as a streamed sample: a Parquet file of more than ``max_rows`` rows
    (its footer says), or a CSV over BIG_CSV_BYTES (its row count is unknown until read)."""
    from anomalens.scale import table_rows

    if not path.is_file():
        return False
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return (table_rows(path) or 0) > max_rows
        except Exception:  # not a readable Parquet file: read_table gives the error
            return False
    return name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")) and path.stat().st_size > BIG_CSV_BYTES


def detector_params(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values or []:
        if "=" not in v:
            raise CliError(f"--param must look like name=value, got {v!r}")
        k, raw = v.split("=", 1)
        try:
            out[k.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[k.strip()] = raw
    return out


def check_out(out_dir: Path) -> list[Path]:
    """--out must be a folder we can write, checked before training by writing a probe file there;
    returns the folders this created (removed again if the fit fails)."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out must be a folder, got the existing file {str(out_dir)!r}")
    created = [p for p in [out_dir, *out_dir.absolute().parents] if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-"):
            pass
    except OSError as exc:
        remove_empty(created)
        raise CliError(f"--out must be a writable folder, got {str(out_dir)!r} ({exc.strerror or exc})") from exc
    return created


def remove_empty(folders: list[Path]) -> None:
    for p in folders:  # deepest first
        try:
            p.rmdir()
        except OSError:
            pass


def cli_reasoner(llm: str | None, base_url: str | None, model: str | None):
    from anomalens.llm import make_reasoner

    try:
        return make_reasoner(llm=llm, base_url=base_url, model=model)
    except ImportError as exc:
        raise CliError(f"the {llm or 'configured'} LLM backend is not installed ({exc}); "
                       "pip install 'anomalens[local]' or use --llm template") from exc


def load_model(model_dir: Path, reasoner=None):
    from anomalens import Investigator

    if not model_dir.is_dir():
        raise CliError(f"DIR must be a folder written by 'anomalens fit', got {str(model_dir)!r} (no such folder)")
    return Investigator.load(model_dir, reasoner=reasoner)


def pick_row(X, ids, row: str) -> tuple[Any, str]:
    """(one-row frame, case id) for --row: a 0-based position, or a value of --id-column."""
    if ids is not None and row in ids:
        return X.iloc[[ids.index(row)]], row
    if row.lstrip("-").isdigit():
        pos = int(row)
        if not 0 <= pos < len(X):
            raise CliError(f"--row must be a row position in 0..{len(X) - 1}" +
                           (" or a value of --id-column" if ids is not None else "") + f", got {row}")
        return X.iloc[[pos]], ids[pos] if ids is not None else str(pos)
    raise CliError(f"--row must be a 0-based row position{' or an id of --id-column' if ids else ''}, got {row!r}")


# ---------------------------------------------------------------- commands
LOG_SUFFIXES = (".log", ".gz", ".txt", ".jsonl", ".out")

def verdict_word(v) -> str:
    if v.anomalous:
        return "[red]ANOMALOUS[/]"
    return "[yellow]not significant (batch)[/]" if v.note else "normal"

