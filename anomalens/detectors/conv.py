"""ConvAutoEncoder: a 1-D convolutional autoencoder over windows of a multivariate series.

The temporal counterpart of ``AutoEncoder`` (same score, attribution, restoration and embedding,
inherited): the rows it sees are windows flattened channel by channel (``c * window + t``, as the
series modality lays them out), which the network folds back into (channels x time) and encodes
with convolutions over time, so a shape is learnt once wherever it sits in the window, and
decodes by upsampling and convolution. Every channel x time cell gets its own squared error,
which is what the series modality turns into a channel x time attribution and point scores.

    encoder: Conv1d(C, h, 5) - SiLU - Conv1d(h, h, 5, stride 2) - SiLU - Linear -> code
    decoder: Linear - SiLU - Upsample(2) - Conv1d(h, h, 5) - SiLU - Conv1d(h, C, 5), cropped to the window

The architecture follows the convolutional reconstruction detectors of the time-series literature
(e.g. the CNN autoencoders TSB-AD benchmarks); ``window=None`` reads a row as one channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from anomalens.detectors.autoencoder import AEOutput, AutoEncoder, AutoEncoderConfig
from anomalens.detectors.nn import nearest_decodings
from anomalens.errors import ConfigError, InputError

__all__ = ["ConvAutoEncoder", "ConvAutoEncoderConfig", "ConvAENetwork"]


@dataclass(frozen=True)
class ConvAutoEncoderConfig(AutoEncoderConfig):
    window: int | None = None  # time steps per window (rows hold channels x window values); None: one channel
    conv_channels: int = 32  # feature maps of the convolutions
    kernel_size: int = 5
    # reconstruct from the codes of training windows only: the decoding of the ``memory`` training codes
    # nearest to a window's code that fits the window best (0: from the window's own code, clamped)
    memory: int = 5
    memory_size: int = 4096  # training codes kept (a seeded random subset beyond)
    # the attribution is the plain per-cell error (one forward pass): a series' cells take their
    # minimum over the windows that hold them, which already removes what a deviating cell smears
    # over the rest of its window, and the re-projections cost 4 passes per window
    robust_rounds: int = 0

    def validate(self) -> None:
        super().validate()
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 4):
            raise ConfigError(f"window must be an int >= 4 or None, got {self.window!r}")
        for name in ("memory", "memory_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("conv_channels", "kernel_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")


class _Encoder(nn.Module):
    def __init__(self, channels: int, window: int, h: int, k: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.c, self.w = channels, window
        self.conv = nn.Sequential(nn.Conv1d(channels, h, k, padding=k // 2), nn.SiLU(), nn.Dropout(dropout),
                                  nn.Conv1d(h, h, k, stride=2, padding=k // 2), nn.SiLU())
        self.linear = nn.Linear(h * math.ceil(window / 2), latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, c * w) -> (batch, latent)
        return self.linear(self.conv(x.view(-1, self.c, self.w)).flatten(1))


class _Decoder(nn.Module):
    def __init__(self, channels: int, window: int, h: int, k: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.c, self.w, self.h, self.half = channels, window, h, math.ceil(window / 2)
        self.linear = nn.Linear(latent, h * self.half)
        self.conv = nn.Sequential(nn.SiLU(), nn.Upsample(scale_factor=2), nn.Conv1d(h, h, k, padding=k // 2), nn.SiLU(),
                                  nn.Dropout(dropout), nn.Conv1d(h, channels, k, padding=k // 2))

    def forward(self, code: torch.Tensor) -> torch.Tensor:  # (batch, latent) -> (batch, c * w)
        y = self.conv(self.linear(code).view(-1, self.h, self.half))
        return y[:, :, : self.w].reshape(len(code), self.c * self.w)


class ConvAENetwork(nn.Module):
    def __init__(self, channels: int, window: int, h: int, k: int, latent: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = _Encoder(channels, window, h, k, latent, dropout)
        self.decoder = _Decoder(channels, window, h, k, latent, dropout)

    def forward(self, x: torch.Tensor) -> AEOutput:
        code = self.encoder(x)
        return AEOutput(self.decoder(code), code)


class ConvAutoEncoder(AutoEncoder):
    """1-D convolutional autoencoder over (channels x window) rows; score = mean squared error per cell."""

    Config = ConvAutoEncoderConfig
    restores_by_edit = False  # restore holds the normal cells, below
    additive_attribution = False  # with a memory the score is the memory's error, the attribution the window's own
    attribution_method = ("squared error per channel x time cell of a convolutional autoencoder's reconstruction "
                          "(robust, reweighted, when robust_rounds > 0)")

    def _build_module(self, n_features: int) -> nn.Module:
        cfg = self.config
        window = cfg.window or n_features
        if n_features % window:
            raise InputError(f"rows must hold channels x window = k x {window} values, got {n_features}")
        latent = cfg.latent_dim or int(min(64, max(8, math.ceil(math.sqrt(n_features)))))
        return ConvAENetwork(n_features // window, window, cfg.conv_channels, cfg.kernel_size, latent, cfg.dropout)

    def _on_fit_end(self, train: torch.Tensor) -> None:
        # the memory: codes of (a seeded random subset of) the training windows; ``train`` is shuffled
        self.memory_ = self.module_.encoder(train[: self.config.memory_size]) if self.config.memory else None
        super()._on_fit_end(train)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {**super()._extra_state(), **({} if self.memory_ is None else {"memory": self.memory_})}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._load_extra_state(state)
        self.memory_ = state.get("memory")  # absent: a model saved before the memory reconstructs from its own code

    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """With a memory: the normalised squared error against the memory's reconstruction."""
        if getattr(self, "memory_", None) is None:
            return super()._score_batch(batch)
        return self._errors(batch, self._memory_reconstruct(batch)).mean(dim=1)

    def _memory_reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        """Of the decodings of the ``memory`` training codes nearest to the window's code, the one
        with the smallest (normalised) squared error. An autoencoder generalises: it reconstructs a
        flat stretch or a shape it never saw about as well as a normal window, so its own
        reconstruction error misses them; a decoding of a training code can only be a window like
        those it trained on (the memory of MemAE, Gong et al., ICCV 2019, with hard addressing).
        The score uses it; the attribution and the restoration keep the window's own
        reconstruction (robust for the restoration), which follows the window's normal cells closely and so singles out the
        deviating ones (a memory window matches a new normal window only approximately)."""
        cand = nearest_decodings(self.__dict__, self.memory_, self.module_.encoder(batch), self.config.memory,
                                 self.module_.decoder, self.n_features_in_)  # (n, k, d)
        err = self._errors(batch[:, None, :], cand).mean(dim=2)
        return cand[torch.arange(len(batch), device=batch.device), err.argmin(dim=1)]

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        """The robust reconstruction's cells where a cell's error is beyond its normal 99% level,
        the observed cells elsewhere (iteratively reweighted, as ``explain``): a window's normal
        cells are held and its deviating cells re-estimated from them, however many there are (the
        minimal edit of the row detectors frees at most a few cells, and an event spans many)."""
        limit = self.error_limit_.to(batch.device)
        recon = self._reconstruct(batch)
        err = self._errors(batch, recon)
        for _ in range(max(1, self.config.robust_rounds)):
            recon = self._reconstruct(torch.where(err <= limit, batch, recon))
            err = self._errors(batch, recon)
        return torch.where(err <= limit, batch, recon)
