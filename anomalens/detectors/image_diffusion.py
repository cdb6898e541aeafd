"""ImageDiffusion: a denoising diffusion model of normal images in pixel space, scored and restored by
partial diffusion (AnoDDPM).

The image is read at ``work`` pixels as the pixel autoencoder reads it (``ImageAutoEncoder``: the same
rows of ``channels x image_size x image_size`` values in [0, 1]). A small U-Net (two stride-2 levels,
skip connections, the step given through a sinusoidal embedding added to each level) learns to
predict the noise in a noised normal image (Ho et al., NeurIPS 2020; a cosine schedule). Following
Wyatt et al., "AnoDDPM" (CVPR-W 2022), an image is noised to an intermediate step ``t_restore x T``,
not to pure noise, so its layout survives, and denoised back (deterministic DDIM strides, from fixed
noise draws kept at fit time, so an image's score never depends on its batch); a model that has only
seen normal images denoises towards normal. The network trains on the steps it restores from
(1..t_restore x T), where all its use lies.

The denoised image (the mean over ``n_draws`` draws) takes the place of the autoencoder's
reconstruction, and everything downstream is the pixel autoencoder's: the normalised and smoothed
error map (attribution), its mean or largest cell (score), the cells above the normal cells' level
(evidence) and the restoration, which replaces only the pixels that deviate within those cells and
denoises again from the image so mended (``RESTORE_ROUNDS`` times). There are no codes, so no
memory of training codes; the embedding is the image at 8 x 8 pixels.

Calibration is cross-fitted by default, as for the autoencoder (``n_folds + 1`` fits).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalens.detectors.diffusion import cosine_alpha_bar, time_embedding
from anomalens.detectors.image_ae import (
    ImageAutoEncoder,
    ImageAutoEncoderConfig,
    work_images,
)
from anomalens.errors import ConfigError

__all__ = ["ImageDiffusion", "ImageDiffusionConfig", "PixelDenoiser"]

EMBED_SIDE = 8  # the embedding: the image at this many pixels a side


@dataclass(frozen=True)
class ImageDiffusionConfig(ImageAutoEncoderConfig):
    conv_channels: int = 16  # feature maps of the first level (doubled at each of the next two)
    # the largest cell of the error map: partial denoising restores local defects, which the mean over a
    # large normal image dilutes (a 4 x 18 px bar on a 96 px texture: 1.07-1.10 against 1.00-1.07 for normal
    # ones under "mean"; 4.8-8.6 against 3.0-3.8 under "max")
    score: str = "max"
    memory: int = 0  # no codes: must stay 0 (latent_dim and memory_size do not apply either)
    n_timesteps: int = 100  # T, steps of the forward (noising) process
    # the step partial diffusion starts from, as a share of T: lower keeps more of the texture and of the defect
    # (bars and blobs on the textures, image AUROC 0.84 / 0.92 at 0.3, 0.89 / 0.98 at 0.5), higher keeps the layout less
    t_restore: float = 0.5
    denoise_steps: int = 5  # DDIM strides from t_restore x T back to 0
    n_draws: int = 2  # fixed noise draws whose denoised images are averaged
    epochs: int = 300
    patience: int = 30  # the denoising loss is noisy (a random step and noise a row): a longer patience

    def validate(self) -> None:
        super().validate()
        if self.memory != 0:
            raise ConfigError(f"memory must be 0 for image_diffusion (it has no codes to remember), got {self.memory!r}")
        for name in ("n_timesteps", "denoise_steps", "n_draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 < self.t_restore <= 1.0:
            raise ConfigError(f"t_restore must be in (0, 1], got {self.t_restore!r}")


class PixelDenoiser(nn.Module):
    """eps_theta(x_t, t) over (n, c, work, work) images scaled to [-1, 1]: a two-level U-Net."""

    def __init__(self, channels: int, size: int, work: int, h: int, n_timesteps: int) -> None:
        super().__init__()
        self.c, self.size, self.work, self.n_timesteps = channels, size, work, n_timesteps
        self.time = nn.Sequential(nn.Linear(32, 4 * h), nn.SiLU())
        self.steps = nn.ModuleList([nn.Linear(4 * h, k) for k in (h, 2 * h, 4 * h, 4 * h)])
        self.inc = nn.Conv2d(channels, h, 3, 1, 1)
        self.down1 = nn.Conv2d(h, 2 * h, 4, 2, 1)
        self.down2 = nn.Conv2d(2 * h, 4 * h, 4, 2, 1)
        self.mid = nn.Conv2d(4 * h, 4 * h, 3, 1, 1)
        self.up2 = nn.ConvTranspose2d(4 * h, 2 * h, 4, 2, 1)
        self.up1 = nn.ConvTranspose2d(4 * h, h, 4, 2, 1)
        self.out = nn.Conv2d(2 * h, channels, 3, 1, 1)

    def at_work(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, c * size * size) rows as (n, c, work, work) images in [0, 1]."""
        return work_images(rows, self.c, self.size, self.work)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.time(time_embedding(t, self.n_timesteps))
        s = [layer(e)[:, :, None, None] for layer in self.steps]
        a = F.silu(self.inc(x_t) + s[0])
        b = F.silu(self.down1(a) + s[1])
        c = F.silu(self.down2(b) + s[2])
        m = F.silu(self.mid(c) + s[3]) + c
        u = F.silu(self.up2(m))
        u = F.silu(self.up1(torch.cat([u, b], 1)))
        return self.out(torch.cat([u, a], 1))


class ImageDiffusion(ImageAutoEncoder):
    """DDPM over image pixels (see the module docstring): the partial-diffusion denoising is the
    reconstruction the pixel autoencoder's error map, score, evidence and restoration read."""

    Config = ImageDiffusionConfig
    config: ImageDiffusionConfig
    attribution_method = "squared error of each pixel under its partial-diffusion denoising (AnoDDPM), smoothed"

    def _build_module(self, n_features: int) -> nn.Module:
        self._check_width(n_features)
        cfg = self.config
        return PixelDenoiser(cfg.channels, cfg.image_size, self.work, cfg.conv_channels, cfg.n_timesteps)

    @property
    def start_step(self) -> int:
        """The step partial diffusion starts from."""
        return max(1, round(self.config.t_restore * self.config.n_timesteps))

    def _on_fit_start(self, Z: np.ndarray) -> None:
        cfg = self.config
        self.alpha_bar_ = cosine_alpha_bar(cfg.n_timesteps)
        self.noise_ = torch.randn(cfg.n_draws, cfg.channels, self.work, self.work)  # fixed draws (seeded)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x0 = module.at_work(batch) * 2 - 1
        t = torch.randint(1, self.start_step + 1, (len(x0),), device=x0.device)
        ab = self.alpha_bar_.to(x0.device)[t][:, None, None, None]
        eps = torch.randn_like(x0)
        return F.mse_loss(module(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t), eps)

    def _remember(self, Z: np.ndarray) -> None:
        self.memory_ = None  # no codes to remember

    def _on_fit_end(self, train: torch.Tensor) -> None:
        targets = torch.cat([self.module_.at_work(train[i:i + 256]) for i in range(0, len(train), 256)])
        recon = torch.cat([self._reconstruct(train[i:i + 256]) for i in range(0, len(train), 256)])
        self._fit_error_levels(targets, recon)

    def _reconstruct(self, rows: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(n, c, work, work) the image noised to the start step by each fixed draw and denoised back
        (DDIM, ``denoise_steps`` strides), the draws' mean, in [0, 1]."""
        x = self.module_.at_work(rows) if x is None else x
        ab = self.alpha_bar_.to(x.device)
        t0 = self.start_step
        steps = torch.linspace(t0, 0, self.config.denoise_steps + 1).round().long().unique_consecutive().tolist()
        total = torch.zeros_like(x)
        for noise in self.noise_.to(x.device):
            x_t = ab[t0].sqrt() * (x * 2 - 1) + (1 - ab[t0]).sqrt() * noise
            for t, s in itertools.pairwise(steps):
                eps = self.module_(x_t, torch.full((len(x),), t, device=x.device))
                pred = ((x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()).clamp(-1, 1)
                x_t = ab[s].sqrt() * pred + (1 - ab[s]).sqrt() * eps if s > 0 else pred
            total += x_t
        return ((total / len(self.noise_) + 1) / 2).clamp(0, 1)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.module_.at_work(batch), EMBED_SIDE).flatten(1)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {**self._pixel_state(), "alpha_bar": self.alpha_bar_, "noise": self.noise_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self._load_pixel_state(state)
        self.alpha_bar_, self.noise_ = state["alpha_bar"].float(), state["noise"].float()
        self.memory_ = None
