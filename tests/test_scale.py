"""Scale: streamed scoring equals the in-memory batch, the BH cut-off is exact without the rows,
interrupted runs leave nothing that looks complete, Ray gives the same rows, and fit samples big inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from anomalens import Investigator
from anomalens.detectors import benjamini_hochberg
from anomalens.errors import InputError
from anomalens.scale import BHStream, sample_table, score_file
from tests.conftest import FAST, correlated

COLS = ["a", "b", "c", "d", "e", "f"]
CLI = [sys.executable, "-m", "anomalens.cli"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A saved autoencoder investigator (the path the Ray workers load from) and the loaded one."""
    d = tmp_path_factory.mktemp("scale")
    inv = Investigator.fit(pd.DataFrame(correlated(1500, seed=0), columns=COLS), detector="autoencoder",
                           random_state=0, **FAST)
    inv.save(d / "model")
    return d / "model", Investigator.load(d / "model")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """20,000 rows with 40 injected anomalies (two features moved 6 sd against their factor), as
    Parquet (several row groups) and CSV, with a label and an id column."""
    d = tmp_path_factory.mktemp("tables")
    X = correlated(20_000, seed=3)
    rng = np.random.default_rng(4)
    bad = np.sort(rng.choice(len(X), 40, replace=False))
    sd = X.std(axis=0)
    X[bad, 1] += 6 * sd[1]
    X[bad, 3] -= 6 * sd[3]
    df = pd.DataFrame(X, columns=COLS)
    df["label"] = 0
    df.loc[bad, "label"] = 1
    df["key"] = [f"r{i:05d}" for i in range(len(df))]
    df.to_parquet(d / "rows.parquet", row_group_size=7000)
    df.to_csv(d / "rows.csv", index=False)
    return d, df


def test_streamed_scores_equal_the_in_memory_batch_and_find_the_anomalies(model, table, tmp_path):
    _, inv = model
    d, df = table
    # chunks that are a multiple of the detector's forward batch (8192) see the same batches as the
    # whole input: the same floats; other sizes differ by float32 rounding only, never in a verdict
    summary = score_file(inv, d / "rows.parquet", tmp_path / "s.parquet", chunk_rows=8192, keep=["label"])
    odd = score_file(inv, d / "rows.parquet", tmp_path / "odd.parquet", chunk_rows=3001)
    out, out_odd = pd.read_parquet(tmp_path / "s.parquet"), pd.read_parquet(tmp_path / "odd.parquet")
    ref = inv.score(df[COLS])
    verdicts = inv.verdicts(df[COLS])
    assert list(out["id"]) == [str(i) for i in range(len(df))]
    np.testing.assert_array_equal(out["score"].to_numpy(), ref.scores)
    np.testing.assert_array_equal(out["p_value"].to_numpy(), ref.p_values)
    assert list(out["anomalous"]) == [verdicts[str(i)].anomalous for i in range(len(df))]
    np.testing.assert_allclose(out_odd["score"], ref.scores, rtol=1e-5)
    assert (out_odd["anomalous"] == out["anomalous"]).all() and odd["flagged"] == summary["flagged"]
    assert summary["rows"] == len(df) and summary["flagged"] == int(out["anomalous"].sum())
    assert summary["cutoff"] == pytest.approx(next(iter(verdicts.values())).cutoff, rel=0, abs=0)
    flagged, truth = out["anomalous"].to_numpy(), out["label"].to_numpy() == 1
    assert flagged[truth].mean() >= 0.9  # the injected anomalies are found ...
    assert (flagged & ~truth).sum() <= 0.1 * flagged.sum() + 2  # ... and the false discoveries stay near alpha
    meta = json.loads(__import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(tmp_path / "s.parquet")
                      .schema_arrow.metadata[b"anomalens"])
    assert meta["complete"] is True and meta["rows"] == len(df) and meta["flagged"] == summary["flagged"]
    # CSV in, CSV out, with ids from a column: the same verdicts
    score_file(inv, d / "rows.csv", tmp_path / "s.csv", chunk_rows=5000, id_column="key")
    csv_out = pd.read_csv(tmp_path / "s.csv")
    assert list(csv_out["id"]) == list(df["key"])
    np.testing.assert_allclose(csv_out["score"], out["score"], rtol=1e-12)
    assert (csv_out["anomalous"].to_numpy() == flagged).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_bh_stream_gives_the_exact_cutoff_without_the_rows(alpha):
    rng = np.random.default_rng(0)
    # conformal-like p-values: many ties on a grid, a few tiny ones (anomalies), in uneven chunks
    p = np.concatenate([np.round(rng.uniform(size=30_000) * 500 + 1) / 501, rng.uniform(0, 1e-4, size=60)])
    rng.shuffle(p)
    bh = BHStream(alpha)
    for part in np.array_split(p, [5, 7000, 7001, 19_000]):
        bh.add(part)
    k, cutoff, p_thr = bh.result()
    flags = benjamini_hochberg(p, alpha).astype(bool)
    assert k == flags.sum() and ((p <= p_thr) == flags).all()
    assert bh.held == (p <= alpha).sum() < 0.25 * p.size  # only the p-values that could be rejected are held
    assert cutoff == pytest.approx(alpha * max(k, 1) / p.size)


def test_explain_top_explains_only_flagged_rows_with_the_whole_inputs_cutoff(model, table, tmp_path):
    _, inv = model
    d, df = table
    summary = score_file(inv, d / "rows.parquet", tmp_path / "s.parquet", explain_top=3, chunk_rows=4096)
    out = pd.read_parquet(tmp_path / "s.parquet")
    reports = summary["reports"]
    top_flagged = out[out["anomalous"]].sort_values("score", ascending=False, kind="stable")["id"].head(3)
    assert [r.evidence.case_id for r in reports] == list(top_flagged)
    for r in reports:
        assert r.verdict.anomalous and r.verdict.cutoff == pytest.approx(summary["cutoff"])
        assert r.explanation.grounded and r.explanation.claims and all(c.verified for c in r.explanation.claims)
        assert {a.unit for a in r.evidence.attributions[:2]} & {"b", "d"}  # the moved features lead


def test_a_bad_value_mid_stream_names_its_row_and_leaves_no_output(model, table, tmp_path):
    _, inv = model
    _, df = table
    bad = df.copy()
    bad.loc[12_344, "c"] = np.nan
    bad.to_parquet(tmp_path / "bad.parquet", row_group_size=5000)
    with pytest.raises(InputError, match=r"row 12,345 .*column 'c'.*finite"):
        score_file(inv, tmp_path / "bad.parquet", tmp_path / "s.parquet", chunk_rows=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]  # nothing written, no temporary left
    with pytest.raises(InputError, match=r"lacks 1 column.*'nope'"):
        score_file(inv, tmp_path / "bad.parquet", tmp_path / "s.parquet", keep=["nope"])
    with pytest.raises(InputError, match=r"--out must end in .parquet or .csv, got 's.json'"):
        score_file(inv, tmp_path / "bad.parquet", tmp_path / "s.json")


def test_a_run_killed_midway_leaves_no_file_at_the_output_path(model, table, tmp_path):
    model_dir, _ = model
    d, _ = table
    out = tmp_path / "s.parquet"
    proc = subprocess.Popen(CLI + ["score", str(model_dir), str(d / "rows.csv"), "--out", str(out), "--chunk-rows", "20",
                                   "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".pass1.parquet") for p in tmp_path.iterdir()):  # the pass has started writing
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only the dot-named temporary, which claims nothing
    assert all(p.name.startswith(".s.parquet.") for p in tmp_path.iterdir())


def test_the_cli_scores_a_table_and_explains_the_top_rows(model, table, tmp_path):
    model_dir, _ = model
    d, df = table
    res = subprocess.run(CLI + ["score", str(model_dir), str(d / "rows.parquet"), "-o", str(tmp_path / "s.csv"),
                                "--keep", "label", "--explain-top", "2", "--llm", "template", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    out = pd.read_csv(tmp_path / "s.csv")
    assert summary["rows"] == len(out) == len(df) and summary["flagged"] == out["anomalous"].sum() > 30
    assert list(out.columns) == ["id", "score", "p_value", "p_approximate", "label", "anomalous"]
    assert len(summary["reports"]) == 2 and all(r["evidence"]["verdict"]["anomalous"] for r in summary["reports"])
    res = subprocess.run(CLI + ["score", str(model_dir), str(d / "rows.parquet"), "-o", str(tmp_path / "x.csv"),
                                "--keep", "label", "--keep", "score"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--keep columns must not be named like an output column" in res.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster of 3 CPUs (two actors plus Ray Data's own tasks), shared by the Ray tests."""
    ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install 'anomalens[ray]'`")
    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=200 << 20)
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_rows_as_the_local_engine(model, table, tmp_path, ray_cluster):
    model_dir, inv = model
    d, df = table
    local = score_file(inv, d / "rows.parquet", tmp_path / "local.parquet", chunk_rows=4000, keep=["label"])
    # rows.parquet has row groups of 7,000 rows: slices of 4,000 do not line up with them
    remote = score_file(inv, d / "rows.parquet", tmp_path / "ray.parquet", chunk_rows=4000, keep=["label"],
                        engine="ray", model_dir=model_dir, workers=1)
    keyed = score_file(inv, d / "rows.parquet", tmp_path / "ray_keyed.parquet", chunk_rows=4000, id_column="key",
                       engine="ray", model_dir=model_dir, workers=1)
    with pytest.raises(InputError, match="engine 'ray' reads Parquet"):
        score_file(inv, d / "rows.csv", tmp_path / "x.parquet", engine="ray", model_dir=model_dir)
    bad = df.copy()
    bad.loc[15_001, "e"] = np.inf
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"row 15,002 .*column 'e': expected a finite number, got inf"):
        score_file(inv, tmp_path / "bad.parquet", tmp_path / "bad_out.parquet", engine="ray", model_dir=model_dir,
                   workers=1, chunk_rows=4000)
    a, b = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    pd.testing.assert_frame_equal(a, b)  # same ids, scores, p-values and verdicts, row for row
    assert remote["flagged"] == local["flagged"] == keyed["flagged"] > 30 and remote["engine"] == "ray"
    k = pd.read_parquet(tmp_path / "ray_keyed.parquet")
    assert list(k["id"]) == list(df["key"]) and (k["anomalous"] == a["anomalous"]).all()
    assert not (tmp_path / "bad_out.parquet").exists()


def test_fit_trains_on_a_uniform_sample_of_a_big_input_and_says_so(tmp_path):
    df = pd.DataFrame(correlated(6000, seed=5), columns=COLS)
    inv = Investigator.fit(df, detector="autoencoder", max_train_rows=1000, random_state=0, **FAST)
    assert (inv.n_train, inv.rows_seen) == (1000, 6000)
    inv.save(tmp_path / "m")
    assert Investigator.load(tmp_path / "m").rows_seen == 6000
    with pytest.raises(InputError, match="max_train_rows must be an int >= 4 or None, got 0"):
        Investigator.fit(df, detector="autoencoder", max_train_rows=0)
    # the CLI samples a Parquet file larger than --max-train-rows while reading it
    df.assign(label=0).to_parquet(tmp_path / "big.parquet", row_group_size=1000)
    res = subprocess.run(CLI + ["fit", str(tmp_path / "big.parquet"), "-o", str(tmp_path / "m2"), "--label-column",
                                "label", "-d", "autoencoder", "-p", "epochs=5", "--max-train-rows", "1500", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["rows"] == 6000 and summary["trained on"] == "a uniform sample of 1,500 of 6,000 rows (--max-train-rows)"


def test_sample_table_is_uniform_and_bounded(tmp_path):
    n = 20_000
    pd.DataFrame({"i": np.arange(n), "x": np.arange(n) * 0.5}).to_parquet(tmp_path / "t.parquet", row_group_size=3000)
    sample, seen = sample_table(tmp_path / "t.parquet", 2000, seed=1, chunk_rows=777)
    assert seen == n and len(sample) == 2000 and sample["i"].is_unique and sample["i"].is_monotonic_increasing
    assert (sample["x"] == sample["i"] * 0.5).all()  # whole rows, not mixed columns
    # uniform: each tenth of the file holds about a tenth of the sample (binomial sd ~ 13)
    counts = np.bincount(sample["i"].to_numpy() * 10 // n, minlength=10)
    assert counts.min() > 140 and counts.max() < 260
    other, _ = sample_table(tmp_path / "t.parquet", 2000, seed=2, chunk_rows=777)
    assert set(other["i"]) != set(sample["i"])
    small, seen = sample_table(tmp_path / "t.parquet", 50_000, seed=1)
    assert len(small) == seen == n


@pytest.fixture(scope="module")
def log_models(tmp_path_factory, serve_models):
    """Saved log investigators (sessions: the served ``web`` model; windows of 40 lines) fitted on the
    same normal logs, and a day of logs with 20 injected anomalous sessions split over two files
    (blank lines in the first, the second gzip-compressed)."""
    import gzip

    from anomalens.data.log_synthesis import inject_logs
    from anomalens.modalities import LogModality

    d = tmp_path_factory.mktemp("logs")
    models = {"sessions": serve_models / "web", "windows": d / "windows"}
    # the default training: with a next-event model of 300 steps (13 s instead of 47 s here) this model
    # flagged no window of the day, and the engines' agreement on flags would check nothing
    Investigator.fit(str(serve_models / "normal.log"), modality=LogModality(window=40)).save(models["windows"])
    sample = inject_logs(300, 20, seed=1)
    lines = sample.text().splitlines(keepends=True)
    half = len(lines) // 2
    (d / "today.log").write_text(sample.text())
    (d / "today_1.log").write_text("".join(ln + ("\n" if i % 97 == 5 else "") for i, ln in enumerate(lines[:half])))
    (d / "today_2.log.gz").write_bytes(gzip.compress("".join(lines[half:]).encode()))
    return d, models, sample


def test_logs_are_scored_per_case_with_the_same_p_values_as_triage(log_models, tmp_path):
    d, models, sample = log_models
    inv = Investigator.load(models["sessions"])
    summary = score_file(inv, [d / "today.log"], tmp_path / "cases.parquet")
    out = pd.read_parquet(tmp_path / "cases.parquet")
    tri = inv.triage(str(d / "today.log"), limit=None)
    assert summary["rows"] == len(out) == tri.n_cases and summary["flagged"] == tri.n_flagged
    assert len(out) == 300 and out["id"].is_unique
    flagged = set(out.loc[out["anomalous"], "id"])
    assert len(flagged & set(sample.anomalies)) >= 0.8 * len(sample.anomalies)
    assert {"case_start", "case_end", "lines", "first_line"} <= set(out.columns)


def test_log_shards_cut_files_at_line_starts(tmp_path):
    import gzip

    from anomalens.scale.ray_logs import log_shards

    data = ("".join(f"line {i} " + "x" * (i % 37) + "\n" for i in range(500)) + "a last line without its end").encode()
    (tmp_path / "a.log").write_bytes(data)
    (tmp_path / "b.log.gz").write_bytes(gzip.compress(data))
    shards = log_shards([tmp_path / "a.log", tmp_path / "b.log.gz"], 100)
    a = [s for s in shards if s["name"] == "a.log"]
    assert len(a) > 50 and a[0]["start"] == 0 and a[-1]["end"] == len(data)
    assert all(x["end"] == y["start"] and x["end"] - x["start"] >= 100 for x, y in zip(a, a[1:]))
    assert all(data[s["start"] - 1 : s["start"]] == b"\n" for s in a[1:])  # every range starts a line
    assert [s for s in shards if s["name"] == "b.log.gz"] == [
        {"file": 1, "path": str(tmp_path / "b.log.gz"), "name": "b.log.gz", "start": 0, "end": None}]
    for bad, why in (("-", "standard input"), (tmp_path, "is a directory"), (tmp_path / "nope.log", "does not exist")):
        with pytest.raises(InputError, match=why):
            log_shards([bad])


def test_ray_scores_log_files_case_for_case_like_the_local_engine(log_models, tmp_path, ray_cluster):
    """Shards of about 3 kB (dozens per file, a gzip file whole) parsed by two actors: the same cases,
    line numbers, scores, p-values and verdicts as one process, and the same unseen-template ids."""
    d, models, sample = log_models
    for name, model_dir in models.items():
        # windows: the first file given again at the end is read again, its lines numbered from 1
        files = [d / "today_1.log", d / "today_2.log.gz"] + ([d / "today_1.log"] if name == "windows" else [])
        inv = Investigator.load(model_dir)
        local = score_file(inv, files, tmp_path / f"{name}_local.parquet")
        unseen = inv.modality.parser.unseen_templates
        remote = score_file(inv, files, tmp_path / f"{name}_ray.parquet", engine="ray", model_dir=model_dir,
                            workers=2, shard_bytes=3000)
        a, b = pd.read_parquet(tmp_path / f"{name}_local.parquet"), pd.read_parquet(tmp_path / f"{name}_ray.parquet")
        pd.testing.assert_frame_equal(a, b)  # case keys, spans, first lines, scores, p-values, verdicts
        assert remote["engine"] == "ray" and remote["flagged"] == local["flagged"] > 0
        assert len(unseen) > 0 and inv.modality.parser.unseen_templates == unseen
        assert b["first_line"].str.startswith("today_2.log.gz:").any()
        if name == "sessions":
            assert len(b) == 300 and len(set(b.loc[b["anomalous"], "id"]) & set(sample.anomalies)) >= 16
    with pytest.raises(InputError, match="standard input"):
        score_file(inv, ["-"], tmp_path / "x.parquet", engine="ray", model_dir=models["windows"])
    assert not (tmp_path / "x.parquet").exists()


def test_triage_on_ray_gives_the_local_incidents_and_reports(log_models, ray_cluster):
    """Triage on Ray: the same counts, incidents and reports (the flagged cases' lines read back from
    the files, a gzip file included) as one process."""
    d, models, _ = log_models
    files = [str(d / "today_1.log"), str(d / "today_2.log.gz")]
    inv = Investigator.load(models["sessions"])
    local = inv.triage(files, limit=None)
    remote = inv.triage(files, limit=None, engine="ray", model_dir=models["sessions"], workers=2)
    assert (remote.n_cases, remote.n_flagged, remote.n_incidents, remote.cutoff, remote.unseen) == \
        (local.n_cases, local.n_flagged, local.n_incidents, local.cutoff, local.unseen)
    assert vars(remote.read) == vars(local.read) and vars(remote.groups) == vars(local.groups)
    assert local.n_incidents >= 3 and remote.timelines == local.timelines
    assert [r.to_markdown() for r in remote.reports] == [r.to_markdown() for r in local.reports]
    texts = [ln.text for r in remote.reports for ln in r.evidence.lines]
    assert texts and all(texts)
    with pytest.raises(InputError, match="distinct names"):
        inv.triage([files[0], files[0]], engine="ray", model_dir=models["sessions"])
