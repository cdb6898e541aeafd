"""What every modality's claims share (the generic claim machinery of the modality rooms; a modality
never imports another's module, nor ``llm/``, for it)."""

from __future__ import annotations

from anomalens.schema import Claim, Evidence, fmt

__all__ = ["PROFILE_LEVELS", "column_list", "verdict_claim"]

PROFILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # training quantiles kept per unit


def column_list(names: list[str] | None) -> list[str]:
    """Column names given as repeated and/or comma-separated options."""
    return [c.strip() for n in names or [] for c in n.split(",") if c.strip()]


def verdict_claim(evidence: Evidence) -> Claim:
    """The typed verdict claim (every modality's)."""
    v = evidence.verdict
    if v.anomalous:
        text = (f"The case is anomalous: its score {fmt(v.score)} gives a p-value of {fmt(v.p_value)}, "
                f"below the cut-off {fmt(v.cutoff)} ({v.method}).")
    elif v.note and v.p_value < v.alpha:  # significant alone, not in its batch (or unresolvable): never "normal"
        text = (f"The case is not flagged in this batch, and not shown normal either: its score {fmt(v.score)} gives "
                f"a p-value of {fmt(v.p_value)}, below alpha {fmt(v.alpha)} but not below the batch's cut-off "
                f"{fmt(v.cutoff)} ({v.method}).")
    else:
        text = (f"The case is not anomalous: its score {fmt(v.score)} gives a p-value of "
                f"{fmt(v.p_value)}, not below the cut-off {fmt(v.cutoff)} ({v.method}).")
    return Claim(text=text, cites=["verdict"], kind="verdict")
