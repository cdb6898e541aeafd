"""Input validation at the detector boundary.

Every message names the argument, what was expected and what was received. Row contents are
never echoed, only positions and column names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anomalens.errors import InputError
from anomalens.text import names

__all__ = ["check_dims", "check_int", "check_matrix", "check_probability", "check_positive_int"]


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    kind = type(x).__name__
    return f"{kind} of shape {tuple(shape)}" if shape is not None else kind


def _is_numeric(dtype: Any) -> bool:
    try:  # complex numbers are numbers to numpy, but a detector would drop their imaginary part
        return bool((np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating))
                    or np.issubdtype(dtype, np.bool_))
    except TypeError:  # pandas extension dtypes (string, category, ...) that numpy cannot interpret
        return bool(getattr(dtype, "_is_numeric", False))


def check_matrix(
    X: Any,
    *,
    name: str = "X",
    n_features: int | None = None,
    feature_names: Sequence[str] | None = None,
    min_rows: int = 1,
) -> tuple[np.ndarray, list[str] | None]:
    """Turn ``X`` into a finite float64 array of shape (n_samples, n_features).

    Args:
        X: a pandas DataFrame, a numpy array or a nested sequence of numbers.
        name: the argument's name, used in messages.
        n_features: the number of columns expected (the fitted width), if known.
        feature_names: the fitted column names; a DataFrame must carry the same ones.
        min_rows: the fewest rows accepted.

    Returns:
        The array and the DataFrame's column names (None for arrays).

    Raises:
        InputError: for None, empty, 1-D or >2-D input, non-numeric values, NaN/inf,
            or a width or column set that differs from the fitted one.
    """
    if X is None:
        raise InputError(f"{name} must be a 2-D array or DataFrame (n_samples, n_features), got None")
    columns: list[str] | None = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # pandas DataFrame, without importing pandas
        columns = [str(c) for c in X.columns]
        non_numeric = [c for c, dt in zip(columns, X.dtypes) if not _is_numeric(dt)]
        if non_numeric:
            shown = names(non_numeric)[1:-1] if len(non_numeric) <= 5 else names(non_numeric)
            raise InputError(
                f"{name} must hold numeric columns only; got non-numeric column(s) {shown} "
                f"with dtype(s) {', '.join(str(X[c].dtype) for c in non_numeric[:5])}"
            )
        if feature_names is not None and columns != list(feature_names):
            missing = [c for c in feature_names if c not in columns]
            extra = [c for c in columns if c not in feature_names]
            if missing or extra:
                raise InputError(
                    f"{name} columns differ from the fitted ones: missing {names(missing)}, unexpected {names(extra)} "
                    f"(expected {len(feature_names)} columns)"
                )
            X = X[list(feature_names)]  # same set, other order: reorder rather than misread
            columns = list(feature_names)
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged nested lists and the like
            raise InputError(f"{name} must be a rectangular 2-D array, got {_describe(X)} that numpy cannot read") from exc
        if arr.dtype == object or not _is_numeric(arr.dtype):
            raise InputError(f"{name} must be numeric (int, float or bool), got dtype {arr.dtype}")
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1:
        raise InputError(
            f"{name} must be 2-D (n_samples, n_features), got a 1-D array of shape {arr.shape}; "
            "use X.reshape(1, -1) for one row or X.reshape(-1, 1) for one feature"
        )
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features), got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] == 0:
        raise InputError(
            f"{name} must have at least {min_rows} row(s) and 1 column, got shape {arr.shape}"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"{name} must have {n_features} features (as in fit), got {arr.shape[1]}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)
        r, c = int(bad[0, 0]), int(bad[0, 1])
        col = repr(columns[c]) if columns else str(c)
        raise InputError(
            f"{name} must be finite (no NaN or inf); got {len(bad)} non-finite value(s), "
            f"first at row {r}, column {col}"
        )
    return np.ascontiguousarray(arr), columns


def check_probability(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """Check that ``value`` is a float strictly between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not low < float(value) < high:
        raise InputError(f"{name} must be a number in ({low}, {high}), got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """Check that ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_int(value: Any, name: str, *, low: int = 1, high: int | None = None, error: type[Exception] | None = None) -> int:
    """Check that ``value`` is an int in [low, high]; raises ``error`` (default ConfigError) naming it."""
    from anomalens.errors import ConfigError

    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise (error or ConfigError)(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


def check_dims(value: Any, name: str, *, allow_none: bool = True) -> tuple[int, ...] | None:
    """Check a layer-width list: None (automatic) or a non-empty list of positive ints."""
    from anomalens.errors import ConfigError

    if value is None and allow_none:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value or \
            any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
        raise ConfigError(f"{name} must be a non-empty list of positive ints (e.g. [64, 32])"
                          f"{' or null' if allow_none else ''}, got {value!r}")
    return tuple(int(v) for v in value)
