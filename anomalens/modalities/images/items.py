"""The evidence items an image case contributes (``Evidence.parts``): its **anomaly map** (one per
case) and, for each top region, the **normal patch it matched** in the memory bank. Each says which
units (regions) it is about, which numbers a claim citing it may state, what a model is shown and
how a report shows it."""

from __future__ import annotations

import re
from typing import Any, Literal

from anomalens.schema import Evidence, EvidenceItem, fmt, md, register_item

__all__ = ["AnomalyMap", "PatchMatch", "RegionLevel", "ZONES", "zone_of"]

ZONES = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))


def zone_of(row: float, col: float, n: int) -> str:
    """The 3 x 3 zone of a cell (row, col) on an n x n grid (its centre's third of the image)."""
    r, c = min(int(3 * (row + 0.5) / n), 2), min(int(3 * (col + 0.5) / n), 2)
    return ZONES[r][c]


@register_item
class AnomalyMap(EvidenceItem):
    """Where the image departs from normal: the detector's map over a grid of cells."""

    kind: Literal["anomaly_map"] = "anomaly_map"
    plural = "anomaly_map"
    single = True

    id: Literal["map"] = "map"
    grid: list[list[float]]  # cell scores, rows top to bottom (the detector's units: a patch distance)
    normal_level: float  # a cell above it is beyond the normal cells' level (their 99.5% quantile)
    peak_region: str  # the region (unit) holding the highest cell
    peak_zone: str  # that cell's 3 x 3 zone ("top-left", ..., "centre", ...)
    peak_value: float
    area_share: float  # share of the image's cells above the normal level (0..1)
    zone: str  # the 3 x 3 zone of the centre of the main group of cells above the normal level (by excess; the peak's when none is)
    regions_above: list[str]  # regions holding a cell above the normal level, highest first
    image_size: int  # pixels on a side of the image the map covers (the model's size)

    def units(self) -> set[str]:
        return set(self.regions_above) | {self.peak_region}

    def numbers(self) -> list[float]:
        return [self.peak_value, self.normal_level, self.area_share, 100 * self.area_share,
                float(len(self.regions_above)), float(self.image_size)]

    def number_roles(self) -> list[tuple[str, float]]:
        return [("value", self.peak_value), ("bound", self.normal_level), ("share", self.area_share),
                ("share", 100 * self.area_share), ("count", float(len(self.regions_above))), ("count", float(self.image_size))]

    def payload(self) -> dict[str, Any]:
        return self.model_dump(exclude={"id", "kind", "grid"})

    def headline(self) -> tuple[str, str]:
        return ("Anomaly map", f"peak in region {self.peak_region} ({self.peak_zone}); {fmt(100 * self.area_share)}% "
                f"of the image above the normal level. Try /plot for the picture.")

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        m = items[0]
        lines = ["", "## Anomaly map", "",
                 f"- peak {fmt(m.peak_value)} in region {md(m.peak_region)} ({m.peak_zone}); normal cells stay below "
                 f"{fmt(m.normal_level)}",
                 f"- {fmt(100 * m.area_share)}% of the image is above the normal level, its main part centred in the {m.zone}"
                 + (f", in {len(m.regions_above)} region(s): {md(', '.join(m.regions_above[:8]))}" if m.regions_above
                    else "")]
        if plot and re.fullmatch(r"[\w.-]+\.png", plot):  # a name the flow wrote, next to the report
            lines += [f"- picture: ![{md(evidence.case_id)}]({plot})"]
        return lines


class _RegionItem(EvidenceItem):
    """An item about one region: its name, 3 x 3 zone and box (the units it speaks about: the region)."""

    region: str  # the unit name ("<row>,<col>")
    zone: str  # the region's 3 x 3 zone
    box: list[int]  # [x0, y0, x1, y1] in the model's pixels (a PatchMatch: the region's matched cell)

    def units(self) -> set[str]:
        return {self.region}


@register_item
class PatchMatch(_RegionItem):
    """A region's most anomalous cell and the normal patch the memory bank matched it with."""

    kind: Literal["patch_match"] = "patch_match"
    plural = "matches"

    id: str  # "match:<region>"
    distance: float  # that cell's distance to its nearest normal patch
    normal_image: str  # the training image of the matched patch
    normal_box: list[int]  # the matched patch's [x0, y0, x1, y1] in that image
    share: float  # the region's share of the map above the normal level

    def numbers(self) -> list[float]:
        return [self.distance, self.share, 100 * self.share, *map(float, self.box), *map(float, self.normal_box)]

    def number_roles(self) -> list[tuple[str, float]]:  # box corners: "count" (pixels), never a value or a share
        return [("distance", self.distance), ("share", self.share), ("share", 100 * self.share),
                *(("count", float(v)) for v in (*self.box, *self.normal_box))]

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        return ["", "| region | zone | cell box | distance | nearest normal patch | share |", "|---|---|---|---:|---|---:|",
                *[f"| {md(g.region)} | {g.zone} | {g.box} | {fmt(g.distance)} | {md(g.normal_image)} {g.normal_box} | "
                  f"{100 * g.share:.1f}% |" for g in items]]


@register_item
class RegionLevel(_RegionItem):
    """Any region of the image looked up (the chat's ``/region``): where it is (``box``: the whole region)
    and its highest map cell against the normal cells' level (the top regions also have a ``PatchMatch``)."""

    kind: Literal["region_level"] = "region_level"
    plural = "region_levels"

    id: str  # "level:<region>"
    peak_cell: float  # the region's highest map cell (the detector's units)
    normal_level: float  # the map's normal level (as AnomalyMap.normal_level)
    share: float  # the region's share of the map above the normal level

    def numbers(self) -> list[float]:
        return [self.peak_cell, self.normal_level, self.share, 100 * self.share, *map(float, self.box)]

    def number_roles(self) -> list[tuple[str, float]]:
        return [("value", self.peak_cell), ("bound", self.normal_level), ("share", self.share),
                ("share", 100 * self.share), *(("count", float(v)) for v in self.box)]

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        return ["", "## Regions looked up", "", "| region | zone | box | highest cell | normal level | share |",
                "|---|---|---|---:|---:|---:|",
                *[f"| {md(g.region)} | {g.zone} | {g.box} | {fmt(g.peak_cell)} | {fmt(g.normal_level)} | "
                  f"{100 * g.share:.1f}% |" for g in items]]
