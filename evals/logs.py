"""Log benchmark: template parsing, session and window detection against classic baselines, explanation
quality on injected events, and end-to-end triage time and memory.

Parsing: the 10 systems of ``../shared/data/loghub2_2k_corrected/`` (raw lines from
``../shared/data/loghub/``, read with their presets). Grouping accuracy (GA: a line is right when its
predicted group holds exactly the lines of its true group), parsing accuracy (PA: its template equals
the true one, every variable written ``<*>``) and F1 of groups (FGA, loghub-2.0). Ours: Drain3 with
our masks (``TemplateParser`` defaults, the same for every system); baselines in the same run:
Drain3's ``TemplateMiner`` at its defaults (no masking), and the ``logparser3`` package's Drain with
loghub's benchmark settings for each system (its per-system regexes, similarity threshold and depth:
tuned on these very files, so an upper reference rather than a fair rival). Speed: lines per second
of learning, and of matching known lines on a replay of the 10 files repeated to ``--replay`` lines:
our fast path (with and without its caches) against Drain3 configured with the same masks (its own
loop, ``add_log_message``, and its exact ``match``).

HDFS sessions (``../shared/data/hdfs_sessions/``, log keys): train on a seeded ``--hdfs-train`` of
the 4,000 normal sessions, test on the other normal ones and every abnormal one (8,419). Ours:
verdicts at a false discovery rate of 5% (Benjamini-Hochberg over the test sessions). Baselines in
the same run, on the same split: DeepLog's top-g rule (g = 9, history 10: a session is anomalous
when one of its keys is not among the model's 9 most likely; the same LSTM as ours, so the rule is
what differs), and loglizer's PCA (SPE against the Q-statistic at 99.95%) and IsolationForest
(``contamination=0.03`` as loglizer) on the count vectors. Precision, recall, F1 and AUROC.

BGL (``../shared/data/loghub/BGL/BGL_2k.log``, line labels): windows of 20 lines in time order; the
first 60% of windows for training (their alert-free windows only), the rest for testing; a window
is anomalous when it holds an alert line. Window-level F1 of ours and of the baselines. This sample
is tiny (100 windows, 143 alert lines bunched in a few places): read it as a smoke test.

Explanations: synthetic service logs (``anomalens.data.log_synthesis``) with foreign, dropped,
duplicated and reordered steps injected into normal sessions; hit@3 of the injected lines among a
flagged case's three most surprising lines, and the share of flagged injected cases whose verified
explanation cites an injected line.

End to end: ``anomalens triage`` work (read, parse, group, score, incidents, explanations) on
synthetic files of 100,000 lines and more, each in a fresh process: wall time and peak resident
memory, for sessions and for windows of 200 lines.

Run:  python -m evals.logs [--quick] [--replay 1000000] [--hdfs-train 2000]
Writes evals/results/logs.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from evals.common import ran_lines, write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SYSTEMS = ("Apache", "BGL", "HDFS", "HPC", "Hadoop", "Linux", "OpenSSH", "Spark", "Thunderbird", "Zookeeper")
# logpai/logparser's Drain benchmark settings (benchmark/Drain_benchmark.py): per-system preprocessing
# regexes, similarity threshold and depth
LOGPARSER_SETTINGS = {
    "HDFS": ([r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"], 0.5, 4),
    "Hadoop": ([r"(\d+\.){3}\d+"], 0.5, 4),
    "Spark": ([r"(\d+\.){3}\d+", r"\b[KGTM]?B\b", r"([\w-]+\.){2,}[\w-]+"], 0.5, 4),
    "Zookeeper": ([r"(/|)(\d+\.){3}\d+(:\d+)?"], 0.5, 4),
    "BGL": ([r"core\.\d+"], 0.5, 4),
    "HPC": ([r"=\d+"], 0.5, 4),
    "Thunderbird": ([r"(\d+\.){3}\d+"], 0.5, 4),
    "Linux": ([r"(\d+\.){3}\d+", r"\d{2}:\d{2}:\d{2}"], 0.39, 6),
    "Apache": ([r"(\d+\.){3}\d+"], 0.5, 4),
    "OpenSSH": ([r"(\d+\.){3}\d+", r"([\w-]+\.){2,}[\w-]+"], 0.6, 5),
}


# ---------------------------------------------------------------- parsing
def _norm(template: str) -> str:
    t = re.sub(r"<[^<>\s]*>", "<*>", str(template))
    t = re.sub(r"(<\*>)(\s*<\*>)+", "<*>", t)
    return " ".join(t.split())


def parsing_scores(truth: list[str], groups: list, templates: list[str] | None) -> dict:
    t_groups, p_groups = defaultdict(set), defaultdict(set)
    for i, (a, b) in enumerate(zip(truth, groups)):
        t_groups[a].add(i)
        p_groups[b].add(i)
    correct_lines, correct_groups = 0, 0
    for g in p_groups.values():
        if t_groups[truth[next(iter(g))]] == g:
            correct_lines += len(g)
            correct_groups += 1
    prec, rec = correct_groups / len(p_groups), correct_groups / len(t_groups)
    out = {"GA": correct_lines / len(truth), "FGA": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
           "templates": len(p_groups), "true_templates": len(t_groups)}
    if templates is not None:
        out["PA"] = float(np.mean([_norm(a) == _norm(b) for a, b in zip(truth, templates)]))
    return out


def _logparser_drain(system: str, tmp: Path) -> tuple[list, list[str], float]:
    from logparser.Drain import LogParser

    from anomalens.modalities.logs.reader import FORMATS

    rex, st, depth = LOGPARSER_SETTINGS[system]
    src = DATA / "loghub" / system / f"{system}_2k.log"
    (tmp / src.name).write_bytes(src.read_bytes().replace(b"\r\n", b"\n"))
    parser = LogParser(FORMATS[system.lower()], indir=str(tmp), outdir=str(tmp / "out"), depth=depth, st=st, rex=rex)
    import contextlib
    import io

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        parser.parse(src.name)
    dt = time.perf_counter() - t0
    df = pd.read_csv(tmp / "out" / f"{src.name}_structured.csv")
    return list(df.EventId), list(df.EventTemplate), dt


def parsing(replay: int) -> dict:
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    from anomalens.modalities.logs.parser import TemplateParser
    from anomalens.modalities.logs.reader import read_logs

    rows, contents_all, parsers = [], [], {}
    for system in SYSTEMS:
        truth_df = pd.read_csv(DATA / "loghub2_2k_corrected" / system / f"{system}_2k.log_structured_corrected.csv")
        truth = list(truth_df.EventTemplate)
        contents = [ln.content for ln in read_logs(DATA / "loghub" / system / f"{system}_2k.log", system.lower())]
        assert len(contents) == len(truth), (system, len(contents), len(truth))
        row = {"system": system, "lines": len(truth)}
        p = TemplateParser()
        t0 = time.perf_counter()
        ids = p.fit(contents)
        row["ours"] = {**parsing_scores(truth, ids, [p.templates[i] for i in ids]),
                       "learn_lines_per_s": len(contents) / (time.perf_counter() - t0)}
        parsers[system] = p
        tm = TemplateMiner(config=TemplateMinerConfig())
        t0 = time.perf_counter()
        res = [tm.add_log_message(c) for c in contents]
        dt = time.perf_counter() - t0
        final = {c.cluster_id: c.get_template() for c in tm.drain.clusters}
        row["drain3"] = {**parsing_scores(truth, [r["cluster_id"] for r in res], [final[r["cluster_id"]] for r in res]),
                         "learn_lines_per_s": len(contents) / dt}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                g, t, dt = _logparser_drain(system, Path(tmp))
            row["logparser3_drain"] = {**parsing_scores(truth, g, t), "learn_lines_per_s": len(contents) / dt}
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            row["logparser3_drain"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        contents_all.append((system, contents))
        print(system, {k: round(v.get("GA", float("nan")), 3) for k, v in row.items() if isinstance(v, dict)}, flush=True)
        rows.append(row)
    speed = match_speed(contents_all, parsers, replay)
    return {"systems": rows, "speed": speed}


def _drain3_with_masks():
    """Drain3's TemplateMiner configured as a user would, with our masks as its masking instructions."""
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    from anomalens.modalities.logs.parser import DEFAULT_MASKS

    cfg = TemplateMinerConfig()
    cfg.masking_instructions = [MaskingInstruction(p, n) for p, n in DEFAULT_MASKS]
    return TemplateMiner(config=cfg)


def match_speed(contents_all, parsers, replay: int) -> dict:
    """Lines per second on a replay of the 10 files' messages repeated to ``replay`` lines: our fast
    path over known templates (with and without its exact-text cache), and Drain3 configured with the
    same masks, both its own loop (``add_log_message``, what parsing a file with Drain3 costs) and
    its exact ``match``."""
    from anomalens.modalities.logs import parser as parser_mod

    per = max(1, replay // len(contents_all))
    out = {"replay_lines": per * len(contents_all)}
    names = ("fast path", "fast path, no caches (masking + template index)", "drain3 add_log_message (same masks)",
             "drain3 match (same masks)")
    timings, matched = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    for system, contents in contents_all:
        p = parsers[system]
        stream = (contents * (per // len(contents) + 1))[:per]
        sub = stream[: max(1, per // 10)]  # the slower paths run on a tenth, scaled
        scale = len(stream) / len(sub)
        p._cache.clear()
        p._shapes.clear()
        t0 = time.perf_counter()
        matched["fast path"] += sum(p.match(c) is not None for c in stream)
        timings["fast path"] += time.perf_counter() - t0
        size, parser_mod.CACHE_SIZE = parser_mod.CACHE_SIZE, 0  # every line goes through masking and the index
        try:
            p._cache.clear()
            p._shapes.clear()
            t0 = time.perf_counter()
            matched["fast path, no caches (masking + template index)"] += sum(p.match(c) is not None for c in sub) * scale
            timings["fast path, no caches (masking + template index)"] += (time.perf_counter() - t0) * scale
        finally:
            parser_mod.CACHE_SIZE = size
        tm = _drain3_with_masks()
        t0 = time.perf_counter()
        for c in sub:
            tm.add_log_message(c)
        timings["drain3 add_log_message (same masks)"] += (time.perf_counter() - t0) * scale
        matched["drain3 add_log_message (same masks)"] += len(stream)
        t0 = time.perf_counter()
        matched["drain3 match (same masks)"] += sum(tm.match(c, "fallback") is not None for c in sub) * scale
        timings["drain3 match (same masks)"] += (time.perf_counter() - t0) * scale
    for k in names:
        out[k] = {"lines_per_s": out["replay_lines"] / timings[k], "matched_share": matched[k] / out["replay_lines"]}
    print("speed", {k: round(v["lines_per_s"]) for k, v in out.items() if isinstance(v, dict)}, flush=True)
    return out


# ---------------------------------------------------------------- detection
def prf(pred: np.ndarray, y: np.ndarray) -> dict:
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "F1": 2 * p * r / (p + r) if p + r else 0.0, "flagged": int(pred.sum())}


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def baselines(train: list[list[str]], test: list[list[str]], y: np.ndarray, seed: int,
              preds: dict | None = None) -> dict:
    """DeepLog's top-g rule, loglizer's PCA and IsolationForest, fitted on ``train`` (normal); each one's
    per-session verdicts go to ``preds`` when given."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    from anomalens.detectors.sequence import NextEventModel

    vocab = {e: i + 1 for i, e in enumerate(sorted({e for s in train for e in s}))}
    unk = len(vocab) + 2
    enc = lambda seqs: [np.array([vocab.get(e, unk) for e in s], dtype=np.int64) for s in seqs]  # noqa: E731
    out = {}
    t0 = time.perf_counter()
    model = NextEventModel(random_state=seed).fit(enc(train), n_events=len(vocab))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    miss = []
    for s, lp in zip(enc(test), model.log_probs(enc(test))):
        nxt = np.concatenate([s, [model.end]])[:-1]  # DeepLog checks the keys, not the end
        lp = lp[: len(nxt)]
        rank = (lp > lp[np.arange(len(nxt)), nxt][:, None]).sum(axis=1)  # keys the model found more likely
        miss.append(int((rank >= 9).sum()))
    miss = np.array(miss)
    out["DeepLog top-g (g=9)"] = {**prf(miss > 0, y), "AUROC": _auroc(y, miss), "fit_s": fit_s,
                                   "score_s": time.perf_counter() - t0}
    if preds is not None:
        preds["DeepLog top-g (g=9)"] = miss > 0
    names = sorted(vocab)

    def counts(seqs):
        X = np.zeros((len(seqs), len(names)))
        idx = {n: j for j, n in enumerate(names)}
        for i, s in enumerate(seqs):
            for e in s:
                if e in idx:
                    X[i, idx[e]] += 1
        return X

    Xtr, Xte = counts(train), counts(test)
    # loglizer PCA: TF-IDF-free zero-mean counts, components for 95% of the variance, SPE vs the Q-statistic
    mu = Xtr.mean(axis=0)
    pca = PCA(n_components=0.95, random_state=seed).fit(Xtr - mu)
    k = pca.n_components_
    lam = np.linalg.eigvalsh(np.cov((Xtr - mu).T))[::-1]
    phi = [float(np.sum(lam[k:] ** i)) for i in (1, 2, 3)]
    h0 = 1.0 - 2 * phi[0] * phi[2] / (3 * phi[1] ** 2) if phi[1] > 0 else 1.0
    c_alpha = 3.2905  # 99.95%, loglizer's default
    q = phi[0] * (c_alpha * np.sqrt(2 * phi[1] * h0 ** 2) / phi[0] + 1 + phi[1] * h0 * (h0 - 1) / phi[0] ** 2) ** (1 / h0) \
        if phi[0] > 0 else 0.0
    recon = pca.inverse_transform(pca.transform(Xte - mu)) + mu
    spe = ((Xte - recon) ** 2).sum(axis=1)
    out["PCA (loglizer)"] = {**prf(spe > q, y), "AUROC": _auroc(y, spe)}
    if preds is not None:
        preds["PCA (loglizer)"] = spe > q
    iso = IsolationForest(n_estimators=100, contamination=0.03, random_state=seed).fit(Xtr)
    s_iso = -iso.decision_function(Xte)
    out["IsolationForest (loglizer)"] = {**prf(iso.predict(Xte) == -1, y), "AUROC": _auroc(y, s_iso)}
    if preds is not None:
        preds["IsolationForest (loglizer)"] = iso.predict(Xte) == -1
    return out


def ours(train, test, y, seed: int, **modality_kw) -> dict:
    from anomalens import Investigator
    from anomalens.modalities import LogModality

    t0 = time.perf_counter()
    inv = Investigator.fit(train, modality=LogModality(**modality_kw), random_state=seed)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = list(inv.verdicts(test, alpha=0.05).values())
    pred = np.array([x.anomalous for x in v])
    return {**prf(pred, y), "AUROC": _auroc(y, np.array([x.score for x in v])), "fit_s": fit_s,
            "score_s": time.perf_counter() - t0}


def hdfs(n_train: int, seeds: int) -> list[dict]:
    normal = [ln.split() for ln in (DATA / "hdfs_sessions" / "normal").read_text().splitlines()]
    abnormal = [ln.split() for ln in (DATA / "hdfs_sessions" / "abnormal").read_text().splitlines()]
    rows = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(normal))
        train = [normal[i] for i in order[:n_train]]
        test = [normal[i] for i in order[n_train:]] + abnormal
        y = np.r_[np.zeros(len(normal) - n_train), np.ones(len(abnormal))].astype(bool)
        train_s = [[f"E{e}" for e in s] for s in train]
        test_s = [[f"E{e}" for e in s] for s in test]
        row = {"seed": seed, "train": n_train, "test_normal": len(normal) - n_train, "test_abnormal": len(abnormal),
               "ours": ours(train, test, y, seed), **baselines(train_s, test_s, y, seed)}
        print("hdfs", seed, {k: round(v["F1"], 4) for k, v in row.items() if isinstance(v, dict)}, flush=True)
        rows.append(row)
    return rows


def hdfs_ratios(n_train: int, ratios: tuple[float, ...] = (0.01, 0.05), draws: int = 20, seed: int = 0) -> dict:
    """HDFS at realistic anomaly ratios: the published test batch is about 80% abnormal (8,419 of 10,419
    sessions), where FDR control finds them easily. Here each test batch is every held-out normal
    session plus a random draw of abnormal ones making ``ratio`` of the batch; ours: BH at 5% over the
    batch's p-values (computed once per session); the baselines' fixed thresholds on the same
    sessions. Mean precision, recall and F1 over ``draws`` draws."""
    from anomalens import Investigator
    from anomalens.detectors import benjamini_hochberg
    from anomalens.modalities import LogModality

    normal = [ln.split() for ln in (DATA / "hdfs_sessions" / "normal").read_text().splitlines()]
    abnormal = [ln.split() for ln in (DATA / "hdfs_sessions" / "abnormal").read_text().splitlines()]
    order = np.random.default_rng(seed).permutation(len(normal))
    train = [normal[i] for i in order[:n_train]]
    test = [normal[i] for i in order[n_train:]] + abnormal
    n_norm = len(normal) - n_train
    y = np.r_[np.zeros(n_norm), np.ones(len(abnormal))].astype(bool)
    inv = Investigator.fit(train, modality=LogModality(), random_state=seed)
    p = np.array([v.p_value for v in inv.verdicts(test, alpha=0.05).values()])
    preds: dict = {}
    baselines([[f"E{e}" for e in s] for s in train], [[f"E{e}" for e in s] for s in test], y, seed, preds)
    rng = np.random.default_rng(seed + 1)
    out: dict = {"train": n_train, "test_normal": n_norm, "abnormal_available": len(abnormal), "draws": draws,
                 "p_abnormal": {q: float(np.quantile(p[y], q)) for q in (0.1, 0.5, 0.9)}, "ratios": {}}
    for ratio in (*ratios, None):
        k = len(abnormal) if ratio is None else int(round(ratio / (1 - ratio) * n_norm))
        rows: dict = {}
        for _ in range(1 if ratio is None else draws):
            pick = np.r_[np.arange(n_norm), n_norm + rng.choice(len(abnormal), size=k, replace=False)]
            yb = y[pick]
            got = {"ours (BH 5%)": benjamini_hochberg(p[pick], 0.05).astype(bool),
                   **{name: pr[pick] for name, pr in preds.items()}}
            for name, pred in got.items():
                rows.setdefault(name, []).append(prf(pred, yb))
        key = "published (all abnormal)" if ratio is None else f"{100 * ratio:g}%"
        out["ratios"][key] = {"abnormal": k, "batch": n_norm + k, **{
            name: {m: float(np.mean([r[m] for r in rs])) for m in ("precision", "recall", "F1")}
            for name, rs in rows.items()}}
        print("hdfs ratio", key, {n: round(v["F1"], 3) for n, v in out["ratios"][key].items() if isinstance(v, dict)},
              flush=True)
    return out


def bgl_windows(window: int = 20, train_share: float = 0.6) -> tuple[list, list, np.ndarray]:
    """BGL's 2k sample as windows of ``window`` lines in time order: (the alert-free windows of the first
    ``train_share`` as event lists, the later windows' event lists, their labels: any alert line)."""
    train, test, y, _ = _bgl(window, train_share)
    return [c.events for c in train], [c.events for c in test], y


def bgl(window: int = 20, train_share: float = 0.6) -> dict:
    train, test, y, row = _bgl(window, train_share)
    try:
        row["ours"] = ours([c.events for c in train], [c.events for c in test], y, 0)
    except Exception as exc:  # noqa: BLE001 - a sample too small to fit is a result to report
        row["ours"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    row.update(baselines([c.events for c in train], [c.events for c in test], y, 0))
    print("bgl", {k: round(v.get("F1", float("nan")), 3) for k, v in row.items() if isinstance(v, dict)}, flush=True)
    return row


def _bgl(window: int, train_share: float) -> tuple[list, list, np.ndarray, dict]:
    from anomalens.modalities.logs.cases import LogCase
    from anomalens.modalities.logs.parser import TemplateParser
    from anomalens.modalities.logs.reader import read_logs

    lines = list(read_logs(DATA / "loghub" / "BGL" / "BGL_2k.log", "bgl"))
    labels = np.array([ln.raw.split(" ", 1)[0] != "-" for ln in lines])
    n_win = len(lines) // window
    cut = int(n_win * train_share)
    parser = TemplateParser()  # templates learnt on the training part's normal lines only
    for ln, lab in zip(lines[: cut * window], labels[: cut * window]):
        if not lab:
            parser.learn(ln.content)
    parser.finish()
    wins, ys = [], []
    for w in range(n_win):
        c = LogCase(f"window-{w + 1}")
        for ln in lines[w * window : (w + 1) * window]:
            c.add(parser.parse(ln.content).template_id, ln.source, ln.lineno, ln.time, ln.raw)
        wins.append(c)
        ys.append(bool(labels[w * window : (w + 1) * window].any()))
    ys = np.array(ys)
    train = [wins[i] for i in range(cut) if not ys[i]]
    test, y = wins[cut:], ys[cut:]
    row = {"windows": n_win, "window_lines": window, "train_windows": len(train), "test_windows": len(test),
           "test_anomalous": int(y.sum()), "alert_lines": int(labels.sum())}
    return train, test, y, row


# ---------------------------------------------------------------- explanations
def explanations(seeds: int, n_normal: int = 1500) -> dict:
    from anomalens import Investigator
    from anomalens.data.log_synthesis import (
        ANOMALY_KINDS,
        SESSION_PATTERN,
        inject_logs,
        normal_logs,
    )
    from anomalens.modalities import LogModality

    per_kind = {k: {"cases": 0, "flagged": 0, "hit3": 0, "named": 0} for k in ANOMALY_KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            normal = Path(tmp) / f"normal-{seed}.log"
            normal.write_text(normal_logs(n_normal, seed=100 + seed).text())
            inv = Investigator.fit(str(normal), modality=LogModality(session=SESSION_PATTERN), random_state=seed)
            sample = inject_logs(600, 60, seed=200 + seed)
            today = Path(tmp) / f"today-{seed}.log"
            today.write_text(sample.text())
            reports = {r.evidence.case_id: r for r in inv.analyze_batch(str(today), only_anomalous=True, top=5)}
            for sid, kind in sample.anomalies.items():
                d = per_kind[kind]
                d["cases"] += 1
                r = reports.get(sid)
                if r is None:
                    continue
                d["flagged"] += 1
                injected = set(sample.evidence_lines[sid])
                top3 = {ln.lineno for ln in r.evidence.lines[:3]}
                d["hit3"] += bool(top3 & injected)
                cited = {c for cl in r.explanation.claims for c in cl.cites}
                d["named"] += bool({ln.id for ln in r.evidence.lines if ln.lineno in injected} & cited)
    tot = {k: sum(d[k] for d in per_kind.values()) for k in ("cases", "flagged", "hit3", "named")}
    return {"per_kind": per_kind, "total": tot, "recall": tot["flagged"] / tot["cases"],
            "hit@3": tot["hit3"] / max(1, tot["flagged"]), "named_share": tot["named"] / max(1, tot["flagged"])}


# ---------------------------------------------------------------- normal logs only
def null(seeds: int) -> dict:
    """Fit on normal logs, then score fresh normal logs of the same generator (other seeds): every flag
    is false. Per grouping: the share of runs with any flag (BH's FDR is this family-wise rate when
    every case is normal, so it should be <= 5%), the share of cases flagged, and how uniform the
    case p-values are at small levels (share <= 0.01 and <= 0.001 should not exceed those levels)."""
    from anomalens import Investigator
    from anomalens.data.log_synthesis import SESSION_PATTERN, normal_logs
    from anomalens.modalities import LogModality

    # (modality, normal sessions to train on, normal sessions to score): ~180 windows to train on
    groupings = {"sessions": (lambda: LogModality(session=SESSION_PATTERN), 1500, 3000),
                 "windows of 100 lines": (lambda: LogModality(window=100), 3000, 6000)}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, n_train, n_test) in groupings.items():
            runs, cases, flagged, p = 0, 0, [], []
            for seed in range(seeds):
                train, test = Path(tmp) / f"train-{seed}.log", Path(tmp) / f"test-{seed}.log"
                train.write_text(normal_logs(n_train, seed=500 + seed).text())
                test.write_text(normal_logs(n_test, seed=600 + seed).text())
                inv = Investigator.fit(str(train), modality=make(), random_state=seed)
                v = inv.verdicts(str(test))
                runs += 1
                cases += len(v)
                flagged.append(sum(x.anomalous for x in v.values()))
                p += [x.p_value for x in v.values()]
            p = np.asarray(p)
            out[name] = {"runs": runs, "cases": cases, "runs_with_a_flag": int(sum(f > 0 for f in flagged)),
                         "flagged": int(sum(flagged)), "flagged_share": sum(flagged) / max(1, cases),
                         "p_le_0.01": float(np.mean(p <= 0.01)), "p_le_0.001": float(np.mean(p <= 0.001))}
            print(name, out[name], flush=True)
    return out


# ---------------------------------------------------------------- end to end
E2E_SCRIPT = """
import json, resource, sys, time
from anomalens import Investigator
inv = Investigator.load(sys.argv[1])
t0 = time.perf_counter()
res = inv.triage(sys.argv[2], limit=10)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "lines": res.read.lines, "cases": res.n_cases, "incidents": res.n_incidents,
                  "explained": len(res.reports)}))
"""


def end_to_end(sizes: list[int]) -> list[dict]:
    from anomalens import Investigator
    from anomalens.data.log_synthesis import SESSION_PATTERN, inject_logs, normal_logs
    from anomalens.modalities import LogModality

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "normal.log").write_text(normal_logs(2000, seed=11).text())
        models = {"sessions": LogModality(session=SESSION_PATTERN), "windows of 200 lines": LogModality(window=200)}
        for name, mod in models.items():
            Investigator.fit(str(tmp / "normal.log"), modality=mod).save(tmp / name)
        for n_lines in sizes:
            path = tmp / f"today-{n_lines}.log"
            with open(path, "w") as fh:  # written in parts of ~50,000 lines (different seeds, later start times)
                written, part = 0, 0
                while written < n_lines:
                    s = inject_logs(8000, 40, seed=300 + part, start=1_714_600_000.0 + 40_000 * part)
                    take = s.lines[: n_lines - written]
                    fh.write("\n".join(take) + "\n")
                    written += len(take)
                    part += 1
            for name in models:
                r = subprocess.run([sys.executable, "-c", E2E_SCRIPT, str(tmp / name), str(path)], capture_output=True,
                                   text=True, timeout=3600)
                if r.returncode != 0:
                    rows.append({"grouping": name, "lines": n_lines, "error": r.stderr.strip().splitlines()[-1][:300]})
                    continue
                res = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append({"grouping": name, **res, "lines_per_s": res["lines"] / res["wall_s"]})
                print("e2e", rows[-1], flush=True)
            path.unlink()
    return rows


# ---------------------------------------------------------------- report
def _f(x, nd=3):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


PARTS = ("parsing", "hdfs", "hdfs_ratios", "bgl", "explanations", "null", "end_to_end")


def markdown(res: dict) -> str:
    out = ["# Log benchmark", "", f"On {res['machine']}; see docs/logs.md. Each part as its last run left it:", ""]
    out += ran_lines(res, PARTS, "evals.logs")
    if "parsing" in res:
        p = res["parsing"]
        methods = ("ours", "drain3", "logparser3_drain")
        out += ["## Template parsing (loghub-2.0 corrected 2k samples)", "",
                "| system | " + " | ".join(f"{m} GA | {m} PA | {m} FGA" for m in methods) + " |",
                "|---|" + "---:|" * (3 * len(methods))]
        for row in p["systems"]:
            cells = []
            for m in methods:
                v = row.get(m, {})
                cells += [_f(v.get("GA")), _f(v.get("PA")), _f(v.get("FGA"))]
            out.append(f"| {row['system']} | " + " | ".join(cells) + " |")
        means = []
        for m in methods:
            for k in ("GA", "PA", "FGA"):
                vals = [r[m][k] for r in p["systems"] if k in r.get(m, {})]
                means.append(_f(float(np.mean(vals))) if len(vals) == len(p["systems"]) else "-")
        out.append("| **mean** | " + " | ".join(means) + " |")
        learn = {m: np.mean([r[m]["learn_lines_per_s"] for r in p["systems"] if "learn_lines_per_s" in r.get(m, {})])
                 for m in methods}
        out += ["", "Learning speed (lines/s, mean over systems): "
                + ", ".join(f"{m} {v:,.0f}" for m, v in learn.items() if not np.isnan(v)) + ".", "",
                f"Matching known lines, a replay of {p['speed']['replay_lines']:,} lines:", "",
                "| matcher | lines/s | matched |", "|---|---:|---:|"]
        out += [f"| {k} | {v['lines_per_s']:,.0f} | {100 * v['matched_share']:.1f}% |"
                for k, v in p["speed"].items() if isinstance(v, dict)]
    if "hdfs" in res:
        out += ["", "## HDFS sessions", ""]
        names = [k for k, v in res["hdfs"][0].items() if isinstance(v, dict)]
        out += ["| method | precision | recall | F1 | AUROC |", "|---|---:|---:|---:|---:|"]
        for n in names:
            vals = [r[n] for r in res["hdfs"]]
            out.append(f"| {n} | " + " | ".join(_f(float(np.mean([v[k] for v in vals])), 4)
                                                for k in ("precision", "recall", "F1", "AUROC")) + " |")
        r0 = res["hdfs"][0]
        out += ["", f"Train {r0['train']} normal sessions, test {r0['test_normal']} normal + {r0['test_abnormal']} "
                f"abnormal; mean over {len(res['hdfs'])} seed(s). Ours: FDR 5% over the test sessions."]
    if "hdfs_ratios" in res:
        h = res["hdfs_ratios"]
        out += ["", "## HDFS at realistic anomaly ratios", "",
                f"Every held-out normal session ({h['test_normal']}) plus a random draw of abnormal ones making 1% or "
                f"5% of the batch (mean of {h['draws']} draws), beside the published batch (all {h['abnormal_available']} "
                "abnormal, about 80%). Ours: BH at 5% over the batch; the baselines' fixed thresholds. The abnormal "
                "sessions' p-values (10th / 50th / 90th percentile): "
                + " / ".join(_f(v, 3) for v in h["p_abnormal"].values()) + ".", "",
                "| batch | abnormal | method | precision | recall | F1 |", "|---|---:|---|---:|---:|---:|"]
        for key, r in h["ratios"].items():
            for name, v in r.items():
                if isinstance(v, dict):
                    out.append(f"| {key} | {r['abnormal']} | {name} | " + " | ".join(_f(v[m], 3) for m in
                                                                                   ("precision", "recall", "F1")) + " |")
    if "bgl" in res:
        b = res["bgl"]
        out += ["", "## BGL windows (tiny sample)", "",
                f"{b['windows']} windows of {b['window_lines']} lines; train on {b['train_windows']} alert-free windows of "
                f"the first 60%, test on {b['test_windows']} ({b['test_anomalous']} anomalous).", "",
                "| method | precision | recall | F1 | AUROC |", "|---|---:|---:|---:|---:|"]
        for n, v in b.items():
            if isinstance(v, dict):
                out.append(f"| {n} | " + (" | ".join(_f(v.get(k)) for k in ("precision", "recall", "F1", "AUROC"))
                                          if "error" not in v else f"error: {v['error']} | | | ") + " |")
    if "explanations" in res:
        e = res["explanations"]
        out += ["", "## Explanations on injected events", "",
                "| kind | cases | flagged | hit@3 | explanation cites an injected line |", "|---|---:|---:|---:|---:|"]
        for k, d in e["per_kind"].items():
            f = max(1, d["flagged"])
            out.append(f"| {k} | {d['cases']} | {d['flagged']} | {d['hit3'] / f:.3f} | {d['named'] / f:.3f} |")
        out.append(f"| **all** | {e['total']['cases']} | {e['total']['flagged']} | {e['hit@3']:.3f} | "
                   f"{e['named_share']:.3f} |")
    if "null" in res:
        out += ["", "## Normal logs only (every flag is false)", "",
                "Fit on normal synthetic logs, score fresh normal logs of other seeds; BH at 5%.", "",
                "| grouping | runs | cases | runs with a flag | cases flagged | share p <= 0.01 | share p <= 0.001 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for n, d in res["null"].items():
            out.append(f"| {n} | {d['runs']} | {d['cases']:,} | {d['runs_with_a_flag']} | {d['flagged']} "
                       f"({d['flagged_share']:.2%}) | {d['p_le_0.01']:.4f} | {d['p_le_0.001']:.4f} |")
    if "end_to_end" in res:
        out += ["", "## End to end (`triage`: read, parse, group, score, incidents, 10 explanations)", "",
                "| grouping | lines | cases | incidents | wall s | lines/s | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in res["end_to_end"]:
            if "error" in r:
                out.append(f"| {r['grouping']} | {r['lines']:,} | error: {r['error']} | | | | |")
                continue
            out.append(f"| {r['grouping']} | {r['lines']:,} | {r['cases']:,} | {r['incidents']} | {r['wall_s']:.1f} | "
                       f"{r['lines_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds and sizes")
    ap.add_argument("--replay", type=int, default=1_000_000)
    ap.add_argument("--hdfs-train", type=int, default=2000)
    ap.add_argument("--only", nargs="*", default=None,
                    help="parsing hdfs hdfs_ratios bgl explanations null end_to_end")
    ap.add_argument("--null-seeds", type=int, default=None, help="runs of the normal-logs-only part (default 3)")
    args = ap.parse_args()
    if not (DATA / "loghub").is_dir():
        sys.exit(f"the shared data is absent ({DATA}); the log benchmark needs ../shared/data")
    parts = args.only or list(PARTS)
    res: dict = {"args": " ".join(sys.argv[1:]), "machine": f"{platform.processor() or platform.machine()}, "
                 f"{__import__('os').cpu_count()} cores"}
    prev = Path(__file__).resolve().parent / "results" / "logs.json"
    if args.only and prev.exists():  # a partial run keeps the other parts' last results
        res = {**json.loads(prev.read_text()), **{k: res[k] for k in ("args", "machine")}}
    stamp = {"args": res["args"], "date": time.strftime("%Y-%m-%d")}
    res["ran"] = {**res.get("ran", {}), **{p: stamp for p in parts if p in PARTS}}
    if "parsing" in parts:
        res["parsing"] = parsing(args.replay if not args.quick else 100_000)
    if "hdfs" in parts:
        res["hdfs"] = hdfs(args.hdfs_train, 1 if args.quick else 3)
    if "hdfs_ratios" in parts:
        res["hdfs_ratios"] = hdfs_ratios(args.hdfs_train)
    if "bgl" in parts:
        res["bgl"] = bgl()
    if "explanations" in parts:
        res["explanations"] = explanations(1 if args.quick else 3)
    if "null" in parts:
        res["null"] = null(args.null_seeds or (1 if args.quick else 3))
    if "end_to_end" in parts:
        res["end_to_end"] = end_to_end([100_000] if args.quick else [100_000, 200_000, 400_000])
    write_results("logs", res, markdown(res))


if __name__ == "__main__":
    main()
