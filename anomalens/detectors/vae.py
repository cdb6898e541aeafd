"""VAE: variational autoencoder scored by reconstruction probability.

Follows An and Cho, "Variational Autoencoder based Anomaly Detection using Reconstruction
Probability" (SNU Data Mining Center, 2015): the decoder outputs a Gaussian (mean and variance per
feature) and the anomaly score is the negative log-likelihood of x under the decoder, averaged over
L latent samples drawn from the encoder's posterior q(z | x).

- score: -1/L sum_l log N(x | mu_dec(z_l), sigma_dec^2(z_l)), z_l ~ q(z | x)
- explain: the same negative log-likelihood per feature (sums to the score)
- restore: the minimal edit (``TorchDetector._minimal_edit``) whose projection is the decoder's mean
  for the encoder's mean, clamped into the box of the training rows' encoder means (an extreme row
  cannot make the decoder extrapolate out of the normal region)
- embed: the encoder's mean

The L standard-normal draws are fixed at fit time (and saved), so a row's score is a deterministic
function of the row, the same whether it is scored alone or in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from anomalens.detectors.base import TorchConfig, TorchDetector
from anomalens.detectors.nn import auto_hidden, auto_latent, clamp_code, code_range, mlp
from anomalens.errors import ConfigError

__all__ = ["VAE", "VAEConfig", "VAENetwork", "vae_loss"]

_LOG2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class VAEConfig(TorchConfig):
    hidden_dims: tuple[int, ...] | None = None  # None: (clip(2d, 32, 256), clip(d, 16, 128))
    latent_dim: int | None = None  # None: about sqrt(d), in [2, 32]
    beta: float = 8.0  # KL weight; > 1 (beta-VAE) keeps the latent smooth and low-information, which stops
    # anomalies being reconstructed well (results were flat for beta in 8-16 on the dev sets)
    n_samples: int = 16  # latent samples L averaged in the score
    clamp_latent: bool = True  # score and restore from encoder means clamped into the training box
    min_log_var: float = -6.0  # floor of the decoder's log-variance (scaled units): keeps the likelihood bounded

    def validate(self) -> None:
        super().validate()
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta!r}")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int, got {self.n_samples!r}")


class VAEOutput(NamedTuple):
    mu: torch.Tensor  # (batch, latent) encoder mean
    log_var: torch.Tensor  # (batch, latent) encoder log-variance
    x_mu: torch.Tensor  # (batch, d) decoder mean
    x_log_var: torch.Tensor  # (batch, d) decoder log-variance


class VAENetwork(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], latent: int, min_log_var: float) -> None:
        super().__init__()
        self.encoder = mlp([n_features, *hidden], final_activation=True)
        self.enc_out = nn.Linear(hidden[-1], 2 * latent)
        self.decoder = mlp([latent, *reversed(hidden)], final_activation=True)
        self.dec_out = nn.Linear(hidden[0], 2 * n_features)
        self.min_log_var = min_log_var

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.enc_out(self.encoder(x)).chunk(2, dim=-1)
        return mu, log_var.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_mu, raw = self.dec_out(self.decoder(z)).chunk(2, dim=-1)
        return x_mu, self.min_log_var + F.softplus(raw - self.min_log_var)  # smooth floor

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """One pass; ``eps`` (batch or 1, latent) is the standard-normal draw, None = the mean."""
        mu, log_var = self.encode(x)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * log_var)
        return VAEOutput(mu, log_var, *self.decode(z))


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise -log N(x | mean, exp(log_var))."""
    return 0.5 * (_LOG2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var))


def vae_loss(out: VAEOutput, x: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative ELBO per row, averaged over the batch."""
    nll = gaussian_nll(x, out.x_mu, out.x_log_var).sum(dim=1)
    kl = 0.5 * (out.mu.pow(2) + out.log_var.exp() - 1.0 - out.log_var).sum(dim=1)
    return (nll + beta * kl).mean()


class VAE(TorchDetector):
    """Variational autoencoder; score = negative reconstruction log-likelihood over latent samples."""

    Config = VAEConfig
    restores_by_edit = True
    attribution_method = "per-feature negative reconstruction log-likelihood (An and Cho, 2015)"

    def _on_fit_start(self, Z) -> None:
        latent = self.config.latent_dim or auto_latent(Z.shape[1])
        self.eps_ = torch.randn(self.config.n_samples, latent)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"eps": self.eps_, "code_range": self.code_range_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.eps_, self.code_range_ = state["eps"], state["code_range"]

    def _on_fit_end(self, train: torch.Tensor) -> None:
        self.code_range_ = code_range(torch.cat([self.module_.encode(train[i : i + 8192])[0] for i in range(0, len(train), 8192)]))

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = tuple(cfg.hidden_dims) if cfg.hidden_dims else auto_hidden(n_features)
        return VAENetwork(n_features, hidden, cfg.latent_dim or auto_latent(n_features), cfg.min_log_var)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(batch.shape[0], self.eps_.shape[1], device=batch.device)
        return vae_loss(module(batch, eps), batch, self.config.beta)

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        net = self.module_
        mu, log_var = net.encode(batch)  # (batch, latent)
        if self.config.clamp_latent:
            mu = clamp_code(mu, self.code_range_)
        eps = self.eps_.to(batch.device)  # (L, latent)
        z = mu[:, None, :] + eps[None, :, :] * torch.exp(0.5 * log_var)[:, None, :]  # (batch, L, latent)
        x_mu, x_log_var = net.decode(z)  # (batch, L, d)
        return gaussian_nll(batch[:, None, :], x_mu, x_log_var).mean(dim=1)  # (batch, d)

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._explain_batch(batch).sum(dim=1)

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        mu = clamp_code(self.module_.encode(batch)[0], self.code_range_)
        return self.module_.decode(mu)[0]

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        return self._minimal_edit(batch, attribution=attribution)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.encode(batch)[0]
