"""The investigation tools, each declared once (``registry.tool``), and the LangChain tools made from
them over a Toolbox: thin typed wrappers, each returning a short text for the model and the full
pydantic object as the artifact (``response_format="content_and_artifact"``).

Bad arguments (an unknown case, feature or detector; an out-of-range number) come back to the
model as an error observation that lists the valid choices; real bugs still raise.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from anomalens.detectors import list_detectors
from anomalens.errors import InputError
from anomalens.schema import fmt
from anomalens.tools.registry import TOOLS, ToolSpec, tool
from anomalens.tools.toolbox import Toolbox

__all__ = ["DetectorCard", "make_tool", "make_tools", "TOOL_NAMES"]


class DetectorCard(BaseModel):
    name: str
    family: str
    modalities: list[str]
    score: str  # what the score means
    params: list[str]
    in_use: bool  # the investigator's detector


# ---------------------------------------------------------------- argument schemas
class CaseArgs(BaseModel):
    case_id: str | None = Field(None, description="id of a case under investigation; omit for the case in focus")


class ExplainArgs(CaseArgs):
    top: int = Field(5, ge=1, le=50, description="how many features, most responsible first")


class NeighborArgs(CaseArgs):
    k: int = Field(5, ge=1, le=50, description="how many nearest normal exemplars")


class CompareArgs(CaseArgs):
    other_id: str = Field(description="another case id, or a normal exemplar as 'exemplar:<row id>'")


class UnitArgs(CaseArgs):
    name: str = Field(description="a feature (column) name exactly as in the data")


class RegionArgs(CaseArgs):
    region: str = Field(description='an image region "<row>,<col>" on the grid, as the report names it (e.g. "2,3")')


class LinesArgs(CaseArgs):
    around: int = Field(2, ge=0, le=20, description="lines of the same case to show before and after each")


class TemplateArgs(BaseModel):
    template_id: str = Field(description="a log template id, e.g. 'E5' (or 'N1' for one never seen in normal logs)")


class DetectorArgs(BaseModel):
    name: str | None = Field(None, description="a registered detector name; omit for the one in use")


class BatchArgs(BaseModel):
    case_ids: list[str] | None = Field(None, description="case ids; omit for every case under investigation")
    alpha: float = Field(0.05, gt=0, lt=1, description="false discovery rate to control")


class NoArgs(BaseModel):
    pass


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        parts.append(f"{where}: {e['msg']} (got {e.get('input')!r:.60})")
    return "invalid arguments: " + "; ".join(parts)


def make_tool(box: Toolbox, spec: ToolSpec) -> BaseTool:
    """The declared tool ``spec`` as a LangChain tool over ``box``."""

    def run(**kwargs: Any) -> tuple[str, Any]:
        try:
            return spec.run(box, **kwargs)
        except InputError as exc:  # the model's mistake: an observation, not a crash
            raise ToolException(str(exc)) from exc

    return StructuredTool.from_function(
        func=run, name=spec.name, description=spec.description, args_schema=spec.args,
        response_format="content_and_artifact", handle_tool_error=True, handle_validation_error=_validation_message,
    )


def make_tools(box: Toolbox) -> list[BaseTool]:
    """The declared tools (``registry.TOOLS``: the built-in ones are ``TOOL_NAMES``) as LangChain
    tools over ``box``."""
    return [make_tool(box, spec) for spec in TOOLS.values()]


# ---------------------------------------------------------------- the tools, each declared once
@tool("score_case", CaseArgs, command="/score", usage="/score: the verdict, score and p-value")
def score_case(box: Toolbox, case_id: str | None = None):
    """Score a case: the calibrated verdict (anomalous or not), anomaly score and p-value."""
    v = box.evidence(case_id).verdict
    word = "ANOMALOUS" if v.anomalous else "not anomalous"
    return (f"case {box.resolve(case_id)}: {word}; score {fmt(v.score)}, p-value {fmt(v.p_value)} "
            f"(cut-off {fmt(v.cutoff)}, detector {v.detector})", v)


@tool("explain_case", ExplainArgs, command="/why", usage="/why: the units (features, channels, templates) behind the verdict")
def explain_case(box: Toolbox, case_id: str | None = None, top: int = 5):
    """Explain a case: the units (features, channels or templates) most responsible for its score, with their
    normal ranges."""
    atts = box.full_evidence(case_id).attributions[:top]
    lines = [f"{a.id}: value {fmt(a.value)}, normal {fmt(a.normal_low)} to {fmt(a.normal_high)}, "
             f"{fmt(100 * a.share)}% of the score{', abnormal' if a.abnormal else ''}" for a in atts]
    return "\n".join(lines), atts


@tool("nearest_exemplars", NeighborArgs, command="/neighbors", words=("k",),
      usage="/neighbors [k]: the nearest normal exemplars (k a positive number, default 5)")
def nearest_exemplars(box: Toolbox, case_id: str | None = None, k: int = 5):
    """Find the nearest normal exemplars of a case (the normal training cases most like it)."""
    ev = box.evidence(case_id)
    hits = ev.exemplars[:k] if k <= len(ev.exemplars) else box.investigator.evidence(
        box.row(case_id), alpha=box.alpha, k=k, top=1, case_id=ev.case_id).exemplars
    return "\n".join(f"{e.id}: distance {fmt(e.distance)}" for e in hits) or "the store holds no exemplars", hits


@tool("restore_case", CaseArgs, command="/restore", usage="/restore: the normal version of the case")
def restore_case(box: Toolbox, case_id: str | None = None):
    """Restore a case: its normal version (what the model says it should have looked like) and the biggest
    changes."""
    r = box.evidence(case_id).restoration
    text = "; ".join(f"{d.unit}: {fmt(d.observed)} -> {fmt(d.restored)}" for d in r.deltas[:5])
    return f"normal version changes {text}; its score would be {fmt(r.score_after)}", r


@tool("compare_cases", CompareArgs, command="/compare", words=("other_id",),
      usage="/compare <case id | exemplar:<id>>: the case beside another")
def compare_cases(box: Toolbox, other_id: str, case_id: str | None = None):
    """Compare a case with another case under investigation or a normal exemplar ('exemplar:<id>'): distance
    and the units that differ most."""
    cid = box.resolve(case_id)
    c = box.investigator.compare(box.row(cid), box.row(other_id), other_id=other_id, alpha=box.alpha)
    diffs = "; ".join(f"{d.unit}: {fmt(d.value)} vs {fmt(d.other)}" for d in c.differences)
    return f"{c.id}: distance {fmt(c.distance)}; {other_id} has p-value {fmt(c.other_p_value)}; {diffs}", c


@tool("describe_feature", UnitArgs, command="/feature", words=("name",),
      usage="/feature <name>: a unit's value, part in the score and normal range")
def describe_feature(box: Toolbox, name: str, case_id: str | None = None):
    """Describe a unit (a feature, channel or template): its normal range in the training data and its value
    and part in the case."""
    p = box.investigator.unit_profile(name)
    a = box.unit_attribution(name, case_id)
    qs = ", ".join(f"{q} {fmt(v)}" for q, v in p.quantiles.items())
    return (f"{a.id}: value {fmt(a.value)} ({a.position} the normal range), {fmt(100 * a.share)}% of the score; "
            f"{p.id}: training quantiles {qs}", (p, a))


@tool("plot_case", CaseArgs, modalities={"series", "images"}, command="/plot",
      usage="/plot: draw the case to a PNG (a series' event; an image with its map)",
      image=True)  # over MCP the picture itself, not a path on the server's disk
def plot_case(box: Toolbox, case_id: str | None = None):
    """Draw the case to a PNG: an event of a series (its channels, the restored values, the nearest normal
    window and the channel x time attribution) or an image (the image, its anomaly map with the top regions
    boxed, the restoration, the nearest normal image and the matched patch); returns the file's path."""
    path = box.plot(case_id)
    return f"{box.resolve(case_id)}: plot written to {path}", str(path)


@tool("describe_region", RegionArgs, modalities={"images"}, command="/region", words=("region",),
      usage="/region <row>,<col>: a region's anomaly against the normal level, where it is, the normal patch it matched")
def describe_region(box: Toolbox, region: str, case_id: str | None = None):
    """Describe an image region: its highest anomaly-map cell against the normal cells' level, its share
    of the map above that level, its zone and box, its mean intensity against its normal range, and the
    normal patch it matched (image and box) when it is among the top regions."""
    d = box.region(region, case_id)
    a, g, match = d["attribution"], d["level"], d["match"]
    state = "above" if g.peak_cell > g.normal_level else "not above"
    text = (f"{g.id}: in the {g.zone} zone, box {g.box}; its highest cell {fmt(g.peak_cell)}, {state} the normal "
            f"level {fmt(g.normal_level)}; {fmt(100 * g.share)}% of the map above the normal level; {a.id}: mean "
            f"intensity {fmt(a.value)} ({a.position} its normal range {fmt(a.normal_low)} to {fmt(a.normal_high)})")
    if match is not None:
        text += (f"; {match.id}: nearest normal patch in {match.normal_image!r} at {match.normal_box}, "
                 f"distance {fmt(match.distance)}")
    return text, tuple(x for x in (g, a, match) if x is not None)


@tool("show_lines", LinesArgs, modalities={"logs"}, command="/lines",
      usage="/lines: a log incident's most surprising lines, in context")
def show_lines(box: Toolbox, case_id: str | None = None, around: int = 2):
    """Show a log incident's most surprising lines (file:line, template, probability in context, the
    template the model expected) with the lines around them."""
    text, lines = box.lines(case_id, around=around)
    return text, lines


@tool("describe_template", TemplateArgs, modalities={"logs"}, command="/template", words=("template_id",),
      usage="/template <id>: a log template's text, frequency and usual neighbours", needs_cases=False)
def describe_template(box: Toolbox, template_id: str):
    """Describe a log template: its text, how often normal logs hold it, and the templates that
    usually come before and after it."""
    t, nb = box.template(template_id)
    fmt_nb = lambda xs: ", ".join(f"{k} ({100 * v:.0f}%)" for k, v in xs) or "none"  # noqa: E731
    text = (f"{t.id}: {t.text[:300]!r}; " + (f"{t.training_lines} normal lines ({fmt(100 * t.training_share)}%), "
            f"in {fmt(100 * t.normal_cases)}% of normal cases" if t.seen else "never seen in normal logs")
            + f"; usually after {fmt_nb(nb['before'])}; usually before {fmt_nb(nb['after'])}")
    return text, t


@tool("incident_timeline", CaseArgs, modalities={"logs"}, command="/timeline",
      usage="/timeline: a log incident's cases in order")
def incident_timeline(box: Toolbox, case_id: str | None = None):
    """The timeline of a log incident: its cases in input order with their span, lines, p-value and
    most abnormal template."""
    rows = box.timeline(case_id)
    text = "\n".join(f"{r['case']}: {r['start'] or r['first_line']} .. {r['end'] or '-'}, {r['lines']} lines, "
                     f"p-value {fmt(r['p_value'])}, {r['template']}" for r in rows)
    return text or "no timeline kept for this case", box.evidence(case_id).incident


@tool("list_detectors", NoArgs, command="/detectors", usage="/detectors: the registered detectors", needs_cases=False)
def list_detectors_(box: Toolbox):
    """List the registered detectors with their family and what their score means."""
    cards = [_card(box, i.name) for i in list_detectors()]
    return "\n".join(f"{c.name} ({c.family}): {c.score}" for c in cards), cards


@tool("describe_detector", DetectorArgs, needs_cases=False)
def describe_detector(box: Toolbox, name: str | None = None):
    """Describe a detector (default: the one in use): family, modalities, score meaning, parameters."""
    c = _card(box, name or box.investigator.detector_name)
    return f"{c.name} ({c.family}, {', '.join(c.modalities)}): {c.score}; parameters {', '.join(c.params)}", c


@tool("batch_verdicts", BatchArgs)
def batch_verdicts(box: Toolbox, case_ids: list[str] | None = None, alpha: float = 0.05):
    """Calibrated verdicts for many cases at once (default: every case under investigation), controlling the
    false discovery rate."""
    ids = [box.resolve(c) for c in case_ids] if case_ids else box.case_ids
    if not ids:
        raise InputError("case_ids: no cases are under investigation")
    import numpy as np

    verdicts = box.investigator.verdicts(np.stack([box.row(c) for c in ids]), alpha=alpha, ids=ids)
    flagged = [c for c, v in verdicts.items() if v.anomalous]
    text = f"{len(flagged)} of {len(ids)} cases anomalous at FDR {fmt(alpha)}: {flagged[:20]}"
    approx = [c for c in flagged if verdicts[c].approximate]
    if approx:
        text += f" ({len(approx)} by the calibration tail's approximate p-values: {approx[:10]})"
    held = [c for c, v in verdicts.items() if v.note]
    if held:  # significant alone, not within this batch: say so rather than "normal"
        text += f"; not significant at this batch size: {held[:10]} ({verdicts[held[0]].note})"
    return text, verdicts


def _card(box: Toolbox, name: str) -> DetectorCard:
    infos = {i.name: i for i in list_detectors()}
    key = name.lower()
    if key not in infos:
        raise InputError(f"unknown detector {name!r}; try one of {sorted(infos)}")
    i = infos[key]
    return DetectorCard(name=i.name, family=i.family, modalities=list(i.modalities), score=i.score,
                        params=i.params, in_use=i.name == box.investigator.detector_name.lower())


TOOL_NAMES = tuple(TOOLS)  # the built-in tools (a modality may declare more)
