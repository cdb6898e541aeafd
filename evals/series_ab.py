"""Series before/after: conv_ae's detection and the injected-event explanations of two checkouts.

A redesign that should change no figure (issue 42's) is checked by running the same measurement
on the code before and after it, on one machine, one after the other (never side by side: two
PyTorch processes on two cores slow each other tenfold). Each run uses the ``evals`` and
``anomalens`` of the checkout it measures: ``evals.series``' own ``synthetic_explanations`` (two
seeds, 48 injected events) and ``run_ours("conv_ae")`` with ``metrics`` on the nine series of
``python -m evals.series --nab 6`` (three TSB-AD samples and six NAB series). The baselines and the
throughput rows are left out: they do not run through anomalens' series path.

    git worktree add /tmp/before <commit>
    python -m evals.series_ab --tree /tmp/before --out /tmp/before.json
    python -m evals.series_ab --tree . --out /tmp/after.json
    python -m evals.series_ab --report /tmp/before.json /tmp/after.json   # results/series_ab.{json,md}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from evals.common import write_results

# run with the checkout's directory as the working directory, so its evals and anomalens are imported
MEASURE = r'''
import json, os, sys, time
import torch
torch.set_num_threads(2)
import anomalens
import evals.series as S
from TSB_AD.utils.slidingWindows import find_length_rank
assert anomalens.__file__.startswith(os.getcwd()), f"anomalens imported from {anomalens.__file__}, not {os.getcwd()}"
out = {"tree": os.getcwd(), "commit": os.popen("git rev-parse --short HEAD").read().strip(), "detection": {}}
t0 = time.perf_counter()
out["synthetic"] = S.synthetic_explanations(60, seeds=2)
for ds in S.tsb_samples() + S.nab_series(6):
    X, y, tr = ds["values"], ds["labels"], ds["train"]
    yt = y[tr:]
    if yt.sum() == 0:
        continue
    window = int(find_length_rank(X[tr:, 0].reshape(-1, 1), rank=1))
    score, pred, info = S.run_ours("conv_ae", ds, 60)
    out["detection"][ds["name"]] = {**S.metrics(score, yt, window, pred), **info}
    print(ds["name"], out["detection"][ds["name"]], flush=True)
out["seconds"] = time.perf_counter() - t0
json.dump(out, open(sys.argv[1], "w"), indent=1)
'''


def report(before: dict, after: dict) -> tuple[dict, str]:
    import numpy as np

    rows, same = [], True
    for name, b in before["detection"].items():
        a = after["detection"].get(name, {})
        rows.append({"dataset": name, **{f"{m} before": b[m] for m in ("VUS-PR", "range-F1")},
                     **{f"{m} after": a.get(m) for m in ("VUS-PR", "range-F1")}})
        same &= all(a.get(m) == b[m] for m in ("VUS-PR", "AUC-PR", "range-F1"))
    same &= before["synthetic"] == after["synthetic"]
    lines = ["# Series before/after (conv_ae detection, injected-event explanations)", "",
             f"`python -m evals.series_ab`: the code of {before.get('commit', before['tree'])} and of "
             f"{after.get('commit', after['tree'])}, one after the other on one machine "
             f"({before.get('seconds', 0):.0f} s and {after.get('seconds', 0):.0f} s). "
             + ("**Every figure identical.**" if same else "**Figures differ** (below)."), "",
             "| dataset | VUS-PR before | after | range-F1 at the cut-off before | after |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['VUS-PR before']:.4f} | {r['VUS-PR after']:.4f} | "
                     f"{r['range-F1 before']:.4f} | {r['range-F1 after']:.4f} |")
    lines.append(f"| **mean** | **{np.mean([r['VUS-PR before'] for r in rows]):.4f}** | "
                 f"**{np.mean([r['VUS-PR after'] for r in rows]):.4f}** | "
                 f"**{np.mean([r['range-F1 before'] for r in rows]):.4f}** | "
                 f"**{np.mean([r['range-F1 after'] for r in rows]):.4f}** |")
    lines += ["", "| injected | found before | after | channel hit@k before | after | time IoU before | after "
              "| restoration undoes before | after |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, b in before["synthetic"].items():
        a = after["synthetic"][kind]
        lines.append(f"| {kind} | {b['found']}/{b['events']} | {a['found']}/{a['events']} | {b['channel_hit_at_k']:.3f} | "
                     f"{a['channel_hit_at_k']:.3f} | {b['time_iou']:.3f} | {a['time_iou']:.3f} | "
                     f"{100 * b['restoration_undone_median']:.1f}% | {100 * a['restoration_undone_median']:.1f}% |")
    return {"before": before, "after": after, "identical": same}, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, help="the checkout to measure (its evals and anomalens)")
    ap.add_argument("--out", type=Path, help="where to write its measurement (JSON)")
    ap.add_argument("--report", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="compare two measurements: results/series_ab.{json,md}")
    args = ap.parse_args()
    if args.report:
        before, after = (json.loads(p.read_text()) for p in args.report)
        write_results("series_ab", *report(before, after))
        return
    if args.tree is None or args.out is None:
        ap.error("give --tree and --out, or --report BEFORE AFTER")
    subprocess.run([sys.executable, "-c", MEASURE, str(args.out.resolve())], cwd=args.tree, check=True)


if __name__ == "__main__":
    main()
