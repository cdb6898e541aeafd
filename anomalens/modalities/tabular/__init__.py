"""The tabular modality: rows of named numeric features; evidence units ``feature:<name>``.

Its input, normal profile, evidence items and claims are the row machinery of
``modalities/rows.py`` (shared with the log modality's count vectors, see its docstring); a case
goes through ``RowFlow`` (``modalities/flow.py``), the default flow of a modality.
"""

from __future__ import annotations

from anomalens.modalities.rows import (
    PROFILE_LEVELS,
    RowModality,
    as_rows,
    check_csv_header,
    check_distinct_columns,
    column_list,
    select_columns,
)

__all__ = ["PROFILE_LEVELS", "TabularModality", "as_rows", "check_csv_header", "check_distinct_columns", "column_list",
           "select_columns"]


class TabularModality(RowModality):
    """Rows of named numeric features."""

    name = "tabular"
