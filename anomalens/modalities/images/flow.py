"""The flow of images: a case is one image, judged like a row (``RowFlow``: one detector inspection
gives its verdict and evidence; Benjamini-Hochberg over a lot), with what images need besides:

- fit stores each training image's embedding with its regions' mean intensities (not its pixels:
  the detector keeps those, 8-bit, for the restorations and the pictures);
- ``plot_dir`` gets one PNG per reported image (``images/plot.py``): the image, the anomaly map over
  it with the top regions boxed, the restoration, and the nearest normal image with the matched patch;
  and, for several, a contact sheet of them (``_lot.png``);
- ``exemplar(id)`` gives a training image's pixels.
"""

from __future__ import annotations

import re
import time
from functools import partial
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.detectors import BaseDetector, Inspection
from anomalens.errors import InputError
from anomalens.modalities.flow import ONE_METHOD, Fitted, RowFlow
from anomalens.schema import Evidence
from anomalens.store import ExemplarStore
from anomalens.store.coreset import select_exemplars

__all__ = ["LOT_SHEET", "ImageFlow"]

LOT_SHEET = "_lot.png"  # the contact sheet of the reported images of a lot, beside their pictures


class ImageFlow(RowFlow):
    """Images judged one by one and over a lot (see the module docstring)."""

    verbs = ("rows", "picture")
    plots = True

    @classmethod
    def fit(cls, modality: Any, data: Any, det: BaseDetector, det_name: str, *, store: ExemplarStore,
            max_exemplars: int, source: str | None, ids: Sequence[str] | None, max_train_rows: int | None,
            rows_seen: int | None, progress: bool) -> Fitted:
        inp = modality.learn(data, ids)
        arr, row_ids = inp.array, [str(i) for i in inp.ids]
        t0 = time.perf_counter()
        det.fit(arr)
        t_detector = time.perf_counter() - t0
        E = det.embed(arr, checked=True)
        keep, weights = select_exemplars(E, int(max_exemplars), seed=det.config.random_state)
        store.add(E[keep], modality.region_means(arr[keep]), [row_ids[i] for i in keep], source=source,
                  weights=weights)
        modality.fit_profile(arr)
        total = time.perf_counter() - t0
        return Fitted(n_train=len(arr), rows_seen=len(arr),
                      seconds={"detector": t_detector, "exemplars": total - t_detector, "total": total})

    # ------------------------------------------------------------------ pictures
    def plot_name(self, evidence: Evidence) -> str | None:
        stem = re.sub(r"[^\w.-]+", "_", Path(evidence.case_id).stem)[:80].strip("._") or "image"
        return f"{stem}.png"

    def after_inspection(self, X: np.ndarray, insp: Inspection, evs: list[Evidence], plot_dir: Any) -> None:
        from anomalens.modalities.images.plot import contact_sheet, image_picture

        for i, ev in enumerate(evs):  # what a reasoner that reads images is shown (Evidence.views), drawn
            # when first asked for (about 40 ms an image at 224 px, as much as its inspection), from its
            # pixels kept as 8 bits (what the PNG holds), not from the batch's array
            ev.set_views(partial(self._views, ev, (np.clip(X[i], 0, 1) * 255).round().astype(np.uint8)))
        if plot_dir is None:
            return
        folder = Path(plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, ev in enumerate(evs):
            image_picture(folder / self.plot_name(ev), ev, X[i], insp.restored[i], self.modality,
                          normal=self._nearest_pixels(ev))
        if len(evs) > 1:  # the lot at a glance (no image's picture can be called so: plot_name strips the "_")
            contact_sheet(folder / LOT_SHEET, evs, X, self.modality)

    def _views(self, ev: Evidence, pixels8: np.ndarray) -> list:
        from anomalens.modalities.images.plot import model_views

        return model_views(ev, pixels8 / 255.0, self.modality, normal=self._nearest_pixels(ev))

    def _nearest_pixels(self, ev: Evidence) -> tuple[str, np.ndarray] | None:
        """(id, pixels) of the normal image the top region's patch matched (else the nearest exemplar)."""
        matches = ev.matches
        name = matches[0].normal_image if matches else ev.exemplars[0].row_id if ev.exemplars else None
        if name is None:
            return None
        try:
            return name, self.exemplar(name)
        except InputError:
            return None

    def picture(self, case: Any, path: str | Path, *, alpha: float = 0.05, k: int = 5, case_id: str | None = None) -> Path:
        """Draw one image's picture (image, map, restoration, nearest normal) to ``path``; nothing is explained."""
        X, row_ids = self.rows(case)
        if len(X) != 1:
            raise InputError(f"case must be one image, got {len(X)}")
        path = Path(path)
        ev = self.inspected(X, alpha, alpha, k, 5, [case_id or (row_ids[0] if row_ids else "image")], ONE_METHOD,
                            plot_dir=path.parent)[0]
        drawn = path.parent / self.plot_name(ev)
        if drawn != path:
            drawn.replace(path)
        return path

    def exemplar(self, row_id: str) -> np.ndarray:
        """The training image ``row_id`` as (channels, size, size) pixels in [0, 1]."""
        ids = self.modality.train_ids
        if row_id not in ids:
            raise InputError(f"exemplar must be a training image's name, got {str(row_id)[:80]!r}")
        keep = getattr(self.detector, "training_image", None)
        if keep is None:
            raise InputError(f"the {self.detector_name} detector keeps no training images")
        return keep(ids.index(row_id))
