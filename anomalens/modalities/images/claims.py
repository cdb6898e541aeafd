"""Typed claims about an image case, each rendered from the evidence.

Regions are the units (``region:<row>,<col>`` on the modality's grid; their value is the region's mean
intensity against its normal range there). Kinds (params in brackets), besides the kinds about units
of ``unit_claims`` (``range``, ``share``, ``rank``, ``exemplar_value``, ``exemplar_distance``,
``restoration``, ``profile``, ``comparison``, ``verdict``):

- ``location`` [zone]: a top region's place on the 3 x 3 grid, its cell box and its share of the map
  above the normal level (cites ``match:<region>``)
- ``peak`` [zone]: the map's highest cell, its value against the normal cells' level (cites ``map``)
- ``area`` [zone]: the share of the image above the normal level, the zone its centre is in and the
  regions it falls in (cites ``map``)
- ``matched_patch``: the normal patch a region's cell matched: its training image, box and distance
  (cites ``match:<region>``)
- ``restoration_score``: the restored image's score against the image's (cites ``restoration``, ``verdict``)
- ``region_level`` [zone]: a region looked up (``/region``): its place, box, and its highest map cell against
  the normal level (cites ``level:<region>``)

What a defect *is* ("scratch", "crack", "stain") is interpretation, never a claim: no kind states it
and the free-text reading refuses such words.
"""

from __future__ import annotations

import re

from anomalens.modalities import unit_claims
from anomalens.modalities.images.items import ZONES
from anomalens.schema import Claim, Evidence, fmt, quote, split_mentions

__all__ = ["KINDS", "candidates", "check", "parse", "render_kind"]

KINDS = {
    **{k: v.replace("a feature's value", "a region's mean intensity").replace("feature", "region")
       for k, v in unit_claims.KINDS.items()},
    "location": "a region's place on the 3 x 3 grid (params: zone), its cell box and its share of the map",
    "peak": "the anomaly map's highest cell, its value and zone (params: zone) against the normal level",
    "area": "the share of the image above the normal level, the zone of its centre (params: zone) and its regions",
    "matched_patch": "the normal training image and patch box a region's cell matched, and its distance",
    "restoration_score": "the detector's score of the restored image against the image's",
    "region_level": "a looked-up region's place (params: zone), box, and its highest cell against the normal level",
}
_ZONE_WORDS = tuple(sorted({z for row in ZONES for z in row}, key=len, reverse=True))
_ZONE = re.compile(r"\b(" + "|".join(re.escape(z) for z in _ZONE_WORDS) + r")\b")
_IMAGE_WORDS = frozenset("""
image images picture region regions cell cells patch patches box boxes pixel pixels area map heat zone zones
peak peaks highest corner edge side part parts half centre center middle top bottom left right upper lower
top-left top-right bottom-left bottom-right matched matches match nearest normal training level levels
intensity brightness bright brighter dark darker mean grid restored restoration falls fall lies in at of
""".split())


@unit_claims.memoised
def candidates(evidence: Evidence) -> list[Claim]:
    """Every true typed claim the evidence supports, rendered."""
    out = unit_claims.candidates(evidence)
    m = evidence.anomaly_map
    if m is not None:
        out.append(Claim(kind="peak", cites=["map"], params={"zone": m.peak_zone},
                         text=f"The anomaly map peaks at {fmt(m.peak_value)} in region {quote(m.peak_region)} "
                              f"({m.peak_zone}); normal cells stay below {fmt(m.normal_level)}."))
        where = (f", in region(s) {', '.join(quote(r) for r in m.regions_above[:6])}" if m.regions_above else "")
        out.append(Claim(kind="area", cites=["map"], params={"zone": m.zone},
                         text=f"{fmt(100 * m.area_share)}% of the image is above the normal level, its main part centred in "
                              f"the {m.zone}{where}."))
    for g in evidence.matches:
        out.append(Claim(kind="location", cites=[g.id], params={"zone": g.zone},
                         text=f"Region {quote(g.region)} lies in the {g.zone} of the image (box {g.box}) and holds "
                              f"{fmt(100 * g.share)}% of the map above the normal level."))
        out.append(Claim(kind="matched_patch", cites=[g.id], params={},
                         text=f"The nearest normal patch to region {quote(g.region)} is in training image "
                              f"{quote(g.normal_image)} at {g.normal_box}, at distance {fmt(g.distance)}."))
    for g in evidence.region_levels:
        side = "above" if g.peak_cell > g.normal_level else "not above"
        out.append(Claim(kind="region_level", cites=[g.id], params={"zone": g.zone},
                         text=f"Region {quote(g.region)} lies in the {g.zone} of the image (box {g.box}); its highest cell, "
                              f"{fmt(g.peak_cell)}, is {side} the normal level {fmt(g.normal_level)}."))
    r = evidence.restoration
    if r is not None and r.score_after is not None:
        out.append(Claim(kind="restoration_score", cites=["restoration", "verdict"], params={},
                         text=f"The restored image scores {fmt(r.score_after)} against this image's "
                              f"{fmt(evidence.verdict.score)}."))
    return out


def render_kind(kind: str, cites: list[str], params: dict, evidence: Evidence) -> Claim | None:
    return unit_claims.render_among(candidates(evidence), kind, cites, params)


def check(claim: Claim, evidence: Evidence) -> str | None:
    return unit_claims.check_among(claim, candidates(evidence), KINDS)


def parse(claim: Claim, evidence: Evidence) -> str | None:
    """None when a free-text claim reads as typed claims that hold, else why it cannot be proved: a
    sentence citing the map or a matched patch may use the words of places in an image, and a zone it
    names must be a cited item's zone."""
    cites = set(claim.cites)
    items = evidence.items()
    image_cites = [c for c in cites if c == "map" or c.startswith("match:")]
    if not image_cites:
        return unit_claims.parse(claim, evidence, _IMAGE_WORDS)
    # the training image a cited match names may be written (its name, quoted or not, is no word of a claim)
    text = claim.text
    for g in (items[c] for c in image_cites if c.startswith("match:")):
        text = split_mentions(text, [g.normal_image])[1]
    extra = unit_claims.unconfirmable_words(text, evidence.context.unit_names, _IMAGE_WORDS)
    if extra:
        return f"states what its evidence cannot confirm ({', '.join(dict.fromkeys(extra[:4]))})"
    denied = unit_claims.denies(claim.text, evidence.context.unit_names)
    if denied:
        return denied
    m = evidence.anomaly_map
    regions, rest = split_mentions(claim.text, evidence.context.unit_names)
    if ("map" in cites and m is not None and len(regions) == 1 and regions[0] != m.peak_region
            and re.search(r"\b(peaks?|peaked|highest|maximum)\b", rest.lower())):
        return f"says the map peaks in region {quote(regions[0])}, but it peaks in region {quote(m.peak_region)}"
    zones = {z for c in image_cites for z in (getattr(items.get(c), "zone", None), getattr(items.get(c), "peak_zone", None))
             if z}
    named = set(_ZONE.findall(claim.text.lower().replace("center", "centre")))
    wrong = sorted(named - zones - {w for z in zones if z for w in z.split("-")})
    if wrong:
        return f"places it in the {wrong[0]}, but its cited evidence is in the {', '.join(sorted(z for z in zones if z))}"
    return None
