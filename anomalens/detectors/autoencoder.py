"""AutoEncoder: reconstruction-error anomaly detection.

Follows the classic under-complete autoencoder detector (Sakurada and Yairi, MLSDA 2014), with the
optional denoising training of Vincent et al. (ICML 2008): the network reconstructs clean rows
from corrupted ones, which makes it less able to copy anomalies through.

- score: mean normalised squared reconstruction error over features, on robust-scaled inputs
- explain: the score shared out over the features in proportion to their normalised squared errors
  under a *robust* reconstruction (sums to the score). A wrong feature drags the code, and with it
  the reconstruction of the features that are fine, so the plain errors smear the blame; the
  robust reconstruction re-projects with each feature whose error is beyond its normal 99% level
  (on the training rows) replaced by its reconstruction, ``robust_rounds`` times, so the features
  that are fine are reconstructed from each other and only the wrong ones keep large errors
  (iteratively reweighted projection, as in robust PCA). ``robust_rounds=0`` gives the plain
  per-feature errors
- restore: the minimal edit (``TorchDetector._minimal_edit``): the most responsible features are
  re-estimated, the others held, by iterating the reconstruction from the code clamped into the
  box of the training rows' codes (so an extreme input cannot drive the decoder to extrapolate)
- embed: the bottleneck code
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from anomalens.detectors.base import TorchConfig, TorchDetector
from anomalens.detectors.nn import auto_hidden, auto_latent, clamp_code, code_range, mlp
from anomalens.errors import ConfigError

__all__ = ["AutoEncoder", "AutoEncoderConfig", "AENetwork"]


@dataclass(frozen=True)
class AutoEncoderConfig(TorchConfig):
    hidden_dims: tuple[int, ...] | None = None  # None: (clip(2d, 32, 256), clip(d, 16, 128))
    latent_dim: int | None = None  # None: about sqrt(d), in [2, 32]
    noise_std: float = 0.0  # > 0 trains a denoising autoencoder with this Gaussian corruption (scaled units)
    dropout: float = 0.2  # dropout after each hidden layer in training: keeps the model from copying anomalies through
    clamp_latent: bool = True  # score and restore from the code clamped into the training codes' box
    normalize_errors: bool = True  # divide each feature's squared error by its mean on the training rows
    robust_rounds: int = 3  # re-projections of the robust reconstruction that ``explain`` shares the score by

    def validate(self) -> None:
        super().validate()
        if self.noise_std < 0:
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std!r}")
        if isinstance(self.robust_rounds, bool) or not isinstance(self.robust_rounds, int) or self.robust_rounds < 0:
            raise ConfigError(f"robust_rounds must be an int >= 0, got {self.robust_rounds!r}")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive int or None, got {self.latent_dim!r}")


class AEOutput(NamedTuple):
    reconstruction: torch.Tensor  # (batch, d)
    code: torch.Tensor  # (batch, latent)


class AENetwork(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], latent: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = mlp([n_features, *hidden, latent], dropout=dropout)
        self.decoder = mlp([latent, *reversed(hidden), n_features], dropout=dropout)

    def forward(self, x: torch.Tensor) -> AEOutput:  # (batch, d)
        code = self.encoder(x)
        return AEOutput(self.decoder(code), code)


class AutoEncoder(TorchDetector):
    """Under-complete (optionally denoising) autoencoder; score = mean squared reconstruction error."""

    Config = AutoEncoderConfig
    restores_by_edit = True
    attribution_method = "score shared by squared error per feature under a robust (reweighted) reconstruction"

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = tuple(cfg.hidden_dims) if cfg.hidden_dims else auto_hidden(n_features)
        return AENetwork(n_features, hidden, cfg.latent_dim or auto_latent(n_features), cfg.dropout)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        noisy = batch + self.config.noise_std * torch.randn_like(batch) if module.training and self.config.noise_std else batch
        return (module(noisy).reconstruction - batch).pow(2).mean()

    def _on_fit_end(self, train: torch.Tensor) -> None:
        outs = [self.module_(train[i : i + 8192]) for i in range(0, len(train), 8192)]
        err = torch.cat([(o.reconstruction - train[i * 8192 : (i + 1) * 8192]).pow(2) for i, o in enumerate(outs)])
        self.error_scale_ = err.mean(dim=0).clamp_min(1e-6) if self.config.normalize_errors else torch.ones(train.shape[1])
        self.code_range_ = code_range(torch.cat([o.code for o in outs]))
        errors = torch.cat([self._errors(train[i : i + 8192], self._reconstruct(train[i : i + 8192]))
                            for i in range(0, len(train), 8192)])
        self.error_limit_ = torch.as_tensor(np.quantile(errors.cpu().numpy(), 0.99, axis=0), dtype=torch.float32)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"error_scale": self.error_scale_, "code_range": self.code_range_, "error_limit": self.error_limit_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.error_scale_, self.code_range_ = state["error_scale"], state["code_range"]
        self.error_limit_ = state["error_limit"]

    def _reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        return self._project_batch(batch) if self.config.clamp_latent else self.module_(batch).reconstruction

    def _errors(self, batch: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """(batch, d) squared errors, each divided by the feature's mean error on the training rows."""
        return (recon - batch).pow(2) / self.error_scale_.to(batch.device)

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._errors(batch, self._reconstruct(batch)).mean(dim=1)

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._error_and_attribution(batch)[1]

    def _error_and_attribution(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the plain reconstruction error score, the attribution) from one first reconstruction."""
        recon = self._reconstruct(batch)
        plain = self._errors(batch, recon)
        limit = self.error_limit_.to(batch.device)
        err = plain
        for _ in range(self.config.robust_rounds):
            recon = self._reconstruct(torch.where(err <= limit, batch, recon))
            err = self._errors(batch, recon)
        share = err / err.sum(dim=1, keepdim=True).clamp_min(1e-12)
        score = plain.mean(dim=1)
        return score, share * score[:, None]

    def _score_explain_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if type(self)._explain_batch is not AutoEncoder._explain_batch:  # a subclass attributes otherwise
            return super()._score_explain_batch(batch)
        score, values = self._error_and_attribution(batch)
        if type(self)._score_batch is not AutoEncoder._score_batch:  # a subclass scores otherwise (a memory)
            score = self._score_batch(batch)
        return score, values

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        code = clamp_code(self.module_.encoder(batch), self.code_range_)
        return self.module_.decoder(code)

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        return self._minimal_edit(batch, attribution=attribution)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_(batch).code
