"""The ``anomalens`` command: fit, analyze, chat, demo, eval.

Plain text (rich tables) for people, ``--json`` for machines. Bad input ends with one line on
stderr (``error: ...``) and a non-zero exit: 2 for bad input or usage, 1 for a failed backend
(LLM or chroma server). The LLM comes from the environment (``ANOMALENS_LLM`` ...) or from
``--llm openai --base-url ... --model ...``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from anomalens.config import DEFAULT_DETECTOR, MAX_TRAIN_ROWS
from anomalens.errors import AnomalensError, BackendError
from anomalens.text import clip, for_terminal, strip_control

__all__ = ["app", "main"]

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


def _error_line(message: object) -> str:
    """One line of an error message: control characters stripped, clipped, markup escaped."""
    text = str(message).strip()
    return for_terminal(text.splitlines()[0] if text else "failed", 600)


def _print_error(message: object) -> None:
    err.print(f"[red]error:[/] {_error_line(message)}", highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _text(value: object, max_len: int = 80):
    """A rich Text of untrusted text: printed as itself (no markup), control characters stripped."""
    from rich.text import Text

    return Text(clip(strip_control(value), max_len))


def _guard(fn):
    """Run a command body; expected failures become one line on stderr and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BackendError as exc:
            _fail(str(exc), 1)
        except (AnomalensError, CliError) as exc:
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

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


def _is_big_table(path: Path, max_rows: int) -> bool:
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


def _series_frame(frame, label_column: str | None, exclude: list[str] | None):
    """A series table without its label and excluded columns (the time column stays)."""
    from anomalens.modalities.tabular import column_list

    drop = [c for c in [label_column, *column_list(exclude)] if c]
    missing = [c for c in drop if c not in frame.columns]
    if missing:
        raise CliError(f"column {_text(missing[0], 60)!r} is not in the data")
    return frame.drop(columns=drop)


def _params(values: list[str] | None) -> dict[str, Any]:
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


def _check_out(out_dir: Path) -> list[Path]:
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
        _remove_empty(created)
        raise CliError(f"--out must be a writable folder, got {str(out_dir)!r} ({exc.strerror or exc})") from exc
    return created


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:  # deepest first
        try:
            p.rmdir()
        except OSError:
            pass


def _reasoner(llm: str | None, base_url: str | None, model: str | None):
    from anomalens.llm import make_reasoner

    try:
        return make_reasoner(llm=llm, base_url=base_url, model=model)
    except ImportError as exc:
        raise CliError(f"the {llm or 'configured'} LLM backend is not installed ({exc}); "
                       "pip install 'anomalens[local]' or use --llm template") from exc


def _load(model_dir: Path, reasoner=None):
    from anomalens import Investigator

    if not model_dir.is_dir():
        raise CliError(f"DIR must be a folder written by 'anomalens fit', got {str(model_dir)!r} (no such folder)")
    return Investigator.load(model_dir, reasoner=reasoner)


def _pick_row(X, ids, row: str) -> tuple[Any, str]:
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


@app.command()
@_guard
def fit(
    data: Annotated[list[Path], typer.Argument(metavar="DATA...", help="normal data: a CSV or Parquet file of rows or of a series; or "
                                               "log files (plain, .gz, several, - for standard input)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write the fitted investigator to")],
    detector: Annotated[Optional[str], typer.Option("--detector", "-d", help="a registered detector (see the README); "
                                                    "default: the Ensemble of autoencoder, vae, autoregressive and pca for "
                                                    "rows, conv_ae for a series, autoencoder for log counts")] = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="label column to leave out")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="columns to leave out (repeat or comma-separate)")] = None,
    id_column: IdColOpt = None,
    modality: Annotated[Optional[str], typer.Option("--modality", help="tabular, series or logs (default: series when "
                                                     "--time-column is given, logs for .log/.gz/.txt/.jsonl files or "
                                                     "with --format or --session)")] = None,
    time_column: Annotated[Optional[str], typer.Option("--time-column", help="a series' timestamp column")] = None,
    window: Annotated[Optional[str], typer.Option("--window", help="a series' window length (default: its period); "
                                                  "logs: a window of N lines (e.g. 200) or of time (e.g. 5m)")] = None,
    fill: Annotated[Optional[str], typer.Option("--fill", help="fill a series' missing values: interpolate or ffill")] = None,
    resample: Annotated[Optional[str], typer.Option("--resample", help="average an irregular series onto a grid, "
                                                     "e.g. 5min")] = None,
    log_format: Annotated[Optional[str], typer.Option("--format", help="logs: a preset (hdfs, bgl, syslog, rfc5424, iso, "
                                                      "jsonl, raw, ...) or a format string such as '<Date> <Time> "
                                                      "<Level> <Component>: <Content>' (default: detected)")] = None,
    session: Annotated[Optional[str], typer.Option("--session", help="logs: a regular expression of the session id "
                                                   r"(e.g. 'blk_-?\d+'); default: windows of 100 lines")] = None,
    mask: Annotated[Optional[list[str]], typer.Option("--mask", help="logs: NAME=REGEX, a variable to mask before "
                                                      "parsing, applied before the default masks (repeatable)")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="detector hyper-parameter name=value (repeatable)")] = None,
    max_train_rows: Annotated[int, typer.Option("--max-train-rows", min=4, help="rows: train on a uniform sample "
                                                "of at most N rows (a larger file is sampled while it is read)")]
    = MAX_TRAIN_ROWS,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Fit a detector and an exemplar store on normal rows, a normal series or normal logs, and save them to --out."""
    from anomalens import Investigator
    from anomalens.detectors import make_detector
    from anomalens.modalities import list_modalities

    is_log = bool(log_format or session) or all(str(p) == "-" or p.suffix.lower() in LOG_SUFFIXES for p in data)
    modality = modality or ("series" if time_column else "logs" if is_log else "series" if window else "tabular")
    if modality not in list_modalities():
        raise CliError(f"--modality must be one of {list_modalities()}, got {modality!r}")
    if modality != "logs" and len(data) != 1:
        raise CliError(f"{modality} data is one CSV or Parquet file, got {len(data)} paths")
    if modality != "logs" and (log_format or session or mask):
        raise CliError(f"--format, --session and --mask apply to logs, not to {modality} data")
    params = {"random_state": seed, **_params(param)}
    if not as_json and sys.stderr.isatty():
        params.setdefault("verbose", True)  # a progress bar over epochs
    if detector is not None:
        make_detector(detector, **params).validate_params()  # bad hyper-parameters fail before any work
    if modality == "logs":
        return _fit_logs(data, out_dir, detector=detector, log_format=log_format, session=session, window=window,
                         masks=mask, params=params, as_json=as_json)
    data = data[0]
    rows_seen = None
    if modality == "tabular" and _is_big_table(data, max_train_rows):
        from anomalens.scale import sample_table

        frame, rows_seen = sample_table(data, max_train_rows, seed=seed)  # streamed: memory holds the sample only
    else:
        frame = read_table(data)
    if modality == "series":
        from anomalens.modalities import SeriesModality

        if window is not None and not str(window).isdigit():
            raise CliError(f"--window of a series is a number of points, got {window!r}")
        X, ids = _series_frame(frame, label_column, exclude), None
        mod = SeriesModality(None if window is None else int(window), time_column=time_column, fill=fill,
                             resample=resample)
    else:
        X, ids = select_features(frame, label_column=label_column, exclude=exclude, id_column=id_column)
        mod = "tabular"
    created = _check_out(out_dir)
    t0 = time.perf_counter()
    try:
        fit_kw = {"max_train_rows": max_train_rows, "rows_seen": rows_seen} if modality == "tabular" else {}
        inv = Investigator.fit(X, modality=mod, detector=detector, source=data.name, ids=ids, **fit_kw, **params)
        inv.save(out_dir)
    except BaseException:
        _remove_empty(created)
        raise
    limit = inv.batch_limit() if modality == "tabular" else None
    summary = {"out": str(out_dir), "modality": modality, "detector": inv.detector_name,
               "rows": inv.rows_seen if modality == "tabular" else len(X),
               **({"trained on": f"a uniform sample of {inv.n_train:,} of {inv.rows_seen:,} rows (--max-train-rows)"}
                  if modality == "tabular" and inv.n_train < inv.rows_seen else {}),
               ("channels" if modality == "series" else "features"): len(inv.feature_names),
               **({"window": inv.modality.window, "period": inv.modality.period,
                   "calibration_points": len(inv.modality.calibration_scores),
                   "calibration": ("out-of-fold scores of every training point "
                                   f"({len(inv.modality.fold_blocks(inv.modality.n_points))} contiguous blocks)"
                                   if inv.modality.calibration_mode == "cross" else "a held-out block at the end")}
                  if modality == "series"
                  else {"calibration_rows": len(inv.detector.calibration_scores_)}),
               **({"batches": _batch_limit_line(inv, limit)} if limit is not None else {}),
               "exemplars": inv.store.count(), "seconds": round(time.perf_counter() - t0, 2)}
    _print_summary(summary, as_json)


def _batch_limit_line(inv, limit: int, alpha: float = 0.05) -> str:
    """The fit summary's word on batch sizes (``limit``: ``Investigator.batch_limit(alpha)``)."""
    return (f"one anomalous row alone can be flagged in batches of up to {limit} rows at a false "
            f"discovery rate of {alpha:g} ({inv.calibrator.n} calibration scores, no tail beyond them); larger batches "
            "flag it only with other anomalies, or analyze it alone (--row)")


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title="fitted", show_header=False)
    for k, v in summary.items():
        table.add_row(k, for_terminal(v, 300))
    out.print(table)


def _fit_logs(data: list[Path], out_dir: Path, *, detector: str | None, log_format: str | None, session: str | None,
              window: str | None, masks: list[str] | None, params: dict, as_json: bool) -> None:
    """``fit`` on normal logs: read, learn templates, group into cases, fit the models, save."""
    from anomalens import Investigator
    from anomalens.modalities import LogModality
    from anomalens.modalities.logs.parser import DEFAULT_MASKS

    extra = []
    for m in masks or []:
        name, sep, regex = m.partition("=")
        if not sep or not name.strip() or not regex:
            raise CliError(f"--mask must be NAME=REGEX (e.g. 'TRACE=trace-[0-9a-f]+'), got {m!r}")
        extra.append((regex, name.strip()))
    mod = LogModality(log_format, session, window, masks=[*extra, *DEFAULT_MASKS] if extra else None)
    if log_format is not None:
        from anomalens.modalities.logs.reader import get_format

        get_format(log_format)  # an unknown --format fails before any work
    sources = [str(p) for p in data]
    created = _check_out(out_dir)
    t0 = time.perf_counter()
    try:
        inv = Investigator.fit(sources, modality=mod, detector=detector, source=",".join(p.name for p in data)[:200],
                               **params)
        inv.save(out_dir)
    except BaseException:
        _remove_empty(created)
        raise
    m = inv.modality
    read = m.read_stats
    summary = {"out": str(out_dir), "modality": "logs", "format": read.format + (" (detected)" if read.detected else ""),
               "lines": read.lines, "lines kept": read.kept, "skipped": read.skipped, "templates": len(m.feature_names),
               "cases": f"{m.group_stats.cases} ({'sessions ' + session if session else 'windows of ' + str(m.window)})",
               "training cases": inv.n_train, "count model": inv.detector_name, "exemplars": inv.store.count(),
               "seconds": round(time.perf_counter() - t0, 2)}
    if m.group_stats.no_session:
        summary["lines without a session id"] = m.group_stats.no_session
    if not as_json:
        err.print(for_terminal(read.summary(), 600), highlight=False)
    _print_summary(summary, as_json)


@app.command()
@_guard
def triage(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit' on logs")],
    logs: Annotated[list[Path], typer.Argument(metavar="LOGS...", help="log files to triage (plain, .gz; - for standard input)")],
    top: Annotated[int, typer.Option(min=1, help="explain the N highest-ranked incidents")] = 5,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="false discovery rate over the cases")] = 0.05,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="write triage.md and triage.json here")] = None,
    engine: EngineOpt = "local", address: AddressOpt = None, workers: WorkersOpt = None,
    llm: LlmOpt = None, base_url: BaseUrlOpt = None, model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank the incidents of new logs: the anomalous sessions or windows, merged, each with its lines,
    templates, expected sequence, nearest normal session and a verified explanation."""
    from anomalens.detectors import check_probability

    alpha = check_probability(alpha, "--alpha")
    if engine not in ("local", "ray"):
        raise CliError(f"--engine must be local or ray, got {engine!r}")
    reasoner = _reasoner(llm, base_url, model)
    inv = _load(model_dir, reasoner)
    if not inv.modality.reads_text:
        raise CliError(f"{_text(str(model_dir), 120)} holds a {inv.modality.name} model; triage needs one fitted on logs")
    if out_dir is not None:
        _check_out(out_dir)
    result = inv.triage([str(p) for p in logs], alpha=alpha, limit=top, progress=not as_json and sys.stderr.isatty(),
                        engine=engine, model_dir=model_dir, address=address, workers=workers)
    if out_dir is not None:
        (out_dir / "triage.md").write_text(result.to_markdown())
        (out_dir / "triage.json").write_text(json.dumps(result.to_json(), indent=1))
    if as_json:
        print(json.dumps(result.to_json()))
        return
    err.print(for_terminal(result.summary(drift=False), 800), highlight=False)
    if result.drift:  # on a line of its own: a flood of flags may be a changed system, not incidents
        err.print("[bold yellow]" + for_terminal(result.drift, 800) + "[/]", highlight=False)
    table = Table(title=f"{result.n_incidents} incident(s), {len(result.reports)} shown, most anomalous first")
    for col in ("#", "p-value", "cases", "lines", "starts", "abnormal templates", "never seen", "top line"):
        table.add_column(col, overflow="ellipsis", no_wrap=col in ("starts", "top line"))
    for r in result.reports:
        i, ev = r.evidence.incident, r.evidence
        ex = next(iter(ev.lines), None)
        table.add_row(str(i.index), f"{i.p_value:.3g}", str(i.n_cases), str(i.n_lines), _text(i.start or "-", 30),
                      _text(", ".join(i.templates[:4]), 40), _text(", ".join(i.unseen[:4]) or "-", 30),
                      _text("-" if ex is None else f"{ex.source}:{ex.lineno}", 40))
    out.print(table)
    for r in result.reports:
        ev = r.evidence
        out.print(f"\n[bold]Incident {ev.incident.index}[/] (strongest case {for_terminal(ev.case_id, 60)}; "
                  f"{for_terminal(ev.incident.start or '-', 40)} to {for_terminal(ev.incident.end or '-', 40)}):",
                  highlight=False)
        for ln in ev.lines[:2]:  # the raw lines, as data
            out.print(f"  [dim]{for_terminal(f'{ln.source}:{ln.lineno}', 80)}[/] {for_terminal(ln.text, 160)}",
                      highlight=False)
        for c in r.explanation.claims:
            out.print(f"  - {for_terminal(c.text, 400)} [dim]\\[{for_terminal(', '.join(c.cites), 200)}][/]",
                      highlight=False)
    if out_dir is not None:
        err.print(f"report written to {for_terminal(str(out_dir / 'triage.md'), 200)}", highlight=False)
    elif result.reports:
        err.print("pass --out DIR for the full report (lines, templates, expected sequences)", highlight=False)


@app.command()
@_guard
def score(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit'")],
    data: Annotated[list[str], typer.Argument(metavar="INPUT...", help="a CSV/TSV or Parquet file of rows (any "
                                              "length: it is read in chunks); for a log model, log files or -")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="where to write one row per input row: id, score, "
                                           "p_value, p_approximate, anomalous (.parquet or .csv)")],
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="false discovery rate over the whole input")] = 0.05,
    id_column: IdColOpt = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="input columns to copy to the output, e.g. a "
                                                      "label (repeat or comma-separate)")] = None,
    explain_top: Annotated[int, typer.Option("--explain-top", min=0, help="explain the N highest-scoring flagged "
                                             "rows (0: verdicts only)")] = 0,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="rows scored at a time")] = 65536,
    engine: EngineOpt = "local", address: AddressOpt = None, workers: WorkersOpt = None,
    llm: LlmOpt = None, base_url: BaseUrlOpt = None, model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score an input of any length with flat memory: write every row's score, p-value and verdict
    (the false discovery rate controlled over the whole input) to --out, and explain the top flagged rows."""
    from anomalens.detectors import check_probability
    from anomalens.modalities.tabular import column_list
    from anomalens.scale import score_file

    alpha = check_probability(alpha, "--alpha")
    if engine not in ("local", "ray"):
        raise CliError(f"--engine must be local or ray, got {engine!r}")
    reasoner = _reasoner(llm, base_url, model) if explain_top else None
    inv = _load(model_dir, reasoner)
    if inv.modality.sequential:  # a series is scored whole (its windows overlap): one row per point
        return _score_series(inv, data, out_file, alpha=alpha, as_json=as_json)
    if not inv.modality.reads_text:
        if len(data) != 1:
            raise CliError(f"INPUT of a {inv.modality.name} model is one CSV or Parquet file, got {len(data)} paths")
        source: object = Path(data[0])
    else:
        source = [d if d == "-" else Path(d) for d in data]
    summary = score_file(inv, source, out_file, alpha=alpha, chunk_rows=chunk_rows, id_column=id_column,
                         keep=column_list(keep), explain_top=explain_top, engine=engine, address=address,
                         workers=workers, model_dir=model_dir, progress=not as_json and sys.stderr.isatty())
    reports = summary.pop("reports")
    if as_json:
        print(json.dumps({**summary, "reports": [json.loads(r.model_dump_json()) for r in reports]}))
        return
    table = Table(title=f"scored {for_terminal(summary['input'], 80)}", show_header=False)
    unit = f"{inv.modality.case_noun}s"
    table.add_row(unit, f"{summary['rows']:,}")
    table.add_row("flagged", f"{summary['flagged']:,} (false discovery rate {alpha:g} over all {summary['rows']:,} "
                  f"{unit}: p <= {summary['cutoff']:.3g})")
    if summary["below_alpha_not_flagged"]:
        table.add_row("p <= alpha, not flagged", f"{summary['below_alpha_not_flagged']:,} (not significant among "
                      f"{summary['rows']:,} {unit})")
    if summary["approximate_p_values"]:
        table.add_row("tail p-values", f"{summary['approximate_p_values']:,} scores beyond every calibration score "
                      "(p-value from the fitted tail, approximate)")
    table.add_row("time", f"{summary['seconds']['total']:.1f} s ({summary['rows_per_s']:,.0f} {unit}/s, "
                  f"engine {summary['engine']})")
    table.add_row("written", for_terminal(summary["out"], 200))
    out.print(table)
    if summary.get("note"):
        err.print(f"[yellow]note:[/] {for_terminal(summary['note'], 300)}", highlight=False)
    for r in reports:
        out.print(Markdown(r.to_markdown()))


def _score_series(inv, data: list[str], out_file: Path, *, alpha: float, as_json: bool) -> None:
    """``score`` on a series: every point's score, p-value and verdict to --out (CSV or Parquet)."""
    if len(data) != 1:
        raise CliError(f"INPUT of a series model is one CSV or Parquet file, got {len(data)} paths")
    from anomalens.scale.stream import check_out_file

    source = Path(data[0])
    fmt = check_out_file(out_file, [source])
    table = inv.point_table(read_table(source), alpha=alpha, progress=not as_json and sys.stderr.isatty())
    if fmt == "csv":
        table.to_csv(out_file, index=False)
    else:
        table.to_parquet(out_file, index=False)
    summary = {"points": len(table), "flagged": int(table["anomalous"].sum()), "alpha": alpha, "out": str(out_file)}
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title="scored", show_header=False)
    for k, v in (("points", f"{summary['points']:,}"), ("flagged", f"{summary['flagged']:,} (false discovery rate "
                 f"{alpha:g} over windows)"), ("written", str(out_file))):
        table.add_row(k, for_terminal(v, 300))
    out.print(table)


@app.command()
@_guard
def analyze(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit'")],
    data: Annotated[Path, typer.Argument(help="rows to analyze: a CSV or Parquet file")],
    top: Annotated[int, typer.Option(min=1, help="report the N most anomalous rows")] = 5,
    row: Annotated[Optional[str], typer.Option(help="report this row only: 0-based position, or a value of --id-column")] = None,
    id_column: IdColOpt = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="false discovery rate (per-case level with --row)")] = 0.05,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="a series' label column to leave out")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="a series' columns to leave out")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="a series: write each event's report "
                                                     "(JSON, markdown) and plot (PNG) to this folder")] = None,
    llm: LlmOpt = None, base_url: BaseUrlOpt = None, model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score every row (verdicts control the false discovery rate) and report the top N, or one --row;
    for a series, find its events (the false discovery rate over windows) and report the top N."""
    from anomalens.detectors import check_probability

    alpha = check_probability(alpha, "--alpha")
    reasoner = _reasoner(llm, base_url, model)
    inv = _load(model_dir, reasoner)
    if inv.modality.sequential:
        return _analyze_series(inv, data, top=top, alpha=alpha, label_column=label_column, exclude=exclude,
                               out_dir=out_dir, as_json=as_json)
    X, ids = select_features(read_table(data), id_column=id_column, features=inv.feature_names)
    if row is not None:
        case, cid = _pick_row(X, ids, row)
        reports = [inv.analyze(case, alpha=alpha, case_id=cid)]
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True, console=err, disable=as_json or not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"scoring {len(X):,} rows", total=None)

            def explained(done: int, total: int) -> None:
                bar.update(task, description=f"explaining the {total} most anomalous of {len(X):,} rows",
                           completed=done, total=total)

            reports = inv.analyze_batch(X, alpha=alpha, ids=ids, limit=top, on_progress=explained)
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json()) for r in reports]))
        return
    table = Table(title=f"{len(reports)} case(s) from {for_terminal(data.name, 80)}"
                  + ("" if row is not None else ", most anomalous first"))
    for col in ("case", "verdict", "score", "p-value", "top features"):
        table.add_column(col)
    for r in reports:
        v = r.verdict
        p = f"{v.p_value:.4g}" + (" (tail)" if v.approximate else "")
        table.add_row(_text(r.evidence.case_id, 40), _verdict_word(v), f"{v.score:.4g}", p,
                      _text(", ".join(a.feature for a in r.evidence.attributions[:3]), 80))
    out.print(table)
    notes = {r.verdict.note for r in reports if r.verdict.note}
    batch = inv.batch_note(len(X), alpha) if row is None else None
    for note in ([batch] if batch else []) + sorted(notes)[:1]:
        err.print(f"[yellow]note:[/] {for_terminal(note, 400)}", highlight=False)
    for r in reports:
        out.print(Markdown(r.to_markdown()))


def _analyze_series(inv, data: Path, *, top: int, alpha: float, label_column: str | None, exclude: list[str] | None,
                    out_dir: Path | None, as_json: bool) -> None:
    """``analyze`` on a series: the events table, each event's report, and with --out its files and plot."""
    frame = _series_frame(read_table(data), label_column, exclude)
    if out_dir is not None:
        _check_out(out_dir)
    reports = inv.analyze_batch(frame, alpha=alpha, limit=top, plot_dir=out_dir,
                                progress=not as_json and sys.stderr.isatty())
    if out_dir is not None:
        for r in reports:
            stem = f"event-{r.evidence.event.index}"
            (out_dir / f"{stem}.json").write_text(r.model_dump_json(indent=1))
            (out_dir / f"{stem}.md").write_text(r.to_markdown())
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json()) for r in reports]))
        return
    table = Table(title=f"{len(reports)} event(s) in {for_terminal(data.name, 80)} (false discovery rate {alpha:g} "
                        f"over {len(frame)} points)")
    for col in ("event", "start", "end", "points", "peak", "p-value", "channels"):
        table.add_column(col)
    for r in reports:
        e, v = r.evidence.event, r.verdict
        table.add_row(str(e.index), _text(e.start, 30), _text(e.end, 30), str(e.n_points), _text(e.peak, 30),
                      f"{v.p_value:.3g}" + (" (tail)" if v.approximate else ""), _text(", ".join(e.channels[:4]), 60))
    out.print(table)
    if out_dir is not None:
        err.print(f"reports and plots written to {for_terminal(str(out_dir), 200)}", highlight=False)
    elif reports:
        err.print("pass --out DIR to write each event's report and plot", highlight=False)
    for r in reports:
        out.print(Markdown(r.to_markdown()))


@app.command()
@_guard
def chat(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit'")],
    data: Annotated[Optional[Path], typer.Argument(help="the rows the case comes from (omit to resume a saved chat)")] = None,
    row: Annotated[Optional[str], typer.Option(help="the case: 0-based row position, or a value of --id-column")] = None,
    event: Annotated[Optional[int], typer.Option(min=1, help="a series: the event to investigate (as 'analyze' "
                                                 "numbers them)")] = None,
    incident: Annotated[Optional[int], typer.Option(min=1, help="logs: the incident to investigate (as 'triage' "
                                                    "ranks them)")] = None,
    id_column: IdColOpt = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="a series' label column to leave out")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="a series' columns to leave out")] = None,
    thread: Annotated[Optional[str], typer.Option(help="conversation id to start or resume (default: case-<id>)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="SQLite file keeping conversations (default: DIR/chat.sqlite)")] = None,
    max_steps: Annotated[int, typer.Option(min=1, max=20, help="tool calls per question")] = 5,
    tool_choice: Annotated[Optional[str], typer.Option(
        "--tool-choice", help="with a tool-calling server: 'required' (every step a tool call or the answer, "
        "decoded under the tool schemas) or 'auto' (the model decides); default: ANOMALENS_LLM_TOOL_CHOICE "
        "or 'required'")] = None,
    llm: LlmOpt = None, base_url: BaseUrlOpt = None, model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Investigate one case interactively: ask questions, or use /why /neighbors /restore /compare /feature.

    Reads one line per turn from the terminal or from piped input; /quit or end of input stops.
    """
    from anomalens.agents.chat import TOOL_CHOICES, ChatSession
    from anomalens.config import get_settings
    from anomalens.llm.reasoner import tool_client
    from anomalens.tools import Toolbox
    from anomalens.tools.toolbox import toolbox_for

    if tool_choice is not None and tool_choice not in TOOL_CHOICES:  # before the model is loaded
        raise CliError(f"--tool-choice must be one of {list(TOOL_CHOICES)}, got {tool_choice!r}")
    reasoner = _reasoner(llm, base_url, model)
    inv = _load(model_dir, reasoner)
    box = toolbox_for(inv)(inv)
    case_id = None
    if inv.modality.reads_text:
        from anomalens.tools import LogToolbox

        if data is not None:
            if incident is None:
                raise CliError("--incident is required with logs: which incident to investigate ('triage' ranks them)")
            if str(data) == "-":
                raise CliError("chat reads your questions from standard input: give the logs as a file")
            box = LogToolbox(inv, str(data), limit=max(incident, 20))
            case_id = _focus_numbered(box, "incident", incident, data.name)
        elif thread is None:
            raise CliError("give the logs and --incident to start a chat, or --thread to resume a saved one")
    elif inv.modality.sequential:
        from anomalens.tools import SeriesToolbox

        if data is not None:
            if event is None:
                raise CliError("--event is required with a series: which event to investigate ('analyze' lists them)")
            box = SeriesToolbox(inv, _series_frame(read_table(data), label_column, exclude))
            case_id = _focus_numbered(box, "event", event, data.name)
        elif thread is None:
            raise CliError("give DATA and --event to start a chat, or --thread to resume a saved one")
    elif data is not None:
        if row is None:
            raise CliError("--row is required with DATA: which row to investigate")
        X, ids = select_features(read_table(data), id_column=id_column, features=inv.feature_names)
        _, case_id = _pick_row(X, ids, row)
        box = Toolbox(inv, X, ids=ids or [str(i) for i in range(len(X))], focus=case_id)  # /compare <id> reaches every row
    elif thread is None:
        raise CliError("give DATA and --row to start a chat, or --thread to resume a saved one")
    checkpoint = checkpoint or _default_checkpoint(model_dir)
    session = ChatSession(box, case_id, reasoner=reasoner, model=tool_client(reasoner), max_steps=max_steps,
                          tool_choice=tool_choice or get_settings().llm_tool_choice,
                          checkpoint=checkpoint, thread_id=thread or f"case-{case_id}")
    if case_id is None and not session.resumed:
        raise CliError(f"no saved conversation {thread!r} in {str(checkpoint)!r}; give DATA and --row")
    interactive = sys.stdin.isatty() and not as_json
    if not as_json:
        ev = session.evidence
        v = ev.verdict
        if ev.event is not None:
            out.print(f"[bold]Event {ev.event.index}[/]: {for_terminal(ev.event.start, 40)} to "
                      f"{for_terminal(ev.event.end, 40)} ({ev.event.n_points} points)", highlight=False)
        if ev.incident is not None:
            i = ev.incident
            out.print(f"[bold]Incident {i.index}[/]: {i.n_cases} case(s), {i.n_lines} lines"
                      + (f", {for_terminal(i.start, 40)} to {for_terminal(i.end, 40)}" if i.start else "")
                      + f"; abnormal templates {for_terminal(', '.join(i.templates[:5]), 80)}. "
                      "Try /lines, /timeline, /template <id>.", highlight=False)
        out.print(f"[bold]Case {for_terminal(ev.case_id, 40)}[/]: {_verdict_word(v)} "
                  f"(p-value {v.p_value:.4g}, detector {for_terminal(v.detector, 40)}); top "
                  f"{ {'event': 'templates', 'channel': 'channels'}.get(ev.context.unit_kind, 'features')}: "
                  f"{for_terminal(', '.join(a.feature for a in ev.attributions[:3]), 120)}. Ask a question, or /help. "
                  "/quit ends.", highlight=False)
        if session.resumed:
            out.print(f"(resumed conversation {for_terminal(repr(session.thread_id), 60)}, "
                      f"{len(session.history())} earlier entries)", highlight=False)
    if interactive:
        try:  # line editing and history for input() (arrow keys, Ctrl-R), where the platform has readline
            import readline  # noqa: F401
        except ImportError:
            pass
    try:
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if line.lower() in ("/quit", "/exit", "quit", "exit"):
                break
            if interactive:  # a turn with a model takes seconds: say that it is working
                with err.status("[dim]thinking...[/]" if not line.startswith("/") else "[dim]running...[/]"):
                    reply = session.ask(line)
            else:
                reply = session.ask(line)
            if as_json:
                print(json.dumps({"question": line, "answer": reply.text, "tools": reply.tools, "steps": reply.steps,
                                  "explanation": None if reply.explanation is None
                                  else json.loads(reply.explanation.model_dump_json())}), flush=True)
                continue
            if not interactive:
                out.print(f"you> {for_terminal(line, 2000)}", highlight=False)
            _print_reply(reply)
    finally:
        session.close()


def _focus_numbered(box, kind: str, number: int, source: str) -> str:
    """Focus the box on ``<kind>-<number>`` (an event of a series, an incident of logs), or a one-line error."""
    case_id = f"{kind}-{number}"
    if case_id not in box.case_ids:
        raise CliError(f"--{kind} must be one of the {len(box.case_ids)} {kind}s found in {_text(source, 80)} "
                       f"(1..{len(box.case_ids)}), got {number}")
    box.focus = case_id
    return case_id


def _default_checkpoint(model_dir: Path) -> Path:
    """DIR/chat.sqlite, or, for a model folder this user cannot write, a file in the user's cache."""
    import hashlib
    import os

    if os.access(model_dir, os.W_OK):
        return model_dir / "chat.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anomalens" / "chats"
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return cache / f"{key}.sqlite"


def _verdict_word(v) -> str:
    if v.anomalous:
        return "[red]ANOMALOUS[/]"
    return "[yellow]not significant (batch)[/]" if v.note else "normal"


def _print_reply(reply) -> None:
    ex = reply.explanation
    if ex is None:  # a tool's text (raw log lines shown as data, a file written) or an error: each line escaped
        parts = reply.text.splitlines() or [""]
        out.print(f"anomalens> {for_terminal(parts[0], 1000)}", highlight=False)
        for part in parts[1:60]:
            out.print(f"  {for_terminal(part, 1000)}", highlight=False)
        return
    tools = f"; tools: {', '.join(reply.tools)}" if reply.tools else ""
    out.print(f"anomalens> [dim]({for_terminal(ex.source + ', ' + ('verified' if ex.grounded else 'NOT verified') + tools, 200)})[/]",
              highlight=False)
    for c in ex.claims:
        cites = ", ".join(c.cites[:4]) + (", ..." if len(c.cites) > 4 else "")
        out.print(f"  - {for_terminal(c.text, 1000)} [dim]\\[{for_terminal(cites, 300)}][/]", highlight=False)
    if ex.interpretation:
        out.print(f"  [italic]the model's interpretation (not verified):[/] {for_terminal(ex.interpretation, 1000)}",
                  highlight=False)
    if ex.note:
        out.print(f"  [dim]{for_terminal(ex.note, 1000)}[/]", highlight=False)
    sys.stdout.flush()


@app.command()
@_guard
def demo(
    detector: Annotated[str, typer.Option("--detector", "-d")] = DEFAULT_DETECTOR,
    top: Annotated[int, typer.Option(min=1)] = 5,
    llm: LlmOpt = None,
) -> None:
    """The main job on the embedded defaults (what 'make demo' runs): fit, analyze, report, chat."""
    from anomalens import demo as demo_mod

    argv = ["--detector", detector, "--top", str(top)] + (["--llm", llm] if llm else [])
    raise typer.Exit(demo_mod.main(argv))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
@_guard
def mcp(
    models: Annotated[list[str], typer.Argument(metavar="DIR...", help="saved investigators to serve, each a folder "
                                                "(named by its folder name) or NAME=FOLDER")],
) -> None:
    """Serve saved investigators to MCP clients on stdio (the investigation tools, a session's cases kept)."""
    from anomalens.server.mcp_server import build_mcp

    build_mcp(_named_folders(models)).run("stdio")


def _named_folders(models: list[str]) -> dict[str, str]:
    """{name: folder} of DIR or NAME=DIR arguments (a folder is named by its last part)."""
    folders: dict[str, str] = {}
    for m in models:
        name, sep, folder = m.partition("=")
        if not sep:
            name, folder = Path(m).resolve().name, m
        if name in folders:
            raise CliError(f"two investigators are named {name!r}; name them with NAME=FOLDER")
        folders[name] = folder
    return folders


@app.command()
@_guard
def serve(
    models: Annotated[list[str], typer.Argument(metavar="DIR...", help="saved investigators to serve, each a folder "
                                                "(named by its folder name) or NAME=FOLDER")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="API keys, one per line (default: "
                                                         "ANOMALENS_API_KEYS, comma-separated)")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="serve without API keys (loopback hosts only)")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="requests scored at a time (per process)")] = 2,
    processes: Annotated[int, typer.Option(min=1, max=64, help="server processes (each loads the models; scoring "
                                                           "is CPU-bound, so up to one per core)")] = 1,
    queue: Annotated[int, typer.Option(min=0, max=10000, help="requests that may wait; beyond, 429")] = 16,
    timeout: Annotated[float, typer.Option(min=0.01, help="seconds a request may run; beyond, 504")] = 60.0,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="largest request body in MB; beyond, 413")] = 32.0,
    max_rows: Annotated[int, typer.Option(min=1, help="rows per analyze request")] = 100_000,
    cors: Annotated[Optional[list[str]], typer.Option("--cors", help="an origin allowed by CORS (repeatable; default: "
                                                      "CORS off)")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="where chat sessions persist (default: "
                                                      "./.anomalens-serve)")] = None,
) -> None:
    """Serve saved investigators over HTTP: the REST API under /v1 (OpenAPI at /docs), the web page at /, MCP at /mcp."""
    import os

    import uvicorn

    from anomalens.server import ServeConfig

    folders = _named_folders(models)
    keys: list[str] = []
    if api_key_file is not None:
        try:
            keys = [ln.strip() for ln in api_key_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise CliError(f"--api-key-file {str(api_key_file)!r} cannot be read ({exc.strerror})") from exc
    elif os.environ.get("ANOMALENS_API_KEYS"):
        keys = [k.strip() for k in os.environ["ANOMALENS_API_KEYS"].split(",") if k.strip()]
    if no_auth and keys:
        raise CliError("--no-auth and API keys exclude each other")
    if no_auth and host not in LOOPBACK:
        raise CliError(f"--no-auth is refused on {host!r}: serve without keys on a loopback host only ({', '.join(LOOPBACK)})")
    if not no_auth and not keys:
        raise CliError("API keys are required: --api-key-file FILE or ANOMALENS_API_KEYS (or --no-auth on a loopback host)")
    if any(len(k) < 16 for k in keys):
        raise CliError("API keys must be at least 16 characters long")
    cfg = ServeConfig(api_keys=keys, no_auth=no_auth, workers=workers, queue=queue, timeout=timeout,
                      max_body=int(max_body_mb * 1024 * 1024), max_rows=max_rows, cors_origins=cors or [],
                      state_dir=str(state_dir or Path(".anomalens-serve")), host=host, mcp=processes == 1)
    if processes == 1:
        from anomalens.server.app import process_app

        application = process_app(folders, cfg)  # loaded before the banner: a bad model folder fails here
    else:
        import json as _json

        from anomalens.server.app import ENV_SPEC

        for name, folder in folders.items():  # a bad model folder fails here, not in every worker
            _check_model(folder)
        os.environ[ENV_SPEC] = _json.dumps({"investigators": folders, "config": cfg.model_dump()})
    err.print(f"serving {for_terminal(', '.join(folders), 200)} on http://{for_terminal(host, 80)}:{port} "
              f"({'no API key' if no_auth else f'{len(keys)} API key(s)'}; {processes} process(es); OpenAPI at /docs; "
              f"{'MCP at /mcp' if processes == 1 else 'MCP over HTTP off: its sessions need --processes 1'})",
              highlight=False)
    if processes == 1:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
    else:
        uvicorn.run("anomalens.server.app:app_from_env", factory=True, workers=processes, host=host, port=port,
                    log_level="warning", access_log=False)


def _check_model(folder: str) -> None:
    """Load a saved investigator once (its errors are the user's, one line)."""
    from anomalens import Investigator

    Investigator.load(folder)


EVALS = ("tabular", "attribution", "explain", "store", "agent", "calibration", "levels", "tail_rules", "null_tails",
         "linear_member", "fit_large", "latency", "verifier", "series", "logs", "serve", "scale", "soak", "validity", "verdicts",
         "rare_modes", "series_blocks", "import_graph")


@app.command(name="eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_guard
def eval_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"benchmark: {' | '.join(EVALS)}; extra arguments go to it")],
) -> None:
    """Run a benchmark from the source checkout's evals/ (results under evals/results/)."""
    import importlib

    if name not in EVALS:
        raise CliError(f"benchmark must be one of {list(EVALS)}, got {name!r}")
    try:
        mod = importlib.import_module(f"evals.{name}")
    except ModuleNotFoundError as exc:
        raise CliError(f"the benchmarks are not installed with this anomalens ({exc}); install it from the source "
                       "checkout: pip install -e .") from exc
    try:
        mod.main(list(ctx.args))
    except SystemExit as exc:  # argparse's --help and usage errors
        raise typer.Exit(exc.code if isinstance(exc.code, int) else 2) from None


def main() -> None:
    """Entry point: usage errors and unexpected failures are one line on stderr too (set
    ANOMALENS_DEBUG=1 for the traceback of an unexpected failure)."""
    import os

    try:  # typer >= 0.22 carries its own copy of click's exceptions
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer on plain click
        from click import exceptions as click_exc

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except click_exc.NoArgsIsHelpError:  # "anomalens" alone: the help was printed
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _print_error(exc.format_message().strip().split("\n")[0] + where)
        sys.exit(2)
    except (KeyboardInterrupt, getattr(click_exc, "Abort", KeyboardInterrupt)):
        _print_error("aborted")
        sys.exit(130)
    except click_exc.ClickException as exc:
        _print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line, never a traceback, unless asked for
        if os.environ.get("ANOMALENS_DEBUG"):
            raise
        _print_error(f"unexpected {type(exc).__name__}: {str(exc).strip().split(chr(10))[0]} "
                     "(set ANOMALENS_DEBUG=1 for the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
