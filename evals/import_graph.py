"""The package's import graph, imports inside functions included: its cycles and its upward imports.

Issue 42 asks for no import cycle, counting the imports a function makes when it runs (they are
how a cycle hides), and for no import from ``modalities/`` into ``llm/``, ``agents/``, ``tools/``
or ``server/``. This reads every module of ``anomalens`` with ``ast`` (nothing is imported), maps
each import to the package module it names, and reports:

- the strongly connected components of more than one module (each is one or more cycles), with
  one cycle of each written out;
- the upward imports from ``anomalens.modalities``.

An import of a module's own ancestor package (``from anomalens import __version__`` in
``anomalens.investigator``) is left out: the import system initialises a package before its
modules, so such an edge orders nothing.

Run:  python -m evals.import_graph   (writes evals/results/import_graph.json and .md)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from evals.common import write_results

ROOT = Path(__file__).resolve().parents[1] / "anomalens"
UPWARD = ("anomalens.llm", "anomalens.agents", "anomalens.tools", "anomalens.server")


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported package module: line of its first import}, imports in functions included.
    ``from package import name`` counts the submodule ``package.name`` when there is one."""
    known = set(mods)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        edges: dict[str, int] = {}
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")
                    base = ".".join(up[: len(up) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for n in names:
                target = _resolve(n, known)
                # a module's own ancestor packages are initialised before it by the import system
                # (``from anomalens import __version__``): such an edge orders nothing, so it is left out
                if target and target != mod and not mod.startswith(target + "."):
                    edges.setdefault(target, node.lineno)
        graph[mod] = edges
    return graph


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph.get(w, {}))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out, key=len, reverse=True)


def a_cycle(graph: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """One cycle through the first module of a component (breadth-first, shortest)."""
    start, inside = comp[0], set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def upward(graph: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    return sorted((m, t, line) for m, edges in graph.items() if m.startswith("anomalens.modalities")
                  for t, line in edges.items() if t.startswith(UPWARD))


def main() -> int:
    graph = imports(modules())
    comps = components(graph)
    up = upward(graph)
    lines = ["# Import graph of `anomalens` (imports inside functions included)\n",
             f"`python -m evals.import_graph`: {len(graph)} modules, {sum(map(len, graph.values()))} imports between them.\n",
             f"## Cycles: {len(comps)} strongly connected component(s)\n"]
    for c in comps:
        cyc = a_cycle(graph, c)
        lines.append(f"- {len(c)} modules: {', '.join(f'`{m}`' for m in c)}; e.g. " +
                     " -> ".join(f"`{m}`" for m in cyc))
    lines.append(f"\n## Upward imports from `modalities/` into llm, agents, tools, server: {len(up)}\n")
    lines += [f"- `{m}` -> `{t}` (line {line})" for m, t, line in up]
    write_results("import_graph", {"modules": len(graph), "components": comps, "upward": up}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
