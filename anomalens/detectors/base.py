"""The detector contract and the shared torch training loop.

Every anomalens detector is used the same way::

    det = VAE(epochs=100, device="auto", random_state=0)   # __init__ stores hyper-parameters only
    det.fit(X_normal)                                      # returns self; holds out a calibration share
    det.decision_function(X)   # (n,) anomaly score, HIGHER = MORE ANOMALOUS
    det.pvalues(X)             # (n,) split-conformal p-values against the calibration scores
    det.predict(X, alpha=0.01) # (n,) 0/1, 1 where the p-value is below alpha
    det.predict_fdr(X, alpha=0.05)  # (n,) 0/1 with Benjamini-Hochberg false-discovery-rate control
    det.explain(X)             # Contributions: per-feature contributions, higher = more responsible
    det.restore(X)             # (n, d) the "normal version" of X, in the original units
    det.embed(X)               # (n, k) representation for exemplar retrieval
    det.save(path); anomalens.detectors.load(path)

The score sign is PyOD's (higher = more anomalous), the reverse of scikit-learn's
``score_samples``. Inputs are standardized inside the detector with a robust scaler fitted on the
training rows; ``restore`` answers in the original units and ``explain`` in the score's units
(each feature's additive share of the anomaly score, so attributions of different features are
comparable whatever their units).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from anomalens.detectors._validation import check_dims, check_int, check_matrix, check_probability
from anomalens.detectors.calibration import Calibrator, benjamini_hochberg
from anomalens.errors import CheckpointError, ConfigError, InputError, NotFittedError

__all__ = ["Contributions", "BaseConfig", "BaseDetector", "TorchConfig", "TorchDetector", "resolve_device"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "weights.safetensors"
# Quantile of the calibration attributions above which a feature counts as abnormal for one row.
_FEATURE_QUANTILE = 0.99
# restoration by minimal edit: never free more features than needed to score like a typical normal
# row (the median calibration score); each freed set is re-estimated by 10 rounds of projection;
# past 8 freed features the edit is no longer "minimal" and the plain projection is returned;
# at most this many calibration rows estimate the per-feature cost of an edit (edit_gain_)
EDIT_LEVEL = 0.5
EDIT_ROUNDS = 10
EDIT_MAX_FREE = 8
EDIT_GAIN_ROWS = 2000
# below this many training rows, calibration="auto" uses out-of-fold scores of every row (n_folds + 1 fits),
# unless the data has more than CROSS_MAX_CELLS values (rows x features): the extra fits would then cost minutes
CROSS_MAX_ROWS = 1000
CROSS_MAX_CELLS = 200_000
# early stopping monitors the median of the mean validation losses of this many blocks (``_evaluate``),
# each of at least VAL_BLOCK_ROWS rows (fewer validation rows: fewer blocks; under 20, the plain mean)
VAL_BLOCKS = 5
VAL_BLOCK_ROWS = 10
NOISE_SPREAD = 1e-14  # a column's spread below this share of its magnitude is float noise (robust_scale)
# Fitted arrays every detector holds besides its model; saved beside the weights.
FITTED_ARRAYS = ("center_", "scale_", "calibration_scores_", "feature_thresholds_")


@dataclass(frozen=True)
class Contributions:
    """Which features make rows anomalous.

    Attributes:
        values: (n, d) contributions, higher = more responsible. For additive scores (AutoEncoder,
            VAE, NormalizingFlow) each row sums to the row's anomaly score.
        feature_names: the d column names when known.
        thresholds: (d,) the 99% quantile of each feature's contribution on held-out normal rows;
            a contribution above it is unusual for that feature.
        method: how the contributions were computed.
    """

    values: np.ndarray
    feature_names: list[str] | None
    thresholds: np.ndarray
    method: str

    @property
    def abnormal(self) -> np.ndarray:
        """(n, d) bool: contribution above the feature's normal 99% quantile."""
        return self.values > self.thresholds

    def top(self, k: int = 3) -> np.ndarray:
        """(n, k) column indices of the k largest contributions per row, largest first."""
        k = min(int(k), self.values.shape[1])
        return np.argsort(-self.values, axis=1, kind="stable")[:, :k]

    def names(self, idx: np.ndarray) -> list[str]:
        """Names of the columns at ``idx`` (positions when the names are unknown)."""
        return [self.feature_names[i] if self.feature_names else f"x{i}" for i in np.ravel(idx)]


@dataclass(frozen=True)
class Inspection:
    """What a report needs from the detector about some rows, from one validation, one scaling and one
    attribution pass (``BaseDetector.inspect``): the restoration's minimal edit reuses the attribution."""

    scores: np.ndarray  # (n,) anomaly scores
    attribution: Contributions  # (n, d) per-feature contributions
    restored: np.ndarray  # (n, d) the normal version, original units
    restored_scores: np.ndarray  # (n,) scores of the restored rows
    embedding: np.ndarray  # (n, k) float32, for exemplar retrieval
    # what a detector can say beyond the five (an image detector's matched normal patch per cell), by name
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BaseConfig:
    """Hyper-parameters shared by every detector."""

    calibration_size: float = 0.2  # share of the normal training rows held out for conformal p-values ("split")
    random_state: int | None = 0  # seeds splits, initialisation and sampling; None = fresh randomness
    # "split": hold out calibration_size of the rows; "cross": out-of-fold scores of n_folds models over every
    # training row (n_cal = n_train: finer p-values, n_folds + 1 fits); "auto": cross below CROSS_MAX_ROWS rows
    calibration: str = "auto"
    n_folds: int = 5
    tail: bool = True  # extend p-values below 1/(n_cal+1) with a GPD tail (approximate, marked as such)

    def validate(self) -> None:
        """Raise ConfigError for values out of range (called by ``fit``, and by ``validate_params``)."""
        if isinstance(self.calibration_size, bool) or not isinstance(self.calibration_size, (int, float)) \
                or not 0.0 < self.calibration_size <= 0.5:
            raise ConfigError(f"calibration_size must be a number in (0, 0.5], got {self.calibration_size!r}")
        if self.random_state is not None and (isinstance(self.random_state, bool) or not isinstance(self.random_state, int)
                                              or not 0 <= self.random_state < 2**32):
            raise ConfigError(f"random_state must be an int in [0, 2**32) or None, got {self.random_state!r}")
        if self.calibration not in ("auto", "split", "cross"):
            raise ConfigError(f"calibration must be one of ['auto', 'split', 'cross'], got {self.calibration!r}")
        check_int(self.n_folds, "n_folds", low=2, high=20)
        self._check_types()

    def _check_types(self) -> None:
        """Every field has its default's type: numbers are finite numbers, flags are booleans,
        layer widths are lists of positive ints (a JSON list becomes a tuple)."""
        for f in dataclasses.fields(self):
            v, default = getattr(self, f.name), f.default
            if f.name == "hidden_dims":
                object.__setattr__(self, f.name, check_dims(v, f.name))
            elif f.name == "latent_dim":
                if v is not None:
                    check_int(v, f.name)
            elif isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"{f.name} must be true or false, got {v!r}")
            elif isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(f"{f.name} must be a finite number, got {v!r}")
                if f.name.endswith("dropout") and not 0.0 <= v < 1.0:  # torch's own message came from deep in fit
                    raise ConfigError(f"{f.name} must be a probability in [0, 1), got {v!r}")
            elif isinstance(default, int) and default is not None and f.name != "random_state":
                check_int(v, f.name, low=0)
            elif isinstance(default, str) and not isinstance(v, str):
                raise ConfigError(f"{f.name} must be a string, got {v!r}")


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """Scores made finite with their order kept: a row far outside the training data (1e20 in one
    feature) made some detectors' scores overflow to inf (or inf - inf = NaN), and their p-values and
    AUROC were then undefined. +inf and NaN (the model broke on the row: as anomalous as it gets) become
    the largest float64, -inf the smallest; finite scores are untouched."""
    s = np.asarray(scores, dtype=np.float64)
    if np.isfinite(s).all():
        return s
    big = np.finfo(np.float64).max
    return np.where(np.isnan(s), big, np.clip(s, -big, big))


EMBED_BOUND = 1e6  # embeddings of normal rows are O(1-10); a row 1e308 out stays far, and distances finite


def finite_embedding(E: np.ndarray) -> np.ndarray:
    """(n, k) float32 embeddings made finite: a row near the float64 limit (1e308) overflowed its
    embedding, and the exemplar query failed with an internal message. Values are clipped to
    +-EMBED_BOUND (NaN: 0), so such a row is still far from every exemplar."""
    E = np.asarray(E, dtype=np.float64)
    if not np.isfinite(E).all() or np.abs(E).max(initial=0.0) > EMBED_BOUND:
        E = np.clip(np.nan_to_num(E, nan=0.0, posinf=EMBED_BOUND, neginf=-EMBED_BOUND), -EMBED_BOUND, EMBED_BOUND)
    return E.astype(np.float32)


class BaseDetector(ABC):
    """Contract shared by all detectors: calibration, validation, scaling, persistence.

    Subclasses set ``Config`` (a frozen dataclass of hyper-parameters) and implement the hooks that
    work on robust-scaled float64 arrays: ``_fit_scaled``, ``_score_scaled``, ``_explain_scaled``,
    ``_restore_scaled``, ``_embed_scaled``, ``_state``/``_load_state``.
    """

    Config: ClassVar[type[BaseConfig]] = BaseConfig
    # True for a model another detector owns (an Ensemble's member): its verdicts are not shown, so
    # the warning about too few calibration rows is the owner's to give
    nested: bool = False
    min_fit_rows: ClassVar[int] = 4  # the fewest training rows fit accepts
    min_train_rows: ClassVar[int] = 2  # the fewest that split calibration may leave to train on
    attribution_method: ClassVar[str] = ""
    additive_attribution: ClassVar[bool] = True  # each row's attributions sum to its score
    pixel_rows: ClassVar[bool] = False  # rows are pixels in [0, 1], kept unscaled (an Ensemble of such keeps them so)
    # its cross-fitted calibration costs about one fit (an image cell detector's features are computed once),
    # so as an Ensemble's member it keeps it and its model learns from every row, not a split's 80%
    cheap_cross_calibration: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        valid = [f.name for f in dataclasses.fields(self.Config)]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} got unknown parameter(s) {unknown}; valid parameters are {valid}"
            )
        self.config = self.Config(**params)

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters, as passed to ``__init__`` (scikit-learn's contract: the objects
        themselves, so ``sklearn.base.clone`` returns an equal, unfitted detector; ``deep`` is
        accepted for compatibility: a detector holds no sub-estimators)."""
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}

    def __repr__(self) -> str:
        default = self.Config()
        changed = {k: v for k, v in self.get_params().items() if getattr(default, k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def fold_copy(self, **params: Any) -> "BaseDetector":
        """A fresh, unfitted detector with these hyper-parameters (``params`` override them), quiet and
        marked ``nested`` (its own calibration rows are not what verdicts read): a fold model of
        cross-fitted calibration, here or in a modality."""
        quiet = {"verbose": False} if "verbose" in self.get_params() else {}
        member = type(self)(**{**self.get_params(), **quiet, **params})
        member.nested = True
        return member

    def set_params(self, **params: Any) -> "BaseDetector":
        """Change hyper-parameters (scikit-learn's contract); takes effect at the next ``fit``."""
        merged = {**self.get_params(), **params}
        type(self).__init__(self, **merged)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags (an outlier detector that needs no target), so pipelines and
        model selection accept it; scikit-learn is imported only when it asks."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type="outlier_detector", target_tags=TargetTags(required=False))

    def validate_params(self) -> "BaseDetector":
        """Check every hyper-parameter now (``fit`` does too); raises ConfigError naming the bad one."""
        self.config.validate()
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "calibration_scores_")

    @property
    def calibrator(self) -> Calibrator:
        """The calibration stage: scores -> p-values against ``calibration_scores_`` (see ``Calibrator``)."""
        self._check_fitted()
        cached = self.__dict__.get("_calibrator")
        if cached is None or cached[0] is not self.calibration_scores_ or cached[1] != self.config.tail:
            cached = (self.calibration_scores_, self.config.tail, self._make_calibrator())
            self.__dict__["_calibrator"] = cached
        return cached[2]

    def _make_calibrator(self) -> Calibrator:
        """The calibration stage over ``calibration_scores_`` (the Ensemble's differs beyond the last score)."""
        return Calibrator(self.calibration_scores_, tail=self.config.tail)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _check_input(self, X: Any, name: str = "X", *, checked: bool = False) -> np.ndarray:
        self._check_fitted()
        if checked:
            return X
        arr, _ = check_matrix(X, name=name, n_features=self.n_features_in_, feature_names=self.feature_names_in_)
        return arr

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (X - self.center_) / self.scale_

    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(center, scale) of the training rows: robust per column (a detector of pixels keeps them as
        they are and overrides it)."""
        return robust_scale(X)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> "BaseDetector":
        """Learn normal behaviour from ``X`` (rows assumed normal) and calibrate p-values.

        A ``calibration_size`` share of the rows is held out: the model never trains on it and its
        scores become the calibration set of the conformal p-values.

        Args:
            X: (n_samples, n_features) normal data, a DataFrame (names kept) or an array.
            y: ignored; present for scikit-learn compatibility.

        Returns:
            self
        """
        self.config.validate()
        arr, columns = check_matrix(X, name="X", min_rows=1)
        n, need = arr.shape[0], self.fewest_fit_rows()
        if n < need:
            why = "" if need == self.min_fit_rows else (
                f" for calibration_size={self.config.calibration_size:g} (calibration holds out that share of the rows, "
                f"at least 1, and {self.min_train_rows} must be left to train on)")
            raise InputError(f"X must have at least {need} row(s){why}, got shape {arr.shape}")
        rng = np.random.default_rng(self.config.random_state)
        perm = rng.permutation(n)
        self.__dict__.pop("_calibrator", None)
        self.n_features_in_ = arr.shape[1]
        self.feature_names_in_ = columns
        mode = self.config.calibration
        if mode == "auto":
            small = n < CROSS_MAX_ROWS and n * arr.shape[1] <= CROSS_MAX_CELLS
            mode = "cross" if small else "split"
        if mode == "cross" and n >= 2 * self.config.n_folds + 4:
            raw, attributions = self._out_of_fold(arr, perm)
            self.center_, self.scale_ = self._fit_scaler(arr)
            self._fit_scaled(self._scale(arr))
            self.calibration_scores_ = np.sort(self._calibrate(raw))
            self.feature_thresholds_ = np.quantile(attributions, _FEATURE_QUANTILE, axis=0)
            self.calibration_mode_ = "cross"
            self._on_calibrated(self._scale(arr[perm]))
            return self
        n_cal = max(1, int(round(self.config.calibration_size * n)))
        if n_cal < 20 and not self.nested:
            log.warning(
                "only %d calibration row(s): the smallest possible p-value is %.3f; give more normal rows "
                "or a larger calibration_size for finer verdicts", n_cal, 1 / (n_cal + 1)
            )
        train, cal = arr[perm[n_cal:]], arr[perm[:n_cal]]
        self.center_, self.scale_ = self._fit_scaler(train)
        self._fit_scaled(self._scale(train))
        cal_scaled = self._scale(cal)
        self.calibration_scores_ = np.sort(self._calibrate(self._calibration_raw(cal_scaled)))
        self.feature_thresholds_ = np.quantile(self._explain_scaled(cal_scaled), _FEATURE_QUANTILE, axis=0)
        self.calibration_mode_ = "split"
        self._on_calibrated(cal_scaled)
        return self

    def fewest_fit_rows(self) -> int:
        """The fewest rows ``fit`` accepts: ``min_fit_rows``, or more where the split calibration's
        ``calibration_size`` (at most 0.5) would leave fewer than ``min_train_rows`` to train on (a
        fit below 2 * n_folds + 4 rows splits, whatever ``calibration`` says)."""
        size = self.config.calibration_size
        m = self.min_fit_rows
        while m - max(1, int(round(size * m))) < self.min_train_rows:
            m += 1
        return m

    def _out_of_fold(self, arr: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, ...) calibration material (``_calibration_raw``) and (n, d) attributions of every row
        by a model that did not train on it (``n_folds`` models, each fitted on the other folds with
        its own scaler)."""
        n, k = len(arr), self.config.n_folds
        scores, attributions = None, np.empty_like(arr)
        for f in range(k):
            held = perm[f::k]
            rest = np.setdiff1d(perm, held, assume_unique=True)
            member = self.fold_copy(calibration="split")
            member.n_features_in_, member.feature_names_in_ = self.n_features_in_, None
            member.center_, member.scale_ = member._fit_scaler(arr[rest])
            member._fit_scaled(member._scale(arr[rest]))
            z = member._scale(arr[held])
            raw = member._calibration_raw(z)
            if scores is None:
                scores = np.empty((n, *raw.shape[1:]))
            scores[held], attributions[held] = raw, member._explain_scaled(z)
        return scores, attributions

    def _calibration_raw(self, Z: np.ndarray) -> np.ndarray:
        """What calibration needs of the (scaled) calibration rows ``Z``: their scores, (n,). A
        fold model of cross calibration gives it for its held-out rows."""
        return finite_scores(self._score_scaled(Z))

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        """The calibration scores from the calibration rows' ``_calibration_raw`` (all folds'
        together under cross calibration), once the final model is fitted: the scores themselves."""
        return raw

    def _on_calibrated(self, cal: np.ndarray) -> None:
        """Hook run at the end of ``fit`` with the (scaled) calibration rows."""

    # ------------------------------------------------------------------ scoring
    def decision_function(self, X: Any, *, checked: bool = False) -> np.ndarray:
        """Anomaly scores, higher = more anomalous (PyOD's sign).

        Args:
            X: (n, d) rows.
            checked: X is already a finite float (n, n_features_in_) array (checked by the caller,
                e.g. a modality's ``prepare``) and is not checked again.

        Returns:
            (n,) float64 scores.
        """
        return finite_scores(self._score_scaled(self._scale(self._check_input(X, checked=checked))))

    def pvalues(self, X: Any, *, checked: bool = False) -> np.ndarray:
        """(n,) conformal p-values: small means unlike the calibration (normal) rows. Below
        1/(n_cal+1) they come from the calibrator's tail (``calibrator.approximate`` tells which)."""
        scores = self.decision_function(X, checked=checked)  # validates and checks fitted first
        return self.calibrator.pvalues(scores)

    def predict(self, X: Any, alpha: float = 0.01) -> np.ndarray:
        """(n,) 0/1 verdicts: 1 where the p-value is below ``alpha`` (false-positive rate <= alpha)."""
        alpha = check_probability(alpha, "alpha")
        return (self.pvalues(X) < alpha).astype(int)

    def predict_fdr(self, X: Any, alpha: float = 0.05) -> np.ndarray:
        """(n,) 0/1 verdicts for a batch with the false discovery rate controlled at ``alpha`` (BH)."""
        return benjamini_hochberg(self.pvalues(X), alpha)

    def threshold(self, alpha: float = 0.01) -> float:
        """The smallest score whose p-value is at most ``alpha`` (inf when no score can reach it)."""
        alpha = check_probability(alpha, "alpha")
        return self.calibrator.threshold(alpha)

    def explain(self, X: Any, *, checked: bool = False) -> Contributions:
        """Per-feature contributions to the anomaly score, higher = more responsible.

        Args:
            X: (n, d) rows.
            checked: as in ``decision_function``.

        Returns:
            Contributions with ``values`` of shape (n, d) in the score's units.
        """
        values = self._explain_scaled(self._scale(self._check_input(X, checked=checked)))
        return Contributions(values, self.feature_names_in_, self.feature_thresholds_, self.attribution_method)

    def score_explain(self, X: Any, *, checked: bool = False) -> tuple[np.ndarray, Contributions]:
        """(``decision_function``'s scores, ``explain``'s attribution) of the rows of ``X`` in one
        pass: checked and scaled once, and the work shared where the detector can (an autoencoder's
        one reconstruction gives its error score and the start of its attribution). What a series
        reads off every window."""
        scores, values = self._score_explain_scaled(self._scale(self._check_input(X, checked=checked)))
        return finite_scores(scores), Contributions(values, self.feature_names_in_, self.feature_thresholds_,
                                                  self.attribution_method)

    def restore(self, X: Any, *, checked: bool = False) -> np.ndarray:
        """(n, d) the model's "normal version" of each row, in the original units."""
        return self._restore_scaled(self._scale(self._check_input(X, checked=checked))) * self.scale_ + self.center_

    def embed(self, X: Any, *, checked: bool = False) -> np.ndarray:
        """(n, k) float32 representation used to retrieve similar normal exemplars."""
        return finite_embedding(self._embed_scaled(self._scale(self._check_input(X, checked=checked))))

    def restore_embed(self, X: Any, rows: Any, *, checked: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """((n, d) restored rows of ``X``, (len(rows), k) embedding of the rows at positions ``rows``), ``X``
        checked and scaled once: what a series event needs (its windows' normal version and its peak
        window's place among the normal exemplars) in one call, without the scores and the embedding
        of every window that ``inspect`` adds."""
        Z = self._scale(self._check_input(X, checked=checked))
        idx = np.asarray(rows, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(Z)):
            raise InputError(f"rows must be positions 0..{len(Z) - 1} of X, got {idx.min()}..{idx.max()}")
        return (self._restore_scaled(Z) * self.scale_ + self.center_,
                finite_embedding(self._embed_scaled(Z[idx])))

    def inspect(self, X: Any, *, checked: bool = False) -> Inspection:
        """Scores, attribution, restoration (and its scores) and embedding of the rows of ``X``, with
        ``X`` checked and scaled once and the attribution computed once (``restore`` alone
        recomputes it for its minimal edit). ``checked`` as in ``decision_function``."""
        Z = self._scale(self._check_input(X, checked=checked))
        scores, values, R = self._inspect_scaled(Z)
        return Inspection(
            scores=finite_scores(scores),
            attribution=Contributions(values, self.feature_names_in_, self.feature_thresholds_, self.attribution_method),
            restored=R * self.scale_ + self.center_, restored_scores=finite_scores(self._score_scaled(R)),
            embedding=finite_embedding(self._embed_scaled(Z)))

    # ------------------------------------------------------------------ hooks
    def _score_explain_scaled(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, attribution) of scaled rows; detectors that can share work between them override it."""
        return self._score_scaled(Z), self._explain_scaled(Z)

    def _inspect_scaled(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, attribution, restored rows) of scaled rows, the attribution computed once;
        detectors that can share more work between the three override it."""
        values = self._explain_scaled(Z)
        return self._score_scaled(Z), values, self._restore_scaled(Z, values)

    @abstractmethod
    def _fit_scaled(self, Z: np.ndarray) -> None: ...

    @abstractmethod
    def _score_scaled(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _explain_scaled(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _restore_scaled(self, Z: np.ndarray, attribution: np.ndarray | None = None) -> np.ndarray:
        """(n, d) restored rows (scaled); ``attribution`` is ``_explain_scaled(Z)`` when the caller has it."""

    @abstractmethod
    def _embed_scaled(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save, besides the scaler and calibration."""

    @abstractmethod
    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild the fitted model from ``_state``'s tensors."""

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder ``path``: ``config.json`` + ``weights.safetensors``.

        No pickle is involved: the JSON holds the class and hyper-parameters, safetensors the arrays.
        """
        from safetensors.torch import save_file

        from anomalens import __version__

        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self._state().items()}
        for name in FITTED_ARRAYS:
            tensors[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        meta = {
            "format": CHECKPOINT_FORMAT,
            "anomalens_version": __version__,
            "class": type(self).__name__,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_,
        }
        save_file(tensors, str(path / _WEIGHTS_FILE))
        (path / _CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BaseDetector":
        """Load a detector saved by ``save``; called on a subclass it insists on that class."""
        from anomalens.detectors.registry import get_detector_class

        meta, tensors = _read_checkpoint(Path(path))
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"{path} is corrupted: {len(bad)} saved array(s) hold NaN or inf, e.g. {bad[:3]}")
        name = meta["class"]
        if cls is not BaseDetector and name != cls.__name__:
            raise CheckpointError(f"{path} holds a {name} detector, not a {cls.__name__}; use anomalens.detectors.load")
        try:
            klass = get_detector_class(name)
        except InputError as exc:
            raise CheckpointError(f"{path} holds an unknown detector class {name!r}") from exc
        try:
            det = klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()})
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{path}: its saved parameters do not fit a {name} ({exc})") from exc
        det.n_features_in_ = int(meta["n_features_in"])
        det.feature_names_in_ = meta["feature_names_in"]
        try:
            for attr in FITTED_ARRAYS:
                setattr(det, attr, tensors.pop(attr).numpy().astype(np.float64))
            det._load_state({k.removeprefix("model."): v for k, v in tensors.items()})
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: weights do not match a {name} with these parameters ({exc})") from exc
        return det


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg, weights = path / _CONFIG_FILE, path / _WEIGHTS_FILE
    if not cfg.is_file() or not weights.is_file():
        raise CheckpointError(f"{path} is not a saved detector: expected {_CONFIG_FILE} and {_WEIGHTS_FILE} inside")
    try:
        meta = json.loads(cfg.read_text())
        if not isinstance(meta, dict) or {"class", "params", "format"} - set(meta):
            raise ValueError("missing keys")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg} is corrupted: expected a JSON detector config ({exc})") from exc
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta['format']}, this anomalens reads {CHECKPOINT_FORMAT}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupted: not a readable safetensors file ({exc})") from exc
    return meta, tensors


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and a robust standard deviation per column (IQR / 1.349).

    Where the IQR is zero (a mostly constant or binary column) the standard deviation stands in, and
    1 where that is zero too, so no column is divided by zero. Zero is relative to the column's
    magnitude (a spread under 1e-14 of its largest absolute value, about 45 float64 ulps, is float
    noise), so a column in small units (capacitances in farads, 1e-13) keeps its spread; and a
    constant column of large values is divided by that noise level (at least 1), so a new value one
    ulp off the constant is not thousands of units out.
    """
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    magnitude = np.abs(X).max(axis=0, initial=0.0)
    iqr = nonzero_spread((q75 - q25) / 1.349, magnitude, fallback=X.std(axis=0))
    return center, nonzero_spread(iqr, magnitude)


def nonzero_spread(spread: np.ndarray, magnitude: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """``spread`` where it is above float noise (``NOISE_SPREAD`` x ``magnitude``, the largest
    absolute value), else ``fallback``, or by default that noise level, at least 1: the rule of
    ``robust_scale``, for any per-column unit."""
    noise = NOISE_SPREAD * np.asarray(magnitude, dtype=np.float64)
    other = np.maximum(noise, 1.0) if fallback is None else fallback
    return np.where(spread > np.maximum(noise, np.finfo(np.float64).tiny), spread, other)


# ====================================================================== torch detectors
def resolve_device(device: str, *, strict: bool = True) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; any other value is passed to ``torch.device``.
    ``strict=False`` (loading a model saved on another machine) falls back to the CPU with a warning
    where the saved device is missing."""
    if not strict:
        try:
            return resolve_device(device)
        except ConfigError:
            log.warning("device %r is not available here; using the CPU", device)
            return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            raise ConfigError(f"device must be available on this machine ('auto' or 'cpu'; CUDA devices: {n}), "
                              f"got {device!r}")
    elif dev.type != "cpu":
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


@dataclass(frozen=True)
class TorchConfig(BaseConfig):
    """Training-loop hyper-parameters shared by the torch detectors."""

    epochs: int = 200  # upper bound; early stopping on the validation share usually ends sooner
    batch_size: int = 128  # capped at n_train // 8 so that small data sets get several updates per epoch
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 15  # epochs without validation improvement before stopping
    validation_size: float = 0.1  # share of the training rows used for early stopping
    device: str = "auto"
    verbose: bool = False  # progress bar over epochs
    score_batch_size: int = 8192  # rows per forward pass when scoring; memory stays flat

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "patience", "score_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= self.validation_size <= 0.5:
            raise ConfigError(f"validation_size must be in [0, 0.5], got {self.validation_size!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        resolve_device(self.device)


class TorchDetector(BaseDetector):
    """A detector whose model is a torch ``nn.Module`` trained by the one shared loop.

    Subclasses give the network and its loss through small hooks:
    ``_build_module(n_features)``, ``_loss(module, batch) -> scalar`` and the per-batch
    ``_score_batch``, ``_explain_batch``, ``_restore_batch``, ``_embed_batch`` (all on scaled
    float32 tensors). Training runs inside a forked RNG so it neither reads nor disturbs the
    caller's global torch random state.
    """

    Config: ClassVar[type[TorchConfig]] = TorchConfig
    restores_by_edit: ClassVar[bool] = False  # restore is ``_minimal_edit``: fit measures ``edit_gain_``

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _build_module(self, n_features: int) -> nn.Module: ...

    @abstractmethod
    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a (batch, d) tensor."""

    @abstractmethod
    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor: ...

    @abstractmethod
    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor: ...

    def _edit_fill(self, batch: torch.Tensor, free: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, d) the rows with their ``free`` features re-estimated and the others held: the
        model's projection (``_project_batch``) iterated ``EDIT_ROUNDS`` times. Density models
        without a projection override it; ``start`` (the previous, smaller edit) may seed a search."""
        x = batch
        for _ in range(EDIT_ROUNDS):
            x = torch.where(free, self._project_batch(x), batch)
        return x

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no projection; override _edit_fill")

    def _minimal_edit(self, batch: torch.Tensor, *, fallback: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      attribution: torch.Tensor | None = None) -> torch.Tensor:
        """Restoration as the smallest edit that makes each row normal.

        Features are freed in the order of their attribution (most responsible first) and
        re-estimated with every other feature held at its observed value (``_edit_fill``). Edits
        of k = 1, 2, ... features are tried until one scores like a typical normal row (the median
        calibration score), at most ``EDIT_MAX_FREE``; of those tried a row gets the one that
        trades score against size best, score + k * ``edit_gain_``: each freed feature must buy
        more than re-estimating its most suspicious feature buys a typical normal row (the median
        gain on the calibration rows). A row that never scores like a normal row and whose best
        trade-off is the largest edit gets ``fallback(stuck)``, its rows for the boolean mask ``stuck``
        (computed only when a row needs it; default: the plain projection). Holding
        the normal features fixed is what makes the restoration undo the anomaly instead of
        blurring the whole row toward the training mean.
        """
        if attribution is None:
            attribution = self._explain_batch(batch)  # (batch, d)
        order = attribution.argsort(dim=1, descending=True)
        target = float(np.quantile(self.calibration_scores_, EDIT_LEVEL))
        gain = self.edit_gain_
        n, d = batch.shape
        n_max = min(d, EDIT_MAX_FREE)
        best_cost = torch.full((n,), math.inf, device=batch.device)
        best_k = torch.zeros(n, dtype=torch.long, device=batch.device)
        out, last = batch.clone(), batch.clone()
        active = torch.ones(n, dtype=torch.bool, device=batch.device)  # not yet scoring like a normal row
        for k in range(1, n_max + 1):
            rows = torch.nonzero(active).flatten()
            if len(rows) == 0:
                break
            free = torch.zeros(len(rows), d, dtype=torch.bool, device=batch.device).scatter_(1, order[rows, :k], True)
            x = self._edit_fill(batch[rows], free, start=last[rows])
            last[rows] = x
            score = self._score_batch(x)
            better = score + gain * k < best_cost[rows]
            idx = rows[better]
            out[idx], best_cost[idx], best_k[idx] = x[better], score[better] + gain * k, k
            active[rows[score <= target]] = False
        stuck = active & (best_k == n_max)  # never normal, and every feature freed paid off
        if bool(stuck.any()):
            out[stuck] = fallback(stuck) if fallback is not None else self._project_batch(batch)[stuck]
        return out

    def _edit_gain(self, cal: torch.Tensor) -> float:
        """Median score drop of calibration rows when their most suspicious feature is re-estimated."""
        free = torch.zeros_like(cal, dtype=torch.bool).scatter_(1, self._explain_batch(cal).argmax(dim=1, keepdim=True), True)
        return float((self._score_batch(cal) - self._score_batch(self._edit_fill(cal, free))).median())

    def _abnormal_features(self, attribution: torch.Tensor) -> torch.Tensor:
        """(batch, d) bool: features above their normal 99% level, and always each row's top one."""
        thresholds = torch.as_tensor(self.feature_thresholds_, dtype=attribution.dtype, device=attribution.device)
        free = attribution > thresholds
        free.scatter_(1, attribution.argmax(dim=1, keepdim=True), True)
        return free

    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors that are not module parameters (saved beside the weights)."""
        return {}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        return None

    # ------------------------------------------------------------------ training loop
    def _seed(self) -> int:
        seed = self.config.random_state
        return int(np.random.SeedSequence(seed).generate_state(1)[0]) if seed is not None else int(torch.seed() % 2**31)

    def _fit_scaled(self, Z: np.ndarray) -> None:
        cfg = self.config
        self.device_ = resolve_device(cfg.device)
        seed = self._seed()
        with torch.random.fork_rng(devices=[self.device_] if self.device_.type == "cuda" else []):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            self._on_fit_start(Z)
            self.module_ = self._build_module(Z.shape[1]).to(self.device_)
            data = torch.as_tensor(Z, dtype=torch.float32, device=self.device_)
            perm = torch.randperm(len(data), generator=gen).to(self.device_)
            n_val = int(round(cfg.validation_size * len(data))) if len(data) >= 50 else 0
            val, train = data[perm[:n_val]], data[perm[n_val:]]
            self.history_ = self._train(train, val, gen)
            with torch.no_grad():
                self._on_fit_end(train)

    def _on_calibrated(self, cal: np.ndarray) -> None:
        if not self.restores_by_edit:
            return
        self.module_.eval()
        rows = torch.as_tensor(cal[:EDIT_GAIN_ROWS], dtype=torch.float32, device=self.device_)  # already shuffled
        with torch.no_grad():
            self.edit_gain_ = max(0.0, self._edit_gain(rows))

    def _on_fit_end(self, train: torch.Tensor) -> None:
        """Hook run after training with the (scaled) training rows, e.g. to estimate error scales."""

    def _on_fit_start(self, Z: np.ndarray) -> None:
        """Hook run inside the seeded RNG before the module is built (e.g. to draw fixed noise)."""

    def _train(self, train: torch.Tensor, val: torch.Tensor, gen: torch.Generator) -> dict[str, Any]:
        cfg = self.config
        module = self.module_
        optimizers = self._optimizers(module)
        batch = max(8, min(cfg.batch_size, len(train) // 8))
        best, best_state, bad = math.inf, None, 0
        history: dict[str, Any] = {"train_loss": [], "val_loss": []}
        epochs = range(cfg.epochs)
        if cfg.verbose:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=f"fit {type(self).__name__}", unit="epoch")
        for _ in epochs:
            module.train()
            total, seen = 0.0, 0
            for idx in _batches(torch.randperm(len(train), generator=gen).to(train.device), batch):
                xb = train[idx]
                loss = self._train_step(module, xb, optimizers)
                if not math.isfinite(loss):
                    raise ConfigError(
                        f"{type(self).__name__} training diverged (loss {loss}); lower lr, got lr={cfg.lr}"
                    )
                total += loss * len(xb)
                seen += len(xb)
            history["train_loss"].append(total / seen)
            monitored = self._evaluate(val) if len(val) else history["train_loss"][-1]
            history["val_loss"].append(monitored)
            if best == math.inf or monitored < best - 1e-4 * abs(best):
                best, bad = monitored, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
            if cfg.verbose:
                epochs.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", val=f"{monitored:.4f}")
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        history["epochs"] = len(history["train_loss"])
        history["best_val_loss"] = best
        return history

    def _optimizers(self, module: nn.Module) -> list[torch.optim.Optimizer]:
        """The optimizers ``_train_step`` uses; one Adam over every parameter by default."""
        return [torch.optim.Adam(module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)]

    def _train_step(self, module: nn.Module, batch: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> float:
        """One update on a batch; returns the loss that is logged. Adversarial models override it."""
        (opt,) = optimizers
        loss = self._loss(module, batch)
        if not torch.isfinite(loss):
            return float("nan")
        optimizer_step(opt, loss, module.parameters())
        return loss.item()

    @torch.no_grad()
    def _evaluate(self, val: torch.Tensor) -> float:
        """The validation loss that early stopping monitors: the median of the mean losses of
        ``VAL_BLOCKS`` blocks of the (shuffled) validation rows (a median of means; blocks of at least
        ``VAL_BLOCK_ROWS`` rows, as smaller ones made the estimate noisy enough to stop training on
        noise: 23 epochs instead of 89 for a VAE with 22 validation rows). One rare normal
        row (shuttle's rare modes; a loss 1,000 times the bulk's) cannot then choose the stopping
        epoch by itself: with the plain mean it stopped a model at epoch 64 of 200, its bulk
        unlearned (median score of new normal rows 7.1 against 0.8 for the same detector trained on
        80% of the rows), and the cross-calibrated p-values of that model were far too small."""
        self.module_.eval()
        k = max(1, min(VAL_BLOCKS, len(val) // VAL_BLOCK_ROWS))
        edges = np.linspace(0, len(val), k + 1).round().astype(int)
        means = []
        for a, b in zip(edges[:-1], edges[1:]):
            total = 0.0
            for idx in _batches(torch.arange(int(a), int(b), device=val.device), 4096):
                total += self._loss(self.module_, val[idx]).item() * len(idx)
            means.append(total / (b - a))
        return float(np.median(means))

    # ------------------------------------------------------------------ batched inference
    def _map(self, fn, Z: np.ndarray, *extra: np.ndarray | None, grad: bool = False) -> np.ndarray:
        """Apply a per-batch hook over ``Z`` in ``score_batch_size`` chunks; memory stays flat.
        ``extra`` arrays (None passes None) are cut into the same chunks and passed after the batch."""
        if not hasattr(self, "device_"):
            self.device_ = resolve_device(self.config.device, strict=False)
            self.module_.to(self.device_)
        if self.module_.training:  # eval() walks every submodule: not on each call
            self.module_.eval()
        out = []
        step = self.config.score_batch_size
        with torch.enable_grad() if grad else torch.inference_mode():
            for i in range(0, len(Z) or 1, step):  # no rows: one empty batch, so the output keeps its shape
                xb = torch.as_tensor(Z[i : i + step], dtype=torch.float32, device=self.device_)
                more = [None if e is None else torch.as_tensor(e[i : i + step], dtype=torch.float32, device=self.device_)
                        for e in extra]
                out.append(fn(xb, *more).detach().cpu().numpy().astype(np.float64))
        return np.concatenate(out, axis=0)

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._map(self._score_batch, Z)

    def _explain_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._map(self._explain_batch, Z)

    def _score_explain_scaled(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        both = self._map(self._score_explain_cat, Z)  # (n, 1 + d): the score, then the attribution
        return both[:, 0], both[:, 1:]

    def _score_explain_cat(self, batch: torch.Tensor) -> torch.Tensor:
        score, values = self._score_explain_batch(batch)
        return torch.cat([score[:, None], values], dim=1)

    def _score_explain_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, attribution) of a scaled batch; by default the two hooks."""
        return self._score_batch(batch), self._explain_batch(batch)

    def _restore_scaled(self, Z: np.ndarray, attribution: np.ndarray | None = None) -> np.ndarray:
        return self._map(self._restore_batch, Z, attribution)

    def _embed_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._map(self._embed_batch, Z)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, torch.Tensor]:
        state = {f"module.{k}": v for k, v in self.module_.state_dict().items()}
        state.update({f"extra.{k}": v for k, v in self._extra_state().items()})
        if self.restores_by_edit:
            state["edit_gain"] = torch.tensor([self.edit_gain_], dtype=torch.float64)
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.device_ = resolve_device(self.config.device, strict=False)
        extra = {k.removeprefix("extra."): v.to(self.device_) for k, v in state.items() if k.startswith("extra.")}
        self._load_extra_state(extra)
        if self.restores_by_edit:
            self.edit_gain_ = float(state["edit_gain"][0])
        self.module_ = self._build_module(self.n_features_in_)
        self.module_.load_state_dict({k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")})
        self.module_.to(self.device_).eval()


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float | None = 10.0) -> None:
    """Back-propagate ``loss`` and take one step of ``opt``, clipping the gradient norm of ``params``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def _batches(order: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(order), size):
        yield order[i : i + size]
