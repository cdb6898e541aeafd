"""The analyze graph: detect -> attribute -> retrieve exemplars -> restore -> explain -> verify.

Our own LangGraph ``StateGraph`` with typed state. Every step calls a tool (the graph computes no
score itself); explain and verify loop a bounded number of times, and the result is a ``Report``.

    report = analyze_case(Toolbox(inv, df), "17", reasoner=make_reasoner())
"""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph

from anomalens.grounding.drafting import Drafting, with_verdict
from anomalens.errors import AnomalensError, BackendError
from anomalens.llm.base import Draft, Reasoner
from anomalens.llm.template import TemplateReasoner
from anomalens.schema import Attribution, Evidence, Exemplar, Report, Restoration, Verdict
from anomalens.tools import Toolbox, make_tools

__all__ = ["AnalyzeState", "analyze_case", "build_analyze_graph"]


class AnalyzeState(TypedDict, total=False):
    case_id: str
    verdict: Verdict
    attributions: list[Attribution]
    exemplars: list[Exemplar]
    restoration: Restoration
    evidence: Evidence
    drafting: Drafting
    draft: Draft | None
    report: Report
    trace: list[str]  # the tools called, in order


def call_tool(tool: BaseTool, args: dict[str, Any], call_id: str) -> Any:
    """Run a tool as the model would and return its artifact; an error observation raises."""
    msg = tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})
    if msg.status == "error":
        raise AnomalensError(f"{tool.name} failed: {msg.content}")
    return msg.artifact


def build_analyze_graph(box: Toolbox, reasoner: Reasoner | None = None, *, max_rounds: int = 2):
    """The compiled analyze graph over ``box``; invoke it with ``{"case_id": ...}``."""
    tools = {t.name: t for t in make_tools(box)}
    reasoner = reasoner or TemplateReasoner()

    def step(name: str, key: str, **args: Any):
        def node(state: AnalyzeState) -> dict:
            out = call_tool(tools[name], {"case_id": state["case_id"], **args}, f"{name}-{state['case_id']}")
            return {key: out, "trace": [*state.get("trace", []), name]}
        return node

    def assemble(state: AnalyzeState) -> dict:
        ev = Evidence(case_id=state["case_id"], verdict=state["verdict"], attributions=state["attributions"],
                      exemplars=state["exemplars"], restoration=state["restoration"],
                      context=box.evidence(state["case_id"]).context)
        return {"evidence": ev, "drafting": Drafting(reasoner.name)}

    def explain(state: AnalyzeState) -> dict:
        d = state["drafting"]
        if isinstance(reasoner, TemplateReasoner):
            return {"draft": None}
        try:
            return {"draft": reasoner.draft(state["evidence"], d.feedback)}
        except BackendError as exc:
            d.fail(exc)
            return {"draft": None, "drafting": d}

    def verify(state: AnalyzeState) -> dict:
        d = state["drafting"]
        if state["draft"] is not None:
            d.add_draft(state["draft"], state["evidence"])
        return {"drafting": d}

    def again(state: AnalyzeState) -> str:
        d = state["drafting"]
        return "explain" if state["draft"] is not None and d.feedback and d.rounds < max_rounds else "report"

    def report(state: AnalyzeState) -> dict:
        ev = state["evidence"]
        state["drafting"].source = reasoner.name  # a server's model name is known once it has answered
        explanation = with_verdict(state["drafting"].finish(ev, lambda: TemplateReasoner().draft(ev)), ev)
        return {"report": Report(evidence=ev, explanation=explanation)}

    g = StateGraph(AnalyzeState)
    g.add_node("detect", step("score_case", "verdict"))
    g.add_node("attribute", step("explain_case", "attributions", top=box.top))
    g.add_node("retrieve", step("nearest_exemplars", "exemplars", k=box.k))
    g.add_node("restore", step("restore_case", "restoration"))
    g.add_node("assemble", assemble)
    g.add_node("explain", explain)
    g.add_node("verify", verify)
    g.add_node("report", report)
    g.add_edge(START, "detect")
    for a, b in [("detect", "attribute"), ("attribute", "retrieve"), ("retrieve", "restore"), ("restore", "assemble"),
                 ("assemble", "explain"), ("explain", "verify")]:
        g.add_edge(a, b)
    g.add_conditional_edges("verify", again, ["explain", "report"])
    g.add_edge("report", END)
    return g.compile()


def analyze_case(box: Toolbox, case_id: str | None = None, reasoner: Reasoner | None = None, *,
                 max_rounds: int = 2) -> Report:
    """Run the analyze graph for one case (default: the case in focus) and return its Report."""
    state = build_analyze_graph(box, reasoner, max_rounds=max_rounds).invoke({"case_id": box.resolve(case_id)})
    return state["report"]
