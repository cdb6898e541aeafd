"""PCA: the linear-Gaussian detector, the light-tailed voice of the Ensemble.

A Gaussian over the principal axes of the robust-scaled training rows (the covariance's
eigenvectors), as in the principal component classifier of Shyu et al. (ICDM workshop, 2003); the
fewest axes that explain ``variance`` of the variance (at most d - 1) span the normal subspace, the
maximum-likelihood subspace of probabilistic PCA (Tipping and Bishop, JRSS-B 1999), the linear
case of the VAE. Fitted in closed form (an eigendecomposition of the d x d covariance), no
training loop.

- score: the squared Mahalanobis distance per axis, sum_i (v_i . (x - mean))^2 / lambda_i / d
  (chi-square with d degrees of freedom, over d, for Gaussian rows; -2 log p(x) / d up to a
  constant). Eigenvalues below ``MIN_EIGENVALUE`` of the largest are raised to it, so an exactly
  collinear direction does not divide by float noise. Its normal scores are light-tailed: a row
  at the edge of the normal cloud grows quadratically in its distance, where the autoencoder's and
  the autoregressive model's scores, which extrapolate poorly there, grow much faster
  (``evals.null_tails``: their 99.99% quantile is 4.6-6.0 times their 99%), so calibrated
  p-values reach far beyond the last calibration score for a row that leaves the subspace: the
  discarded axes' small variances make a 15-sd shift of one feature hundreds of units
  (docs/calibration.md). Only the discarded axes (a residual off the subspace) ranked 33 ADBench
  sets at mean AUROC 0.784, all axes 0.860 (``/tmp`` runs, 2026-12-01, docs/calibration.md): the
  anomalies of annthyroid, celeba, cover, pendigits or WBC lie along the subspace, not off it
- explain: the subspace part of the score (kept axes) as the squared coordinates of the symmetric
  (ZCA) whitening of the row's projection, which sums to it; the off-subspace part shared out by
  the squared residuals (each over its training mean) of a robust re-projection (features beyond
  their normal 99% level replaced by their projection, ``robust_rounds`` times, as the
  AutoEncoder's), so a wrong feature does not smear the blame over the others. Sums to the score
- restore: the minimal edit (``TorchDetector._minimal_edit``): the most responsible features are
  re-estimated by alternating projection onto the subspace, the coordinates clamped into the
  training rows' box, the others held
- embed: the coordinates on the kept axes (the scaled row itself when none is kept, d = 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from anomalens.detectors._validation import check_int
from anomalens.detectors.base import BaseConfig, TorchDetector, resolve_device
from anomalens.detectors.nn import clamp_code
from anomalens.errors import ConfigError

__all__ = ["PCA", "PCAConfig", "PCAModel"]

MIN_EIGENVALUE = 1e-3  # an axis's variance is at least this share of the largest


@dataclass(frozen=True)
class PCAConfig(BaseConfig):
    variance: float = 0.95  # keep the fewest components explaining this share of the variance (at most d - 1)
    robust_rounds: int = 3  # re-projections of the robust reconstruction that ``explain`` shares the score by
    device: str = "auto"
    score_batch_size: int = 8192  # rows per pass when scoring; memory stays flat

    def validate(self) -> None:
        super().validate()
        if isinstance(self.variance, bool) or not isinstance(self.variance, (int, float)) \
                or not 0.0 < self.variance < 1.0:
            raise ConfigError(f"variance must be a number in (0, 1), got {self.variance!r}")
        check_int(self.robust_rounds, "robust_rounds", low=0)
        check_int(self.score_batch_size, "score_batch_size", low=1)
        resolve_device(self.device)


class PCAModel(nn.Module):
    """The fitted Gaussian as buffers: ``mean`` (d,), ``components`` (d, d) the principal axes, the
    kept ones first, ``inv_var`` (d,) one over each axis's variance (floored), ``box`` (2, d) the
    training rows' smallest and largest coordinates, ``rank`` the number of kept axes."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("components", torch.zeros(n_features, n_features))
        self.register_buffer("inv_var", torch.zeros(n_features))
        self.register_buffer("box", torch.zeros(2, n_features))
        self.register_buffer("rank", torch.zeros((), dtype=torch.long))

    @property
    def basis(self) -> torch.Tensor:
        """(d, rank) orthonormal axes of the subspace."""
        return self.components[:, : int(self.rank)]

    def project(self, x: torch.Tensor, *, clamp: bool = False) -> torch.Tensor:
        """(batch, d) the rows projected onto the subspace; ``clamp``: coordinates held in the box."""
        basis = self.basis
        code = (x - self.mean) @ basis
        if clamp:
            code = clamp_code(code, self.box[:, : basis.shape[1]])
        return self.mean + code @ basis.T

    def axes(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d) each axis's squared coordinate over its variance (the score is their mean)."""
        return ((x - self.mean) @ self.components).pow(2) * self.inv_var


class PCA(TorchDetector):
    """Linear-Gaussian detector: score = squared Mahalanobis distance over the principal axes, per axis."""

    Config: ClassVar[type[PCAConfig]] = PCAConfig  # type: ignore[assignment]
    restores_by_edit = True
    attribution_method = ("whitened projection per feature, plus the off-subspace part shared by squared residual "
                          "under a robust (reweighted) projection")

    def _build_module(self, n_features: int) -> nn.Module:
        return PCAModel(n_features)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - no training loop
        raise NotImplementedError("PCA is fitted in closed form")

    def _fit_scaled(self, Z: np.ndarray) -> None:
        """The covariance's eigenvectors and eigenvalues, largest first (the floor applied), the
        training coordinates' box, and the scales and 99% levels of the training rows' squared
        residuals off the subspace (for ``explain``)."""
        self.device_ = resolve_device(self.config.device)
        n, d = Z.shape
        mean = Z.mean(axis=0)
        C = Z - mean
        values, vectors = np.linalg.eigh(C.T @ C / max(n - 1, 1))
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
        total = float(values.sum())
        rank = 0
        if total > 0 and d > 1:
            share = np.cumsum(values) / total
            rank = int(min(np.searchsorted(share, self.config.variance * (1 - 1e-12)) + 1, d - 1, max(n - 1, 0)))
        module = PCAModel(d)
        module.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        module.components.copy_(torch.as_tensor(vectors, dtype=torch.float32))
        module.inv_var.copy_(torch.as_tensor(1.0 / np.maximum(values, max(MIN_EIGENVALUE * values[0], 1e-12)),
                                             dtype=torch.float32))
        codes = C @ vectors
        module.box.copy_(torch.as_tensor(np.stack([codes.min(axis=0), codes.max(axis=0)]), dtype=torch.float32))
        module.rank.fill_(rank)
        self.module_ = module.to(self.device_).eval()
        self.history_ = {"epochs": 0, "rank": rank, "explained": float(values[:rank].sum() / total) if total > 0 else 0.0}
        train = torch.as_tensor(Z, dtype=torch.float32, device=self.device_)
        with torch.no_grad():
            sq = torch.cat([(self.module_.project(train[i:i + 8192]) - train[i:i + 8192]).pow(2)
                            for i in range(0, n, 8192)])
            self.error_scale_ = sq.mean(dim=0).clamp_min(1e-6)
            err = (sq / self.error_scale_).cpu().numpy()
            self.error_limit_ = torch.as_tensor(np.quantile(err, 0.99, axis=0), dtype=torch.float32,
                                                device=self.device_)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"error_scale": self.error_scale_, "error_limit": self.error_limit_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.error_scale_, self.error_limit_ = state["error_scale"], state["error_limit"]

    @property
    def n_components_(self) -> int:
        """The number of principal components kept."""
        self._check_fitted()
        return int(self.module_.rank)

    def _errors(self, batch: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """(batch, d) squared residuals, each divided by the feature's mean on the training rows."""
        return (recon - batch).pow(2) / self.error_scale_.to(batch.device)

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.project(batch, clamp=True)

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.axes(batch).mean(dim=1)

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        m = self.module_
        r, d = int(m.rank), batch.shape[1]
        axes = m.axes(batch)
        basis = m.basis
        # the subspace part: ZCA whitening of the projection, B diag(1/sqrt(lambda)) B^T (x - mean),
        # whose squared entries sum to sum_{i <= rank} y_i^2 / lambda_i
        inside = ((((batch - m.mean) @ basis) * m.inv_var[:r].sqrt()) @ basis.T).pow(2)
        recon = m.project(batch)
        err = self._errors(batch, recon)
        limit = self.error_limit_.to(batch.device)
        for _ in range(self.config.robust_rounds):
            recon = m.project(torch.where(err <= limit, batch, recon))
            err = self._errors(batch, recon)
        share = err / err.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return (inside + share * axes[:, r:].sum(dim=1, keepdim=True)) / d

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        return self._minimal_edit(batch, attribution=attribution)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if int(self.module_.rank) == 0:
            return batch
        return (batch - self.module_.mean) @ self.module_.basis
