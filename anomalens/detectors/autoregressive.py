"""Autoregressive: a MADE density model with Gaussian-mixture conditionals, exact log-likelihood.

Follows Germain et al., "MADE: Masked Autoencoder for Distribution Estimation" (ICML 2015), with
each conditional p(x_i | x_<i) a mixture of Gaussians (as in Uria et al.'s RNADE, JMLR 2016) so
multi-modal and skewed columns are modelled. One masked network gives every conditional at once:

    -log p(x) = sum_i -log p(x_i | x_<i)       (exactly additive)

- score: -log p(x) on robust-scaled inputs
- explain: each feature's conditional negative log-likelihood (sums to the score)
- restore: the minimal edit (``TorchDetector._minimal_edit``): features are freed in attribution
  order and, in column order, replaced by the mode of their conditional given the features before
  them (those already replaced included), the others kept, until the row scores like a typical
  normal row; a row that needs more than 8 gets its abnormal features (conditional NLL above the
  99% quantile on held-out normal rows; at least the top one) replaced that way
- embed: the network's last hidden layer
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from anomalens.detectors.base import TorchConfig, TorchDetector
from anomalens.detectors.nn import MADE, made_hidden
from anomalens.errors import ConfigError

__all__ = ["Autoregressive", "AutoregressiveConfig"]

_HALF_LOG2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class AutoregressiveConfig(TorchConfig):
    n_components: int = 5  # Gaussians per conditional
    hidden_dims: tuple[int, ...] | None = None  # None: (clip(2d, 32, 256), clip(2d, 32, 256))
    min_log_scale: float = -4.0  # floor of each component's log standard deviation (robust sd units)

    def validate(self) -> None:
        super().validate()
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, int) or self.n_components < 1:
            raise ConfigError(f"n_components must be a positive int, got {self.n_components!r}")


class Conditionals(NamedTuple):
    logit: torch.Tensor  # (batch, K, d) mixture weights (unnormalised)
    mean: torch.Tensor  # (batch, K, d)
    log_scale: torch.Tensor  # (batch, K, d)


class MixtureMADE(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], n_components: int, min_log_scale: float) -> None:
        super().__init__()
        self.made = MADE(n_features, hidden, 3 * n_components)
        self.k, self.min_log_scale = n_components, min_log_scale
        # spread the initial component means so the mixture starts multi-modal
        with torch.no_grad():
            offsets = torch.linspace(-1.5, 1.5, n_components) if n_components > 1 else torch.zeros(1)
            self.made.out.bias.view(3, n_components, n_features)[1] += offsets[:, None]

    def forward(self, x: torch.Tensor) -> Conditionals:  # x: (batch, d)
        out = self.made(x).view(x.shape[0], 3, self.k, x.shape[1])
        log_scale = self.min_log_scale + F.softplus(out[:, 2] - self.min_log_scale)
        return Conditionals(out[:, 0], out[:, 1], log_scale)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d) per-feature conditional negative log-likelihood."""
        c = self(x)
        z = (x[:, None, :] - c.mean) * torch.exp(-c.log_scale)
        log_comp = -0.5 * z.pow(2) - c.log_scale - _HALF_LOG2PI  # (batch, K, d)
        return -torch.logsumexp(F.log_softmax(c.logit, dim=1) + log_comp, dim=1)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.made.net(x)


class Autoregressive(TorchDetector):
    """MADE with mixture-of-Gaussian conditionals; score = -log p(x), explained per feature exactly."""

    Config = AutoregressiveConfig
    attribution_method = "per-feature conditional negative log-likelihood -log p(x_i | x_<i)"

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = made_hidden(n_features, cfg.hidden_dims)
        return MixtureMADE(n_features, hidden, cfg.n_components, cfg.min_log_scale)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return module.nll(batch).sum(dim=1).mean()

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.nll(batch)

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.nll(batch).sum(dim=1)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.hidden(batch)

    def _fill_modes(self, batch: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """(batch, d) the rows with each freed feature set to its conditional mode, in column order
        (each conditional sees the features before it, freed ones already replaced)."""
        net = self.module_
        x = batch.clone()
        for i in torch.nonzero(free.any(dim=0)).flatten().tolist():
            c = net(x)
            x[:, i] = torch.where(free[:, i], _mixture_mode(c.logit[:, :, i], c.mean[:, :, i], c.log_scale[:, :, i]), x[:, i])
        return x

    def _restore_batch(self, batch: torch.Tensor) -> torch.Tensor:
        abnormal = self._fill_modes(batch, self._abnormal_features(self.module_.nll(batch)))
        return self._minimal_edit(batch, fill=self._fill_modes, fallback=abnormal)


def _mixture_mode(logit: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """(batch,) the highest-density point among the component means of a 1-D mixture (batch, K)."""
    w = F.log_softmax(logit, dim=1)
    z = (mean[:, None, :] - mean[:, :, None]) * torch.exp(-log_scale[:, None, :])  # (batch, at, comp)
    dens = torch.logsumexp(w[:, None, :] - 0.5 * z.pow(2) - log_scale[:, None, :], dim=2)  # (batch, at)
    return mean.gather(1, dens.argmax(dim=1, keepdim=True)).squeeze(1)
