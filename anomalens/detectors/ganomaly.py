"""GANomaly: an encoder-decoder-encoder generator trained against a discriminator.

Follows Akcay, Atapour-Abarghouei and Breckon, "GANomaly: Semi-Supervised Anomaly Detection via
Adversarial Training" (ACCV 2018), for vectors: the generator encodes x to z, decodes z to x_hat
and encodes x_hat again to z_hat. It is trained on normal rows with three losses: contextual
|x - x_hat| (weight 50), encoder ||z - z_hat||^2 (weight 1) and adversarial feature matching
between the discriminator's features of x and x_hat (weight 1); the discriminator is trained with
binary cross-entropy and re-initialised when it wins outright (its loss < 1e-5), as in the paper.
An anomaly's reconstruction is pulled to the normal manifold, so its code and its
reconstruction's code disagree.

- score: mean squared distance ||z - z_hat||^2 / k between the two codes (the paper's score)
- explain: each feature's squared reconstruction error, normalised by its mean on training rows
  (not additive: the score lives in latent space)
- restore: the minimal edit (``TorchDetector._minimal_edit``) whose projection is the reconstruction
  from the code clamped into the training codes' box
- embed: z

Early stopping watches the contextual plus encoder loss on the validation share (the adversarial
term is not comparable across epochs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from anomalens.detectors.base import TorchConfig, TorchDetector, optimizer_step
from anomalens.detectors.nn import auto_hidden, auto_latent, clamp_code, code_range, mlp
from anomalens.errors import ConfigError

__all__ = ["GANomaly", "GANomalyConfig", "GANomalyNetwork"]


@dataclass(frozen=True)
class GANomalyConfig(TorchConfig):
    hidden_dims: tuple[int, ...] | None = None  # None: (clip(2d, 32, 256), clip(d, 16, 128))
    latent_dim: int | None = None  # None: about sqrt(d), in [2, 32]
    dropout: float = 0.2  # in the generator while training, as in AutoEncoder: stops anomalies being copied through
    w_adv: float = 1.0  # adversarial (feature matching) weight
    w_con: float = 50.0  # contextual |x - x_hat| weight
    w_enc: float = 1.0  # encoder ||z - z_hat||^2 weight
    # lr stays at the house default 1e-3 (the paper's 2e-4 is for images; on rows it under-trains)

    def validate(self) -> None:
        super().validate()
        for name in ("w_adv", "w_con", "w_enc"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive int or None, got {self.latent_dim!r}")


class GANomalyNetwork(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], latent: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = mlp([n_features, *hidden, latent], dropout=dropout)
        self.decoder = mlp([latent, *reversed(hidden), n_features], dropout=dropout)
        self.encoder2 = mlp([n_features, *hidden, latent], dropout=dropout)
        self.features = mlp([n_features, *hidden], final_activation=True)  # discriminator body
        self.judge = nn.Linear(hidden[-1], 1)  # discriminator head (logit of "real")

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters(), *self.encoder2.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.features.parameters(), *self.judge.parameters()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return z, x_hat, self.encoder2(x_hat)


class GANomaly(TorchDetector):
    """Encoder-decoder-encoder GAN; score = distance between the input's code and its reconstruction's."""

    Config = GANomalyConfig
    restores_by_edit = True
    attribution_method = "squared reconstruction error per feature, normalised by its training mean"
    additive_attribution = False

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        hidden = tuple(cfg.hidden_dims) if cfg.hidden_dims else auto_hidden(n_features)
        return GANomalyNetwork(n_features, hidden, cfg.latent_dim or auto_latent(n_features), cfg.dropout)

    def _optimizers(self, module: nn.Module) -> list[torch.optim.Optimizer]:
        cfg = self.config
        return [
            torch.optim.Adam(module.generator_parameters(), lr=cfg.lr, betas=(0.5, 0.999), weight_decay=cfg.weight_decay),
            torch.optim.Adam(module.discriminator_parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
        ]

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Contextual + encoder loss (what early stopping watches)."""
        return self._loss_parts(batch, *module(batch))

    def _train_step(self, module: nn.Module, batch: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> float:
        cfg = self.config
        opt_g, opt_d = optimizers
        z, x_hat, z_hat = module(batch)
        # generator: contextual + encoder + feature matching against the discriminator
        adv = (module.features(batch).detach().mean(dim=0) - module.features(x_hat).mean(dim=0)).pow(2).mean()
        loss_g = self._loss_parts(batch, z, x_hat, z_hat) + cfg.w_adv * adv
        if not torch.isfinite(loss_g):
            return float("nan")
        optimizer_step(opt_g, loss_g, module.generator_parameters())
        # discriminator: real rows vs reconstructions
        real = module.judge(module.features(batch))
        fake = module.judge(module.features(x_hat.detach()))
        loss_d = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )
        optimizer_step(opt_d, loss_d, module.discriminator_parameters(), clip=None)
        if loss_d.item() < 1e-5:  # the paper's remedy for a discriminator that has won outright
            for layer in [*module.features, module.judge]:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        return loss_g.item()

    def _loss_parts(self, batch: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return cfg.w_con * (x_hat - batch).abs().mean() + cfg.w_enc * (z_hat - z).pow(2).mean()

    def _on_fit_end(self, train: torch.Tensor) -> None:
        chunks = [train[i : i + 8192] for i in range(0, len(train), 8192)]
        outs = [self.module_(c) for c in chunks]
        self.code_range_ = code_range(torch.cat([o[0] for o in outs]))
        err = torch.cat([(self._project_batch(c) - c).pow(2) for c in chunks])
        self.error_scale_ = err.mean(dim=0).clamp_min(1e-6)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"error_scale": self.error_scale_, "code_range": self.code_range_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.error_scale_, self.code_range_ = state["error_scale"], state["code_range"]

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        z, _, z_hat = self.module_(batch)
        return (z - z_hat).pow(2).mean(dim=1)

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return (self._project_batch(batch) - batch).pow(2) / self.error_scale_.to(batch.device)

    def _project_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.decoder(clamp_code(self.module_.encoder(batch), self.code_range_))

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        return self._minimal_edit(batch, attribution=attribution)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.encoder(batch)
