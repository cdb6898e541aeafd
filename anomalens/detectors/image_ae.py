"""ImageAutoEncoder: a convolutional autoencoder over an image's pixels, the pixel-space generative restorer.

An image is a row of pixels, ``channels x image_size x image_size`` values in [0, 1], channel first
(what the image modality's reader makes), as for the patch detectors. The network reads the image
at ``work`` pixels (``work_size``, or the image's side rounded up to a multiple of 8 where that is
smaller), encodes it through three stride-2 convolutions into a code of ``latent_dim`` values and
decodes it through three transposed ones (the DCAE of the one-class literature, e.g. Ruff et al.'s
Deep SVDD pretraining network). It learns what normal looks like from normal images only; nothing
pretrained, nothing downloaded.

- **error map**: the squared error of each pixel (mean over channels), divided by that pixel's mean
  error on the training images (floored at a tenth of their mean, so a pixel the model always gets
  right cannot make a tiny error huge), averaged over ``smooth x smooth`` neighbours;
- **memory** (``memory`` > 0): the reconstruction the score reads is, of the decodings of the
  ``memory`` training codes nearest to the image's code, the one closest to the image (hard-addressed
  memory, MemAE: Gong et al., ICCV 2019): an autoencoder generalises, and reconstructs a shirt it
  never saw about as well as the pullovers it learnt; a decoding of a training code can only be an
  image like those it trained on. The attribution and the restoration keep the image's own
  reconstruction, which follows its normal pixels closely and so singles out the deviating ones;
- **score**: ``score="mean"`` the mean of the error map (the whole image against normal: semantic
  anomalies, an object of another kind), ``"max"`` its largest cell (of a ``work / 4`` grid: small
  local defects on a large normal image);
- **attribution**: the image's own error map, upsampled to the image (not additive); ``inspect``
  adds the map pooled to cells (``cell_distance``) and the normal cells' level, as the patch
  detectors do, so the image modality draws and verifies it the same way;
- **restoration** (what this detector is for): in the cells of the map above the normal cells' level
  and their neighbours, the pixels whose own error is beyond the normal pixels' 99.5% level are
  replaced by the reconstruction, and the image reconstructed again from that (its deviating pixels
  re-estimated from its normal ones, ``RESTORE_ROUNDS`` times, as the series' convolutional
  autoencoder does): a normal version that keeps the image as it is wherever it is normal, and so
  changes the defect's pixels only;
- **embedding**: the code. The training images are kept (8-bit) for the pictures.

Calibration is cross-fitted by default (every training image scored by a model of the other folds:
``n_folds + 1`` fits; ``calibration="split"`` holds out a share instead, one fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalens.detectors.base import Inspection, TorchConfig, TorchDetector
from anomalens.detectors.kept_images import KeptImages, check_image_params
from anomalens.detectors.nn import clamp_code, code_range, nearest_decodings
from anomalens.errors import ConfigError, InputError

__all__ = ["ImageAENetwork", "ImageAutoEncoder", "ImageAutoEncoderConfig", "work_images"]

RESTORE_ROUNDS = 2  # re-reconstructions of the restoration (each from the image with its deviating pixels replaced)
_PIXEL_LEVEL = 0.995  # a pixel's error beyond this quantile of the training images' may be restored
_CELL_LEVEL = 0.995  # the normal cells' level of the evidence: this quantile of the training images' cells
_SCALE_FLOOR = 0.1  # a pixel's error divisor is at least this share of the mean divisor
_PIXEL_SLACK = 1e-6  # pixel values this far outside [0, 1] are float rounding, clipped


@dataclass(frozen=True)
class ImageAutoEncoderConfig(TorchConfig):
    image_size: int = 224  # side of the square images in a row (the modality's reader sets it)
    channels: int = 1  # 1 (grey) or 3 (RGB)
    work_size: int = 64  # side the network reads (a multiple of 8); a smaller image: its side rounded up to one
    conv_channels: int = 32  # feature maps of the first convolution (doubled at each of the next two)
    latent_dim: int | None = None  # None: 32
    score: str = "mean"  # "mean": the mean of the error map; "max": its largest cell
    memory: int = 5  # training codes whose decodings the score may use (0: the image's own reconstruction)
    memory_size: int = 4096  # training codes kept (a seeded random subset beyond)
    # images the network trains on at most (a seeded sample; None: every one): training time grows with the
    # images, while every training image's code still joins the memory the score reads
    train_max: int | None = None
    smooth: int = 3  # the error map is averaged over smooth x smooth pixels (at the work size)
    epochs: int = 100
    patience: int = 10
    batch_size: int = 64
    # every training image a calibration score (n_folds + 1 fits): a held-out fifth of 60 images is 12 scores,
    # and no p-value could go below 1/13 = 0.077, so nothing would be flagged at 0.05
    calibration: str = "cross"

    def validate(self) -> None:
        super().validate()
        check_image_params(self, ("image_size", "work_size", "conv_channels", "smooth"))
        if self.work_size % 8 or self.work_size < 16:
            raise ConfigError(f"work_size must be a multiple of 8, at least 16, got {self.work_size!r}")
        if self.smooth % 2 == 0:
            raise ConfigError(f"smooth must be an odd int, got {self.smooth!r}")
        if self.score not in ("mean", "max"):
            raise ConfigError(f"score must be 'mean' or 'max', got {self.score!r}")
        for name in ("memory", "memory_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
        t = self.train_max
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 8):
            raise ConfigError(f"train_max must be None or an int >= 8, got {t!r}")


def _pixels(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` with float rounding outside [0, 1] (1 + 1e-7 after a resize) clipped; InputError beyond it
    (8-bit values, standardised pixels: the network's sigmoid output could never reconstruct them)."""
    if arr.size and (arr.min() < -_PIXEL_SLACK or arr.max() > 1 + _PIXEL_SLACK):
        raise InputError(f"{name} must hold pixel values in [0, 1], got values in [{arr.min():.6g}, {arr.max():.6g}]")
    return np.clip(arr, 0.0, 1.0)


def work_images(rows: torch.Tensor, channels: int, size: int, work: int) -> torch.Tensor:
    """(n, channels * size * size) rows as (n, channels, work, work) images (resized where work != size)."""
    x = rows.reshape(-1, channels, size, size)
    if size == work:
        return x
    return F.interpolate(x, size=(work, work), mode="bilinear", align_corners=False, antialias=work < size)


class ImageAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # (batch, channels, work, work)
    code: torch.Tensor  # (batch, latent)


class ImageAENetwork(nn.Module):
    """Rows of pixels in, their reconstruction at ``work`` pixels and their code out."""

    def __init__(self, channels: int, size: int, work: int, h: int, latent: int) -> None:
        super().__init__()
        self.c, self.size, self.work, self.h = channels, size, work, h
        q = work // 8
        self.encoder_conv = nn.Sequential(
            nn.Conv2d(channels, h, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(h, h, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(h, 2 * h, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * h, 4 * h, 4, 2, 1), nn.SiLU())
        self.encoder_linear = nn.Linear(4 * h * q * q, latent)
        self.decoder_linear = nn.Linear(latent, 4 * h * q * q)
        self.decoder_conv = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(4 * h, 2 * h, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * h, h, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(h, h, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(h, channels, 3, 1, 1), nn.Sigmoid())

    def at_work(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, c * size * size) rows as (n, c, work, work) images."""
        return work_images(rows, self.c, self.size, self.work)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (n, c, work, work) -> (n, latent)
        return self.encoder_linear(self.encoder_conv(x).flatten(1))

    def decode(self, code: torch.Tensor) -> torch.Tensor:  # (n, latent) -> (n, c, work, work)
        q = self.work // 8
        return self.decoder_conv(self.decoder_linear(code).view(-1, 4 * self.h, q, q))

    def forward(self, rows: torch.Tensor) -> ImageAEOutput:
        code = self.encode(self.at_work(rows))
        return ImageAEOutput(self.decode(code), code)


class ImageAutoEncoder(KeptImages, TorchDetector):
    """Convolutional autoencoder over image pixels (see the module docstring): score the error map's
    mean (or largest cell), attribution the error map, restoration the deviating pixels re-estimated."""

    Config = ImageAutoEncoderConfig
    config: ImageAutoEncoderConfig
    additive_attribution = False
    attribution_method = "squared error of each pixel under a convolutional autoencoder's reconstruction, smoothed"

    # ------------------------------------------------------------------ pixels stay pixels
    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = X.shape[1]
        return np.zeros(d), np.ones(d)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return X

    @property
    def work(self) -> int:
        """The side the network reads."""
        return min(self.config.work_size, 8 * math.ceil(self.config.image_size / 8))

    @property
    def grid(self) -> int:
        """The side of the grid of cells the evidence's map is pooled to."""
        return max(1, self.work // 4)

    def _check_width(self, n_features: int) -> None:
        c, s = self.config.channels, self.config.image_size
        if n_features != c * s * s:
            raise InputError(f"X must have {c} x {s} x {s} = {c * s * s} pixel values per row, got {n_features}")

    def _build_module(self, n_features: int) -> nn.Module:
        self._check_width(n_features)
        c, s = self.config.channels, self.config.image_size
        return ImageAENetwork(c, s, self.work, self.config.conv_channels, self.config.latent_dim or 32)

    def _loss(self, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        out = module(batch)
        return (out.reconstruction - module.at_work(batch)).pow(2).mean()

    # ------------------------------------------------------------------ fit
    def _check_input(self, X: Any, name: str = "X", *, checked: bool = False) -> np.ndarray:
        arr = super()._check_input(X, name, checked=checked)
        return arr if checked else _pixels(arr, name)

    def fit(self, X: Any, y: Any = None) -> "ImageAutoEncoder":
        from anomalens.detectors._validation import check_matrix

        return super().fit(_pixels(check_matrix(X, name="X", min_rows=1)[0], "X"))

    def _fit_scaled(self, Z: np.ndarray) -> None:
        cap = self.config.train_max
        if cap is None or len(Z) <= cap:
            super()._fit_scaled(Z)
        else:  # the network learns from a sample; the memory holds every image's code
            pick = np.sort(np.random.default_rng(self.config.random_state).choice(len(Z), cap, replace=False))
            super()._fit_scaled(Z[pick])
        self._remember(Z)
        self._keep_images(Z)

    def _remember(self, Z: np.ndarray) -> None:
        """Every training image's code (those the network trained on, those it held out for early stopping,
        those beyond ``train_max``): their box clamps a code before decoding (``code_range_``), and a
        seeded subset of at most ``memory_size`` of them is the memory the score reads (``memory > 0``)."""
        with torch.no_grad():
            codes = torch.cat([self._embed_batch(torch.as_tensor(Z[i:i + 512], dtype=torch.float32, device=self.device_))
                               for i in range(0, len(Z), 512)])
        self.code_range_ = code_range(codes)
        self.memory_ = None
        if self.config.memory:
            order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(int(self.config.random_state or 0)))
            self.memory_ = codes[order[: self.config.memory_size].sort().values.to(codes.device)]
        self.__dict__.pop("_decoded", None)

    def _on_fit_end(self, train: torch.Tensor) -> None:
        module = self.module_
        recon = torch.cat([module(train[i:i + 512]).reconstruction for i in range(0, len(train), 512)])
        targets = torch.cat([module.at_work(train[i:i + 512]) for i in range(0, len(train), 512)])
        self._fit_error_levels(targets, recon)

    def _fit_error_levels(self, targets: torch.Tensor, recon: torch.Tensor) -> None:
        """The training images' (work-size) pixels and reconstructions: each pixel's error divisor and the
        normal pixels' error level the restoration reads (the cells' level waits for the calibration)."""
        err = (recon - targets).pow(2).mean(1).mean(0)  # (work, work)
        self.error_scale_ = err.clamp_min(_SCALE_FLOOR * float(err.mean()) + 1e-8)
        raw = torch.cat([self._error_map(targets[i:i + 512], recon[i:i + 512], smooth=False)
                         for i in range(0, len(targets), 512)])
        self.raw_pixel_limit_ = float(torch.quantile(raw.flatten()[: 16_000_000], _PIXEL_LEVEL))
        self.cell_level_ = float("inf")

    def _on_calibrated(self, cal: np.ndarray) -> None:
        # the normal cells' level: the training images' cells under the final model (in-sample under cross
        # calibration: a little low, so the evidence marks a little more as above normal, never less)
        cells = self._map(self._cells_batch, cal[:2000])
        self.cell_level_ = float(np.quantile(cells, _CELL_LEVEL))

    # ------------------------------------------------------------------ maps
    def _reconstruct(self, rows: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(n, c, work, work) the image's own reconstruction, its code clamped into the training codes' box."""
        x = self.module_.at_work(rows) if x is None else x
        return self.module_.decode(clamp_code(self.module_.encode(x), self.code_range_.to(x.device)))

    def _error_map(self, x: torch.Tensor, recon: torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """(n, work, work) normalised squared error of each pixel, smoothed (``smooth``)."""
        err = (recon - x).pow(2).mean(1, keepdim=True) / self.error_scale_.to(x.device)
        k = self.config.smooth
        if smooth and k > 1:
            err = F.avg_pool2d(err, k, 1, k // 2, count_include_pad=False)
        return err[:, 0]

    def _cells(self, emap: torch.Tensor) -> torch.Tensor:
        """(n, g, g) the (work-size) error map's means over the cells of the evidence's grid."""
        return F.adaptive_avg_pool2d(emap[:, None], self.grid)[:, 0]

    def _cells_of(self, attribution: torch.Tensor) -> torch.Tensor:
        """(n, g, g) the attribution (the error map at the image's size) pooled to the evidence's cells:
        what ``cell_distance``, the normal cells' level and the restoration's region all read."""
        s, c = self.config.image_size, self.config.channels
        return F.adaptive_avg_pool2d(attribution.reshape(-1, c, s, s)[:, :1], self.grid)[:, 0]

    def _memory_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Of the decodings of the ``memory`` training codes nearest to the image's code, the one closest to it."""
        cand = nearest_decodings(self.__dict__, self.memory_, self.module_.encode(x), self.config.memory,
                                 self.module_.decode, self.config.channels * self.work ** 2)  # (n, k, c, w, w)
        err = (cand - x[:, None]).pow(2).flatten(2).div(self.error_scale_.to(x.device).flatten().repeat(x.shape[1])).mean(2)
        return cand[torch.arange(len(x), device=x.device), err.argmin(1)]

    def _score_of(self, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        recon = self._memory_reconstruct(x) if self.memory_ is not None else own
        emap = self._error_map(x, recon)
        return emap.flatten(1).mean(1) if self.config.score == "mean" else self._cells(emap).flatten(1).amax(1)

    def _upsample(self, emap: torch.Tensor) -> torch.Tensor:
        """(n, c * size * size) the error map at the image's size, the same for each channel."""
        s, c = self.config.image_size, self.config.channels
        up = emap[:, None] if self.work == s else F.interpolate(emap[:, None], size=(s, s), mode="bilinear",
                                                                align_corners=False)
        return up.expand(-1, c, -1, -1).reshape(len(emap), -1)

    # ------------------------------------------------------------------ batch hooks
    def _score_batch(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.module_.at_work(batch)
        return self._score_of(x, self._reconstruct(batch, x))

    def _explain_batch(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.module_.at_work(batch)
        return self._upsample(self._error_map(x, self._reconstruct(batch, x)))

    def _score_explain_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.module_.at_work(batch)
        own = self._reconstruct(batch, x)
        return self._score_of(x, own), self._upsample(self._error_map(x, own))

    def _restore_batch(self, batch: torch.Tensor, attribution: torch.Tensor | None = None) -> torch.Tensor:
        """The image with its deviating pixels replaced by the reconstruction of the image with those
        pixels re-estimated (``RESTORE_ROUNDS`` times). A pixel deviates where its own (unsmoothed) error
        is beyond the normal pixels' 99.5% level and it lies in a cell of the map above the normal
        cells' level or next to one: the cells say where the image departs from normal, the pixels
        which of them do, so the restoration changes the defect's pixels and not the texture around them.
        An image larger than the work size is decided again at its own size (below)."""
        x = self.module_.at_work(batch)
        recon = self._reconstruct(batch, x)
        g, w = self.grid, self.work
        if attribution is None:
            attribution = self._upsample(self._error_map(x, recon))
        cells = self._cells_of(attribution) > self.cell_level_
        near = F.max_pool2d(cells.float()[:, None], 3, 1, 1)
        region = F.interpolate(near, size=(w, w), mode="nearest") > 0 if g != w else near > 0
        weight = torch.zeros_like(x[:, :1])
        for _ in range(RESTORE_ROUNDS):
            above = (self._error_map(x, recon, smooth=False)[:, None] > self.raw_pixel_limit_) & region
            weight = torch.maximum(weight, above.float())
            recon = self._reconstruct(batch, x * (1 - weight) + recon * weight)
        s, c = self.config.image_size, self.config.channels
        image = batch.reshape(-1, c, s, s)
        if self.work != s:
            recon = F.interpolate(recon, size=(s, s), mode="bilinear", align_corners=False)
            # at the image's size, of the pixels the work-size weight reaches, those that deviate themselves
            # (their error against the upsampled reconstruction beyond the same level): a work pixel holds four
            # or more image pixels, and the edge of a thin defect's work pixels holds normal ones
            scale = F.interpolate(self.error_scale_.to(image.device)[None, None], size=(s, s), mode="bilinear", align_corners=False)
            own = (recon - image).pow(2).mean(1, keepdim=True) / scale > self.raw_pixel_limit_
            weight = F.interpolate(weight, size=(s, s), mode="bilinear", align_corners=False) * own
        return (image * (1 - weight) + recon * weight).clamp(0, 1).reshape(len(batch), -1)

    def _embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module_.encode(self.module_.at_work(batch))

    def _cells_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self._cells_of(self._explain_batch(batch)).flatten(1)

    def inspect(self, X: Any, *, checked: bool = False) -> Inspection:
        """The base inspection, with its error map pooled to cells (``cell_distance``) and the normal cells' level."""
        insp = super().inspect(X, checked=checked)
        cells = self._cells_of(torch.as_tensor(insp.attribution.values)).numpy()  # the map inspect made, pooled
        insp.extra.update({"cell_distance": cells, "normal_cell_level": self.cell_level_})
        return insp

    def cell_evidence(self, X: Any, *, checked: bool = False) -> dict[str, Any]:
        """What ``inspect`` puts in ``extra`` (the error map pooled to cells, the normal cells' level),
        alone: an Ensemble of image detectors combines its members' cells."""
        g = self.grid
        cells = self._map(self._cells_batch, self._check_input(X, checked=checked)).reshape(-1, g, g)
        return {"cell_distance": cells, "normal_cell_level": self.cell_level_}

    # ------------------------------------------------------------------ state
    def _pixel_state(self) -> dict[str, torch.Tensor]:
        """The state every pixel restorer keeps: error divisors, levels, the kept training images."""
        return {"error_scale": self.error_scale_, **self._kept_state(),
                "levels": torch.tensor([self.raw_pixel_limit_, self.cell_level_], dtype=torch.float64)}

    def _load_pixel_state(self, state: dict[str, torch.Tensor]) -> None:
        self.error_scale_ = state["error_scale"].float()
        self.raw_pixel_limit_, self.cell_level_ = (float(v) for v in state["levels"].cpu())
        self._load_kept(state)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        state = {**self._pixel_state(), "code_range": self.code_range_}
        return state if self.memory_ is None else {**state, "memory": self.memory_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self._load_pixel_state(state)
        self.code_range_ = state["code_range"].float()
        self.memory_ = state.get("memory")
