"""Plain building blocks shared by the torch detectors: MLPs, width rules and MADE masks.

MADE: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "made_hidden", "made_masks", "clamp_code", "code_range", "nearest_decodings", "DECODED_MEMORY_MAX", "mlp", "auto_hidden", "auto_latent", "MaskedLinear", "MADE",
    "BatchedMaskedLinear", "BatchedMADE",
]


def auto_hidden(n_features: int) -> tuple[int, int]:
    """Default hidden widths: wide enough for the input, bounded so small data cannot be memorised."""
    return (min(256, max(32, 2 * n_features)), min(128, max(16, n_features)))


def auto_latent(n_features: int) -> int:
    """Default bottleneck: about sqrt(d), between 2 and 32, so reconstruction cannot be the identity."""
    return int(min(32, max(2, math.ceil(math.sqrt(n_features)))))


def made_hidden(n_features: int, hidden_dims: tuple[int, ...] | None) -> tuple[int, ...]:
    """Hidden widths of a MADE: ``hidden_dims`` when given, else two layers of clip(2d, 32, 256)."""
    if hidden_dims:
        return tuple(hidden_dims)
    w = auto_hidden(n_features)[0]
    return (w, w)


def mlp(sizes: list[int] | tuple[int, ...], *, final_activation: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of ``sizes`` with SiLU (and dropout, when > 0) between them, and after the last when asked."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.SiLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(n_features: int, hidden: tuple[int, ...], n_out: int) -> list[torch.Tensor]:
    """MADE's 0/1 masks (out, in) for the natural order: output block j of feature i sees only
    features before i. Hidden degrees cycle over 1..d-1 so every conditional gets units."""
    d = n_features
    in_deg = torch.arange(1, d + 1)  # degree of input i is i+1
    degs = [in_deg]
    for h in hidden:
        degs.append(torch.arange(h) % max(1, d - 1) + 1 if d > 1 else torch.zeros(h, dtype=torch.long))
    masks = [(b[:, None] >= a[None, :]) for a, b in zip(degs[:-1], degs[1:])]
    out_deg = in_deg.repeat(n_out)  # (n_out * d,), output feature i sees hidden degree < i+1
    masks.append(out_deg[:, None] > degs[-1][None, :])
    return masks


class MADE(nn.Module):
    """Masked MLP whose output block j for feature i depends only on features before i.

    The input order is the natural one (feature 0 first). Output: (batch, n_out, d), where n_out
    is the number of parameters per feature (e.g. 2 for an affine shift and log-scale).
    """

    def __init__(self, n_features: int, hidden: tuple[int, ...], n_out: int) -> None:
        super().__init__()
        d = n_features
        self.n_features, self.n_out = d, n_out
        masks = made_masks(d, hidden, n_out)
        layers: list[nn.Module] = []
        for mask in masks[:-1]:
            layers += [MaskedLinear(mask.shape[1], mask.shape[0], mask), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.out = MaskedLinear(masks[-1].shape[1], n_out * d, masks[-1])
        nn.init.zeros_(self.out.weight)  # start as the identity / standard-normal conditional
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, d) -> (batch, n_out, d)
        h = self.net(x)
        return self.out(h).view(x.shape[0], self.n_out, self.n_features)


class BatchedMaskedLinear(nn.Module):
    """``n_members`` masked linear layers with one shared mask, applied as one batched matmul."""

    def __init__(self, n_members: int, mask: torch.Tensor, zero: bool = False) -> None:
        super().__init__()
        out_f, in_f = mask.shape
        self.register_buffer("mask", mask.float())
        self.weight = nn.Parameter(torch.empty(n_members, out_f, in_f))
        self.bias = nn.Parameter(torch.empty(n_members, out_f))
        if zero:
            nn.init.zeros_(self.weight)
            nn.init.zeros_(self.bias)
        else:  # nn.Linear's default initialisation, member by member
            bound = 1 / math.sqrt(in_f)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (members, batch, in) -> (members, batch, out)
        return torch.baddbmm(self.bias[:, None, :], h, (self.weight * self.mask).transpose(1, 2))


class BatchedMADE(nn.Module):
    """Several MADEs over the same features, each reading the columns in its own ``order``.

    Every member sees its input permuted into its order and uses the natural-order masks, so all
    members run as one batched matmul per layer (a loop over members costs that many times the
    per-layer overhead on a CPU). Output: (members, batch, n_out, d) in the original column order.
    """

    def __init__(self, n_features: int, hidden: tuple[int, ...], n_out: int, orders: list[torch.Tensor]) -> None:
        super().__init__()
        d = n_features
        self.n_features, self.n_out = d, n_out
        masks = made_masks(d, hidden, n_out)
        m = len(orders)
        self.hidden = nn.ModuleList(BatchedMaskedLinear(m, mask) for mask in masks[:-1])
        self.out = BatchedMaskedLinear(m, masks[-1], zero=True)  # start as standard-normal conditionals
        order = torch.stack([o.long() for o in orders])  # (members, d)
        self.register_buffer("order", order)
        self.register_buffer("inverse", torch.argsort(order, dim=1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d) -> (members, batch, last hidden width)."""
        h = x[:, self.order].transpose(0, 1)  # (members, batch, d), each in its member's order
        for layer in self.hidden:
            h = F.silu(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, d) -> (members, batch, n_out, d)
        m, b, d = self.order.shape[0], x.shape[0], self.n_features
        out = self.out(self.features(x)).view(m, b, self.n_out, d)
        index = self.inverse[:, None, None, :].expand(m, b, self.n_out, d)
        return out.gather(3, index)  # back to the original column order


def code_range(codes: torch.Tensor) -> torch.Tensor:
    """(2, k) per-dimension min and max of latent codes (batch, k) of the training rows."""
    return torch.stack([codes.min(dim=0).values, codes.max(dim=0).values])


def clamp_code(code: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Clamp codes (batch, k) into the training box (2, k): the decoder then never extrapolates."""
    box = box.to(code.device)
    return torch.maximum(torch.minimum(code, box[1]), box[0])


DECODED_MEMORY_MAX = 32_000_000  # values (128 MB as float32) of a memory's decodings kept for scoring


def nearest_decodings(cache: dict, memory: torch.Tensor, code: torch.Tensor, k: int,
                      decode: Callable[[torch.Tensor], torch.Tensor], values_per_code: int) -> torch.Tensor:
    """(n, k, ...) the decodings of the ``k`` memory codes nearest to each of the ``n`` codes (the hard-
    addressed memory of MemAE, Gong et al., ICCV 2019). Every memory code's decoding is computed once
    per ``memory`` tensor and device and kept in ``cache["_decoded"]`` (not saved: it follows from the
    weights), unless that would pass DECODED_MEMORY_MAX values: then each batch decodes its own."""
    on = memory.to(code.device)
    k = min(k, len(on))
    near = torch.cdist(code, on).topk(k, dim=1, largest=False).indices  # (n, k)
    cached = cache.get("_decoded")
    if cached is not None and cached[0] is memory and cached[1].device == code.device:
        return cached[1][near]
    if len(on) * values_per_code > DECODED_MEMORY_MAX:
        out = decode(on[near].reshape(-1, on.shape[1]))
        return out.view(len(code), k, *out.shape[1:])
    with torch.no_grad():
        decoded = torch.cat([decode(on[i:i + 512]) for i in range(0, len(on), 512)])
    cache["_decoded"] = (memory, decoded)
    return decoded[near]
