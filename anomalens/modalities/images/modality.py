"""Images: one image is one case; its units are regions of a grid (``region:<row>,<col>``).

- input: a folder, image paths, encoded bytes or arrays (``reader.py``), resized to the model's size
  (stated in the model: ``size``, ``channels``); the detector reads rows of pixels;
- units: the cells of a ``regions x regions`` grid over the image (7 x 7 by default), each also in
  one of nine named zones (``top-left`` ... ``bottom-right``); a region's value is its mean intensity;
- normal profile: quantiles of each region's mean intensity over the training images;
- evidence: the regions by their share of the anomaly map (mean of the detector's attribution
  there), the map itself (``AnomalyMap``), the normal patch each top region matched in the memory
  bank (``PatchMatch``, when the detector has one), the nearest normal images, and the restored image
  (regions' mean intensities before and after, and its score);
- claims: ``images/claims.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from anomalens.detectors import BaseDetector, Inspection
from anomalens.errors import CheckpointError, InputError
from anomalens.modalities.base import CaseItems, Modality, ModelInput
from anomalens.modalities.common import PROFILE_LEVELS
from anomalens.modalities.images import claims as image_claims
from anomalens.modalities.images.flow import ImageFlow
from anomalens.modalities.images.items import AnomalyMap, PatchMatch, RegionLevel, zone_of
from anomalens.modalities.images.reader import pixel_rows, read_images
from anomalens.schema import (
    Attribution,
    Claim,
    Comparison,
    Evidence,
    Exemplar,
    FeatureDelta,
    FeatureDifference,
    FeatureProfile,
    Restoration,
)
from anomalens.store import ExemplarHit

__all__ = ["ImageModality", "ImageSet"]

DEFAULT_SIZE = 224
# `-d ensemble`'s members for images: the two cell detectors on the one backbone (its features computed once
# for both); the pixel autoencoder joins where asked (detectors=...), at its cost (a fit of its own per fold)
ENSEMBLE_MEMBERS = ("patchcore", "padim")


@dataclass(frozen=True)
class ImageSet:
    """Images read and resized for the model: rows of pixels and the images' names."""

    rows: np.ndarray
    ids: list[str]


class ImageModality(Modality):
    """Images (PNG, JPEG, TIFF, ...; grey or RGB), judged one image at a time."""

    name = "images"
    unit_kind = "region"
    default_detector = "patchcore"
    flow_class = ImageFlow
    reads_paths: ClassVar[bool] = True
    max_exemplars = 5000
    case_noun = "image"
    units_title = "Regions"

    @classmethod
    def accepts(cls, paths: list[Any]) -> bool:
        from pathlib import Path

        from anomalens.modalities.images.reader import IMAGE_SUFFIXES

        return bool(paths) and all(Path(p).is_dir() or Path(p).suffix.lower() in IMAGE_SUFFIXES for p in paths)

    def __init__(self, size: int | None = None, channels: int | None = None, regions: int = 7,
                 train_ids: list[str] | None = None, profile: np.ndarray | None = None) -> None:
        for name, v, lo in (("size", size, 32), ("regions", regions, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo):
                raise InputError(f"{name} must be an int >= {lo}, got {v!r}")
        if channels not in (None, 1, 3):
            raise InputError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if size is not None and regions > size // 4:
            raise InputError(f"regions must be at most size / 4 = {size // 4}, got {regions}")
        self.size, self.channels, self.regions = size, channels, int(regions)
        self.train_ids = list(train_ids or [])
        self.profile = None if profile is None else np.asarray(profile, dtype=np.float64)

    def __repr__(self) -> str:
        return f"ImageModality(size={self.size}, channels={self.channels}, regions={self.regions})"

    @property
    def unit_names(self) -> list[str]:
        return [f"{r},{c}" for r in range(self.regions) for c in range(self.regions)]

    @property
    def model_width(self) -> int:
        return int(self.channels or 1) * int(self.size or DEFAULT_SIZE) ** 2

    # ------------------------------------------------------------------ input
    def begin_fit(self, data: Any) -> ImageSet:
        """Read the training images, settle the model's size and channels (the detector needs them)."""
        if isinstance(data, ImageSet):
            return data
        images = read_images(data, "data")
        if len(images) < 4:
            raise InputError(f"data must hold at least 4 normal images, got {len(images)}")
        if self.channels is None:
            colour = any(im.pixels.shape[0] == 3 and not (np.allclose(im.pixels[0], im.pixels[1]) and
                                                          np.allclose(im.pixels[1], im.pixels[2])) for im in images)
            self.channels = 3 if colour else 1
        if self.size is None:
            sides = {s for im in images for s in im.pixels.shape[1:]}
            self.size = max(sides.pop(), 32) if len(sides) == 1 and max(sides) <= DEFAULT_SIZE else DEFAULT_SIZE
            if self.regions > self.size // 4:
                self.regions = self.size // 4
        return ImageSet(pixel_rows(images, self.size, self.channels), [im.id for im in images])

    def learn(self, data: Any, ids: Any = None) -> ModelInput:
        data = self.begin_fit(data)
        names = data.ids
        if ids is not None:
            if len(ids) != len(names):
                raise InputError(f"ids must have one entry per image ({len(names)}), got {len(ids)}")
            names = [str(i) for i in ids]
        self.train_ids = list(names)
        return ModelInput(data.rows, data.rows, names)

    def prepare(self, data: Any, name: str = "case") -> ModelInput:
        if self.size is None:
            raise InputError("this image modality has not seen training images yet")
        if isinstance(data, ImageSet):
            return ModelInput(data.rows, data.rows, data.ids)
        if isinstance(data, np.ndarray) and data.ndim in (1, 2) and data.shape[-1] == self.model_width:
            rows = np.atleast_2d(data).astype(np.float64)  # rows of pixels already at the model's size (a toolbox's)
            if not np.isfinite(rows).all() or rows.min() < 0 or rows.max() > 1:
                raise InputError(f"{name}: pixel rows must hold values in [0, 1]")
            return ModelInput(rows, rows, None)
        images = read_images(data, name)
        rows = pixel_rows(images, self.size, self.channels)
        return ModelInput(rows, rows, [im.id for im in images])

    def from_table(self, frame: Any, *, id_column: str | None = None) -> tuple[Any, list[str] | None]:
        raise InputError("images are read from image files, not from a table")

    def detector_defaults(self, fields: set[str]) -> dict[str, Any]:
        given = {"image_size": self.size, "channels": self.channels}
        if "detectors" in fields:  # an Ensemble: image members by default, and what each reads goes to them;
            # cross-fitted (the cell members' features are computed once: every training image a calibration
            # score), and no GPD tail beyond the largest (as the cell detectors: PatchCoreConfig.tail)
            return {"detectors": ENSEMBLE_MEMBERS, "calibration": "cross", "tail": False,
                    **{k: v for k, v in given.items() if v is not None}}
        return {k: v for k, v in given.items() if k in fields and v is not None}

    def detector_mismatch(self, detector: BaseDetector) -> str | None:
        cfg = detector.config
        for field, mine in (("image_size", self.size), ("channels", self.channels)):
            theirs = getattr(cfg, field, None)
            if theirs is not None and theirs != mine:
                return f"the detector reads images with {field}={theirs}, the modality makes {field}={mine}"
        if getattr(detector, "n_features_in_", self.model_width) != self.model_width:
            return f"the detector reads {detector.n_features_in_} values per image, the modality makes {self.model_width}"
        return None

    def fit_summary(self, inv: Any, data: Any) -> tuple[dict[str, Any], str | None]:
        return ({"images": inv.n_train, "size": f"{self.size} x {self.size}",
                 "channels": "grey" if self.channels == 1 else "RGB", "regions": f"{self.regions} x {self.regions}",
                 "calibration_images": len(inv.detector.calibration_scores_)}, None)

    # ------------------------------------------------------------------ regions
    def _edges(self) -> np.ndarray:
        return np.linspace(0, self.size, self.regions + 1).round().astype(int)

    def region_box(self, name: str) -> list[int]:
        """[x0, y0, x1, y1] of a region, in the model's pixels."""
        r, c = self._rc(name)
        e = self._edges()
        return [int(e[c]), int(e[r]), int(e[c + 1]), int(e[r + 1])]

    def _rc(self, name: str) -> tuple[int, int]:
        try:
            r, c = (int(v) for v in str(name).split(","))
        except ValueError:
            r = c = -1
        if not (0 <= r < self.regions and 0 <= c < self.regions):
            raise InputError(f"region must be one of the {self.regions ** 2} regions '<row>,<col>' with row and col in "
                             f"0..{self.regions - 1} (e.g. '0,0', '{self.regions // 2},{self.regions // 2}'), got {str(name)[:60]!r}")
        return r, c

    def _cell_regions(self, g: int) -> np.ndarray:
        """The region row (or column) of each of the g cells along a side of an anomaly map."""
        return np.minimum(((np.arange(g) + 0.5) * self.regions // g).astype(int), self.regions - 1)

    def region_level(self, evidence: Evidence, name: str, share: float) -> RegionLevel:
        """Any region of a case (``name``, validated) as a ``RegionLevel``: its zone and box and its
        highest cell of the case's anomaly map against the map's normal level; ``share``: its share of
        the map above the normal level (its attribution's)."""
        r, c = self._rc(name)
        m = evidence.anomaly_map
        grid = np.asarray(m.grid)
        of = self._cell_regions(len(grid))
        return RegionLevel(id=f"level:{name}", region=name, zone=zone_of(r, c, self.regions), box=self.region_box(name),
                           peak_cell=float(grid[np.ix_(of == r, of == c)].max()), normal_level=m.normal_level,
                           share=share)

    def pool(self, planes: np.ndarray, how: str = "mean") -> np.ndarray:
        """(n, regions^2) mean (or max) of (n, size, size) planes over each region."""
        return self._cells(planes, self.regions, how).reshape(len(planes), -1)

    def planes(self, X: np.ndarray) -> np.ndarray:
        """(n, size, size) mean over channels of rows of pixels (or of a per-pixel attribution)."""
        return np.asarray(X).reshape(len(X), self.channels, self.size, self.size).mean(axis=1)

    def region_means(self, X: np.ndarray) -> np.ndarray:
        """(n, regions^2) mean intensity of each region of each image."""
        return self.pool(self.planes(X))

    # ------------------------------------------------------------------ normal profile
    def fit_profile(self, array: np.ndarray) -> None:
        self.profile = np.quantile(self.region_means(array), PROFILE_LEVELS, axis=0)

    def profile_of(self, unit: str, n_train: int) -> FeatureProfile:
        r, c = self._rc(unit)
        col = self.profile[:, r * self.regions + c]
        q = dict(zip(PROFILE_LEVELS, col))
        return FeatureProfile(id=f"profile:{unit}", unit=unit, normal_low=float(q[0.01]), normal_median=float(q[0.5]),
                              normal_high=float(q[0.99]), quantiles={f"{100 * k:g}%": float(v) for k, v in q.items()},
                              n_train=n_train)

    # ------------------------------------------------------------------ evidence
    def case_items(self, X: np.ndarray, inspection: Inspection, hits: list[list[ExemplarHit]], top: int,
                   scale: np.ndarray) -> list[CaseItems]:
        names = self.unit_names
        means = self.region_means(X)
        restored_means = self.region_means(inspection.restored)
        amap = self.planes(inspection.attribution.values)  # (n, size, size)
        level = self.pool(amap)
        peak = self.pool(amap, "max")
        lo, med, hi = (self.profile[PROFILE_LEVELS.index(q)] for q in (0.01, 0.5, 0.99))
        extra = inspection.extra
        cells = extra.get("cell_distance")
        if cells is not None:  # a memory bank's cells and the normal cells' level
            level_grid = np.full(cells.shape[1:], float(extra["normal_cell_level"]))
        else:  # a detector of pixels: its map and its per-pixel normal level, pooled to a grid of cells
            g = min(self.size, 2 * self.regions)
            cells = self._cells(amap, g)
            level_grid = self._cells(self.planes(inspection.attribution.thresholds[None]), g)[0]
        normal_level = float(level_grid.max())
        out = []
        for i in range(len(X)):
            grid = cells[i]
            g = grid.shape[0]
            above_cells = grid > level_grid
            above_px = self._upsampled_mask(above_cells)
            region_above = self.pool(above_px[None].astype(float), "max")[0] > 0
            mass = np.clip(amap[i] - normal_level, 0, None) if above_cells.any() else amap[i]
            region_mass = self.pool(mass[None])[0]
            total = region_mass.sum()
            share = region_mass / total if total > 0 else np.zeros_like(region_mass)
            order = np.argsort(-level[i], kind="stable")
            exemplars = [Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                                  values=dict(zip(names, map(float, h.values))) if len(h.values) == len(names) else {},
                                  source=h.source, timestamp=h.timestamp, weight=h.weight) for h in hits[i]]
            ex_values = np.array([h.values for h in hits[i] if len(h.values) == len(names)])
            attributions = []
            for j in order[:top]:
                v = float(means[i, j])
                attributions.append(Attribution(
                    id=self.unit_id(names[j]), unit=names[j], value=v, contribution=float(level[i, j]),
                    share=float(share[j]), abnormal=bool(region_above[j]), normal_low=float(lo[j]),
                    normal_median=float(med[j]), normal_high=float(hi[j]),
                    position="below" if v < lo[j] else "above" if v > hi[j] else "within",
                    exemplar_mean=float(ex_values[:, j].mean()) if len(ex_values) else None))
            pr, pc = np.unravel_index(int(np.argmax(grid)), grid.shape)
            rr, rc = (int(self._cell_regions(g)[v]) for v in (pr, pc))
            peak_region = names[rr * self.regions + rc]
            parts: list = [AnomalyMap(
                grid=np.round(grid, 6).tolist(), normal_level=normal_level, peak_region=peak_region,
                peak_zone=zone_of(rr, rc, self.regions), peak_value=float(grid[pr, pc]), area_share=float(above_cells.mean()),
                zone=self._centre_zone(grid, level_grid) or zone_of(rr, rc, self.regions),
                regions_above=[names[j] for j in np.argsort(-peak[i], kind="stable") if region_above[j]],
                image_size=int(self.size))]
            if "matched_row" in extra:
                parts += self._matches(i, extra, names, order, region_above, share, g, top)
            delta = restored_means[i] - means[i]
            deltas = [FeatureDelta(unit=names[j], observed=float(means[i, j]), restored=float(restored_means[i, j]),
                                   delta=float(delta[j])) for j in np.argsort(-np.abs(delta), kind="stable")[:top]]
            restoration = Restoration(values=dict(zip(names, map(float, restored_means[i]))), deltas=deltas,
                                      score_after=float(inspection.restored_scores[i]))
            out.append(CaseItems(attributions, exemplars, restoration, parts))
        return out

    @staticmethod
    def _centre_zone(grid: np.ndarray, level: np.ndarray) -> str | None:
        """The zone of the excess-weighted centre of the main abnormal region: of the groups of touching
        cells above their normal level (8-neighbours), the one with the most excess (None: no cell is
        above). A stray cell elsewhere no longer pulls the centre of a defect towards it."""
        from scipy.ndimage import label

        excess = np.clip(grid - level, 0, None)
        if excess.sum() <= 0:
            return None
        groups, _ = label(excess > 0, structure=np.ones((3, 3)))
        main = 1 + int(np.argmax(np.bincount(groups.ravel(), excess.ravel())[1:]))  # each group's excess
        w = np.where(groups == main, excess, 0.0)
        rows, cols = np.indices(grid.shape)
        w = w / w.sum()
        return zone_of(float((rows * w).sum()), float((cols * w).sum()), grid.shape[0])

    def _cells(self, planes: np.ndarray, g: int, how: str = "mean") -> np.ndarray:
        """(n, g, g) means (or maxima) of (n, size, size) planes over a g x g grid of cells (the regions: g = regions)."""
        e = np.linspace(0, self.size, g + 1).round().astype(int)
        reduce = np.mean if how == "mean" else np.max
        return np.stack([[reduce(planes[:, e[r]:e[r + 1], e[c]:e[c + 1]], axis=(1, 2)) for c in range(g)]
                         for r in range(g)]).transpose(2, 0, 1)

    def _upsampled_mask(self, cells: np.ndarray) -> np.ndarray:
        """(size, size) bool: the pixels of the cells that are True on the detector's grid."""
        g = cells.shape[0]
        idx = np.minimum((np.arange(self.size) * g) // self.size, g - 1)
        return cells[np.ix_(idx, idx)]

    def _matches(self, i: int, extra: dict, names: list[str], order: np.ndarray, region_above: np.ndarray,
                 share: np.ndarray, g: int, top: int) -> list[PatchMatch]:
        """For the top regions above the normal level: their highest cell and its matched normal patch."""
        cells, rows, matched = extra["cell_distance"][i], extra["matched_row"][i], extra["matched_cell"][i]
        # the match's own distance where the map is not it (an Ensemble's map: its members' cells combined)
        dist = extra.get("matched_distance", extra["cell_distance"])[i]
        cell_edges = np.linspace(0, self.size, g + 1).round().astype(int)
        out = []
        for j in [j for j in order if region_above[j]][:top]:
            x0, y0, x1, y1 = self.region_box(names[j])
            rs = [r for r in range(g) if cell_edges[r] < y1 and cell_edges[r + 1] > y0]
            cs = [c for c in range(g) if cell_edges[c] < x1 and cell_edges[c + 1] > x0]
            sub = cells[np.ix_(rs, cs)]
            a, b = np.unravel_index(int(np.argmax(sub)), sub.shape)
            r, c = rs[a], cs[b]
            mr, mc = divmod(int(matched[r, c]), g)
            row = int(rows[r, c])
            image = self.train_ids[row] if 0 <= row < len(self.train_ids) else str(row)
            out.append(PatchMatch(
                id=f"match:{names[j]}", region=names[j], zone=zone_of(*divmod(j, self.regions), self.regions),
                box=[int(cell_edges[c]), int(cell_edges[r]), int(cell_edges[c + 1]), int(cell_edges[r + 1])],
                distance=float(dist[r, c]), normal_image=image,
                normal_box=[int(cell_edges[mc]), int(cell_edges[mr]), int(cell_edges[mc + 1]), int(cell_edges[mr + 1])],
                share=float(share[j])))
        return out

    def compare(self, detector: BaseDetector, X: np.ndarray, Y: np.ndarray, *, other_id: str, p_other: float,
                alpha: float, top: int) -> Comparison:
        ex, ey = detector.embed(X, checked=True)[0], detector.embed(Y, checked=True)[0]
        score = float(detector.decision_function(Y, checked=True)[0])
        mx, my = self.region_means(X)[0], self.region_means(Y)[0]
        diff = my - mx
        names = self.unit_names
        return Comparison(
            id=f"compare:{other_id}", other_id=str(other_id), distance=float(np.linalg.norm(ex - ey)),
            other_score=score, other_p_value=float(p_other), other_anomalous=bool(p_other < alpha),
            differences=[FeatureDifference(unit=names[j], value=float(mx[j]), other=float(my[j]),
                                           difference=float(diff[j])) for j in np.argsort(-np.abs(diff), kind="stable")[:top]])

    # ------------------------------------------------------------------ typed claims
    claims = image_claims
    claim_kinds = image_claims.KINDS

    @classmethod
    def unit_claims(cls, evidence: Evidence, unit_id: str, *, with_exemplars: bool = True) -> list[Claim]:
        # a region's mean intensity says little of a defect: its place and its matched normal patch do
        kinds = ("location", "matched_patch") if with_exemplars else ("location",)
        match_id = "match:" + unit_id.split(":", 1)[-1]
        return [c for c in image_claims.candidates(evidence)
                if c.kind in kinds and c.cites and c.cites[0] in (unit_id, match_id)]

    # ------------------------------------------------------------------ persistence
    def to_config(self) -> dict[str, Any]:
        return {"size": self.size, "channels": self.channels, "regions": self.regions, "train_ids": self.train_ids,
                "profile": None if self.profile is None else self.profile.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ImageModality":
        try:
            mod = cls(int(config["size"]), int(config["channels"]), int(config["regions"]),
                      [str(i) for i in config.get("train_ids") or []], config.get("profile"))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise CheckpointError(f"the images metadata is corrupted ({exc})") from exc
        if mod.profile is not None and mod.profile.shape != (len(PROFILE_LEVELS), mod.regions ** 2):
            raise CheckpointError(f"the images metadata is corrupted: a profile of shape {mod.profile.shape} for "
                                  f"{mod.regions} x {mod.regions} regions")
        return mod
