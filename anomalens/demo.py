"""The main job on the embedded defaults: ``python -m anomalens.demo`` (what ``make demo`` runs).

Data: scikit-learn's bundled Wisconsin breast-cancer table (569 rows, 30 named features; shipped
with the package, no download). Benign tumours are "normal": the VAE learns them from part of the
benign rows, then scores the held-out benign rows and every malignant one. The five most anomalous
cases are printed with their calibrated verdict, the three features that make them anomalous, and
the restored "normal" values the model proposes for those features. The top case then gets a full
report (verdict, p-value, attributions, nearest normal exemplars, restoration, verified
explanation and its source) and a short scripted chat turn ("why is this anomalous?", then
``/neighbors``), as an analyst would investigate it with ``anomalens chat``.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from anomalens.agents.analyze import analyze_case
from anomalens.agents.chat import ChatSession
from anomalens.config import DEFAULT_DETECTOR, get_settings
from anomalens.investigator import Investigator
from anomalens.text import for_terminal
from anomalens.llm.reasoner import tool_client, tool_mode
from anomalens.tools import Toolbox

__all__ = ["main"]


def load_breast_cancer_frame():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    X = data.frame.drop(columns="target")
    is_anomaly = (data.frame["target"] == 0).to_numpy()  # 0 = malignant, the rarer, abnormal class here
    return X, is_anomaly


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="anomalens demo on scikit-learn's breast-cancer data")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--llm", choices=("openai", "local", "template"), default=None,
                    help="reasoner (default: ANOMALENS_LLM, else the embedded model)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console()

    X, is_anomaly = load_breast_cancer_frame()
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(~is_anomaly)
    rng.shuffle(normal)
    train = normal[: int(0.7 * len(normal))]
    test = np.setdiff1d(np.arange(len(X)), train)
    console.print(
        f"[bold]anomalens demo[/] — breast-cancer data (scikit-learn): fitting {args.detector} on "
        f"{len(train)} benign rows, scoring {len(test)} unseen rows ({int(is_anomaly[test].sum())} malignant)."
    )
    inv = Investigator.fit(X.iloc[train], detector=args.detector, source="sklearn breast-cancer (benign)",
                           random_state=0, verbose=True)
    det = inv.detector
    X_test = X.iloc[test]
    scores = det.decision_function(X_test)
    pvals = det.pvalues(X_test)
    flags = det.predict_fdr(X_test, alpha=0.05)

    from sklearn.metrics import roc_auc_score

    console.print(
        f"AUROC on the unseen rows: {roc_auc_score(is_anomaly[test], scores):.3f}; "
        f"flagged at FDR 5%: {flags.sum()} rows, of which {int(is_anomaly[test][flags == 1].sum())} malignant; "
        f"calibrated on {len(det.calibration_scores_)} benign rows the scoring model did not train on "
        f"({'out-of-fold scores of every training row' if det.calibration_mode_ == 'cross' else 'a held-out share'})."
    )
    order = np.argsort(-scores)[: args.top]
    cases = X_test.iloc[order]
    att = det.explain(cases)
    restored = det.restore(cases)
    table = Table(title=f"The {args.top} most anomalous cases", show_lines=True)
    for col in ("row", "score", "p-value", "verdict", "truth", "top features: value → restored normal (normal range: 1st-99th percentile of training)"):
        table.add_column(col, overflow="fold")
    lo, hi = np.quantile(X.iloc[train].to_numpy(), [0.01, 0.99], axis=0)  # the reports' normal range too
    for i, row_pos in enumerate(order):
        idx = att.top(3)[i]
        lines = [
            f"{name}: {cases.iloc[i, j]:.4g} → {restored[i, j]:.4g} ({lo[j]:.3g}–{hi[j]:.3g})"
            for name, j in zip(att.names(idx), idx)
        ]
        verdict = "[red]anomalous[/]" if pvals[order[i]] < args.alpha else "normal"
        table.add_row(
            str(X_test.index[row_pos]), f"{scores[row_pos]:.1f}", f"{pvals[row_pos]:.3g}", verdict,
            "malignant" if is_anomaly[test][row_pos] else "benign", "\n".join(lines),
        )
    console.print(table)
    console.print(
        f"p-values are conformal down to {1 / (len(det.calibration_scores_) + 1):.3g} = 1/(calibration rows + 1); "
        f"below it they come from a fitted extreme-value tail (approximate). "
        f"Verdict: p < {args.alpha}. Attributions: {att.method}."
    )
    reasoner, why = _reasoner(args.llm)
    top_id = str(X_test.index[order[0]])
    box = Toolbox(inv, X_test, ids=[str(i) for i in X_test.index], focus=top_id, alpha=args.alpha)
    report = analyze_case(box, top_id, reasoner)  # the analyze graph: detect, attribute, retrieve, restore, explain, verify
    console.print(f"\n[bold]Full report of the top case, row {top_id}[/] (reasoner: {why})")
    console.print(Markdown(report.to_markdown()))

    console.print(f"\n[bold]A short investigation of row {top_id}[/] (what `anomalens chat` does)")
    model = tool_client(reasoner)
    session = ChatSession(box, top_id, reasoner=reasoner, model=model,
                          tool_choice=tool_mode(model, get_settings().llm_tool_choice))
    for question in ("why is this anomalous?", "/neighbors 3"):
        console.print(f"[bold cyan]analyst>[/] {question}", highlight=False)
        reply = session.ask(question)
        ex = reply.explanation
        head = f"({ex.source}, {'verified' if ex.grounded else 'NOT verified'}" if ex else "("
        console.print(f"[bold green]anomalens>[/] [dim]{head}{'; tools: ' + ', '.join(reply.tools) if reply.tools else ''})[/]")
        for c in ex.claims if ex else []:
            cites = ", ".join(c.cites[:3]) + (", ..." if len(c.cites) > 3 else "")
            console.print(f"  - {for_terminal(c.text, 1000)} [dim]\\[{for_terminal(cites, 300)}][/]", highlight=False)
        if ex is not None and ex.interpretation:
            console.print(f"  [italic]the model's interpretation (not verified):[/] {for_terminal(ex.interpretation, 600)}",
                          highlight=False)
        if ex is not None and ex.note:
            console.print(f"  [dim]{for_terminal(ex.note, 1000)}[/]", highlight=False)
    session.close()
    console.print("\nNext: `anomalens fit your.csv --out model/`, `anomalens analyze model/ new.csv`, "
                  "`anomalens chat model/ new.csv --row N`.")
    return 0


def _reasoner(llm: str | None = None):
    """The configured reasoner (ANOMALENS_LLM, default: the embedded model), or the template when it
    cannot be built here; the report says which produced the explanation."""
    from anomalens.errors import AnomalensError
    from anomalens.llm import TemplateReasoner, make_reasoner

    try:
        r = make_reasoner(llm=llm)
        return r, r.name
    except (AnomalensError, ImportError) as exc:
        return TemplateReasoner(), f"template ({exc})"


if __name__ == "__main__":
    raise SystemExit(main())
