"""One hallway (issue 42): a tool declared once with ``@tool`` appears as a LangChain tool of the
chat graph, as an MCP tool (the SDK's real client, in memory) with its typed arguments, and as a
chat command in ``/help``; the chat commands are parsed from the declarations. A REST batch checks
and scores each row once (call-count spies on the detector of the app's own investigator)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from agent_fixtures import cases
from pydantic import BaseModel, Field

from anomalens.agents.chat import ChatSession
from anomalens.errors import InputError
from anomalens.llm import TemplateReasoner
from anomalens.modalities import TabularModality
from anomalens.schema import fmt
from anomalens.server.mcp_server import build_mcp
from anomalens.tools import TOOL_NAMES, Toolbox, make_tools
from anomalens.tools.registry import TOOLS, help_text, parse_command, tool, tools_for


class SpreadArgs(BaseModel):
    case_id: str | None = Field(None, description="id of a case under investigation; omit for the case in focus")
    scale: float = Field(1.0, gt=0, le=10, description="a factor the spread is multiplied by")


def spread(box, case_id: str | None = None, scale: float = 1.0):
    """Report the spread of a case: its largest minus its smallest value, times scale."""
    row = box.row(case_id)
    if not row.size:
        raise InputError("case_id: the case holds no values")
    value = float(row.max() - row.min()) * scale
    return f"case {box.resolve(case_id)}: spread {fmt(value)}", value


@pytest.fixture()
def declared(monkeypatch):
    """``spread`` declared as a tool for tabular investigators, for this test only."""
    monkeypatch.setattr("anomalens.tools.registry.TOOLS", dict(TOOLS))  # the test's own copy, dropped after
    import anomalens.agents.chat as chat
    import anomalens.tools.case_tools as ct
    from anomalens.tools import registry

    monkeypatch.setattr(ct, "TOOLS", registry.TOOLS)
    monkeypatch.setattr(chat, "TOOLS", registry.TOOLS)
    tool("case_spread", SpreadArgs, modalities={"tabular"}, command="/spread", words=("scale",),
         usage="/spread [scale]: the case's largest minus smallest value")(spread)
    return registry.TOOLS


def test_the_built_in_tools_are_declared_once_each_with_a_command_where_a_chat_has_one():
    assert tuple(TOOLS)[: len(TOOL_NAMES)] == TOOL_NAMES
    commands = [s.command for s in TOOLS.values() if s.command]
    assert len(commands) == len(set(commands)) and "/why" in commands
    assert {s.name for s in tools_for("tabular")} == set(TOOL_NAMES) - {"plot_case", "show_lines", "describe_template",
                                                                        "incident_timeline", "describe_region"}
    assert "/lines" in help_text("logs") and "/lines" not in help_text("tabular") and "/plot" in help_text("series")
    assert "/region" in help_text("images") and "/region" not in help_text("tabular")
    spec, args = parse_command("/feature disk busy", "tabular")
    assert spec.name == "describe_feature" and args == {"name": "disk busy"}  # the last word takes the rest
    assert parse_command("/neighbors 8", "tabular")[1] == {"k": 8}
    assert "k: input should be a valid integer" in parse_command("/neighbors many", "tabular")
    assert "other_id: field required" in parse_command("/compare", "tabular")
    assert "unknown command '/lines'" in parse_command("/lines", "tabular")  # not this modality's
    with pytest.raises(ValueError, match="already declared"):
        tool("score_case", SpreadArgs)(spread)


def test_a_tool_declared_once_is_on_every_surface(declared, metrics_inv):
    box = Toolbox(metrics_inv, cases(), focus="c7")
    lc = {t.name: t for t in make_tools(box)}
    out = lc["case_spread"].invoke({"name": "case_spread", "args": {"scale": 2.0}, "id": "1", "type": "tool_call"})
    expected = 2.0 * float(box.row("c7").max() - box.row("c7").min())
    assert out.artifact == pytest.approx(expected) and "c7" in out.content
    bad = lc["case_spread"].invoke({"name": "case_spread", "args": {"scale": 50}, "id": "2", "type": "tool_call"})
    assert bad.status == "error" and "scale" in bad.content  # its constraint, from the one declaration

    chat = ChatSession(box, "c7")
    assert "/spread [scale]: the case's largest minus smallest value" in chat.ask("/help").text
    reply = chat.ask("/spread 3")
    assert reply.tools == ["case_spread"]
    assert "usage: /spread" in chat.ask("/spread -1").text  # validated against the declared arguments
    chat.close()

    from mcp import Client

    server = build_mcp({"metrics": metrics_inv})

    async def session():
        async with Client(server) as c:
            listed = {t.name: t for t in (await c.list_tools()).tools}
            spec = listed["case_spread"]
            props = spec.input_schema["properties"]
            assert spec.description.startswith("Report the spread of a case")
            assert props["scale"]["exclusiveMinimum"] == 0 and props["scale"]["maximum"] == 10
            assert set(spec.input_schema["required"]) == {"investigator"} and "session" in props
            # the built-in tools keep their typed arguments too
            assert listed["explain_case"].input_schema["properties"]["top"]["maximum"] == 50
            assert "name" in listed["describe_feature"].input_schema["required"]
            assert "plot_case" in listed  # its picture comes back as image content (test_series)
            empty = await c.call_tool("case_spread", {"investigator": "metrics"})
            assert empty.is_error and "call investigate" in empty.content[0].text
            inv = await c.call_tool("investigate", {"investigator": "metrics",
                                                    "text": cases().to_csv(index=False)})
            assert not inv.is_error and inv.structured_content["cases"] == len(cases())
            r = await c.call_tool("case_spread", {"investigator": "metrics", "case_id": "7", "scale": 2})
            assert not r.is_error and r.structured_content["data"] == pytest.approx(expected)
            wrong = await c.call_tool("show_lines", {"investigator": "metrics", "case_id": "7"})
            assert wrong.is_error and "applies to ['logs'] investigators" in wrong.content[0].text
            junk = await c.call_tool("investigate", {"investigator": "metrics", "text": ""})
            assert junk.is_error and "text must be rows as CSV with a header row" in junk.content[0].text

    asyncio.run(session())


def test_a_rest_batch_checks_and_scores_each_row_once(metrics_inv, tmp_path, monkeypatch):
    """``Investigator.assess``: explaining every row, the detector's one inspection of each row gives
    its verdict and its evidence (it used to score the batch for the verdicts, then check and
    inspect the same rows again for the reports); explaining some, the batch is scored once and
    only the kept rows are inspected."""
    from fastapi.testclient import TestClient

    from anomalens.modalities.flow import RowFlow
    from anomalens.server.app import ServeConfig, create_app

    data = cases()
    n = len(data)
    expected = metrics_inv.verdicts(data)
    metrics_inv.save(tmp_path / "metrics")
    det_cls = type(metrics_inv.detector)
    seen = {"checked": 0, "scored": 0, "inspected": 0}
    rows, score, inspect = RowFlow.rows, det_cls.decision_function, det_cls.inspect

    def count(key, fn, size):
        def wrapped(self, X, *a, **kw):
            out = fn(self, X, *a, **kw)
            seen[key] += size(X, out)
            return out
        return wrapped

    monkeypatch.setattr(RowFlow, "rows", count("checked", rows, lambda X, out: len(out[0])))
    given = {tuple(np.round(r, 6)) for r in data.to_numpy(float)}
    ours = lambda X, out: sum(tuple(np.round(r, 6)) in given for r in np.asarray(X, float))  # noqa: E731
    # the case rows only: a restored row pulled back into the training range is scored too
    monkeypatch.setattr(det_cls, "decision_function", count("scored", score, ours))
    monkeypatch.setattr(det_cls, "inspect", count("inspected", inspect, ours))
    app = create_app({"metrics": tmp_path / "metrics"}, ServeConfig(no_auth=True, mcp=False), reasoner=TemplateReasoner())
    body = {"rows": data.to_dict("records"), "ids": list(data.index)}
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()["components"]["schemas"]  # a report is described, not list[dict]
        reports = doc["AnalyzeResponse"]["properties"]["reports"]["items"]["$ref"].rsplit("/", 1)[1]
        assert reports.startswith("Report") and "evidence" in doc[reports]["properties"]
        assert "Explanation" in str(doc["MessageOut"]["properties"]["explanation"])
        for extra, inspected in (({"limit": None}, n), ({"limit": n}, n), ({}, min(20, n)), ({"explain": False}, 0),
                                 ({"only_anomalous": True}, None), ({"limit": 3}, 3)):
            seen.update(checked=0, scored=0, inspected=0)
            r = client.post("/v1/investigators/metrics/analyze", json={**body, **extra})
            assert r.status_code == 200, r.text
            out = r.json()
            got = {v["case_id"]: v for v in out["verdicts"]}
            assert {c: v["anomalous"] for c, v in got.items()} == {c: v.anomalous for c, v in expected.items()}
            assert all(abs(got[c]["p_value"] - v.p_value) < 1e-9 for c, v in expected.items())
            flagged = sum(v.anomalous for v in expected.values())
            want = flagged if inspected is None else inspected
            assert len(out["reports"]) == want
            every = inspected == n  # every row explained: the inspection scores them
            assert seen == {"checked": n, "scored": 0 if every else n, "inspected": want}, (extra, seen)


# ---------------------------------------------------------------- a modality added with one registration line
class TextStats(TabularModality):
    """A TOY modality defined only here (issue 42: adding a modality needs no edit outside its own
    room and one registration line): a case is a short text (a request line, a user name), read as
    four counts. It reuses the tabular room's units and claims; what it proves is that fit,
    analyze, save/load, REST, MCP and chat reach it through the registries, not through names."""

    name = "text_stats"
    UNITS = ["length", "digits", "upper", "punct"]

    def _frame(self, data, name):
        import pandas as pd

        if isinstance(data, pd.DataFrame) and "text" in data.columns:
            texts, index = data["text"].tolist(), data.index
        elif isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
            texts, index = list(data), None
        else:
            return data  # already the four counts (a saved case, an exemplar)
        if not all(isinstance(t, str) for t in texts):
            raise InputError(f"{name}.text must be strings, got {sorted({type(t).__name__ for t in texts})}")
        rows = [[len(t), sum(c.isdigit() for c in t), sum(c.isupper() for c in t),
                 sum(not c.isalnum() and not c.isspace() for c in t)] for t in texts]
        return pd.DataFrame(rows, columns=self.UNITS, index=index, dtype=float)

    def learn(self, data, ids=None):
        return super().learn(self._frame(data, "data"), ids)

    def prepare(self, data, name="case"):
        return super().prepare(self._frame(data, name), name)


@pytest.fixture()
def text_stats(monkeypatch):
    import anomalens.modalities as modalities

    monkeypatch.setattr(modalities, "_REGISTRY", dict(modalities._REGISTRY))  # registered for this test only
    modalities.register(TextStats)  # the one registration line
    return TextStats


def test_a_new_modality_walks_every_surface_without_an_edit_elsewhere(text_stats, tmp_path):
    import pandas as pd
    from fastapi.testclient import TestClient

    from anomalens import Investigator
    from anomalens.server.app import ServeConfig, create_app

    rng = np.random.default_rng(0)
    words = ["get", "user", "list", "page", "item", "cart", "home", "search"]
    normal = [f"/{rng.choice(words)}/{rng.choice(words)}?id={rng.integers(1, 999)}" for _ in range(500)]
    attack = "/item?id=1' OR '1'='1'; DROP TABLE users; --" * 2
    inv = Investigator.fit(pd.DataFrame({"text": normal}), modality="text_stats", detector="pca", random_state=0)
    rep = inv.analyze([attack], case_id="attack")
    assert rep.verdict.anomalous and rep.evidence.context.modality == "text_stats"
    top = rep.evidence.attributions[0]  # never an upper-case letter in the normal paths
    assert top.unit == "upper" and top.abnormal and top.normal_high == 0 and rep.explanation.grounded
    assert not inv.analyze([normal[0]]).verdict.anomalous
    inv.save(tmp_path / "m")
    back = Investigator.load(tmp_path / "m")
    assert back.modality.name == "text_stats" and back.analyze([attack]).verdict.p_value == pytest.approx(
        rep.verdict.p_value)

    app = create_app({"paths": tmp_path / "m"}, ServeConfig(no_auth=True, mcp=False), reasoner=TemplateReasoner())
    with TestClient(app) as client:
        r = client.post("/v1/investigators/paths/analyze", json={"rows": [{"text": attack}, {"text": normal[1]}],
                                                                  "ids": ["attack", "ok"]})
        assert r.status_code == 200, r.text
        assert [v["anomalous"] for v in r.json()["verdicts"]] == [True, False]
        one = client.post("/v1/investigators/paths/analyze", json={"rows": [{"text": attack}]})  # one row, coalesced
        assert one.status_code == 200 and one.json()["reports"][0]["evidence"]["verdict"]["anomalous"], one.text
        s = client.post("/v1/sessions", json={"investigator": "paths", "row": {"text": attack}})
        assert s.status_code == 201, s.text
        why = client.post(f"/v1/sessions/{s.json()['id']}/messages", json={"text": "/why"})
        assert why.status_code == 200 and "anomalous" in why.json()["text"], why.text

    from mcp import Client

    async def session():
        async with Client(build_mcp({"paths": back})) as c:
            listed = await c.call_tool("list_investigators", {})
            assert listed.structured_content["investigators"][0]["modality"] == "text_stats"
            put = await c.call_tool("investigate", {"investigator": "paths",
                                                    "text": pd.DataFrame({"text": [normal[2], attack]}).to_csv(index=False)})
            assert not put.is_error and [x["anomalous"] for x in put.structured_content["listed"]] == [False, True]
            ex = await c.call_tool("explain_case", {"investigator": "paths", "case_id": "1"})
            assert not ex.is_error and ex.structured_content["data"][0]["id"].startswith("feature:")

    asyncio.run(session())

    chat = ChatSession(Toolbox(back, pd.DataFrame({"text": [attack]}), ids=["attack"]), "attack")
    assert chat.ask("/score").tools == ["score_case"] and "is anomalous" in chat.ask("/score").text
    chat.close()


def test_a_chat_message_over_rest_does_not_rescore_its_case_or_rebuild_its_graph(metrics_inv, tmp_path, monkeypatch):
    """A session's toolbox and graph stay live in the process: the case is inspected once, when the
    session is made, and no message compiles the graph again (each message used to rebuild the toolbox,
    re-score its case and recompile the graph). A deleted session is dropped; another key gets 404."""
    from fastapi.testclient import TestClient

    import anomalens.agents.chat as chat_module
    from anomalens.server.app import ServeConfig, create_app

    metrics_inv.save(tmp_path / "metrics")
    det_cls = type(metrics_inv.detector)
    seen = {"inspected": 0, "graphs": 0}
    inspect, build = det_cls.inspect, chat_module.build_chat_graph

    def counted_inspect(self, X, *a, **kw):
        seen["inspected"] += len(X)
        return inspect(self, X, *a, **kw)

    def counted_build(*a, **kw):
        seen["graphs"] += 1
        return build(*a, **kw)

    monkeypatch.setattr(det_cls, "inspect", counted_inspect)
    monkeypatch.setattr(chat_module, "build_chat_graph", counted_build)
    app = create_app({"metrics": tmp_path / "metrics"}, ServeConfig(no_auth=True, mcp=False, state_dir=str(tmp_path / "s")),
                     reasoner=TemplateReasoner())  # the spies count detector passes, not a model's words
    row = {k: float(v) for k, v in cases().loc["c7"].items()}
    with TestClient(app) as client:
        s = client.post("/v1/sessions", json={"investigator": "metrics", "row": row})
        assert s.status_code == 201, s.text
        sid = s.json()["id"]
        made = dict(seen)
        assert made["inspected"] == 1 and made["graphs"] == 1
        texts = []
        for text in ("/why", "/score", "/neighbors 2", "is memory involved?"):
            r = client.post(f"/v1/sessions/{sid}/messages", json={"text": text})
            assert r.status_code == 200, r.text
            texts.append(r.json()["text"])
        assert "memory" in texts[0] and "p-value" in texts[1]
        # /neighbors 2 asks for fewer exemplars than the evidence holds: answered from it, nothing re-scored
        assert seen == made, seen
        history = client.get(f"/v1/sessions/{sid}").json()["messages"]
        assert [m["text"] for m in history if m["role"] == "user"] == ["/why", "/score", "/neighbors 2",
                                                                      "is memory involved?"] and seen == made
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
        assert client.post(f"/v1/sessions/{sid}/messages", json={"text": "/score"}).status_code == 404


def test_a_rest_session_lets_a_model_that_calls_tools_investigate(metrics_inv, tmp_path):
    """The server's reasoner's client, when it calls tools, drives a REST session's questions as it
    does `anomalens chat`'s (the sessions route used to answer from the evidence only). Against
    ScriptedToolModel, a FAKE tool-calling model: what the route hands the graph, not a model's words."""
    from agent_fixtures import ScriptedToolModel
    from fastapi.testclient import TestClient

    from anomalens.llm import LLMReasoner
    from anomalens.server.app import ServeConfig, create_app

    metrics_inv.save(tmp_path / "metrics")
    model = ScriptedToolModel([ScriptedToolModel.call("describe_feature", case_id="c7", name="memory"),
                               ScriptedToolModel.answer(("range", ["feature:memory"], {"position": "above"}))])
    app = create_app({"metrics": tmp_path / "metrics"}, ServeConfig(no_auth=True, mcp=False, state_dir=str(tmp_path / "s")),
                     reasoner=LLMReasoner(model))
    row = {k: float(v) for k, v in cases().loc["c7"].items()}
    with TestClient(app) as client:
        sid = client.post("/v1/sessions", json={"investigator": "metrics", "row": row}).json()["id"]
        r = client.post(f"/v1/sessions/{sid}/messages", json={"text": "what is a normal memory value?"})
        assert r.status_code == 200, r.text
    assert len(model.calls) == 2 and not model.script  # it looked up, then answered
    body = r.json()
    assert "memory" in body["text"] and body["tools"] == ["describe_feature", "answer"], body


def test_the_rooms_import_downward_only():
    """``python -m evals.import_graph`` over the package, imports inside functions included: no module
    of ``modalities/`` imports ``llm/``, ``agents/``, ``tools/`` or ``server/``, no import cycle is
    left (the Investigator and its series and log subclasses were the last: one Investigator now, each
    modality's flow in its package), and no modality package imports another."""
    from evals.import_graph import components, imports, modules, upward

    graph = imports(modules())
    assert upward(graph) == []
    assert components(graph) == []
    assert "anomalens.llm.template" in graph["anomalens.grounding.drafting"]  # the graph sees real edges
    assert "anomalens.modalities.logs.flow" in graph["anomalens.modalities.logs.modality"]
    packages = ("tabular", "series", "logs")
    rooms = {name: [m for m in graph if m == f"anomalens.modalities.{name}" or m.startswith(f"anomalens.modalities.{name}.")]
             for name in packages}
    assert all(len(mods) >= 1 for mods in rooms.values()) and len(rooms["logs"]) >= 6
    crossing = sorted((m, t) for name, mods in rooms.items() for m in mods for t in graph[m]
                      if any(t in other for n, other in rooms.items() if n != name))
    assert crossing == []  # the log modality builds on the shared row machinery (modalities/rows.py), not on tabular


# ---------------------------------------------------------------- an evidence item added by its modality
def test_a_modalitys_own_evidence_item_reaches_the_report_the_prompt_and_the_verifier(text_stats, monkeypatch):
    """A TOY evidence item type (``Shout``: how many upper-case letters the text holds), defined and
    registered here, contributed by a toy modality's ``case_items``: the verifier checks a claim
    citing it against its numbers, the prompt payload shows it, the markdown report has its section,
    the JSON round trip gives it back typed, and ``evidence.shouts`` reads it, with no edit to the
    schema, the verifier, the reasoner or the report (issue 42 item 4)."""
    from typing import Literal

    import pandas as pd

    import anomalens.modalities as modalities
    import anomalens.schema as schema
    from anomalens import Investigator
    from anomalens.grounding.verifier import verify_claim
    from anomalens.llm.reasoner import evidence_payload
    from anomalens.modalities.base import CaseItems
    from anomalens.schema import Claim, EvidenceItem, Report, md

    monkeypatch.setattr(schema, "_ITEM_TYPES", dict(schema._ITEM_TYPES))
    monkeypatch.setattr(schema, "_BY_PLURAL", dict(schema._BY_PLURAL))

    @schema.register_item
    class Shout(EvidenceItem):
        kind: Literal["shout"] = "shout"
        plural = "shouts"
        letters: int

        def units(self):
            return {"upper"}

        def numbers(self):
            return [float(self.letters)]

        def label(self):
            return f"shout-{self.letters}"

        def brief(self, evidence):
            return {"shouting": self.letters, "p_value": evidence.verdict.p_value, "tags": ["loud", "caps"]}

        def quote(self):
            return "input", "SHOUTED \x1b[31mTEXT"

        @classmethod
        def markdown(cls, items, evidence, plot):
            return ["", "## Shouting", *[f"- {md(i.id)}: {i.letters} upper-case letters" for i in items]]

    class TextShout(text_stats):
        name = "text_shout"

        def case_items(self, X, inspection, hits, top, scale):
            items = super().case_items(X, inspection, hits, top, scale)
            upper = self.UNITS.index("upper")
            return [CaseItems(it.attributions, it.exemplars, it.restoration,
                              parts=[Shout(id="shout:upper", letters=int(X[i, upper]))]) for i, it in enumerate(items)]

        @classmethod
        def parse_claim(cls, claim, evidence):
            # its own reading of free text: a sentence about its shouts is shown once the verifier's
            # generic checks (ids, names against the item's units, numbers against its numbers) pass
            if all(c.startswith("shout:") for c in claim.cites):
                return None
            return super().parse_claim(claim, evidence)

    modalities.register(TextShout)
    words = ["get", "user", "list", "page", "item", "cart"]
    rng = np.random.default_rng(1)
    normal = [f"/{rng.choice(words)}/{rng.choice(words)}?id={rng.integers(1, 999)}" for _ in range(300)]
    inv = Investigator.fit(pd.DataFrame({"text": normal}), modality="text_shout", detector="pca", random_state=0)
    rep = inv.analyze(["/ITEM?ID=1 OR 1=1 UNION SELECT PASSWORD"], case_id="attack")
    ev = rep.evidence
    assert [type(p).__name__ for p in ev.parts] == ["Shout"] and ev.shouts[0].letters == 27
    assert evidence_payload(ev)["shouts"] == {"shout:upper": {"letters": 27}}
    assert "## Shouting" in rep.to_markdown() and "- shout:upper: 27 upper-case letters" in rep.to_markdown()
    back = Report.model_validate_json(rep.model_dump_json())
    assert back == rep and type(back.evidence.parts[0]) is Shout
    # the surfaces' listings read the item's label, brief and quotes (the CLI's case table: its columns)
    from rich.console import Console

    from anomalens.cli.cases import case_table

    assert ev.label() == "shout-27" and ev.brief()["shouting"] == 27 and ev.quotes() == [("input", "SHOUTED \x1b[31mTEXT")]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(case_table("toy cases", [rep], "Counts"))
    table = console.export_text()
    assert all(c in table for c in ("shouting", "p-value", "tags", "27", "loud, caps")) and "verdict" not in table
    assert verify_claim(Claim(text="The 'upper' count is 27.", cites=["shout:upper"]), ev) is None
    wrong = verify_claim(Claim(text="The 'upper' count is 31.", cites=["shout:upper"]), ev)
    assert wrong is not None and "31" in wrong
    named = verify_claim(Claim(text="The 'digits' count is 27.", cites=["shout:upper"]), ev)
    assert named is not None and "digits" in named  # the item speaks about 'upper' only
    with pytest.raises(ValueError, match="kind must be one of"):
        Report.model_validate({**rep.model_dump(mode="json"),
                               "evidence": {**rep.evidence.model_dump(mode="json"), "parts": [{"kind": "whisper"}]}})
