"""One picture per image case: the image, the anomaly map over it with the top regions boxed, the
restoration (what the detector's normal version of it looks like) with what it changed, and the
nearest normal image with the patch the top region matched boxed. Untrusted names (file names) are
shown as plain text, never as markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomalens.schema import Evidence, fmt

__all__ = ["contact_sheet", "image_picture", "model_views"]


def _rgb(px: np.ndarray) -> np.ndarray:
    """(h, w, 3) floats from (c, h, w) pixels."""
    px = np.clip(np.asarray(px, dtype=np.float64), 0, 1)
    return np.repeat(px[:1], 3, 0).transpose(1, 2, 0) if px.shape[0] == 1 else px.transpose(1, 2, 0)


def _box(ax: Any, box: list[int], colour: str, label: str | None = None, width: float = 2.0) -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width))
    if label:
        ax.text(x0 + 1, y0 + 1, label, color="white", fontsize=8, va="top", ha="left",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85})


def image_picture(path: str | Path, ev: Evidence, pixels: np.ndarray, restored: np.ndarray, modality: Any, *,
                  normal: tuple[str, np.ndarray] | None = None) -> Path:
    """Write ``path`` (PNG): four panels for one image case (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, s = modality.channels, modality.size
    img = _rgb(np.asarray(pixels).reshape(c, s, s))
    rest = _rgb(np.asarray(restored).reshape(c, s, s))
    amap = ev.anomaly_map
    grid = np.asarray(amap.grid) if amap is not None else np.zeros((1, 1))
    matches = ev.matches
    v = ev.verdict
    fig, axes = plt.subplots(1, 4, figsize=(13.5, 4.0), dpi=100)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    verdict = "ANOMALOUS" if v.anomalous else "not flagged"
    fig.suptitle(f"{ev.case_id[:60]}: {verdict}   score {fmt(v.score)}   p = {fmt(v.p_value)}"
                 f"{' (tail)' if v.approximate else ''}   cut-off {fmt(v.cutoff)}",
                 fontsize=11, color="#b00020" if v.anomalous else "#1b5e20", usetex=False)
    axes[0].imshow(img, interpolation="nearest")
    axes[0].set_title("image", fontsize=10)

    axes[1].imshow(img, interpolation="nearest")
    if amap is not None:
        lo, hi = 0.0, max(float(grid.max()), amap.normal_level * 1.5, 1e-9)
        im = axes[1].imshow(grid, cmap="inferno", alpha=0.55, vmin=lo, vmax=hi, extent=(-0.5, s - 0.5, s - 0.5, -0.5),
                            interpolation="bilinear")
        if amap.normal_level < hi:
            axes[1].contour(np.linspace(0, s - 1, grid.shape[1]), np.linspace(0, s - 1, grid.shape[0]), grid,
                            levels=[amap.normal_level], colors=["#00e5ff"], linewidths=1.0)
        cb = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
        cb.ax.axhline(amap.normal_level, color="#00e5ff", linewidth=1.5)
        cb.ax.tick_params(labelsize=7)
        axes[1].set_title(f"anomaly map (cyan: normal level {fmt(amap.normal_level)})", fontsize=10)
    for k, g in enumerate(matches[:3], start=1):
        _box(axes[1], g.box, "#ff1744", str(k))
    if matches:
        axes[1].set_xlabel("boxed: " + ", ".join(f"{k} = region {g.region}" for k, g in enumerate(matches[:3], start=1)),
                           fontsize=9)

    axes[2].imshow(rest, interpolation="nearest")
    from scipy.ndimage import uniform_filter

    changed = uniform_filter(np.abs(rest - img).mean(axis=2), size=max(3, s // 28)) > 0.04
    if changed.any():
        axes[2].contour(changed.astype(float), levels=[0.5], colors=["#ffea00"], linewidths=1.0)
    after = ev.restoration.score_after if ev.restoration is not None else None
    axes[2].set_title("restored (yellow: changed)" + (f", score {fmt(after)}" if after is not None else ""), fontsize=10)

    if normal is not None:
        name, px = normal
        axes[3].imshow(_rgb(px), interpolation="nearest")
        boxed = [(k, g) for k, g in enumerate(matches[:3], start=1) if g.normal_image == name]
        for k, g in boxed:
            _box(axes[3], g.normal_box, "#2979ff", str(k))
        if boxed:  # a detector that matches no patch (padim, image_ae) boxes nothing
            axes[3].set_xlabel("boxed: the normal patch a region matched", fontsize=9)
        axes[3].set_title(f"nearest normal: {name[:40]}", fontsize=10)
    else:
        axes[3].axis("off")
        axes[3].set_title("no normal image kept", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def contact_sheet(path: str | Path, evidence: list[Evidence], pixels: np.ndarray, modality: Any, columns: int = 6) -> Path:
    """Write ``path`` (PNG): the reported images of a lot at a glance, most anomalous first, each with the
    cell of its top region boxed and its verdict and p-value in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(evidence)), key=lambda i: -evidence[i].verdict.score)
    n = max(len(order), 1)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.8 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    s = modality.size
    for ax, i in zip(axes.ravel(), order):
        ev = evidence[i]
        ax.imshow(_rgb(np.asarray(pixels[i]).reshape(modality.channels, s, s)), interpolation="nearest")
        for g in ev.matches[:1]:
            _box(ax, g.box, "#ff1744", width=1.5)
        v = ev.verdict
        ax.set_title(f"{ev.case_id[:20]}\n{'ANOMALOUS' if v.anomalous else 'not flagged'}, p = {fmt(v.p_value)}",
                     fontsize=8, color="#b00020" if v.anomalous else "#1b5e20")
    fig.tight_layout(h_pad=1.5)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _png(rgb: np.ndarray, boxes: list[tuple[list[int], tuple[int, int, int]]] = ()) -> bytes:
    """PNG bytes of (h, w, 3) floats in [0, 1], with boxes ([x0, y0, x1, y1], colour) drawn."""
    import io

    from PIL import Image, ImageDraw

    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), colour in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def model_views(ev: Evidence, pixels: np.ndarray, modality: Any, *, normal: tuple[str, np.ndarray] | None = None,
                top: int = 3) -> list[Any]:
    """What a vision model is shown of one image case (``schema.View``): the image; the detector's map
    over it (red is high), the top regions' cells boxed; the nearest normal image with the patch the top
    region matched boxed. Drawn with PIL at the model's size (a few milliseconds), no figure."""
    from matplotlib import colormaps

    from anomalens.schema import View

    c, s = modality.channels, modality.size
    img = _rgb(np.asarray(pixels).reshape(c, s, s))
    # captions name no file: names are untrusted text and reach the model only inside the data block
    views = [View(_png(img), f"[image 1: the image under inspection, {s}x{s} pixels]")]
    amap = ev.anomaly_map
    matches = ev.matches[:top]
    if amap is not None:
        grid = np.asarray(amap.grid, dtype=np.float64)
        lo, hi = float(grid.min()), float(grid.max())
        heat = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
        rows, cols = grid.shape
        up = np.kron(heat, np.ones((-(-s // rows), -(-s // cols))))[:s, :s]
        overlay = 0.55 * img + 0.45 * colormaps["jet"](up)[..., :3]
        views.append(View(_png(overlay, [(m.box, (255, 255, 255)) for m in matches]),
                          f"[image 2: the detector's anomaly map over the image (blue low, red high; cells above the "
                          f"normal level: {100 * amap.area_share:.0f}% of the image), the top {len(matches)} regions' "
                          f"cells boxed in white]"))
    if normal is not None:
        nid, npx = normal
        box = [(matches[0].normal_box, (0, 200, 0))] if matches and matches[0].normal_image == nid else []
        views.append(View(_png(_rgb(np.asarray(npx).reshape(c, s, s)), box),
                          f"[image {len(views) + 1}: the nearest normal image (its name is in the evidence)"
                          f"{', the patch the top region matched boxed in green' if box else ''}]"))
    return views
