"""Loaders for the labelled data in ``../shared/data`` (see its README) and the standard split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anomalens.errors import InputError

__all__ = ["shared_data_dir", "adbench_path", "load_adbench", "semi_supervised_split"]


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$ANOMALENS_DATA_DIR``, else ``../shared/data`` beside the repo; None if absent."""
    env = os.environ.get("ANOMALENS_DATA_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "data" for p in here.parents[2:5]]
    candidates.append(Path.cwd().parent / "shared" / "data")
    for c in candidates:
        if (c / "adbench_classical").is_dir():
            return c
    return None


def adbench_path(name: str) -> Path:
    """Path of an ADBench classical set by short name ("cardio") or file stem ("6_cardio")."""
    root = shared_data_dir()
    if root is None:
        raise InputError("shared data not found: expected ../shared/data beside the repo or $ANOMALENS_DATA_DIR")
    folder = root / "adbench_classical"
    names = {p.stem: p for p in folder.glob("*.npz")}
    if name in names:
        return names[name]
    by_short = {stem.split("_", 1)[1].lower(): p for stem, p in names.items()}
    if name.lower() in by_short:
        return by_short[name.lower()]
    raise InputError(f"unknown ADBench data set {name!r}; valid names are {sorted(by_short)}")


def load_adbench(name: str) -> tuple[np.ndarray, np.ndarray]:
    """X (float64) and y (1 = anomaly) of an ADBench classical set."""
    with np.load(adbench_path(name), allow_pickle=False) as z:
        return z["X"].astype(np.float64), z["y"].astype(int)


def semi_supervised_split(
    X: np.ndarray, y: np.ndarray, seed: int, train_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADBench's semi-supervised protocol: train on a random half of the normal rows; test on the
    other normal half plus every anomaly. Returns (X_train, X_test, y_test)."""
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(y == 0)
    rng.shuffle(normal)
    n_train = int(round(train_share * len(normal)))
    train, test_normal = normal[:n_train], normal[n_train:]
    test = np.concatenate([test_normal, np.flatnonzero(y == 1)])
    return X[train], X[test], y[test]
