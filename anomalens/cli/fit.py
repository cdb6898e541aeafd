"""``anomalens fit``: a detector and an exemplar store fitted on normal rows, a normal series or normal logs, saved to a folder; the modality reads its own options and input."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from anomalens.cli.common import (
    LOG_SUFFIXES,
    CliError,
    IdColOpt,
    JsonOpt,
    app,
    check_out,
    detector_params,
    err,
    guard,
    is_big_table,
    out,
    read_table,
    remove_empty,
)
from anomalens.config import MAX_TRAIN_ROWS
from anomalens.text import for_terminal


@app.command()
@guard
def fit(
    data: Annotated[list[Path], typer.Argument(metavar="DATA...", help="normal data: a CSV or Parquet file of rows or of a series; "
                                               "log files (plain, .gz, several, - for standard input); or image folders "
                                               "or files")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write the fitted investigator to")],
    detector: Annotated[Optional[str], typer.Option("--detector", "-d", help="a registered detector (see the README); "
                                                    "default: the Ensemble of autoencoder, vae, autoregressive and pca for "
                                                    "rows, conv_ae for a series, autoencoder for log counts")] = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="label column to leave out")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="columns to leave out (repeat or comma-separate)")] = None,
    id_column: IdColOpt = None,
    modality: Annotated[Optional[str], typer.Option("--modality", help="tabular, series, logs or images (default: series "
                                                     "when --time-column is given, logs for .log/.gz/.txt/.jsonl files "
                                                     "or with --format or --session, images for folders and image files)")] = None,
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
    from anomalens.modalities import get_modality, list_modalities

    is_log = bool(log_format or session) or all(str(p) == "-" or p.suffix.lower() in LOG_SUFFIXES for p in data)
    own = next((n for n in list_modalities() if get_modality(n).accepts(data)), None)  # e.g. a folder of images
    modality = modality or ("series" if time_column else "logs" if is_log else own or ("series" if window else "tabular"))
    if modality not in list_modalities():
        raise CliError(f"--modality must be one of {list_modalities()}, got {modality!r}")
    kind = get_modality(modality)
    given = {k: v for k, v in {"window": window, "time_column": time_column, "fill": fill, "resample": resample,
                               "log_format": log_format, "session": session, "mask": mask}.items() if v}
    foreign = [k for k in given if k not in kind.options]
    if foreign:  # each option names the modalities that take it
        owners = sorted({n for n in list_modalities() for k in foreign if k in get_modality(n).options})
        raise CliError(f"{_and([FLAGS[k] for k in foreign])} apply to {_and(owners) or 'no modality'}, not to "
                       f"{modality} data")
    if not kind.reads_paths and len(data) != 1:
        raise CliError(f"{modality} data is one CSV or Parquet file, got {len(data)} paths")
    params = {"random_state": seed, **detector_params(param)}
    if not as_json and sys.stderr.isatty():
        params.setdefault("verbose", True)  # a progress bar over epochs
    if detector is not None:
        make_detector(detector, **params).validate_params()  # bad hyper-parameters fail before any work
    mod = kind.from_options(**given)
    rows_seen, fit_kw = None, {}
    if kind.reads_paths:  # log files read as they are parsed, image folders: the modality reads its files
        X, ids, source = [str(p) for p in data], None, ",".join(p.name for p in data)[:200]
    else:
        path = data[0]
        if kind.samples_training and is_big_table(path, max_train_rows):
            from anomalens.scale import sample_table

            frame, rows_seen = sample_table(path, max_train_rows, seed=seed)  # streamed: memory holds the sample only
        else:
            frame = read_table(path)
        X, ids = mod.training_table(frame, label_column=label_column, exclude=exclude, id_column=id_column)
        source = path.name
        if kind.samples_training:
            fit_kw = {"max_train_rows": max_train_rows, "rows_seen": rows_seen}
    created = check_out(out_dir)
    t0 = time.perf_counter()
    try:
        inv = Investigator.fit(X, modality=mod, detector=detector, source=source, ids=ids, **fit_kw, **params)
        inv.save(out_dir)
    except BaseException:
        remove_empty(created)
        raise
    described, note = mod.fit_summary(inv, X)
    summary = {"out": str(out_dir), "modality": modality, "detector": inv.detector_name, **described,
               "exemplars": inv.store.count(), "seconds": round(time.perf_counter() - t0, 2)}
    if note and not as_json:
        err.print(for_terminal(note, 600), highlight=False)
    _print_summary(summary, as_json)


FLAGS = {"window": "--window", "time_column": "--time-column", "fill": "--fill", "resample": "--resample",
         "log_format": "--format", "session": "--session", "mask": "--mask"}  # a modality option's flag


def _and(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 2 else words)


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title="fitted", show_header=False)
    for k, v in summary.items():
        table.add_row(k, for_terminal(v, 300))
    out.print(table)
