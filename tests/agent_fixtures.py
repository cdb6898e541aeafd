"""Shared data for the tools, agent and CLI tests: normal server metrics with one injected case."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["cpu", "memory", "disk_io", "net_in", "net_out", "latency"]
SERVER_COLUMNS = ["cpu", "memory", "latency", "errors"]
API_KEY = "test-key-0123456789abcdef"  # the key of the served models (conftest.serve_models)
OTHER_KEY = "other-key-fedcba9876543210"  # their second key: another client of the same server


def metrics(n: int, seed: int) -> pd.DataFrame:
    """(n, 6) correlated 'server metrics': two load factors plus noise."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], 0.8 * f[:, 0] + 0.3 * f[:, 1], f[:, 1], f[:, 0] + f[:, 1], f[:, 0] - 0.5 * f[:, 1],
                         0.5 * f[:, 1] + 0.2 * f[:, 0]])
    X = X + 0.1 * rng.normal(size=X.shape)
    return pd.DataFrame(X, columns=COLUMNS)


def server_rows(n: int, seed: int) -> pd.DataFrame:
    """(n, 4) rows of the served ``metrics`` model (REST, MCP and page tests): two factors plus noise."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], f[:, 0] + 0.5 * f[:, 1], f[:, 1], 0.3 * f[:, 0] - f[:, 1]])
    return pd.DataFrame(X + 0.1 * rng.normal(size=X.shape), columns=SERVER_COLUMNS)


def cases(seed: int = 1, n: int = 40, injected: int = 7, feature: str = "memory", shift: float = 8.0) -> pd.DataFrame:
    """``n`` normal rows with ids "c0".."c<n-1>", where row ``injected`` has ``feature`` pushed up by ``shift``."""
    df = metrics(n, seed)
    df.loc[injected, feature] += shift
    df.index = [f"c{i}" for i in range(n)]
    return df


class ScriptedToolModel:
    """A FAKE tool-calling chat model (named as such): it replays a script of turns and records
    what it was sent. Each script entry is a ChatTurn, or a function of the messages it receives
    that returns one. It stands in for a model in tests of the graph's logic only."""

    name = "fake:scripted"

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[dict] = []

    def chat(self, messages, tools, *, tool_choice="auto", max_tokens=512):
        self.calls.append({"messages": messages, "tools": [t["function"]["name"] for t in tools],
                           "tool_choice": tool_choice})
        if not self.script:
            raise AssertionError("the scripted model ran out of turns")
        turn = self.script.pop(0)
        return turn(messages) if callable(turn) else turn

    @staticmethod
    def call(tool: str, **args):
        from anomalens.llm.base import ChatTurn, ToolCallRequest

        return ChatTurn("", [ToolCallRequest(f"call-{tool}-{len(args)}", tool, args)])

    @staticmethod
    def answer(*claims: tuple, interpretation: str = ""):
        """The "answer" tool call with typed claims: (kind, cites) or (kind, cites, params)."""
        from anomalens.llm.base import ChatTurn, ToolCallRequest

        drafted = [{"kind": c[0], "cites": c[1], **(c[2] if len(c) > 2 else {})} for c in claims]
        return ChatTurn("", [ToolCallRequest("call-answer", "answer",
                                             {"claims": drafted, "interpretation": interpretation})])
