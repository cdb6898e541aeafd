"""Ensemble: combine registered detectors through their calibrated p-values.

Each member is fitted on the same training rows and turns its score into a conformal p-value. The
members' p-values are combined with the Cauchy combination test (Liu and Xie, JASA 2020), which is
robust to the strong dependence between detectors looking at the same row:

    T = mean_m tan((1/2 - p_m) pi),   q = 1/2 - arctan(T) / pi,   ensemble score = -ln q

with each p_m truncated at 1/2 (a member that finds a row unremarkable adds nothing rather than
cancelling the others' evidence; the upper tail, hence validity at small levels, is unchanged).

**Calibration.** The members are calibrated on the ensemble's calibration rows, all of them: under
cross calibration every training row, scored by the fold ensembles that did not train on it (so
n_cal = n_train for each member, not the 20% each member would hold out of its own share); under
split calibration the ensemble's held-out rows. Each member's p-value is conformal against its raw
scores on those rows, with its GPD tail beyond the largest. The ensemble's own calibration scores
are the combination's scores on the same rows, each row's member p-values taken against the other
rows (leave-one-out, as a new row's are against all of them), so its p-value is conformal in T
wherever a calibration score reaches T. Beyond the largest, where that p-value stops at 1/(n+1),
it is the larger of the combination's own q and the GPD tail fitted to the calibration scores of T
(``CombinationCalibrator``, approximate).

**Members.** By default the autoencoder, the VAE and the autoregressive model (nonlinear generative
models of the whole row) and ``PCA`` (the linear-Gaussian one: the Mahalanobis distance over the
principal axes). The first three extrapolate poorly at the edge of the normal cloud, so their normal
scores are heavy-tailed there and no honest tail fitted to 600 calibration scores reaches a batch
of 10,000's cut-off; the PCA member's normal scores are chi-square-like and a row that leaves the
normal subspace scores far beyond them, so its p-value does (docs/calibration.md, "The linear
member").

Before, each member held out its own 20% (a tail fitted to a few dozen excesses, different in
every fold ensemble and in the final one, so T's scale moved from fold to fold): on shuttle 2.3% of
new normal rows got p <= 0.005 (docs/calibration.md).

- explain: the members' attributions, each divided by that member's per-feature 99% normal level
  (so "3" means three times the normal level for this feature), averaged
- restore: the restoration of the member with the smallest p-value for that row (the one that
  flagged it most strongly)
- embed: the first member's embedding
- ``member_pvalues(X)``: which member flagged the case
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from anomalens.detectors.base import FITTED_ARRAYS, BaseConfig, BaseDetector
from anomalens.detectors.calibration import Calibrator, CombinationCalibrator
from anomalens.errors import CheckpointError, ConfigError, InputError

__all__ = ["Ensemble", "EnsembleConfig", "cauchy_combine", "cauchy_neglog_p"]


@dataclass(frozen=True)
class EnsembleConfig(BaseConfig):
    # registered names: three generative members and the linear one, whose light-tailed normal scores let
    # a clear anomaly's p-value reach any batch size (docs/calibration.md)
    detectors: tuple[str, ...] = ("autoencoder", "vae", "autoregressive", "pca")
    member_params: tuple[tuple[str, Any], ...] = field(default_factory=tuple)  # (param, value) for every member

    def validate(self) -> None:
        super().validate()
        from anomalens.detectors.registry import get_detector_class

        if isinstance(self.detectors, str) or not self.detectors:
            raise ConfigError(f"detectors must name at least one registered detector, got {self.detectors!r}")
        classes = []
        for name in self.detectors:
            try:
                cls = get_detector_class(name)
            except InputError as exc:
                raise ConfigError(f"detectors: {exc}") from exc
            if cls is Ensemble:
                raise ConfigError("detectors must not contain 'ensemble' itself")
            classes.append(cls)
        accepted = {f.name for cls in classes for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(dict(self.member_params)) - accepted)
        if unknown:
            raise ConfigError(f"Ensemble got parameter(s) {unknown} that none of its members {list(self.detectors)} "
                              f"takes; valid member parameters are {sorted(accepted)}")
        for member in member_detectors(self):  # each member's own checks (types, ranges, device), before any fit
            member.config.validate()


def member_detectors(config: EnsembleConfig) -> list[BaseDetector]:
    """The unfitted members of an ensemble: each gets the ensemble's seed, the split calibration (one fit
    each; the ensemble replaces its calibration set; a member whose cross-fitted calibration costs about
    one fit keeps it, and so learns from every row) and those of ``member_params`` its own
    configuration takes."""
    from anomalens.detectors.registry import get_detector_class

    params = {"random_state": config.random_state, **dict(config.member_params)}
    members = []
    for name in config.detectors:
        cls = get_detector_class(name)
        own = {f.name for f in dataclasses.fields(cls.Config)}
        calibration = {} if cls.cheap_cross_calibration else {"calibration": "split"}
        member = cls(**{k: v for k, v in {**params, **calibration}.items() if k in own})
        member.nested = True
        members.append(member)
    return members


def _on_grid(cells: np.ndarray, g: int) -> np.ndarray:
    """(n, g, g) cell maps (n, h, h) resampled to a g x g grid (bilinear; unchanged where h = g)."""
    if cells.shape[-1] == g:
        return cells
    t = torch.nn.functional.interpolate(torch.as_tensor(cells, dtype=torch.float64)[:, None], size=(g, g),
                                        mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


SCORE_VERSION = 3  # 1 (unmarked): T, with member p-values clipped at 1e-15; 2: -ln q; 3: truncated at 1/2,
# members calibrated on the ensemble's calibration rows


def cauchy_neglog_p(t: np.ndarray) -> np.ndarray:
    """-ln of the Cauchy combination's p-value 1/2 - arctan(t)/pi, accurate for large t (arctan(1/t)/pi)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        q = np.where(t > 1.0, np.arctan(1.0 / np.where(t > 1.0, t, 1.0)) / np.pi, 0.5 - np.arctan(t) / np.pi)
    return -np.log(q)


def cauchy_combine(p: np.ndarray, truncate: float | None = None) -> np.ndarray:
    """-ln q of the Cauchy combination (Liu & Xie, JASA 2020) of (members, n) p-values: valid under
    arbitrary dependence between the members at small levels; q is the combined p-value.

    ``truncate``: p-values above it count as it (0.5: as 0, the Cauchy variable's centre). A conformal
    p-value of 1 (a score below every calibration score) is tan(-pi/2) = -inf to the plain
    combination and cancels any other member's evidence; the truncated combination has the same
    upper tail (so the same small-level validity) without that cancellation."""
    p = np.asarray(p, dtype=np.float64)
    if truncate is not None:
        p = np.minimum(p, truncate)
    p = np.clip(p, 1e-300, 1.0 - 1e-15)
    # tan((1/2 - p) pi) = 1 / tan(p pi), which keeps its precision for tiny p
    with np.errstate(divide="ignore"):
        t = np.where(p < 0.25, 1.0 / np.tan(np.pi * p), np.tan((0.5 - p) * np.pi))
    return cauchy_neglog_p(t.mean(axis=0))


class Ensemble(BaseDetector):
    """p-value (Cauchy) combination of registered detectors; its own p-values are re-calibrated."""

    Config = EnsembleConfig
    attribution_method = "mean over members of attribution / the member's normal 99% level"
    # the members train on what the ensemble's calibration leaves, and need their min_fit_rows (4);
    # so fit needs 5 rows at least (fewest_fit_rows)
    min_train_rows = 4
    additive_attribution = False

    def __init__(self, **params: Any) -> None:
        """Ensemble hyper-parameters, plus any of the members' (``Ensemble(epochs=40)``): those are
        kept in ``member_params`` and each member gets the ones it takes."""
        own = {f.name for f in dataclasses.fields(EnsembleConfig)}
        forwarded = {k: params.pop(k) for k in list(params) if k not in own}
        if forwarded:
            mp = params.get("member_params", ())
            merged = dict(mp.items() if isinstance(mp, dict) else mp)
            merged.update(forwarded)
            params["member_params"] = merged
        if "detectors" in params and not isinstance(params["detectors"], tuple) and not isinstance(params["detectors"], str):
            params["detectors"] = tuple(params["detectors"])
        if "member_params" in params:  # a dict, or (name, value) pairs (lists after a JSON round trip)
            mp = params["member_params"]
            pairs = mp.items() if isinstance(mp, dict) else mp
            norm = tuple(sorted((str(k), v) for k, v in pairs))
            if norm != mp:  # an already normalised tuple is kept as the same object (sklearn's clone checks identity)
                params["member_params"] = norm
        super().__init__(**params)

    def _members(self) -> list[BaseDetector]:
        return member_detectors(self.config)

    @property
    def pixel_rows(self) -> bool:  # type: ignore[override]
        """Rows are pixels when a member reads pixels: they reach the members unscaled."""
        from anomalens.detectors.registry import get_detector_class

        return any(get_detector_class(name).pixel_rows for name in self.config.detectors)

    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.pixel_rows:
            return np.zeros(X.shape[1]), np.ones(X.shape[1])
        return super()._fit_scaler(X)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return X if self.pixel_rows else super()._scale(X)

    def _fit_scaled(self, Z: np.ndarray) -> None:
        self.members_ = [m.fit(Z) for m in member_detectors(self.config)]

    @property
    def training_image(self):
        """The first member's ``training_image`` that has one (the image detectors keep their training
        images); AttributeError where none does."""
        for m in getattr(self, "members_", ()):
            if hasattr(m, "training_image"):
                return m.training_image
        raise AttributeError("no member of this Ensemble keeps its training images")

    def inspect(self, X: Any, *, checked: bool = False):
        """The base inspection; where members measure image cells (``cell_evidence``), ``extra`` holds their
        cells each divided by its normal level, brought to one grid (the matching member's, else the
        first's) and averaged (normal level 1), and the matched normal patches (with their distances) of
        the first member that matches them."""
        insp = super().inspect(X, checked=checked)
        Z = self._scale(self._check_input(X, checked=checked))
        parts = [m.cell_evidence(Z, checked=True) for m in self.members_ if hasattr(m, "cell_evidence")]
        if not parts:
            return insp
        matched = next((p for p in parts if "matched_row" in p), None)
        g = (matched or parts[0])["cell_distance"].shape[-1]  # the matching member's grid, where one matches
        cells = np.mean([_on_grid(p["cell_distance"] / max(float(p["normal_cell_level"]), 1e-12), g) for p in parts],
                        axis=0)
        insp.extra.update({"cell_distance": cells, "normal_cell_level": 1.0})
        if matched is not None:
            insp.extra.update({"matched_row": matched["matched_row"], "matched_cell": matched["matched_cell"],
                               "matched_distance": matched["cell_distance"]})
        return insp

    def _calibration_raw(self, Z: np.ndarray) -> np.ndarray:
        """(n, members) raw member scores of the calibration rows ``Z``."""
        return np.stack([m.decision_function(Z, checked=True) for m in self.members_], axis=1)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Each member's calibration set becomes its raw scores of the ensemble's calibration rows
        (``raw``: (n, members)); returns those rows' combination scores, each row's member p-values
        against the other rows."""
        loo = []
        for j, m in enumerate(self.members_):
            col = np.asarray(raw[:, j], dtype=np.float64)
            m.calibration_scores_ = np.sort(col)
            n = col.size
            # (1 + #{others >= s}) / ((n - 1) + 1) = #{all >= s} / n: the conformal p-value against the others
            p = (n - np.searchsorted(m.calibration_scores_, col, side="left")) / n
            top = int(np.argmax(col))
            if n > 1 and col[top] > m.calibration_scores_[-2]:
                # the one row above all others gets what a new row there gets: the others' tail
                others = Calibrator(np.delete(col, top), tail=m.config.tail)
                p[top] = others.pvalues(col[top:top + 1])[0]
            loo.append(p)
        return self._combine(np.stack(loo))

    def _make_calibrator(self) -> Calibrator:
        return CombinationCalibrator(self.calibration_scores_, tail=self.config.tail)

    def member_pvalues(self, X: Any) -> dict[str, np.ndarray]:
        """Each member's conformal p-values for the rows of ``X``: which member flagged what."""
        Z = self._scale(self._check_input(X))
        return {name: m.pvalues(Z, checked=True) for name, m in zip(self.config.detectors, self.members_)}

    def _member_p(self, Z: np.ndarray) -> np.ndarray:
        return np.stack([m.pvalues(Z, checked=True) for m in self.members_])  # (members, n)

    @staticmethod
    def _combine(p: np.ndarray) -> np.ndarray:
        """-ln q of the Cauchy combination of (members, n) p-values, each truncated at 1/2."""
        return cauchy_combine(p, truncate=0.5)

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._combine(self._member_p(Z))

    def _inspect_scaled(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self._member_p(Z)  # once, for the score and for choosing each row's restoring member
        return self._combine(p), self._explain_scaled(Z), self._restore_from(Z, p)

    def _explain_scaled(self, Z: np.ndarray) -> np.ndarray:
        parts = []
        for m in self.members_:
            att = m.explain(Z, checked=True)
            parts.append(att.values / np.maximum(np.abs(att.thresholds), 1e-12))
        return np.mean(parts, axis=0)

    def _restore_scaled(self, Z: np.ndarray, attribution: np.ndarray | None = None) -> np.ndarray:
        # each member's minimal edit follows its own attribution, not the ensemble's average
        return self._restore_from(Z, self._member_p(Z))

    def _restore_from(self, Z: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Each row restored by the member with its smallest p-value (``p``: (members, n))."""
        best = p.argmin(axis=0)  # (n,)
        out = np.empty_like(Z)
        for k, m in enumerate(self.members_):
            rows = best == k
            if rows.any():
                out[rows] = m.restore(Z[rows], checked=True)
        return out

    def _embed_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self.members_[0].embed(Z, checked=True)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        """Members' tensors, prefixed by position; their scalers and calibration included."""
        state = {"score_version": torch.tensor([SCORE_VERSION])}
        for i, m in enumerate(self.members_):
            for k, v in m._state().items():
                state[f"{i}.{k}"] = v
            for attr in FITTED_ARRAYS:
                state[f"{i}.{attr}"] = torch.from_numpy(np.ascontiguousarray(getattr(m, attr)))
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        version = state.pop("score_version", None)
        if version is None or int(version[0]) != SCORE_VERSION:
            raise CheckpointError(
                f"this Ensemble was saved with an earlier score (version {1 if version is None else int(version[0])}, "
                f"this anomalens computes version {SCORE_VERSION}): its calibration scores do not match today's "
                "scores; fit it again on the same data")
        members = self._members()
        for i, m in enumerate(members):
            own = {k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)}
            if not own:
                raise CheckpointError(f"ensemble checkpoint lacks member {i} ({self.config.detectors[i]})")
            m.n_features_in_, m.feature_names_in_ = self.n_features_in_, None
            for attr in FITTED_ARRAYS:
                setattr(m, attr, own.pop(attr).numpy().astype(np.float64))
            m._load_state(own)
        self.members_ = members
