"""``anomalens triage``, ``score`` and ``analyze``: verdicts, reports and ranked incidents of new data from a saved model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markdown import Markdown
from rich.table import Table

from anomalens.cli.common import (
    AddressOpt,
    BaseUrlOpt,
    CliError,
    EngineOpt,
    IdColOpt,
    JsonOpt,
    LlmOpt,
    ModelOpt,
    WorkersOpt,
    app,
    check_out,
    cli_reasoner,
    err,
    guard,
    load_model,
    out,
    pick_row,
    read_table,
    select_features,
    shown,
    verdict_word,
)
from anomalens.text import for_terminal


@app.command()
@guard
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
    reasoner = cli_reasoner(llm, base_url, model)
    inv = load_model(model_dir, reasoner)
    if not inv.modality.reads_text:
        raise CliError(f"{shown(str(model_dir), 120)} holds a {inv.modality.name} model; triage needs one fitted on logs")
    if out_dir is not None:
        check_out(out_dir)
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
    out.print(case_table(f"{result.n_incidents} incident(s), {len(result.reports)} shown, most anomalous first",
                         result.reports, inv.modality.units_title))
    for r in result.reports:
        ev = r.evidence
        title = next(filter(None, (p.headline() for p in ev.parts)), (ev.label(), ""))[0]
        out.print(f"\n[bold]{for_terminal(title, 60)}[/] (strongest case {for_terminal(ev.case_id, 60)}):",
                  highlight=False)
        for where, text in ev.quotes()[:2]:  # the raw input, as data
            out.print(f"  [dim]{for_terminal(where, 80)}[/] {for_terminal(text, 160)}", highlight=False)
        for c in r.explanation.claims:
            out.print(f"  - {for_terminal(c.text, 400)} [dim]\\[{for_terminal(', '.join(c.cites), 200)}][/]",
                      highlight=False)
    if out_dir is not None:
        err.print(f"report written to {for_terminal(str(out_dir / 'triage.md'), 200)}", highlight=False)
    elif result.reports:
        err.print("pass --out DIR for the full report (lines, templates, expected sequences)", highlight=False)


@app.command()
@guard
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
    reasoner = cli_reasoner(llm, base_url, model) if explain_top else None
    inv = load_model(model_dir, reasoner)
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
@guard
def analyze(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit'")],
    data: Annotated[Path, typer.Argument(help="rows to analyze: a CSV or Parquet file (a series: its CSV; images: "
                                         "a folder or an image file)")],
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
    reasoner = cli_reasoner(llm, base_url, model)
    inv = load_model(model_dir, reasoner)
    if inv.modality.sequential:
        return _analyze_series(inv, data, top=top, alpha=alpha, label_column=label_column, exclude=exclude,
                               out_dir=out_dir, as_json=as_json)
    if inv.modality.reads_paths and not inv.modality.reads_text:
        return _analyze_files(inv, data, top=top, row=row, alpha=alpha, out_dir=out_dir, as_json=as_json)
    X, ids = select_features(read_table(data), id_column=id_column, features=inv.feature_names)
    if row is not None:
        case, cid = pick_row(X, ids, row)
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
    out.print(case_table(f"{len(reports)} case(s) from {for_terminal(data.name, 80)}"
                         + ("" if row is not None else ", most anomalous first"), reports, inv.modality.units_title))
    notes = {r.verdict.note for r in reports if r.verdict.note}
    batch = inv.batch_note(len(X), alpha) if row is None else None
    for note in ([batch] if batch else []) + sorted(notes)[:1]:
        err.print(f"[yellow]note:[/] {for_terminal(note, 400)}", highlight=False)
    for r in reports:
        out.print(Markdown(r.to_markdown()))


def _analyze_series(inv, data: Path, *, top: int, alpha: float, label_column: str | None, exclude: list[str] | None,
                    out_dir: Path | None, as_json: bool) -> None:
    """``analyze`` on a series: the events table, each event's report, and with --out its files and plot."""
    frame = inv.modality.training_table(read_table(data), label_column=label_column, exclude=exclude)[0]
    if out_dir is not None:
        check_out(out_dir)
    reports = inv.analyze_batch(frame, alpha=alpha, limit=top, plot_dir=out_dir,
                                progress=not as_json and sys.stderr.isatty())
    if out_dir is not None:
        for r in reports:
            stem = r.evidence.label()
            (out_dir / f"{stem}.json").write_text(r.model_dump_json(indent=1))
            (out_dir / f"{stem}.md").write_text(r.to_markdown())
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json()) for r in reports]))
        return
    table = case_table(f"{len(reports)} event(s) in {for_terminal(data.name, 80)} (false discovery rate {alpha:g} "
                       f"over {len(frame)} points)", reports, inv.modality.units_title)
    _print_reports(table, reports, out_dir, "each event's report and plot")


def _analyze_files(inv, data: Path, *, top: int, row: str | None, alpha: float, out_dir: Path | None,
                   as_json: bool) -> None:
    """``analyze`` on files the modality reads itself (a folder of images): the false discovery rate
    over the lot, the table of the top N, each one's report, and with --out its files and picture."""
    if not data.exists():
        raise CliError(f"DATA must be an existing folder or file, got {str(data)!r} (no such path)")
    if out_dir is not None:
        check_out(out_dir)
    noun = inv.modality.case_noun
    if row is not None:
        case = data / row if data.is_dir() else data
        if not case.exists():
            raise CliError(f"--row must name a file in {str(data)!r}, got {row!r}")
        reports, total = [inv.analyze(str(case), alpha=alpha, case_id=case.name, plot_dir=out_dir)], 1
    else:
        verdicts, reports = inv.assess(str(data), alpha=alpha, limit=top, only_anomalous=False, plot_dir=out_dir)
        total = len(verdicts)
    if out_dir is not None:
        for r in reports:
            stem = Path(r.plot).stem if r.plot else r.evidence.case_id
            (out_dir / f"{stem}.json").write_text(r.model_dump_json(indent=1))
            (out_dir / f"{stem}.md").write_text(r.to_markdown())
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json()) for r in reports]))
        return
    flagged = sum(r.verdict.anomalous for r in reports)
    title = (f"{len(reports)} {noun}(s) of {total} in {for_terminal(data.name, 80)}, most anomalous first "
             f"({flagged} flagged at a false discovery rate of {alpha:g})" if row is None else
             f"{noun} {for_terminal(reports[0].evidence.case_id, 80)}")
    _print_reports(case_table(title, reports, inv.modality.units_title), reports, out_dir, "each report and its picture")


def case_table(title: str, reports: list, units_title: str) -> Table:
    """A table of cases, one row a report: a case its modality leads with an item (a series' event, a
    log's incident) shows that item's ``brief``; any other its verdict, score, p-value and top units."""
    rows = []
    for r in reports:
        v, brief = r.verdict, r.evidence.brief()
        p_value = f"{v.p_value:.4g}" if brief is None else f"{v.p_value:.3g}"
        p_value += " (tail)" if v.approximate else ""
        if brief is None:
            rows.append({"case": shown(r.evidence.case_id, 40), "verdict": verdict_word(v), "score": f"{v.score:.4g}",
                         "p-value": p_value, f"top {units_title.lower()}":
                         shown(", ".join(a.unit for a in r.evidence.attributions[:3]), 80)})
            continue
        rows.append({k.replace("_", " ") if k != "p_value" else "p-value":
                     p_value if k == "p_value" else _cell(value) for k, value in brief.items()})
    table = Table(title=title)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    for c in columns:
        table.add_column(c, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row.get(c, "") for c in columns))
    return table


def _cell(value: object):
    """One value of an item's brief as a table cell (untrusted strings printed as themselves, cut)."""
    if value is None or value == []:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return shown(", ".join(map(str, value)), 60)
    return shown(value, 40)


def _print_reports(table: Table, reports: list, out_dir: Path | None, what: str) -> None:
    """The table, where the files went (or how to write them), then each report."""
    out.print(table)
    if out_dir is not None:
        err.print(f"written to {for_terminal(str(out_dir), 200)}: {what}", highlight=False)
    elif reports:
        err.print(f"pass --out DIR to write {what}", highlight=False)
    for r in reports:
        out.print(Markdown(r.to_markdown()))
