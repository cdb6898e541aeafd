"""The series modality end to end: injected events found and explained, restored, plotted; bad
series input refused with one clear line; the CLI on a series; the claims of an event verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from anomalens import Investigator
from anomalens.cli import app
from anomalens.data.series_synthesis import factor_series, inject_series
from anomalens.errors import InputError
from anomalens.grounding.verifier import verify_claim
from anomalens.llm.reasoner import evidence_payload
from anomalens.modalities import SeriesModality
from anomalens.modalities.series import choose_window, read_series
from anomalens.schema import Claim

CHANNELS = ["cpu", "memory", "latency", "disk", "net"]


def make_series(T: int, seed: int, start: str = "2026-03-01") -> pd.DataFrame:
    """Five channels driven by two periodic factors (period 48) and smoothed noise, one per minute."""
    return factor_series(T, seed, channels=tuple(CHANNELS), start=start)


@pytest.fixture(scope="module")
def fitted(series_fitted):
    return series_fitted


def _best_overlap(reports, a: int, b: int, test: pd.DataFrame):
    """(IoU, report) of the event overlapping [a, b] (positions in test) most."""
    pos = {t.isoformat(): i for i, t in enumerate(test.index)}
    best = (0.0, None)
    for r in reports:
        s, e = pos[r.evidence.event.start], pos[r.evidence.event.end]
        inter = max(0, min(b, e) - max(a, s) + 1)
        if inter:
            best = max(best, (inter / (max(b, e) - min(a, s) + 1), r), key=lambda x: x[0])
    return best


def test_the_window_is_the_period_and_the_detector_is_temporal(fitted):
    inv, _ = fitted
    assert inv.modality.period == 48 and inv.modality.window == 48
    assert inv.detector_name == "conv_ae" and inv.detector.config.window == 48
    assert inv.detector.n_features_in_ == 48 * len(CHANNELS)
    assert inv.modality.score_stride == 48 // 8  # every 8th window scored by default: each point still in 8
    assert choose_window(np.sin(2 * np.pi * np.arange(2000) / 37)[:, None]) == (37, 37)
    # TSB-AD's rule: a period seen only twice counts (the window is bounded to 128); one below 6
    # lags does not, and the window is TSB-AD's default, 125
    window, period = choose_window(np.sin(2 * np.pi * np.arange(700) / 288)[:, None])
    assert window == 128 and abs(period - 288) <= 1  # the peak of a finite series' autocorrelation, near 288
    assert choose_window(np.sin(2 * np.pi * np.arange(700) / 5)[:, None]) == (125, None)


@pytest.mark.parametrize("kind", ["level_shift", "spike"])
def test_injected_events_are_found_named_overlapping_and_restored(fitted, kind, tmp_path):
    inv, test = fitted
    values, mask, events = inject_series(test.to_numpy(), [kind] * 3, length=20, seed=1)
    reports = inv.analyze_batch(pd.DataFrame(values, index=test.index, columns=CHANNELS), plot_dir=tmp_path)
    found = 0
    for e in events:
        iou, rep = _best_overlap(reports, e.start, e.end, test)
        if rep is None:
            continue
        found += 1
        ch = CHANNELS[e.channels[0]]
        assert rep.verdict.anomalous and rep.evidence.attributions[0].unit == ch
        assert iou >= 0.5, (kind, iou)
        shown = [c for c in rep.explanation.claims if c.verified]
        assert any(ch in c.text for c in shown if c.kind in ("range", "peak"))
        assert all(verify_claim(c, rep.evidence) is None for c in rep.explanation.claims)
        seg = next(g for g in rep.evidence.segments if g.channel == ch)
        rows = [test.index.get_loc(pd.Timestamp(t)) for t in seg.times]
        injected = values[rows, e.channels[0]] - test.to_numpy()[rows, e.channels[0]]
        undone = np.abs(np.array(seg.restored) - values[rows, e.channels[0]])
        changed = np.abs(injected) > 1e-9
        assert np.median(undone[changed] / np.abs(injected[changed])) >= 0.7
        png = tmp_path / rep.plot
        assert png.is_file() and png.stat().st_size > 20_000 and png.read_bytes()[:4] == b"\x89PNG"
        assert f"]({rep.plot})" in rep.to_markdown()
    assert found == 3, kind
    assert len(reports) <= len(events) + 1  # at most one false event


def test_an_event_is_trimmed_to_its_anomaly_not_to_a_stray_normal_point(fitted):
    """A flagged run spans the windows around an anomaly; trimmed to the points whose cells pass
    the held-out block's largest, a normal point that just passes it by chance (a series longer
    than the held-out block has a few) a window away stretched the event to it. Such a point is
    not anomalous on its own after Bonferroni over the run, and the event stays on the anomaly."""
    inv, _ = fitted
    m = inv.modality
    rng = np.random.default_rng(0)
    T, C = 300, len(CHANNELS)
    point = rng.choice(m.cell_calibration_scores, size=T)  # normal cell sums
    limit = m.calibrator.cell.scores[-1]  # the held-out block's largest cell sum
    point[100:120] = 100 * limit  # the anomaly
    stray = 1.05 * limit
    run = (60, 200)
    assert m.calibrator.cell.tail is not None
    assert m.calibrator.cell.pvalues(np.array([stray]))[0] > 0.05 / (run[1] - run[0] + 1)
    point[150] = stray  # 30 points after the anomaly, inside the run
    cells = np.repeat(point[None, :] / C, C, axis=0)
    flags = np.zeros(T, dtype=bool)
    flags[run[0] : run[1] + 1] = True
    assert m.events(flags, cells) == [(100, 119)]
    assert m.events(flags) == [run]  # without cells: the run as flagged


def test_a_fresh_normal_series_gives_no_events(fitted):
    """Normal data the model never saw, 1.5 days of it against a held-out block of 8 hours: the
    false discovery rate is controlled over windows and the window scores are calibrated on the
    held-out block's windows, so no event (window scores calibrated point by point, and BH over
    points, flagged stretches of such a series)."""
    inv, _ = fitted
    fresh = make_series(2200, seed=11, start="2026-03-10").iloc[400:]
    assert inv.analyze_batch(fresh) == []
    sc = inv.score(fresh)
    assert sc.pvalues.min() > 0.05 / len(sc.pvalues)


def test_a_model_saved_before_window_scores_keeps_its_cell_scores(fitted):
    """A saved series model without ``point_score`` was calibrated on cell sums: it keeps scoring
    with them (its calibration set means nothing for window scores)."""
    from anomalens.detectors import Calibrator

    inv, test = fitted
    config = inv.modality.to_config()
    for key in ("point_score", "cell_calibration_scores"):
        del config["series"][key]
    config["series"]["calibration_scores"] = inv.modality.cell_calibration_scores.tolist()
    old = SeriesModality.from_config(config)
    assert old.point_score == "cell" and type(old.calibrator) is Calibrator
    cells, windows = old.score_points(inv.detector, test.to_numpy()[:600])
    scores, p, _ = old.point_pvalues(cells, windows)
    assert np.array_equal(scores, cells.sum(axis=0)) and np.array_equal(p, old.calibrator.pvalues(scores))


def test_decoupled_channels_rank_above_normal_points(fitted):
    """Decoupling keeps every value in range; the cells still rank the decoupled span far above the
    base rate (3 x 20 of 1,800 points), and the point scores (the windows holding a point) rank the
    stretch a window around it above the rest, though not all of it reaches the FDR cut-off."""
    from sklearn.metrics import average_precision_score

    inv, test = fitted
    values, mask, _ = inject_series(test.to_numpy(), ["decoupling"] * 3, length=20, seed=1)
    sc = inv.score(pd.DataFrame(values, index=test.index, columns=CHANNELS))
    span = mask.any(axis=1)
    assert average_precision_score(span, sc.cells.sum(axis=0)) >= 0.3
    around = np.convolve(span, np.ones(2 * inv.modality.window - 1), mode="same") > 0  # base rate 0.19
    assert average_precision_score(around, sc.scores) >= 0.28


def test_a_normal_stretch_is_not_flagged_and_a_report_round_trips(fitted, tmp_path):
    inv, test = fitted
    assert not inv.analyze(test.iloc[:600]).verdict.anomalous
    shifted = test.iloc[:600].copy()
    shifted.iloc[300:320, 3] += 3.0
    rep = inv.analyze(shifted)
    assert rep.verdict.anomalous and rep.evidence.event.channels[0] == "disk"
    back = Investigator.load(inv.save(tmp_path / "model"))
    again = back.analyze(shifted)
    assert again.evidence.event == rep.evidence.event and again.evidence.segments == rep.evidence.segments
    assert again.verdict.p_value == pytest.approx(rep.verdict.p_value, rel=1e-9)


def test_typed_event_claims_are_checked_against_the_event(fitted):
    inv, test = fitted
    shifted = test.iloc[:600].copy()
    shifted.iloc[300:320, 1] -= 3.0
    ev = inv.analyze(shifted).evidence
    e, seg = ev.event, ev.segments[0]
    assert verify_claim(Claim(kind="event", cites=["event"], text=""), ev) is not None  # text must be its rendering
    good = inv.modality.render_claim("event", ["event"], {}, ev)
    assert good is not None and verify_claim(good, ev) is None and e.start in good.text
    peak = inv.modality.render_claim("peak", [seg.id], {}, ev)
    assert verify_claim(peak, ev) is None
    assert inv.modality.render_claim("peak", ["event"], {}, ev) is None
    # free text: the event's own times pass, another time or a number not in the evidence does not
    ok = Claim(text=f"The event runs from {e.start} to {e.end}.", cites=["event"])
    assert verify_claim(ok, ev) is None
    assert verify_claim(Claim(text="The event runs from 2026-03-05T00:00:00 to 2026-03-05T00:10:00.",
                              cites=["event"]), ev) is not None
    assert verify_claim(Claim(text=f"'memory' peaks at {e.peak} with 99.5 because of a deploy.",
                              cites=[seg.id]), ev) is not None
    # the model is shown every item its claims may cite: the event and each segment, with their numbers
    payload = evidence_payload(ev)
    shown = {k for part in payload.values() if isinstance(part, dict) for k in part} | set(payload)
    cited = {c for claim in inv.modality.claim_candidates(ev) for c in claim.cites}
    assert "event" in cited and seg.id in cited and cited <= shown, cited - shown
    assert payload["event"]["start"] == e.start and payload["segments"][seg.id]["expected"] == pytest.approx(seg.expected, rel=1e-3)


def test_bad_series_input_is_one_clear_error():
    data = make_series(300, seed=3)
    cases = [
        (data.assign(cpu=data["cpu"].where(data.index != data.index[17])), ["cpu", data.index[17].isoformat(), "fill"]),
        (data.iloc[::-1], ["increasing"]),
        (pd.concat([data.iloc[:50], data.iloc[49:]]), ["unique", data.index[49].isoformat()]),
        (data.drop(index=data.index[40]), ["evenly spaced", "resample"]),
        (data.assign(disk="x"), ["numeric", "disk"]),
        ("abc", ["DataFrame"]),
    ]
    for frame, words in cases:
        with pytest.raises(InputError) as err:
            read_series(frame, name="data")
        msg = str(err.value)
        assert "\n" not in msg and all(w in msg for w in words), msg
    with pytest.raises(InputError, match="at least 480 points long for window 48"):
        Investigator.fit(data.iloc[:100], modality=SeriesModality(window=48))
    filled = read_series(data.assign(cpu=data["cpu"].where(data.index != data.index[17])), fill="interpolate")
    assert filled.filled == 1 and np.isfinite(filled.values).all()
    regular = read_series(data.drop(index=data.index[40]), resample="1min", fill="interpolate")
    assert len(regular.values) == 300 and regular.filled == len(CHANNELS)


def test_wrong_channels_and_short_series_at_analyze(fitted):
    inv, test = fitted
    with pytest.raises(InputError, match=r"missing \['disk'\]"):
        inv.analyze_batch(test.drop(columns=["disk"]))
    with pytest.raises(InputError, match=r"at least one window long \(48 points\), got 10"):
        inv.analyze(test.iloc[:10])


def test_a_table_with_a_text_time_column_is_read_by_a_fitted_model(fitted):
    """What a CSV upload gives: the times as text in a column beside the channels (the model was fitted
    on a DatetimeIndex). The column is the time axis; a numeric extra column is still refused."""
    inv, test = fitted
    part = test.iloc[:600]
    table = part.reset_index(names="time").assign(time=lambda d: d["time"].astype(str))
    a, b = inv.verdicts(part), inv.verdicts(table)
    assert list(a) == list(b) and [v.p_value for v in a.values()] == [v.p_value for v in b.values()]
    with pytest.raises(InputError, match=r"unexpected \['extra'\]"):
        inv.verdicts(part.assign(extra=1.0))


def test_fill_is_reported(fitted):
    inv, test = fitted
    model = Investigator.fit(make_series(2400, seed=0), modality=SeriesModality(window=48, fill="interpolate"),
                             random_state=0, epochs=5)
    gap = test.iloc[:600].copy()
    gap.iloc[300:320, 0] += 3.0
    gap.iloc[305, 2] = np.nan
    rep = model.analyze(gap)
    assert rep.evidence.event.note and "1 missing value" in rep.evidence.event.note
    assert "1 missing value" in rep.to_markdown()


def test_a_fitted_model_puts_uneven_or_other_grids_on_its_own_and_says_so(fitted):
    """Issue 40 #10: real exports hold a duplicated sample, a 0.9-second step, a gap; a fitted model
    refused them at analyze ("pass resample=", which analyze could not take) and ran a 1-minute model
    silently on 30-second data. It puts them on its grid (averaged per step, empty steps
    interpolated) and says so in the event; the step in a message is in the right unit (pandas 3)."""
    inv, test = fitted
    part = test.iloc[:600].copy()
    part.iloc[300:320, part.columns.get_loc("latency")] += 6.0
    uneven = part.drop(index=part.index[[100, 450]])  # two gaps
    uneven.index = uneven.index.where(uneven.index != uneven.index[200], uneven.index[200] + pd.Timedelta("0.9s"))
    rep = inv.analyze(uneven)
    assert rep.verdict.anomalous and "put on the model's grid" in rep.evidence.event.note
    assert "uneven" in rep.evidence.event.note and "put on the model's grid" in rep.to_markdown()
    assert [e.evidence.event.start for e in inv.analyze_batch(uneven)] == \
        [e.evidence.event.start for e in inv.analyze_batch(part)]
    half = part.resample("30s").interpolate()  # another grid: 30-second points for a 1-minute model
    assert "its step was 0 days 00:00:30" in inv.analyze(half).evidence.event.note
    with pytest.raises(InputError, match=r"is 0 days 00:00:00.900000, the usual step is 0 days 00:01:00"):
        read_series(part.set_axis(part.index.where(part.index != part.index[5], part.index[4] + pd.Timedelta("0.9s"))))


def test_timestamps_as_exports_write_them(fitted):
    """Issue 40 #19: offsets that change at daylight saving failed with "Mixed timezones", epoch
    seconds written as floats were read as nanoseconds (all duplicates), and UTC times against a model
    of naive times (or the reverse) failed. Changing offsets are read as UTC instants, whole-number
    floats as epoch seconds, and naive and UTC times are placed on one grid."""
    inv, test = fitted
    berlin = pd.date_range("2026-03-28 22:00", periods=300, freq="min", tz="Europe/Berlin")  # crosses 02:00 -> 03:00
    table = pd.DataFrame({"time": berlin.strftime("%Y-%m-%dT%H:%M:%S%z"), "a": np.arange(300.0)})
    s = read_series(table, time_column="time")
    assert len(s.times) == 300 and str(s.times.tz) == "UTC" and (np.diff(s.times.asi8) > 0).all()
    epoch = pd.DataFrame({"time": 1.7e9 + 60.0 * np.arange(300), "a": np.arange(300.0)})
    assert list(read_series(epoch, time_column="time").times[:2]) == [1_700_000_000, 1_700_000_060]
    part = test.iloc[:100]
    assert (inv.modality.positions(part.index.tz_localize("UTC")) == inv.modality.positions(part.index)).all()


def test_cli_fit_and_analyze_a_series(tmp_path):
    frame = make_series(3000, seed=5).rename_axis("timestamp").reset_index()
    frame["label"] = 0
    frame.iloc[:2400].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[2400:].copy()
    test.iloc[300:320, 3] += 3.0
    test.to_csv(tmp_path / "test.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(tmp_path / "train.csv"), "--time-column", "timestamp", "--label-column",
                              "label", "--out", str(tmp_path / "model"), "-p", "epochs=20", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["modality"] == "series" and summary["window"] == 48 and summary["channels"] == 5
    res = runner.invoke(app, ["analyze", str(tmp_path / "model"), str(tmp_path / "test.csv"), "--label-column", "label",
                              "--out", str(tmp_path / "events")])
    assert res.exit_code == 0, res.output
    assert "event(s) in test.csv" in res.output and "latency" in res.output
    assert (tmp_path / "events" / "event-1.png").stat().st_size > 20_000
    rep = json.loads((tmp_path / "events" / "event-1.json").read_text())
    assert next(p for p in rep["evidence"]["parts"] if p["kind"] == "event")["channels"][0] == "latency"
    res = runner.invoke(app, ["analyze", str(tmp_path / "model"), str(tmp_path / "test.csv")])
    assert res.exit_code == 2 and "unexpected ['label']" in res.output
    # per-point scores, as TSB-AD's evaluations read them (issue 40 #10: score refused series)
    test.drop(columns=["label"]).to_csv(tmp_path / "points_in.csv", index=False)
    res = runner.invoke(app, ["score", str(tmp_path / "model"), str(tmp_path / "points_in.csv"), "--out",
                              str(tmp_path / "points.csv")])
    assert res.exit_code == 0, res.output
    pts = pd.read_csv(tmp_path / "points.csv")
    assert list(pts.columns) == ["time", "score", "p_value", "p_approximate", "anomalous", "cutoff"] and len(pts) == 600
    flagged = np.flatnonzero(pts["anomalous"].to_numpy())
    assert len(flagged) and flagged.min() >= 300 - 48 and flagged.max() < 320 + 48 and (300 <= flagged).any()
    chat = ["chat", str(tmp_path / "model"), str(tmp_path / "test.csv"), "--label-column", "label", "--llm", "template"]
    res = runner.invoke(app, [*chat, "--event", "1"], input="/restore\n")
    assert res.exit_code == 0, res.output
    assert "Event 1:" in res.output and "restore_case" in res.output and "'latency'" in res.output
    res = runner.invoke(app, [*chat, "--event", "9"])
    assert res.exit_code == 2 and "--event must be one of" in res.output


def test_chat_on_an_event_through_the_tools(fitted, tmp_path, monkeypatch):
    import anomalens.investigator as iv
    from anomalens.agents.chat import ChatSession
    from anomalens.tools import SeriesToolbox

    inv, test = fitted
    shifted = test.iloc[:800].copy()
    shifted.iloc[300:320, 4] += 3.0
    drafted, explain_many = [], iv.explain_many
    monkeypatch.setattr(iv, "explain_many", lambda evs, r, **kw: drafted.extend(evs) or explain_many(evs, r, **kw))
    box = SeriesToolbox(inv, shifted, plot_dir=tmp_path / "plots")
    assert drafted == []  # the session's cases are the events' evidence: no explanation drafted for them
    cid = next(c for c in box.case_ids if box.evidence(c).event.channels[:1] == ["net"])
    ev = box.evidence(cid)
    session = ChatSession(box, cid, checkpoint=tmp_path / "chat.sqlite", thread_id="t")
    why = session.ask("why is this anomalous?")
    assert why.explanation.grounded and any(c.kind == "event" for c in why.explanation.claims)
    assert any("'net'" in c.text for c in why.explanation.claims)
    near = session.ask("/neighbors 2")
    assert near.tools == ["nearest_exemplars"] and ev.exemplars[0].id in near.text
    restore = session.ask("/restore")
    assert restore.tools == ["restore_case"] and "'net'" in restore.text
    other = ev.exemplars[0].id
    compare = session.ask(f"/compare {other}")
    assert compare.tools == ["compare_cases"] and other in compare.text and compare.explanation.grounded
    plot = session.ask("/plot")
    png = Path(plot.text.split("plot written to ", 1)[1].strip())
    assert plot.tools == ["plot_case"] and png.name == f"{cid}.png" and png.stat().st_size > 20_000
    assert drafted == []  # a plot drafts nothing
    channel = session.ask("is disk involved?")
    assert channel.tools == ["describe_feature"] and "'disk'" in channel.text
    session.close()
    again = ChatSession(SeriesToolbox(inv), None, checkpoint=tmp_path / "chat.sqlite", thread_id="t")
    assert again.resumed and again.evidence.event == ev.event
    assert "is anomalous" in again.ask("/score").text
    again.close()


def test_mcp_investigates_a_series_event(fitted):
    """MCP can investigate a series (issue 42 item 6; it refused before): ``investigate`` takes the
    series as CSV text, its events become the cases, and the tools generated from the one registry
    explain, restore and compare an event, as the chat does, and draw it: the picture comes back as
    MCP image content (a path on the server's disk would mean nothing to the client)."""
    import asyncio
    import base64

    from mcp import Client

    from anomalens.server.mcp_server import build_mcp

    inv, test = fitted
    shifted = test.iloc[:800].copy()
    shifted.iloc[300:320, 4] += 3.0

    async def session():
        async with Client(build_mcp({"series": inv})) as c:
            out = await c.call_tool("investigate", {"investigator": "series", "text": shifted.to_csv(index_label="time")})
            assert not out.is_error, out.content
            listed = out.structured_content
            assert listed["modality"] == "series" and listed["cases"] >= 1
            assert all(x["case_id"].startswith("event-") and x["anomalous"] for x in listed["listed"])
            found = None
            for x in listed["listed"]:
                ex = (await c.call_tool("explain_case", {"investigator": "series", "case_id": x["case_id"]}))
                if ex.structured_content["data"][0]["unit"] == "net":
                    found = x["case_id"]
                    break
            assert found, "no event led by the shifted channel 'net'"
            r = (await c.call_tool("restore_case", {"investigator": "series", "case_id": found})).structured_content
            assert r["data"]["deltas"] and "net" in r["text"]
            near = (await c.call_tool("nearest_exemplars", {"investigator": "series", "case_id": found, "k": 2}))
            other = near.structured_content["data"][0]["id"]
            cmp = await c.call_tool("compare_cases", {"investigator": "series", "case_id": found, "other_id": other})
            assert not cmp.is_error and cmp.structured_content["data"]["id"] == f"compare:{other}"
            pic = await c.call_tool("plot_case", {"investigator": "series", "case_id": found})
            assert not pic.is_error, pic.content
            image = next(b for b in pic.content if b.type == "image")
            png = base64.b64decode(image.data)
            assert image.mime_type == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
            assert pic.structured_content["data"] == {"mime_type": "image/png", "bytes": len(png)}
            row = await c.call_tool("add_case", {"investigator": "series", "row": {"net": 1.0}})
            assert row.is_error and "use investigate" in row.content[0].text

    asyncio.run(session())


def test_a_short_training_series_is_calibrated_on_every_point_out_of_fold(fitted):
    """2,400 training minutes with a 48-minute window: a held-out block of 20% holds 10 windows,
    so no window's p-value could go below 1/11 (issue 41: NAB series flagged nothing). Cross-fitted,
    every training point has a score from a model that never saw it or its window-long
    neighbourhood, and the window level calibrates on the maxima of 200 quarter-window blocks (of 12 points)."""
    inv, _ = fitted
    m = inv.modality
    assert m.calibration_mode == "cross" and len(m.calibration_scores) == m.n_points == 2400
    blocks = m.fold_blocks(m.n_points)
    assert len(blocks) == 5 and blocks[0][0] == 0 and blocks[-1][1] == 2400
    assert all(b - a >= 2 * m.window for a, b in blocks)
    assert m.calibrator.window.block == 12 and m.calibrator.window.n == 200 and m.calibrator.cell.n == 2400
    again = SeriesModality.from_config(json.loads(json.dumps(m.to_config())))
    assert again.calibration_mode == "cross" and again.calibrator.window.n == 200
    # a long series keeps the held-out block: it holds enough windows (40 or more)
    frame = make_series(2000, seed=3)
    head, block = SeriesModality(window=8).split(frame)
    assert block is not None and len(block.values) == 400 and len(head.values) == 1600
    head, block = SeriesModality(window=16).split(frame)
    assert block is None and len(head.values) == 2000
    head, block = SeriesModality(window=16, calibration="split").split(frame)
    assert block is not None
    with pytest.raises(InputError, match=r"calibration must be one of \['auto', 'split', 'cross'\], got 'folds'"):
        SeriesModality(calibration="folds")


@pytest.mark.shared_data
def test_a_real_incident_is_flagged_at_the_calibrated_cut_off(shared_data):
    """NAB's art_daily_jumpsup: trained on its first 15% (NAB's probationary period: 604 points,
    window 60), the labelled jump is an event at a false discovery rate of 5%. Calibrated on a
    held-out block (121 points, 2 windows) the series gave no event at all (issue 41)."""
    frame = pd.read_csv(shared_data / "nab" / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv",
                        parse_dates=["timestamp"])
    labels = json.loads((shared_data / "nab" / "labels" / "combined_windows.json").read_text())
    (a, b), = labels["artificialWithAnomaly/art_daily_jumpsup.csv"]
    tr = int(0.15 * len(frame))
    inv = Investigator.fit(frame.iloc[:tr], modality=SeriesModality(time_column="timestamp"), random_state=0,
                           epochs=60)
    assert inv.modality.calibration_mode == "cross"
    reports = inv.analyze_batch(frame.iloc[tr:])
    inside = [r for r in reports if pd.Timestamp(r.evidence.event.end) >= pd.Timestamp(a)
              and pd.Timestamp(r.evidence.event.start) <= pd.Timestamp(b)]
    assert inside and all(r.verdict.anomalous for r in inside)
    assert len(reports) - len(inside) <= 1  # at most one event outside the labelled window


def test_a_series_is_read_in_one_detector_pass_per_chunk_of_windows(fitted, monkeypatch):
    """Issue 42: a series' windows were read twice (explain, then decision_function); now in one
    pass (``score_explain``: checked and scaled once, an autoencoder's first reconstruction giving
    both), bitwise the same scores and the same attribution. An event then takes one more call
    (``restore_embed``: its windows' restoration and its peak window's embedding, checked and scaled
    once; ``inspect`` would also score the windows and their restorations and embed every one, 24%
    slower per event; docs/series.md)."""
    from collections import Counter

    inv, test = fitted
    data = test.iloc[:600].copy()
    data.iloc[300:320, 1] -= 3.0
    m, det = inv.modality, inv.detector
    values = m.read(data, "data").values
    T, w = len(values), m.window
    X = m.windows(values, np.arange(0, T - w + 1, 7))
    scores, att = det.score_explain(X, checked=True)  # what the two passes gave
    np.testing.assert_array_equal(scores, det.decision_function(X, checked=True))
    np.testing.assert_allclose(att.values, det.explain(X, checked=True).values, rtol=1e-6, atol=1e-9)
    det_cls = type(det)
    calls: Counter = Counter()
    for name in ("decision_function", "explain", "restore", "embed", "inspect", "score_explain", "restore_embed"):
        def wrapped(self, X, *a, _orig=getattr(det_cls, name), _name=name, **kw):
            calls[_name] += 1
            return _orig(self, X, *a, **kw)

        monkeypatch.setattr(det_cls, name, wrapped)
    reports = inv.analyze_batch(data)
    n = len(reports)
    assert n and dict(calls) == {"score_explain": 1, "restore_embed": n}  # 600 points: one chunk
    calls.clear()
    inv.verdicts(data)
    assert dict(calls) == {"score_explain": 1}


def test_verdicts_and_a_rest_batch_score_a_series_once_and_draft_only_what_they_return(fitted, tmp_path, monkeypatch):
    """A series' verdicts build no evidence and draft no explanation; over REST, explain=false drafts
    nothing and explain=true scores the series once (each used to score it twice and draft one
    explanation per event for the verdicts, thrown away)."""
    from fastapi.testclient import TestClient

    import anomalens.investigator as iv
    import anomalens.modalities.series.flow as si
    from anomalens.server.app import ServeConfig, create_app

    inv, test = fitted
    data = test.iloc[:600].copy()
    data.iloc[300:320, 1] -= 3.0
    calls = {"score": 0, "drafted": 0}
    score, explain_many = si.SeriesFlow.score, iv.explain_many

    def counted_score(self, *a, **kw):
        calls["score"] += 1
        return score(self, *a, **kw)

    def counted_explain(evs, reasoner, **kw):
        calls["drafted"] += len(evs)
        return explain_many(evs, reasoner, **kw)

    monkeypatch.setattr(si.SeriesFlow, "score", counted_score)
    monkeypatch.setattr(iv, "explain_many", counted_explain)
    verdicts = inv.verdicts(data)
    assert len(verdicts) >= 1 and calls == {"score": 1, "drafted": 0}
    reports = inv.analyze_batch(data)
    assert {r.evidence.case_id: r.verdict for r in reports} == verdicts  # the same verdicts, with evidence
    inv.save(tmp_path / "metrics")
    app = create_app({"metrics": tmp_path / "metrics"}, ServeConfig(no_auth=True, mcp=False))
    rows = data.reset_index().rename(columns={"index": "time"}).astype({"time": str}).to_dict("records")
    with TestClient(app) as client:
        for explain, drafted in ((False, 0), (True, len(verdicts))):
            calls.update(score=0, drafted=0)
            r = client.post("/v1/investigators/metrics/analyze", json={"rows": rows, "explain": explain})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["n_cases"] == len(verdicts) and len(body["reports"]) == drafted
            assert calls == {"score": 1, "drafted": drafted}, (explain, calls)
