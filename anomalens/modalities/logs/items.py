"""The evidence items a log case contributes (``Evidence.parts``): its **incident** (when triage
merged it with others), its most surprising **lines**, the **templates** it cites and the
**expected sequence** around its most surprising place. Raw log text in them is untrusted: shown
escaped in reports, inside data blocks in prompts, never written into a claim."""

from __future__ import annotations

from typing import Any, Literal

from anomalens.schema import Evidence, EvidenceItem, code_span, fmt, md, register_item

__all__ = ["ExpectedSequence", "Incident", "LogLine", "LogTemplate"]


@register_item
class Incident(EvidenceItem):
    """Anomalous log cases merged into one incident (cases sharing their most abnormal template, or
    adjacent windows), ranked by their strongest case's p-value."""

    kind: Literal["incident"] = "incident"
    plural = "incident"
    single = True

    id: Literal["incident"] = "incident"
    index: int  # rank: 1 is the most anomalous
    start: str | None = None  # time of the first line (None when the logs carry no times)
    end: str | None = None
    n_cases: int
    n_lines: int
    cases: list[str]  # case keys (sessions or windows), strongest first (at most 20)
    templates: list[str]  # the abnormal templates of its cases, most frequent first
    unseen: list[str]  # templates never seen in normal logs
    p_value: float  # its strongest case's p-value

    def units(self) -> set[str]:
        return set(self.templates) | set(self.unseen)

    def numbers(self) -> list[float]:
        return [float(self.index), float(self.n_cases), float(self.n_lines), self.p_value]

    def stamps(self) -> list[str]:
        return [t for t in (self.start, self.end) if t]

    def label(self) -> str:
        return f"incident-{self.index}"

    def brief(self, evidence: Evidence) -> dict[str, Any]:
        where = next(iter(evidence.quotes()), None)
        return {"incident": self.index, "p_value": self.p_value, "cases": self.n_cases, "lines": self.n_lines,
                "start": self.start, "abnormal_templates": self.templates[:5], "never_seen": self.unseen[:5],
                "top_line": None if where is None else where[0]}

    def headline(self) -> tuple[str, str]:
        span = f", {self.start} to {self.end}" if self.start else ""
        return (f"Incident {self.index}", f"{self.n_cases} case(s), {self.n_lines} lines{span}; abnormal templates "
                f"{', '.join(self.templates[:5])}. Try /lines, /timeline, /template <id>.")

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        i = items[0]
        span = f" from {md(i.start)} to {md(i.end)}" if i.start else ""
        return ["", f"## Incident {i.index}", "", f"- {i.n_cases} case(s), {i.n_lines} line(s){span}; strongest case "
                f"p-value {fmt(i.p_value)}", f"- cases: {md(', '.join(i.cases))}",
                f"- abnormal templates: {md(', '.join(i.templates) or 'none')}",
                f"- templates never seen in normal logs: {md(', '.join(i.unseen) or 'none')}"]


@register_item
class LogLine(EvidenceItem):
    """One raw line of a log case: where it is, its template, and how probable the next-event model
    of normal logs found it in its context. ``text`` is the raw line (cut)."""

    kind: Literal["line"] = "line"
    plural = "lines"

    id: str  # "line:<file>:<n>"
    source: str
    lineno: int
    template_id: str  # "E<n>" (learnt from normal logs) or "N<n>" (never seen in normal logs)
    seen: bool  # the template was seen in the normal training logs
    probability: float  # the next-event model's probability of this event at this place
    expected: str | None = None  # the template the model found most likely here, when it is another one
    expected_probability: float | None = None
    time: str | None = None
    text: str = ""

    def units(self) -> set[str]:
        return {self.template_id, *([self.expected] if self.expected else [])}

    def numbers(self) -> list[float]:
        nums = [float(self.lineno), self.probability, 100 * self.probability]
        return nums + ([self.expected_probability, 100 * self.expected_probability]
                       if self.expected_probability is not None else [])

    def stamps(self) -> list[str]:
        return [self.time] if self.time else []

    def payload(self) -> dict[str, Any]:
        return self.model_dump(exclude={"id", "kind", "source", "lineno"})

    def quote(self) -> tuple[str, str]:
        return f"{self.source}:{self.lineno}", self.text

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        out = ["", "## Most surprising lines", "", "| line | template | probability here | expected instead | text |",
               "|---|---|---:|---|---|"]
        for ln in items:
            exp = "-" if ln.expected is None else f"{md(ln.expected)} ({fmt(ln.expected_probability)})"
            prob = fmt(ln.probability) if ln.seen else f"{fmt(ln.probability)} (never seen in normal logs)"
            out.append(f"| {md(ln.source)}:{ln.lineno} | {md(ln.template_id)} | {prob} | {exp} | `{code_span(ln.text)}` |")
        return out


@register_item
class LogTemplate(EvidenceItem):
    """A template of the case: its text (untrusted) and how often normal logs hold it."""

    kind: Literal["template"] = "template"
    plural = "templates"

    id: str  # "template:<id>"
    template_id: str
    text: str
    seen: bool
    training_lines: int  # lines of the normal logs with this template
    training_share: float  # of all normal lines
    normal_cases: float  # share of normal cases that hold it at least once

    def units(self) -> set[str]:
        return {self.template_id}

    def numbers(self) -> list[float]:
        return [float(self.training_lines), self.training_share, 100 * self.training_share, self.normal_cases,
                100 * self.normal_cases]

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        return ["", "## Template texts", "", "| template | text | normal lines | share of normal cases |",
                "|---|---|---:|---:|",
                *[f"| {md(t.template_id)} | `{code_span(t.text)}` | {t.training_lines} | {100 * t.normal_cases:.1f}% |"
                  for t in items]]


@register_item
class ExpectedSequence(EvidenceItem):
    """The case's events around its most surprising place, beside what the model of normal logs
    expected there (the restoration of a log case)."""

    kind: Literal["sequence"] = "sequence"
    plural = "sequence"
    single = True

    id: Literal["sequence"] = "sequence"
    observed: list[str]  # template ids, in order
    expected: list[str]  # the most likely template at each place ("END": the case should have ended)
    locations: list[str]  # "<file>:<n>" of each observed event
    first: int  # position of the first shown event in the case (0-based)

    def units(self) -> set[str]:
        return set(self.observed) | set(self.expected)

    def numbers(self) -> list[float]:
        return [float(len(self.observed))]

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        q = items[0]
        return ["", "## Expected sequence", "", "| line | observed | expected by the model of normal logs |", "|---|---|---|",
                *[f"| {md(loc)} | {md(o)} | {md(e) if e != o else '(same)'} |"
                  for loc, o, e in zip(q.locations, q.observed, q.expected)]]
