"""Scale: how fit and streamed scoring grow with the input, on one machine and on a local Ray cluster.

Each measured job runs as its own ``anomalens`` process (the CLI a user runs), so that its time is
the whole job (start-up, read, score, p-values, write) and its peak memory is its own (the
process's maximum resident set, from ``wait4``). Rows come from a nonlinear 8-factor model in 20
dimensions (``evals.fit_large.factor_rows``), 0.1% of them moved by 6 sd on 3 features.

Measured:

- ``anomalens fit`` on 1,000,000 rows (a uniform sample of ``MAX_TRAIN_ROWS`` trains the
  detector; the summary says so), for the autoencoder and, with ``--default``, the default detector;
- ``anomalens score`` (autoencoder) on 10^4, 10^5 and 10^6 rows: rows/s end to end and peak memory;
- the anchors in this process on the 10^6 rows: the in-memory ``Investigator.verdicts`` (the
  batch API without streaming) and PyOD's AutoEncoder ``decision_function`` (fitted on 20,000
  rows), each with its time and the growth of this process's peak memory;
- ``--engine ray`` on the 10^6 rows with 1 and 2 scoring actors (a local cluster started by the
  process), checked row for row against the local output;
- logs: ``anomalens score`` of a log model (windows of 100 lines) on 10^5 and 10^6 lines, and on the
  10^6 lines with ``--engine ray`` (1 and 2 actors), compared with the local output.

Run:  python -m evals.scale [--quick] [--default]      (--quick: 10^5 rows at most, no logs)
      python -m evals.scale --logs                     (the logs part alone; the rest kept from the last run)
Writes evals/results/scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from evals.common import write_results
from evals.fit_large import factor_rows

D = 20
COLS = [f"x{i}" for i in range(D)]


# runs the CLI and, at exit, writes the process's own peak resident set (KiB) on stderr
# (VmHWM of /proc/self/status: ru_maxrss would carry the parent's peak across fork and exec)
_PEAK = ("import atexit, re, sys; atexit.register(lambda: sys.stderr.write('\\nPEAK_RSS_KIB %s\\n' % "
         "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))); "
         "from anomalens.cli import main; sys.argv[0] = 'anomalens'; main()")


def measured(args: list[str]) -> dict:
    """Run ``anomalens ARGS --json``: its JSON summary, wall seconds and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *args, "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"anomalens {' '.join(args[:2])} failed: {proc.stderr.strip()[-800:]}")
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KIB ")]
    return {"summary": json.loads(proc.stdout), "wall_s": wall, "peak_rss_mib": int(peak[-1].split()[1]) / 1024}


def write_rows(path: Path, n: int, seed: int, anomalies: bool = True) -> None:
    """``n`` rows as Parquet, 0.1% of them anomalous (none with ``anomalies=False``: training data)."""
    import pandas as pd

    X = factor_rows(n, seed, d=D)
    rng = np.random.default_rng(seed + 100)
    bad = rng.choice(n, max(1, n // 1000) if anomalies else 0, replace=False)
    sd = X.std(axis=0)
    for j in range(3):
        X[bad, j] += 6 * sd[j]
    label = np.zeros(n, dtype=np.int8)
    label[bad] = 1
    df = pd.DataFrame(X, columns=COLS)
    df["label"] = label
    df.to_parquet(path, row_group_size=131072)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^5 rows at most, no logs (a smoke run)")
    ap.add_argument("--default", action="store_true", help="also fit the default detector on 10^6 rows")
    ap.add_argument("--logs", action="store_true", help="run the logs part alone (local and Ray) and keep the "
                    "other parts of the saved results")
    args = ap.parse_args(argv)
    if args.logs:
        from evals.common import earlier

        result = earlier("scale")
        if not result:
            raise SystemExit("--logs updates results/scale.json: run the whole benchmark once first")
        with tempfile.TemporaryDirectory(prefix="anomalens-scale-") as tmp:
            result["logs"], result["logs_ray"] = logs(Path(tmp), ray=True)
        result["meta"]["logs_date"] = time.strftime("%Y-%m-%d")
        write_results("scale", result, markdown(result))
        return result
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    big = sizes[-1]
    result: dict = {"meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                             "python": platform.python_version(), "d": D, "sizes": sizes}}
    with tempfile.TemporaryDirectory(prefix="anomalens-scale-") as tmp:
        tmp = Path(tmp)
        for n in sizes:
            write_rows(tmp / f"rows_{n}.parquet", n, seed=1)
        write_rows(tmp / "train.parquet", big, seed=0, anomalies=False)
        # ---- fit
        fits = {}
        for det in ["autoencoder"] + (["ensemble"] if args.default else []):
            r = measured(["fit", str(tmp / "train.parquet"), "-o", str(tmp / f"model_{det}"), "--label-column",
                          "label", "-d", det])
            fits[det] = {"rows": r["summary"]["rows"], "trained_on": r["summary"].get("trained on"),
                         "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"]}
            print(det, fits[det], flush=True)
        result["fit"] = fits
        model = tmp / "model_autoencoder"
        # ---- streamed scoring, local
        scoring = []
        for n in sizes:
            r = measured(["score", str(model), str(tmp / f"rows_{n}.parquet"), "-o", str(tmp / f"scores_{n}.parquet"),
                          "--keep", "label"])
            s = r["summary"]
            scoring.append({"rows": n, "job_s": s["seconds"]["total"], "rows_per_s": n / s["seconds"]["total"],
                            "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"], "flagged": s["flagged"],
                            "recall": _recall(tmp / f"scores_{n}.parquet")})
            print(scoring[-1], flush=True)
        result["score"] = scoring
        # ---- anchors in this process
        result["anchors"] = anchors(model, tmp / f"rows_{big}.parquet")
        # ---- Ray
        ray_rows = []
        for w in (1, 2):
            r = measured(["score", str(model), str(tmp / f"rows_{big}.parquet"), "-o", str(tmp / f"ray_{w}.parquet"),
                          "--keep", "label", "--engine", "ray", "--workers", str(w)])
            s = r["summary"]
            ray_rows.append({"workers": w, "job_s": s["seconds"]["total"], "wall_s": r["wall_s"],
                             "rows_per_s": big / s["seconds"]["total"], "driver_peak_rss_mib": r["peak_rss_mib"],
                             "vs_local": _same(tmp / f"ray_{w}.parquet", tmp / f"scores_{big}.parquet")})
            print(ray_rows[-1], flush=True)
        result["ray"] = ray_rows
        # ---- logs
        if not args.quick:
            result["logs"], result["logs_ray"] = logs(tmp, ray=True)
    write_results("scale", result, markdown(result))
    return result


def _recall(path: Path) -> float:
    import pandas as pd

    out = pd.read_parquet(path, columns=["label", "anomalous"])
    return float(out.loc[out["label"] == 1, "anomalous"].mean())


def _same(a: Path, b: Path) -> dict:
    """Whether two outputs are equal row for row, and else how far apart."""
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    return {"identical": bool(x.equals(y)), "same_ids": bool((x["id"] == y["id"]).all()),
            "max_score_diff": float((x["score"] - y["score"]).abs().max()),
            "verdicts_differ": int((x["anomalous"] != y["anomalous"]).sum())}


class PeakRss:
    """The peak resident set of this process while the block runs, above its size at the start
    (VmRSS sampled every 5 ms: ru_maxrss cannot go below an earlier peak of the process)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())
        self.growth = self.peak - self.base


def _rss_mib() -> float:
    import re

    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def anchors(model: Path, rows: Path) -> dict:
    """The in-memory paths on the same rows, in this process: time and peak-memory growth."""
    import pandas as pd

    from anomalens import Investigator

    inv = Investigator.load(model)
    out = {}
    with PeakRss() as mem:
        t0 = time.perf_counter()
        df = pd.read_parquet(rows, columns=COLS)
        v = inv.verdicts(df, alpha=0.05)
        s = time.perf_counter() - t0
    out["anomalens_in_memory_verdicts"] = {"s": s, "flagged": sum(x.anomalous for x in v.values()),
                                           "peak_growth_mib": mem.growth}
    del v
    from pyod.models.auto_encoder import AutoEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = AutoEncoder(random_state=0, verbose=0).fit(factor_rows(20_000, 0, d=D))
        X = df.to_numpy()
        with PeakRss() as mem:
            t0 = time.perf_counter()
            det.decision_function(X)
            s = time.perf_counter() - t0
        out["pyod_autoencoder_decision_function"] = {"s": s, "peak_growth_mib": mem.growth}
    out["rows"] = len(df)
    print(out, flush=True)
    return out


def logs(tmp: Path, ray: bool = False) -> tuple[list[dict], list[dict]]:
    """``anomalens fit`` on normal logs (windows of 100 lines), then ``score`` on 10^5 and 10^6 lines;
    with ``ray``, also ``--engine ray`` with 1 and 2 actors on the 10^6 lines, compared with the local output."""
    from anomalens.data.log_synthesis import normal_logs

    (tmp / "normal.log").write_text(normal_logs(3000, seed=0).text())
    measured(["fit", str(tmp / "normal.log"), "-o", str(tmp / "logmodel"), "--window", "100"])
    rows = []
    sample = normal_logs(12_000, seed=1).lines
    for n in (100_000, 1_000_000):
        path = tmp / f"today_{n}.log"
        with path.open("w") as f:
            written = 0
            while written < n:
                chunk = sample[: n - written]
                f.write("\n".join(chunk) + "\n")
                written += len(chunk)
        r = measured(["score", str(tmp / "logmodel"), str(path), "-o", str(tmp / f"cases_{n}.parquet")])
        s = r["summary"]
        rows.append({"lines": n, "cases": s["rows"], "job_s": s["seconds"]["total"], "lines_per_s": n / s["seconds"]["total"],
                     "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"], "flagged": s["flagged"]})
        print(rows[-1], flush=True)
    on_ray = []
    for w in (1, 2) if ray else ():
        n = 1_000_000
        r = measured(["score", str(tmp / "logmodel"), str(tmp / f"today_{n}.log"), "-o", str(tmp / f"ray_cases_{w}.parquet"),
                      "--engine", "ray", "--workers", str(w)])
        s = r["summary"]
        on_ray.append({"lines": n, "workers": w, "cases": s["rows"], "job_s": s["seconds"]["total"],
                       "lines_per_s": n / s["seconds"]["total"], "wall_s": r["wall_s"],
                       "driver_peak_rss_mib": r["peak_rss_mib"], "flagged": s["flagged"],
                       "vs_local": _same(tmp / f"ray_cases_{w}.parquet", tmp / f"cases_{n}.parquet")})
        print(on_ray[-1], flush=True)
    return rows, on_ray


def _same_text(v: dict) -> str:
    if v["identical"]:
        return "yes (every column)"
    return (f"ids {'same' if v['same_ids'] else 'DIFFER'}; scores within {v['max_score_diff']:.1e}; "
            f"{v['verdicts_differ']} verdicts differ")


def markdown(r: dict) -> str:
    m = r["meta"]
    lines = [f"# Scale: fit and streamed scoring as the input grows ({m['machine']}, {m['date']})", "",
             "Command: `python -m evals.scale --default`. Every job is its own `anomalens` process; time is the job's "
             "own (read, score, p-values, Benjamini-Hochberg, write) unless marked wall (with start-up); memory is the "
             "process's peak resident set.", "", "## Fit on 1,000,000 x 20 rows", "",
             "| detector | trained on | wall s | peak MiB |", "|---|---|---:|---:|"]
    for det, f in r["fit"].items():
        lines.append(f"| {det} | {f['trained_on'] or 'every row'} | {f['wall_s']:.0f} | {f['peak_rss_mib']:.0f} |")
    lines += ["", "## Streamed scoring (`anomalens score`, autoencoder, Parquet in and out)", "",
              "| rows | job s | rows/s | wall s | peak MiB | flagged | recall of injected |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in r["score"]:
        lines.append(f"| {s['rows']:,} | {s['job_s']:.2f} | {s['rows_per_s']:,.0f} | {s['wall_s']:.1f} | "
                     f"{s['peak_rss_mib']:.0f} | {s['flagged']:,} | {s['recall']:.3f} |")
    a = r["anchors"]
    lines += ["", f"## In-memory anchors on the same {a['rows']:,} rows (this process)", "",
              "| path | s | peak memory growth MiB (above the process before it) |", "|---|---:|---:|",
              f"| anomalens `Investigator.verdicts` (whole table in memory) | {a['anomalens_in_memory_verdicts']['s']:.2f} | "
              f"{a['anomalens_in_memory_verdicts']['peak_growth_mib']:.0f} |",
              f"| PyOD AutoEncoder `decision_function` (rows already in memory; scores only: no p-values, no file) | "
              f"{a['pyod_autoencoder_decision_function']['s']:.2f} | "
              f"{a['pyod_autoencoder_decision_function']['peak_growth_mib']:.0f} |"]
    lines += ["", f"## Ray (local cluster started by the job, {r['meta']['sizes'][-1]:,} rows)", "",
              "| scoring actors | job s | rows/s | wall s | driver peak MiB | identical to local, row for row |",
              "|---:|---:|---:|---:|---:|---|"]
    local = r["score"][-1]
    lines.append(f"| (local engine) | {local['job_s']:.2f} | {local['rows_per_s']:,.0f} | {local['wall_s']:.1f} | "
                 f"{local['peak_rss_mib']:.0f} | - |")
    for x in r["ray"]:
        lines.append(f"| {x['workers']} | {x['job_s']:.2f} | {x['rows_per_s']:,.0f} | {x['wall_s']:.1f} | "
                     f"{x['driver_peak_rss_mib']:.0f} | {_same_text(x['vs_local'])} |")
    if r.get("logs"):
        lines += ["", "## Logs (`anomalens score` on a log model, windows of 100 lines)", "",
                  "Normal logs only: every flagged window is a false alarm.", "",
                  "| lines | cases | job s | lines/s | wall s | peak MiB | flagged |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for x in r["logs"]:
            lines.append(f"| {x['lines']:,} | {x['cases']:,} | {x['job_s']:.1f} | {x['lines_per_s']:,.0f} | "
                         f"{x['wall_s']:.1f} | {x['peak_rss_mib']:.0f} | {x['flagged']:,} |")
    if r.get("logs_ray"):
        local = r["logs"][-1]
        lines += ["", f"## Logs on Ray (local cluster started by the job, {local['lines']:,} lines"
                  + (f", run {r['meta']['logs_date']}" if r["meta"].get("logs_date") else "") + ")", "",
                  "Workers parse byte ranges of the file with the fitted templates; the driver numbers unseen templates "
                  "and groups lines into windows in input order; the workers score the windows.", "",
                  "| scoring actors | job s | lines/s | wall s | driver peak MiB | identical to local, case for case |",
                  "|---:|---:|---:|---:|---:|---|",
                  f"| (local engine) | {local['job_s']:.1f} | {local['lines_per_s']:,.0f} | {local['wall_s']:.1f} | "
                  f"{local['peak_rss_mib']:.0f} | - |"]
        for x in r["logs_ray"]:
            lines.append(f"| {x['workers']} | {x['job_s']:.1f} | {x['lines_per_s']:,.0f} | {x['wall_s']:.1f} | "
                         f"{x['driver_peak_rss_mib']:.0f} | {_same_text(x['vs_local'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
