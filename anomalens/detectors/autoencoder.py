"""AutoEncoder: reconstruction-error anomaly detection.

Follows the classic under-complete autoencoder detector (Sakurada and Yairi, MLSDA 2014), with the
optional denoising training of Vincent et al. (ICML 2008): the network reconstructs clean rows
from corrupted ones, which makes it less able to copy anomalies through.

- score: mean normalised squared reconstruction error over features, on robust-scaled inputs
- explain: each feature's squared error, divided by its mean on the training rows (so a feature
  that is always hard to reconstruct does not dominate), / d; sums to the score
- restore: the minimal edit (``TorchDetector._minimal_edit``): the most responsible features are
  re-estimated, the others held, by iterating the reconstruction from the code clamped into the
  box of the training rows' codes (so an extreme input cannot drive the decoder to extrapolate),
  until the row scores like a typical normal row
- embed: the bottleneck code
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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

    def validate(self) -> None:
        super().validate()
        if self.noise_std < 0:
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std!r}")
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
    attribution_method = "squared reconstruction error per feature / d"

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

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"error_scale": self.error_scale_, "code_range": self.code_range_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.error_scale_, self.code_range_ = state["error_scale"], state["code_range"]

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        recon = self._project_batch(batch) if self.config.clamp_latent else self.module_(batch).reconstruction
        err = (recon - batch).pow(2)  # (batch, d)
        return err / self.error_scale_.to(batch.device) / batch.shape[1]

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._explain_batch(batch).sum(dim=1)

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        code = clamp_code(self.module_.encoder(batch), self.code_range_)
        return self.module_.decoder(code)

    def _restore_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._minimal_edit(batch, self._project_batch)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_(batch).code
