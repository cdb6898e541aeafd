"""Plain building blocks shared by the torch detectors: MLPs, width rules and MADE masks.

MADE: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["made_hidden", "clamp_code", "code_range", "mlp", "auto_hidden", "auto_latent", "MaskedLinear", "MADE"]


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


class MADE(nn.Module):
    """Masked MLP whose output block j for feature i depends only on features before i.

    The input order is the natural one (feature 0 first). Output: (batch, n_out, d), where n_out
    is the number of parameters per feature (e.g. 2 for an affine shift and log-scale).
    """

    def __init__(self, n_features: int, hidden: tuple[int, ...], n_out: int) -> None:
        super().__init__()
        d = n_features
        self.n_features, self.n_out = d, n_out
        in_deg = torch.arange(1, d + 1)  # degree of input i is i+1
        degs = [in_deg]
        for h in hidden:
            # hidden degrees cycle over 1..d-1 so every conditional gets units (d == 1: all zero)
            degs.append(torch.arange(h) % max(1, d - 1) + 1 if d > 1 else torch.zeros(h, dtype=torch.long))
        layers: list[nn.Module] = []
        for a, b in zip(degs[:-1], degs[1:]):
            layers += [MaskedLinear(len(a), len(b), (b[:, None] >= a[None, :])), nn.SiLU()]
        out_deg = in_deg.repeat(n_out)  # (n_out * d,), output feature i sees hidden degree < i+1
        self.net = nn.Sequential(*layers)
        self.out = MaskedLinear(len(degs[-1]), n_out * d, out_deg[:, None] > degs[-1][None, :])
        nn.init.zeros_(self.out.weight)  # start as the identity / standard-normal conditional
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, d) -> (batch, n_out, d)
        h = self.net(x)
        return self.out(h).view(x.shape[0], self.n_out, self.n_features)


def code_range(codes: torch.Tensor) -> torch.Tensor:
    """(2, k) per-dimension min and max of latent codes (batch, k) of the training rows."""
    return torch.stack([codes.min(dim=0).values, codes.max(dim=0).values])


def clamp_code(code: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Clamp codes (batch, k) into the training box (2, k): the decoder then never extrapolates."""
    box = box.to(code.device)
    return torch.maximum(torch.minimum(code, box[1]), box[0])
