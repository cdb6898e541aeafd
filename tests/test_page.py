"""The web page in headless Chromium (Debian's ``chromium``, driven by playwright with
``executable_path``): load it from a real ``anomalens serve``, enter the key, upload a small CSV, open
the flagged case, see the attribution bars and the exemplars beside the case, ask a question and see
a verified answer. A screenshot is kept under the test's tmp dir."""

from __future__ import annotations

import shutil
import pytest

from test_server import KEY, _rows, _serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def _connected(p, url: str, investigator: str = "metrics"):
    """(browser, page, page errors) with the page loaded from ``url`` and connected with the key."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.fill("#key", KEY)
    page.click("#connect")
    page.wait_for_selector(f"#inv option[value={investigator}]", state="attached")
    return browser, page, errors


def _ask_and_finish(page, browser, errors: list[str], shot) -> None:
    """Ask why the open case is anomalous, see a verified answer, keep a screenshot, no page error."""
    page.fill("#question", "why is this anomalous?")
    page.click("#chat button")
    page.wait_for_selector("#chatlog ul.answer li", timeout=60_000)
    assert "verified" in page.inner_text("#chatlog")
    page.screenshot(path=str(shot), full_page=True)
    assert not errors, errors
    browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it with apt-get)")
def test_page_flow_in_headless_chromium(tmp_path, serve_models):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (anomalens[dev] has it)")
    from playwright.sync_api import sync_playwright

    from anomalens.data.log_synthesis import inject_logs

    models = serve_models
    today = inject_logs(150, 8, seed=2)
    log = tmp_path / "today.log"
    lines = today.lines[:]
    sid = next(s for s, k in today.anomalies.items() if k == "foreign")
    n = today.evidence_lines[sid][0]  # a hostile foreign line: shown as text, never run
    lines[n - 1] = lines[n - 1].split(f"[{sid}]")[0] + f"[{sid}] <img src=x onerror=window.__pwned=1> </td><script>window.__pwned=1</script>"
    log.write_text("\n".join(lines) + "\n")
    test = _rows(30, 4)
    test.loc[5, "memory"] = 12.0
    csv = tmp_path / "new.csv"
    test.to_csv(csv, index=False)
    ctx, _, url = _serve(models)
    try:
        with sync_playwright() as p:
            browser, page, errors = _connected(p, url)
            page.select_option("#inv", "metrics")
            page.set_input_files("#file", str(csv))
            page.click("#analyze")
            page.wait_for_selector("tr.case")
            assert page.inner_text("#cases tbody tr:first-child td:first-child") == "5"
            page.wait_for_selector("#report:not([hidden])")
            assert "ANOMALOUS" in page.inner_text("#verdict") or "not flagged" in page.inner_text("#verdict")
            assert page.inner_text("#bars tr:first-child td:first-child") == "memory"
            width = page.eval_on_selector("#bars tr:first-child .bar", "e => e.getBoundingClientRect().width")
            assert width > 100  # the top feature's bar is long
            assert page.locator("#exemplars th").count() >= 3  # feature, this case, exemplars beside it
            assert page.locator("#claims li").count() >= 2
            page.fill("#question", "why is this anomalous?")
            page.click("#chat button")
            page.wait_for_selector("#chatlog ul.answer li", timeout=60_000)
            answer = page.inner_text("#chatlog")
            assert "verified" in answer and "memory" in answer
            # a citation links to its evidence item on the page
            href = page.get_attribute("#chatlog ul.answer li .cite a", "href")
            assert href.startswith("#ev-")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            # logs: triage a file, open the first incident, its lines shown as text, a verified answer
            page.select_option("#inv", "web")
            page.set_input_files("#file", str(log))
            page.click("#analyze")
            page.wait_for_selector("#title:has-text('Incident 1')")
            assert page.locator("#cases tbody tr").count() >= 1
            assert page.locator("#logitems tr.item").count() >= 2
            assert page.evaluate("() => window.__pwned") is None  # the hostile line stayed text
            text = page.inner_text("#logitems")
            if "onerror" in log.read_text() and sid in page.inner_text("#title"):
                assert "<script>" in text  # shown literally
            _ask_and_finish(page, browser, errors, tmp_path / "page-logs.png")
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it with apt-get)")
def test_page_shows_series_events_as_charts(tmp_path, series_fitted):
    """A series upload lists its events; one opens with a chart per involved channel (observed, restored,
    the normal band), and a question about it gets a verified answer."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (anomalens[dev] has it)")
    from playwright.sync_api import sync_playwright

    inv, later = series_fitted
    models = tmp_path / "models"
    inv.save(models / "metrics")
    (models / "keys").write_text(KEY + "\n")
    test = later.iloc[:600].copy()
    test.iloc[300:320, test.columns.get_loc("latency")] += 6.0  # a level shift on one channel
    csv = tmp_path / "series.csv"
    test.to_csv(csv, index_label="time")
    ctx, _, url = _serve(models, names=("metrics",))
    try:
        with sync_playwright() as p:
            browser, page, errors = _connected(p, url)
            assert "series" in page.inner_text("#inv")
            page.set_input_files("#file", str(csv))
            page.click("#analyze")
            try:
                page.wait_for_selector("#seriesitems .chart svg polyline.obs", timeout=60_000)
            except Exception:  # say what the page said
                raise AssertionError(f"no chart; the page's error: {page.inner_text('#error')!r}; page errors {errors}") from None
            assert page.inner_text("#cases thead").startswith("event")
            assert "latency" in page.inner_text("#title")
            first = page.locator("#seriesitems .chart").first
            assert "latency" in first.inner_text()
            points = page.eval_on_selector("#seriesitems .chart polyline.obs", "e => e.getAttribute('points').split(' ').length")
            assert points >= 20  # the event's points are drawn
            assert page.locator("#seriesitems .chart polyline.rest").count() == page.locator("#seriesitems .chart").count()
            assert not page.is_visible("#exemplars")  # rows' exemplar grid is not shown for a series
            _ask_and_finish(page, browser, errors, tmp_path / "page-series.png")
        # the session the page opens reads the uploaded text as the upload did: the event it investigates
        # is the listed one, with the same p-value (issue 40 #13: rows parsed by the browser gave another),
        # and an event keeps its number when the upload keeps only the strongest (limit)
        import httpx

        auth = {"Authorization": f"Bearer {KEY}"}
        up = httpx.post(f"{url}/v1/investigators/metrics/analyze/upload?limit=1", headers=auth, timeout=120,
                        files={"file": ("series.csv", csv.read_bytes(), "text/csv")}).json()
        listed = up["reports"][0]["evidence"]
        event = next(p for p in listed["parts"] if p["kind"] == "event")  # the series' own evidence item
        s = httpx.post(f"{url}/v1/sessions", headers=auth, timeout=120, json={
            "investigator": "metrics", "series_csv": csv.read_text(), "event": event["index"]}).json()
        assert s["case_id"] == listed["case_id"] and s["verdict"]["p_value"] == listed["verdict"]["p_value"]
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it with apt-get)")
def test_page_judges_uploaded_images_and_shows_their_pictures(tmp_path):
    """Several image files uploaded at once: the lot's table, the most anomalous image opened with its
    picture (image, map, restoration, nearest normal), its regions and its verified explanation, and a
    question about it answered by a chat session over that image."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (anomalens[dev] has it)")
    import numpy as np
    from playwright.sync_api import sync_playwright
    from test_images import _defect, _png, _texture

    from anomalens import Investigator

    rng = np.random.default_rng(5)
    models = tmp_path / "models"
    Investigator.fit({f"n{i:03d}.png": _texture(rng) for i in range(100)}, modality="images",
                     random_state=0).save(models / "cells")
    (models / "keys").write_text(KEY + "\n")
    files = []
    for name, img in [("ok1.png", _texture(rng)), ("scratch.png", _defect(_texture(rng), rng)[0]),
                      ("ok2.png", _texture(rng))]:
        (tmp_path / name).write_bytes(_png((img * 255).astype(np.uint8)))
        files.append(str(tmp_path / name))
    ctx, _, url = _serve(models, names=("cells",))
    try:
        with sync_playwright() as p:
            browser, page, errors = _connected(p, url, "cells")
            assert "images" in page.inner_text("#inv") and "regions" in page.inner_text("#inv")
            page.set_input_files("#file", files)
            page.click("#analyze")
            try:
                page.wait_for_selector("#imageitems img[src^='data:image/png;base64,']", timeout=60_000)
            except Exception:  # say what the page said
                raise AssertionError(f"no picture; the page's error: {page.inner_text('#error')!r}; {errors}") from None
            assert page.inner_text("#cases thead").startswith("image")
            assert "scratch.png" in page.inner_text("#title") and "ANOMALOUS" in page.inner_text("#verdict")
            assert page.eval_on_selector("#picture", "e => e.naturalWidth") > 800
            assert "every claim verified" in page.inner_text("#source") and "region" in page.inner_text("#claims")
            assert not page.is_visible("#exemplars")
            _ask_and_finish(page, browser, errors, tmp_path / "page-images.png")  # a session over the uploaded file
    finally:
        ctx.__exit__(None, None, None)
