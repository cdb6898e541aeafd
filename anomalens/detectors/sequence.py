"""A next-event model of normal event sequences (DeepLog-style; Du et al., CCS 2017).

An LSTM reads the last ``history`` events of a sequence (template ids of a log session or window)
and gives the probability of each possible next event, including the end of the sequence. Trained
on normal sequences only, it says for every event of a new sequence how surprising it was in its
context (``-log p``, in nats) and what it expected instead (the most likely event there): the
per-event attribution and the **expected sequence** of a log case.

Events are integers 1..V (0 pads the history before the first event); V + 1 marks the end of a
sequence and V + 2 any event the model never saw (an unseen template), which no normal context
predicts, so its surprise is large.

    m = NextEventModel(history=10).fit(sequences, n_events=V)
    s = m.surprises(seq)          # (len(seq) + 1,) nats: each event, then the end
    e = m.expected(seq)           # (len(seq) + 1,) the most likely event at each place (V + 1: the end)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalens.detectors.base import resolve_device
from anomalens.errors import CheckpointError, InputError, NotFittedError

__all__ = ["NextEventModel"]


class _Net(nn.Module):
    def __init__(self, n_tokens: int, embed: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, n_tokens)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(ctx))
        return self.out(h[:, -1])  # logits of the next event


@dataclass(frozen=True)
class NextEventConfig:
    history: int = 10
    embed: int = 32
    hidden: int = 64
    layers: int = 2
    epochs: int = 12
    min_steps: int = 1000  # at least this many optimizer steps, however few the pairs (small logs)
    batch_size: int = 512
    lr: float = 3e-3
    device: str = "auto"
    random_state: int = 0


class NextEventModel:
    """Next-event probabilities of normal sequences (see the module docstring)."""

    def __init__(self, **params) -> None:
        try:
            self.config = NextEventConfig(**params)
        except TypeError as exc:
            raise InputError(f"NextEventModel takes {list(NextEventConfig.__dataclass_fields__)}: {exc}") from exc
        c = self.config
        for name in ("history", "embed", "hidden", "layers", "epochs", "min_steps", "batch_size"):
            v = getattr(c, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive int, got {v!r}")
        self.n_events_: int | None = None
        self.net_: _Net | None = None

    # ------------------------------------------------------------------ data
    @property
    def end(self) -> int:
        return self.n_events_ + 1

    @property
    def unknown(self) -> int:
        return self.n_events_ + 2

    def _pairs(self, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (N, history), next events (N,)) over every place of every sequence, end included."""
        h = self.config.history
        ctx, nxt = [], []
        for s in seqs:
            full = np.concatenate([np.zeros(h, dtype=np.int64), s, [self.end]])
            win = np.lib.stride_tricks.sliding_window_view(full[:-1], h)  # (len(s) + 1, h)
            ctx.append(win)
            nxt.append(full[h:])
        return np.concatenate(ctx), np.concatenate(nxt)

    def _check(self, seq, name: str) -> np.ndarray:
        s = np.asarray(seq, dtype=np.int64).ravel()
        if s.size and (s.min() < 1 or s.max() > self.unknown):
            raise InputError(f"{name} must hold event ids in 1..{self.unknown}, got {int(s.min())}..{int(s.max())}")
        return s

    # ------------------------------------------------------------------ fit
    def fit(self, sequences: list, n_events: int, *, progress: bool | str = False) -> "NextEventModel":
        """Train on normal event-id sequences; ``progress`` shows a bar over the optimizer steps (n/N),
        labelled with it where it is a string."""
        if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 1:
            raise InputError(f"n_events must be a positive int, got {n_events!r}")
        self.n_events_ = int(n_events)
        seqs = [self._check(s, "sequences") for s in sequences]
        if not seqs:
            raise InputError("sequences must hold at least one normal sequence, got none")
        c = self.config
        torch.manual_seed(c.random_state)
        rng = np.random.default_rng(c.random_state)
        dev = resolve_device(c.device, strict=False)
        X, y = self._pairs(seqs)
        # identical (context, next) pairs are frequent in logs: train on the distinct ones, weighted by count
        rows = np.concatenate([X, y[:, None]], axis=1)
        uniq, counts = np.unique(rows, axis=0, return_counts=True)
        X, y, w = uniq[:, :-1], uniq[:, -1], counts.astype(np.float32)
        net = _Net(self.unknown + 1, c.embed, c.hidden, c.layers).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr)
        Xt, yt, wt = (torch.as_tensor(a, device=dev) for a in (X, y, w))
        total = float(w.sum())
        steps = max(1, int(np.ceil(total / c.batch_size)))
        p = w / w.sum()
        net.train()
        n_steps = max(c.epochs * steps, c.min_steps)
        loop = range(n_steps)
        if progress:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else "training the next-event model"
            loop = tqdm(loop, desc=desc, unit=" steps", mininterval=0.5, leave=False)
        # where the distinct pairs fit in a batch (a small or repetitive log: 34 pairs in 900 sessions of the
        # tests' logs), each step is the exact count-weighted loss over all of them; otherwise batches are drawn
        # in proportion to the pairs' counts
        whole = len(X) <= c.batch_size
        for _ in loop:
            if whole:
                loss = (nn.functional.cross_entropy(net(Xt), yt, reduction="none") * wt).sum() / total
            else:
                idx = torch.as_tensor(rng.choice(len(X), size=min(c.batch_size, int(total)), p=p), device=dev)
                loss = nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
        net.eval()
        self.net_ = net.cpu()
        self._dev = torch.device("cpu")
        del Xt, yt, wt
        return self

    def _need_fit(self) -> None:
        if self.net_ is None:
            raise NotFittedError("this NextEventModel is not fitted yet; call fit(sequences, n_events) first")

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def log_probs(self, sequences: list) -> list[np.ndarray]:
        """Per sequence, (len + 1, V + 3) log-probabilities of each possible event at each place."""
        self._need_fit()
        seqs = [self._check(s, "sequence") for s in sequences]
        if not seqs:
            return []
        X, _ = self._pairs(seqs)
        out = []
        for a in range(0, len(X), 8192):
            out.append(torch.log_softmax(self.net_(torch.as_tensor(X[a : a + 8192])), dim=-1).numpy())
        lp = np.concatenate(out) if out else np.zeros((0, self.unknown + 1))
        bounds = np.cumsum([0] + [len(s) + 1 for s in seqs])
        return [lp[bounds[i] : bounds[i + 1]] for i in range(len(seqs))]

    def surprises(self, sequences: list) -> list[np.ndarray]:
        """Per sequence, ``-log p`` of each event in its context, then of the end (nats)."""
        out = []
        for s, lp in zip(sequences, self.log_probs(sequences)):
            nxt = np.concatenate([np.asarray(s, dtype=np.int64).ravel(), [self.end]])
            out.append(-lp[np.arange(len(nxt)), nxt])
        return out

    @torch.no_grad()
    def rollout(self, sequence, max_steps: int = 30) -> list[int]:
        """The most likely continuation of ``sequence`` (greedy, known events only) until the model
        expects the end, at most ``max_steps`` events: what a case that stopped early was missing."""
        self._need_fit()
        h = self.config.history
        ctx = [0] * h + [int(e) for e in self._check(sequence, "sequence")]
        out: list[int] = []
        for _ in range(max_steps):
            logits = self.net_(torch.as_tensor([ctx[-h:]]))[0]
            logits[0] = logits[self.unknown] = -float("inf")
            e = int(logits.argmax())
            if e == self.end:
                break
            out.append(e)
            ctx.append(e)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        self._need_fit()
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(p / "weights.safetensors"))
        (p / "config.json").write_text(json.dumps({"class": "NextEventModel", "params": asdict(self.config),
                                                   "n_events": self.n_events_}))
        return p

    @classmethod
    def load(cls, path: str | Path) -> "NextEventModel":
        from safetensors.torch import load_file

        p = Path(path)
        try:
            cfg = json.loads((p / "config.json").read_text())
            m = cls(**cfg["params"])
            m.n_events_ = int(cfg["n_events"])
            c = m.config
            net = _Net(m.unknown + 1, c.embed, c.hidden, c.layers)
            net.load_state_dict(load_file(str(p / "weights.safetensors")))
        except FileNotFoundError as exc:
            raise CheckpointError(f"{p} holds no saved next-event model ({exc.filename} is missing)") from exc
        except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{p}: the saved next-event model is corrupted ({type(exc).__name__}: {exc})") from exc
        net.eval()
        m.net_ = net
        return m
