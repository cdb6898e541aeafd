"""NormalizingFlow: a masked autoregressive flow with exact log-likelihood.

Follows Papamakarios et al., "Masked Autoregressive Flow for Density Estimation" (NeurIPS 2017).
Each layer is an affine MADE transform u_i = (x_i - m_i(x_<i)) * exp(-a_i(x_<i)). Unlike the
paper's default we keep the SAME variable order in every layer (no permutations). The stack is then
still autoregressive in that order, and the negative log-likelihood splits exactly into

    -log p(x) = sum_i -log p(x_i | x_<i),  -log p(x_i | x_<i) = u_K,i^2 / 2 + log(2 pi) / 2 + sum_l a_l,i

so each feature's term is its exact conditional negative log-likelihood: an additive attribution
with a clear meaning ("x_i is unlikely given the features before it"). Known limit: when x_j is
shifted, a later feature x_k that is strongly correlated with x_j becomes unlikely *given* x_j and
shares the blame; the benchmark reports how often this costs the top-k hit.

- score: -log p(x) on robust-scaled inputs
- explain: the per-feature conditional negative log-likelihood above (sums to the score)
- restore: over the abnormal features only (conditional NLL above its 99% quantile on held-out
  normal rows; at least the top one), the others fixed: each is first set to the training quantile
  that maximises log p(x), then all are refined by gradient ascent on log p(x). The "normal
  version" changes what is wrong and keeps what is right
- embed: the base-space code u_K (a Gaussianised representation of the row)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from anomalens.detectors.base import TorchConfig, TorchDetector
from anomalens.detectors.nn import MADE, made_hidden
from anomalens.errors import ConfigError

__all__ = ["NormalizingFlow", "NormalizingFlowConfig", "MAFNetwork"]

_HALF_LOG2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class NormalizingFlowConfig(TorchConfig):
    n_layers: int = 5  # stacked MADE affine layers
    hidden_dims: tuple[int, ...] | None = None  # per MADE; None: (clip(2d, 32, 256), clip(2d, 32, 256))
    max_log_scale: float = 3.0  # |a| bound per layer (soft, tanh): keeps training stable on heavy tails
    noise_std: float = 0.0  # Gaussian dequantisation noise in training (robust sd units) for discrete columns
    restore_steps: int = 100  # gradient-ascent steps of restore, after the best-quantile start
    restore_lr: float = 0.05  # Adam step size of restore, in robust standard deviations

    def validate(self) -> None:
        super().validate()
        for name in ("n_layers", "restore_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")


class FlowOutput(NamedTuple):
    u: torch.Tensor  # (batch, d) base-space code
    nll: torch.Tensor  # (batch, d) per-feature conditional negative log-likelihood


class MAFNetwork(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], n_layers: int, max_log_scale: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MADE(n_features, hidden, 2) for _ in range(n_layers))
        self.max_log_scale = max_log_scale

    def forward(self, x: torch.Tensor) -> FlowOutput:  # (batch, d)
        u, log_det = x, torch.zeros_like(x)
        for made in self.layers:
            m, a = made(u).unbind(dim=1)  # (batch, d) each
            a = self.max_log_scale * torch.tanh(a / self.max_log_scale)
            u = (u - m) * torch.exp(-a)
            log_det = log_det + a
        # in float64: a row far outside the training data has a finite code u whose square can pass
        # float32's range (inf scores, no order among them); float64 keeps every such score finite
        return FlowOutput(u, 0.5 * u.double().pow(2) + _HALF_LOG2PI + log_det.double())


class NormalizingFlow(TorchDetector):
    """Masked autoregressive flow; score = -log p(x), explained by exact per-feature conditionals."""

    Config = NormalizingFlowConfig
    attribution_method = "per-feature conditional negative log-likelihood -log p(x_i | x_<i)"

    _N_CANDIDATES = 33  # training quantiles tried as starting values by restore

    def _on_fit_start(self, Z) -> None:
        levels = torch.linspace(0.01, 0.99, self._N_CANDIDATES, dtype=torch.float64)
        self.candidates_ = torch.quantile(torch.as_tensor(Z), levels, dim=0).float()  # (K, d) scaled units

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"candidates": self.candidates_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.candidates_ = state["candidates"]

    def conditional_nll(self, X) -> np.ndarray:
        """(n, d) exact -log p(x_i | x_<i) per feature (in column order); the same as ``explain(X).values``."""
        return self.explain(X).values

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = made_hidden(n_features, cfg.hidden_dims)
        return MAFNetwork(n_features, hidden, cfg.n_layers, cfg.max_log_scale)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        if module.training and self.config.noise_std > 0:
            batch = batch + self.config.noise_std * torch.randn_like(batch)
        return module(batch).nll.sum(dim=1).mean()

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_(batch).nll

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_(batch).nll.sum(dim=1)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_(batch).u

    def _restore_scaled(self, Z: np.ndarray, attribution: np.ndarray | None = None) -> np.ndarray:
        return self._map(self._restore_batch, Z, attribution, grad=True)

    def _best_candidates(self, x: torch.Tensor, free: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """Start restore from a normal value: each free feature, most anomalous first, is set to the
        training quantile that maximises log p(x) with the other features as they are by then.
        Gradient steps alone cannot travel back from a value tens of standard deviations out."""
        cand = self.candidates_.to(x.device)  # (K, d)
        K, d = cand.shape
        order = torch.argsort(nll.masked_fill(~free, -torch.inf), dim=1, descending=True)  # (b, d)
        n_free = int(free.sum(dim=1).max())
        rows = torch.arange(len(x), device=x.device)
        for step in range(n_free):
            feat = order[:, step]  # (b,) the feature to set in each row
            active = free[rows, feat]
            trial = x.unsqueeze(0).repeat(K, 1, 1)  # (K, b, d)
            trial[:, rows, feat] = cand[:, feat]
            score = self.module_(trial.view(-1, d)).nll.sum(dim=1).view(K, -1)  # (K, b)
            best = cand[score.argmin(dim=0), feat]  # (b,)
            x[rows[active], feat[active]] = best[active]
        return x

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        # the abnormal features come from the per-feature NLL (the attribution itself); recomputed here
        # under no_grad as the gradient search starts from them
        net = self.module_
        for p in net.parameters():
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                nll = net(batch).nll
                free = self._abnormal_features(nll)
                x = self._best_candidates(batch.clone(), free, nll)
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=self.config.restore_lr)
            for _ in range(self.config.restore_steps):
                opt.zero_grad(set_to_none=True)
                net(x).nll.sum().backward()
                x.grad.mul_(free)  # only the abnormal features move
                opt.step()
            return x.detach()
        finally:
            for p in net.parameters():
                p.requires_grad_(True)
