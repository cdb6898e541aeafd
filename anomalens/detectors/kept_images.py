"""What the image detectors share: the training images they keep (8-bit) for their restorations and
pictures, each one's row in fit's input, and the checks of an image's shape parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from anomalens.errors import ConfigError, InputError

__all__ = ["KeptImages", "check_image_params"]


def check_image_params(config: Any, sizes: tuple[str, ...] = ("image_size",)) -> None:
    """ConfigError unless ``channels`` is 1 or 3 and each of ``sizes`` is a positive int."""
    for name in sizes:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive int, got {v!r}")
    if config.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {config.channels!r}")


class KeptImages:
    """A mixin for a detector of pixel rows (``channels x image_size x image_size`` values in [0, 1]):
    its ``_fit_scaled`` calls ``_keep_images(Z)`` with the rows the model is fitted on, and ``fit``
    (this class's) maps each kept image to its row in ``X`` (``train_rows_``) once the base fit is done."""

    pixel_rows = True
    images_: torch.Tensor  # (n kept, pixels) uint8
    train_rows_: np.ndarray

    def _keep_images(self, Z: np.ndarray) -> None:
        self.images_ = torch.as_tensor(np.clip(np.rint(np.asarray(Z) * 255), 0, 255).astype(np.uint8))
        self._row_hashes = [hash(r.tobytes()) for r in np.asarray(Z)]

    def fit(self, X: Any, y: Any = None):
        """See ``BaseDetector.fit``; besides, ``train_rows_`` maps each kept training image to its row in ``X``."""
        from anomalens.detectors._validation import check_matrix

        arr, _ = check_matrix(X, name="X", min_rows=1)
        super().fit(arr)  # type: ignore[misc]
        first: dict[int, int] = {}
        for i, r in enumerate(arr):
            first.setdefault(hash(r.tobytes()), i)
        self.train_rows_ = np.array([first[h] for h in self.__dict__.pop("_row_hashes")], dtype=np.int64)
        return self

    def training_image(self, row: int) -> np.ndarray:
        """The training image at row ``row`` of fit's input, (channels, size, size) in [0, 1]."""
        pos = np.flatnonzero(self.train_rows_ == int(row))
        if len(pos) == 0:
            raise InputError(f"row must be a training row this detector kept, got {row!r}")
        c, s = self.config.channels, self.config.image_size  # type: ignore[attr-defined]
        return self.images_[int(pos[0])].reshape(c, s, s).numpy().astype(np.float64) / 255.0

    def _kept_state(self) -> dict[str, torch.Tensor]:
        return {"images": self.images_.cpu(), "train_rows": torch.as_tensor(self.train_rows_)}

    def _load_kept(self, state: dict[str, torch.Tensor]) -> None:
        self.images_ = state["images"].cpu()
        self.train_rows_ = state["train_rows"].cpu().numpy().astype(np.int64)
        c, s = self.config.channels, self.config.image_size  # type: ignore[attr-defined]
        if self.images_.shape[1] != c * s * s:
            raise RuntimeError(f"stored images have {self.images_.shape[1]} values, the parameters say {c * s * s}")
