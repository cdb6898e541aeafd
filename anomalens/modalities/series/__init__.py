"""The series modality as a package: ``modality.py`` (reading a series, windows, point calibration,
events, evidence items), ``flow.py`` (a case is an event: scoring, verdicts, evidence, plots),
``claims.py`` (its typed claims) and ``plot.py`` (an event's picture)."""

from __future__ import annotations

from anomalens.modalities.series.flow import SeriesFlow, SeriesScores
from anomalens.modalities.series.modality import (
    BLOCK_DIVISOR,
    FILLS,
    PointCalibration,
    SeriesData,
    SeriesModality,
    choose_window,
    dominant_period,
    read_series,
)

__all__ = ["BLOCK_DIVISOR", "FILLS", "PointCalibration", "SeriesData", "SeriesFlow", "SeriesModality", "SeriesScores",
           "choose_window", "dominant_period", "read_series"]
