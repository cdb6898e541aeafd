"""The log modality as a package: ``reader.py`` (log files, formats, gzip, stdin), ``parser.py``
(Drain3-style templates with masks), ``cases.py`` (sessions and windows of lines), ``modality.py``
(templates as units, the normal profile, calibration, evidence items), ``flow.py`` (fit of the
next-event and count models, verdicts, evidence, triage into ranked incidents) and ``claims.py``."""

from __future__ import annotations

from anomalens.modalities.logs.cases import LogCase
from anomalens.modalities.logs.flow import LogFlow, Triage, as_cases
from anomalens.modalities.logs.modality import LogModality, line_id

__all__ = ["LogCase", "LogFlow", "LogModality", "Triage", "as_cases", "line_id"]
