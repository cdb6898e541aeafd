"""The MCP server (``anomalens mcp``) through the SDK's own client over stdio: tools listed, a case put
under investigation, explained, then compared with another within the same session, an error
observation for an unknown case, and a log triage whose incidents the tools then act on."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from anomalens.data.log_synthesis import inject_logs


@pytest.fixture(scope="module")
def folders(serve_models):
    return serve_models


def _run(coro):
    return asyncio.run(coro)


def test_mcp_over_stdio_keeps_the_investigation_per_session(folders):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "anomalens.cli", "mcp", str(folders / "metrics"),
                                                                 str(folders / "web")],
                                   env={**os.environ, "ANOMALENS_LLM": "template"})
    sample = inject_logs(150, 8, seed=2)

    async def session():
        async with Client(params) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"add_case", "explain_case", "compare_cases", "nearest_exemplars", "restore_case", "triage_logs",
                    "show_lines", "describe_template", "incident_timeline", "batch_verdicts"} <= names
            inv = (await c.call_tool("list_investigators", {})).structured_content["investigators"]
            assert {i["name"]: i["modality"] for i in inv} == {"metrics": "tabular", "web": "logs"}
            a = (await c.call_tool("add_case", {"investigator": "metrics", "case_id": "7",
                                                "row": {"cpu": 0.1, "memory": 9.0, "latency": 0.0, "errors": 0.2}}))
            assert a.structured_content["anomalous"] and not a.is_error
            ex = (await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "7"})).structured_content
            assert ex["data"][0]["id"] == "feature:memory" and "feature:memory" in ex["text"]
            await c.call_tool("add_case", {"investigator": "metrics", "case_id": "12",
                                           "row": {"cpu": 0.0, "memory": 0.1, "latency": 0.1, "errors": 0.0}})
            cmp = (await c.call_tool("compare_cases", {"investigator": "metrics", "case_id": "7",
                                                       "other_id": "12"})).structured_content
            assert cmp["data"]["id"] == "compare:12" and cmp["data"]["differences"][0]["unit"] == "memory"
            # a tool argument called 'name' (issue 40 #11: it collided with the wrapper's own and failed every call)
            feat = await c.call_tool("describe_feature", {"investigator": "metrics", "name": "memory", "case_id": "7"})
            assert not feat.is_error and "memory" in feat.structured_content["text"], feat.content
            # a used case id with other values is refused (it returned the old case); the same row again is a retry
            again = await c.call_tool("add_case", {"investigator": "metrics", "case_id": "7",
                                                   "row": {"cpu": 0.0, "memory": 0.1, "latency": 0.1, "errors": 0.0}})
            assert again.is_error and "already under investigation with other values" in again.content[0].text
            same = await c.call_tool("add_case", {"investigator": "metrics", "case_id": "7",
                                                  "row": {"cpu": 0.1, "memory": 9.0, "latency": 0.0, "errors": 0.2}})
            assert not same.is_error and same.structured_content["anomalous"]
            bad = await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "99"})
            assert bad.is_error and "case_id must be one of" in bad.content[0].text
            bad = await c.call_tool("score_case", {"investigator": "nope"})
            assert bad.is_error and "investigator must be one of ['metrics', 'web']" in bad.content[0].text
            t = (await c.call_tool("triage_logs", {"investigator": "web", "text": sample.text()})).structured_content
            assert t["incidents"] and t["incidents"][0]["case_id"] == "incident-1"
            first = t["incidents"][0]  # the incident's row, as the CLI's triage table shows it
            assert first["incident"] == 1 and first["abnormal_templates"] and 0 <= first["p_value"] <= 1
            assert first["lines"] >= 1 and first["top_line"]
            lines = (await c.call_tool("show_lines", {"investigator": "web", "case_id": "incident-1"})).structured_content
            assert ">>" in lines["text"] and lines["data"][0]["id"].startswith("line:")
            tid = lines["data"][0]["template_id"]
            tpl = (await c.call_tool("describe_template", {"investigator": "web", "template_id": tid})).structured_content
            assert tpl["data"]["template_id"] == tid
            assert json.dumps(tpl)  # plain JSON all the way
            # the investigators as resources
            uris = {str(r.uri) for r in (await c.list_resources()).resources}
            assert "anomalens://investigators" in uris
            listed = json.loads((await c.read_resource("anomalens://investigators")).contents[0].text)
            assert [i["name"] for i in listed["investigators"]] == ["metrics", "web"]
            one = json.loads((await c.read_resource("anomalens://investigators/metrics")).contents[0].text)
            memory = next(u for u in one["unit_list"] if u["name"] == "memory")
            assert one["n_train"] > 0 and memory["normal_low"] < memory["normal_median"] < memory["normal_high"]

    _run(session())


def test_mcp_over_streamable_http_keeps_each_clients_cases_behind_the_api_keys(folders, tmp_path):
    """``anomalens serve`` answers MCP at /mcp: without a key 401; with one, the SDK's client opens a
    session, adds a case and explains it by id; the session is refused to another key, and a tool
    without a session says what to do."""
    import httpx
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from test_server import KEY, _serve

    other = "another-key-0123456789"
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n{other}\n")
    ctx, _, url = _serve(folders, "--workers", "1", keys=keys)

    def client(key: str) -> Client:
        return Client(streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers={"X-API-Key": key})))

    async def session():
        async with client(KEY) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"open_session", "close_session", "add_case", "explain_case", "triage_logs"} <= names
            loose = await c.call_tool("add_case", {"investigator": "metrics", "row": {"cpu": 0.0, "memory": 0.0,
                                                                                     "latency": 0.0, "errors": 0.0}})
            assert loose.is_error and "session is required over HTTP: call open_session" in loose.content[0].text
            sid = (await c.call_tool("open_session", {})).structured_content["session"]
            a = await c.call_tool("add_case", {"investigator": "metrics", "case_id": "7", "session": sid,
                                               "row": {"cpu": 0.1, "memory": 9.0, "latency": 0.0, "errors": 0.2}})
            assert not a.is_error and a.structured_content["anomalous"]
            ex = (await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "7",
                                                     "session": sid})).structured_content
            assert ex["data"][0]["id"] == "feature:memory"
            await c.call_tool("add_case", {"investigator": "metrics", "case_id": "12", "session": sid,
                                           "row": {"cpu": 0.0, "memory": 0.1, "latency": 0.1, "errors": 0.0}})
            cmp = (await c.call_tool("compare_cases", {"investigator": "metrics", "case_id": "7", "other_id": "12",
                                                       "session": sid})).structured_content
            assert cmp["data"]["differences"][0]["unit"] == "memory"
            bad = await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "99", "session": sid})
            assert bad.is_error and "case_id must be one of" in bad.content[0].text
            fresh = (await c.call_tool("open_session", {})).structured_content["session"]
            empty = await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "7", "session": fresh})
            assert empty.is_error and "no case of 'metrics'" in empty.content[0].text  # sessions do not share cases
        async with client(other) as c:
            foreign = await c.call_tool("explain_case", {"investigator": "metrics", "case_id": "7", "session": sid})
            assert foreign.is_error and "session must be an id that open_session returned" in foreign.content[0].text
        return sid

    try:
        assert httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 401
        _run(session())
    finally:
        ctx.__exit__(None, None, None)


def test_workspaces_are_owned_bounded_and_expire():
    import time

    from anomalens.errors import InputError
    from anomalens.server.mcp_server import Workspaces

    ws = Workspaces(max_sessions=2, ttl=0.3)
    a = ws.open("alice")
    ws.get(a, "alice")["metrics"] = "box"
    assert ws.get(a, "alice") == {"metrics": "box"}
    with pytest.raises(InputError, match="session must be an id that open_session returned"):
        ws.get(a, "mallory")  # another key: as if it did not exist
    assert not ws.close(a, "mallory") and ws.get(a, "alice")
    b, c = ws.open("alice"), ws.open("alice")  # a third workspace: the least recently used (a) goes
    with pytest.raises(InputError):
        ws.get(a, "alice")
    assert ws.get(b, "alice") == {} and ws.get(c, "alice") == {}
    assert ws.get("stdio", "", create=True) == {}  # opened on first use
    time.sleep(0.4)
    with pytest.raises(InputError, match="sessions end after"):
        ws.get(c, "alice")
    assert ws.close(ws.open("bob"), "bob")
