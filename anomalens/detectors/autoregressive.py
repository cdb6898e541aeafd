"""Autoregressive: MADE density models with Gaussian-mixture conditionals, exact log-likelihood.

Follows Germain et al., "MADE: Masked Autoencoder for Distribution Estimation" (ICML 2015), with
each conditional p(x_i | x_<i) a mixture of Gaussians (as in Uria et al.'s RNADE, JMLR 2016) so
multi-modal and skewed columns are modelled. One masked network gives every conditional at once:

    -log p(x) = sum_i -log p(x_i | x_<i)       (exactly additive)

Two choices make the per-feature terms point at the features that are actually wrong:

- **the context is clamped into the training rows' box**: each conditional sees the features
  before it clipped to the range normal rows span, while the feature itself is scored as it is. A
  far-out value is then blamed on its own term instead of throwing every later conditional into
  extrapolation. Each conditional is still a normalised density for any context, so p(x) stays an
  exact likelihood.
- **an ensemble of orderings** (as MADE's order-agnostic ensembles): ``n_orderings`` MADEs over
  the natural column order, the reversed one, then seeded random ones, trained side by side as
  one batched network (``BatchedMADE``: one matmul per layer for all orderings). A feature that
  breaks its relation to the others is unlikely given its context in every ordering, while the
  terms it disturbs downstream differ between orderings and average out. On the attribution
  benchmark (8 data sets, local / global hit@2): one plain ordering 0.78 / 0.80, clamped context
  0.83 / 0.89, with 2 orderings 0.87 / 0.92, with 4 orderings 0.91 / 0.94.

- score: the mean over orderings of -log p(x) on robust-scaled inputs
- explain: each feature's conditional negative log-likelihood, averaged over the orderings (sums to
  the score)
- restore: the minimal edit (``TorchDetector._minimal_edit``): features are freed in attribution
  order and each freed feature is set, by coordinate search, to the value among the normal range's
  quantiles and its conditionals' component means that gives the whole row the lowest score (all
  other features held); the freed set grows until the row scores like a typical normal row, and
  the edit with the best trade-off of score and size is kept. A row that never gets there with 8
  gets its abnormal features (conditional NLL above the 99% quantile on held-out normal rows; at
  least the top one) re-estimated that way
- embed: the first ordering's last hidden layer
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from anomalens.detectors.base import TorchConfig, TorchDetector
from anomalens.detectors.nn import BatchedMADE, made_hidden
from anomalens.errors import ConfigError

__all__ = ["Autoregressive", "AutoregressiveConfig"]

_HALF_LOG2PI = 0.5 * math.log(2 * math.pi)
# candidate values of a freed feature in restoration: these quantiles of the training rows, plus the
# component means of its conditionals; two sweeps of coordinate search over the freed features
# (one when refining a smaller edit that is already searched)
_GRID_LEVELS = np.linspace(0.0, 1.0, 17)
_SEARCH_SWEEPS = 2


@dataclass(frozen=True)
class AutoregressiveConfig(TorchConfig):
    n_components: int = 5  # Gaussians per conditional
    hidden_dims: tuple[int, ...] | None = None  # None: (clip(2d, 32, 256), clip(2d, 32, 256))
    min_log_scale: float = -4.0  # floor of each component's log standard deviation (robust sd units)
    n_orderings: int = 4  # column orders (natural, reversed, then seeded random ones), one batched network
    clamp_context: bool = True  # conditionals see earlier features clipped into the training box

    def validate(self) -> None:
        super().validate()
        for name in ("n_components", "n_orderings"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")


class Conditionals(NamedTuple):
    logit: torch.Tensor  # (batch, K, d) mixture weights (unnormalised)
    mean: torch.Tensor  # (batch, K, d)
    log_scale: torch.Tensor  # (batch, K, d)


class MixtureMADE(nn.Module):
    """MADEs with mixture-of-Gaussian conditionals, one per column order, run as one batched network.

    The context each conditional sees is clamped into ``box`` (the training rows' range; infinite
    until ``fit`` sets it), while the feature itself is scored as it is.
    """

    def __init__(self, n_features: int, hidden: tuple[int, ...], n_components: int, min_log_scale: float,
                 orders: list[torch.Tensor]) -> None:
        super().__init__()
        self.made = BatchedMADE(n_features, hidden, 3 * n_components, orders)
        self.k, self.min_log_scale = n_components, min_log_scale
        self.register_buffer("box", torch.tensor([-math.inf, math.inf]).repeat_interleave(n_features).view(2, -1))
        # spread the initial component means so the mixture starts multi-modal
        with torch.no_grad():
            offsets = torch.linspace(-1.5, 1.5, n_components) if n_components > 1 else torch.zeros(1)
            self.made.out.bias.view(len(orders), 3, n_components, n_features)[:, 1] += offsets[:, None]

    @property
    def n_members(self) -> int:
        return self.made.order.shape[0]

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.box[1]), self.box[0])

    def forward(self, x: torch.Tensor) -> Conditionals:  # x: (batch, d) -> each (members, batch, K, d)
        out = self.made(self._context(x)).view(self.n_members, x.shape[0], 3, self.k, x.shape[1])
        log_scale = self.min_log_scale + F.softplus(out[:, :, 2] - self.min_log_scale)
        return Conditionals(out[:, :, 0], out[:, :, 1], log_scale)

    def member_nll(self, x: torch.Tensor) -> torch.Tensor:
        """(members, batch, d) each ordering's per-feature conditional negative log-likelihood."""
        c = self(x)
        z = (x[None, :, None, :] - c.mean) * torch.exp(-c.log_scale)
        log_comp = -0.5 * z.pow(2) - c.log_scale - _HALF_LOG2PI  # (members, batch, K, d)
        return -torch.logsumexp(F.log_softmax(c.logit, dim=2) + log_comp, dim=2)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d) per-feature conditional NLL, averaged over the orderings."""
        return self.member_nll(x).mean(dim=0)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, width) the first ordering's last hidden layer."""
        return self.made.features(self._context(x))[0]


def orderings(n_features: int, n: int, seed: int) -> list[torch.Tensor]:
    """The natural column order, the reversed one, then seeded random permutations (n in all)."""
    base = [torch.arange(n_features), torch.arange(n_features).flip(0)]
    gen = torch.Generator().manual_seed(seed)
    while len(base) < n:
        base.append(torch.randperm(n_features, generator=gen))
    return base[:n]


class Autoregressive(TorchDetector):
    """MADE with mixture-of-Gaussian conditionals; score = -log p(x), explained per feature exactly."""

    Config = AutoregressiveConfig
    restores_by_edit = True
    attribution_method = "per-feature conditional negative log-likelihood -log p(x_i | x_<i), mean over orderings"

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = made_hidden(n_features, cfg.hidden_dims)
        seed = cfg.random_state if cfg.random_state is not None else 0
        return MixtureMADE(n_features, hidden, cfg.n_components, cfg.min_log_scale,
                           orderings(n_features, cfg.n_orderings, seed))

    def _on_fit_start(self, Z: np.ndarray) -> None:
        self.grid_ = torch.as_tensor(np.quantile(Z, _GRID_LEVELS, axis=0), dtype=torch.float32)  # (G, d)

    def _fit_scaled(self, Z: np.ndarray) -> None:
        super()._fit_scaled(Z)
        if self.config.clamp_context:
            box = torch.as_tensor(np.stack([Z.min(axis=0), Z.max(axis=0)]), dtype=torch.float32)
            self.module_.box.copy_(box.to(self.device_))

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"grid": self.grid_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.grid_ = state["grid"]

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        # each ordering's mean NLL, summed so that every ordering gets its own full gradient
        return module.member_nll(batch).sum(dim=2).mean(dim=1).sum()

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.nll(batch)

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.nll(batch).sum(dim=1)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.hidden(batch)

    def _edit_fill(self, batch: torch.Tensor, free: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, d) the rows with each freed feature set, by coordinate search, to the candidate
        value (training quantiles and its conditionals' component means) that minimises the score.
        From ``start`` (a previous, smaller edit) one sweep refines; from scratch, two."""
        x = (batch if start is None else start).clone()
        grid = self.grid_.to(batch.device)
        for _ in range(_SEARCH_SWEEPS if start is None else 1):
            for i in torch.nonzero(free.any(dim=0)).flatten().tolist():
                rows = torch.nonzero(free[:, i]).flatten()
                xr = x[rows]
                means = self.module_(xr).mean[:, :, :, i].transpose(0, 1).reshape(len(rows), -1)  # (r, M * K)
                cand = torch.cat([grid[:, i].expand(len(rows), -1), means], dim=1)  # (r, C)
                trial = xr.repeat_interleave(cand.shape[1], dim=0)
                trial[:, i] = cand.reshape(-1)
                best = self._score_batch(trial).view(len(rows), -1).argmin(dim=1)
                x[rows, i] = cand.gather(1, best[:, None]).squeeze(1)
        return x

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        if attribution is None:
            attribution = self.module_.nll(batch)

        def abnormal(stuck: torch.Tensor) -> torch.Tensor:  # rows are searched independently: only the stuck ones
            return self._edit_fill(batch[stuck], self._abnormal_features(attribution[stuck]))

        return self._minimal_edit(batch, fallback=abnormal, attribution=attribution)
