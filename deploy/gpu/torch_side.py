#!/usr/bin/env python3
"""The PyTorch side of deploy/gpu/check.sh, and the models both sides share.

  torch_side.py models  --work DIR [--cpu]        random-weight models of the real shapes
  torch_side.py bench   --work DIR --out DIR [--cpu]   transformers' timings, as JSON
  torch_side.py report  --out DIR                  the side-by-side table (Markdown)

The models are all-MiniLM-L6-v2's BERT and Qwen2.5-1.5B, built from the configs beside this
file with random weights (no model files reach the GPU machine) and saved as safetensors in
the precision the benchmark runs in. `--cpu` shrinks every shape so the whole check can be
rehearsed on a CPU in a minute or two.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from synthetic_ids import synthetic_ids

HERE = Path(__file__).resolve().parent

# Workload sizes: (GPU, CPU rehearsal).
SIZES = {
    "gpu": dict(batch=256, seq=256, prompt=2000, new=256, dtype="bfloat16"),
    "cpu": dict(batch=8, seq=64, prompt=64, new=16, dtype="float32"),
}
TINY_BERT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4)
TINY_QWEN = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)


def quire_results(out):
    path = out / "quire.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["bench"]: r for r in (json.loads(x) for x in lines if x.strip().startswith("{"))}


def sizes(cpu):
    return SIZES["cpu" if cpu else "gpu"]


def device(cpu):
    return torch.device("cpu" if cpu else "cuda")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def load_config(name, cpu, tiny):
    cfg = json.loads((HERE / name).read_text())
    if cpu:
        cfg.update(tiny)
    return cfg


def make_models(work, cpu, parts):
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2ForCausalLM

    dev, dtype = device(cpu), getattr(torch, sizes(cpu)["dtype"])
    torch.manual_seed(0)
    started = time.time()
    bert_dir, qwen_dir = work / "bert", work / "qwen"
    with dev:
        bert = BertModel(BertConfig(**load_config("minilm-config.json", cpu, TINY_BERT)),
                         add_pooling_layer=False)
    bert.to(dtype).save_pretrained(bert_dir, safe_serialization=True)
    if "decode" not in parts:
        return
    with dev:
        qwen = Qwen2ForCausalLM(Qwen2Config(**load_config("qwen2.5-1.5b-config.json", cpu,
                                                          TINY_QWEN)))
    qwen.to(dtype).save_pretrained(qwen_dir, safe_serialization=True)
    print(f"models written to {work} in {time.time() - started:.1f} s")


def timed(fn, dev, warmup, rounds):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_encoder(work, cpu, quire):
    from transformers import BertModel

    s, dev = sizes(cpu), device(cpu)
    dtype = getattr(torch, s["dtype"])
    model = BertModel.from_pretrained(work / "bert", dtype=dtype).to(dev).eval()
    # quire's ids, or the same draw if quire did not run.
    r = quire.get("ids", {"lo": 1000, "hi": model.config.vocab_size, "seed": 7})
    ids = torch.tensor(synthetic_ids(s["batch"] * s["seq"], r["lo"], r["hi"], r["seed"]))
    ids = ids.reshape(s["batch"], s["seq"]).to(dev)
    mask = torch.ones_like(ids)

    @torch.inference_mode()
    def embed():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()

    secs = timed(embed, dev, warmup=2, rounds=10)
    check = {}
    if quire.get("first_vectors"):
        ours = embed()[: len(quire["first_vectors"])]
        cos = (ours * torch.tensor(quire["first_vectors"])).sum(-1)
        check["min_cosine_vs_quire"] = cos.min().item()
    return {"bench": "encoder", "impl": f"transformers {model.config._attn_implementation}",
            **check,
            "batch": s["batch"], "seq": s["seq"], "median_batch_s": secs,
            "chunks_per_s": s["batch"] / secs, "tokens_per_s": s["batch"] * s["seq"] / secs}


def bench_decode(work, cpu, compiled, deadline, quire):
    from transformers import Qwen2ForCausalLM

    s, dev = sizes(cpu), device(cpu)
    dtype = getattr(torch, s["dtype"])
    model = Qwen2ForCausalLM.from_pretrained(work / "qwen", dtype=dtype).to(dev).eval()
    # Exactly `new` tokens: no end token stops generation.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    kwargs = dict(do_sample=False)
    label = "transformers generate, eager"
    if compiled:
        # transformers compiles the decoding step itself when the cache is static (its
        # CompileConfig); compiling `forward` by hand with CUDA graphs breaks generate
        # (outputs overwritten by the next replay, seen on torch 2.11 / transformers 5.17).
        model.generation_config.cache_implementation = "static"
        label = "transformers generate, static cache + torch.compile"
    r = quire.get("ids", {"lo": 100, "hi": 151153, "seed": 11})
    prompt = torch.tensor([synthetic_ids(s["prompt"], r["lo"], r["hi"], r["seed"])]).to(dev)

    @torch.inference_mode()
    def gen(n):
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=n, min_new_tokens=n, **kwargs)
        assert out.shape[1] == s["prompt"] + n, out.shape
        return out

    started = time.time()
    gen(8)  # warm-up (and, compiled, the compilation)
    gen(s["new"])
    warm_s = time.time() - started
    if time.time() > deadline:
        return {"bench": "decode", "impl": label, "skipped": "out of time after warm-up",
                "warmup_s": warm_s}
    first = timed(lambda: gen(1), dev, warmup=0, rounds=3)
    total = timed(lambda: gen(s["new"]), dev, warmup=0, rounds=3)
    tokens = gen(s["new"])[0, s["prompt"]:].tolist()
    with torch.inference_mode():
        top = model(prompt).logits[0, -1].float().topk(5)
    first_top = list(zip(top.indices.tolist(), top.values.tolist()))
    theirs = quire.get("tokens", [])
    agree = next((i for i, (a, b) in enumerate(zip(tokens, theirs)) if a != b),
                 min(len(tokens), len(theirs)))
    return {"bench": "decode", "impl": label, "prompt_tokens": s["prompt"],
            "greedy_tokens_equal_to_quire": f"the first {agree} of {len(tokens)}",
            "first_top": first_top,
            "new_tokens": s["new"], "warmup_s": warm_s, "first_token_s": first,
            "prompt_tokens_per_s": s["prompt"] / first,
            "decode_tokens_per_s": (s["new"] - 1) / (total - first)}


def run_bench(work, out, cpu, budget_s, parts):
    deadline = time.time() + budget_s
    quire = quire_results(out)
    results = [bench_encoder(work, cpu, quire.get("encoder", {}))]
    print(json.dumps(results[-1]), flush=True)
    if "decode" in parts:
        run_decode(work, out, cpu, deadline, quire, results)
    save(out, cpu, results)


def run_decode(work, out, cpu, deadline, quire, results):
    results.append(bench_decode(work, cpu, False, deadline, quire.get("decode", {})))
    print(json.dumps(results[-1]), flush=True)
    if time.time() < deadline - 60:
        try:
            results.append(bench_decode(work, cpu, True, deadline, quire.get("decode", {})))
        except Exception as e:  # compilation can fail on a given stack; report it
            results.append({"bench": "decode", "impl": "transformers, torch.compile",
                            "skipped": f"{type(e).__name__}: {str(e)[:300]}"})
    else:
        results.append({"bench": "decode", "impl": "transformers, torch.compile",
                        "skipped": "out of time"})


def save(out, cpu, results):
    meta = {"torch": torch.__version__, "cpu_mode": cpu}
    if not cpu:
        meta["gpu"] = torch.cuda.get_device_name(0)
    import transformers
    meta["transformers"] = transformers.__version__
    (out / "torch.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(json.dumps(results[-1]))


def report(out):
    torch_side = json.loads((out / "torch.json").read_text())
    quire = quire_results(out)
    nan = float("nan")
    q_enc = quire.get("encoder", {"device": "failed", "dtype": "", "chunks_per_s": nan})
    q_dec = quire.get("decode", {})
    t_enc = next(r for r in torch_side["results"] if r["bench"] == "encoder")
    t_decs = [r for r in torch_side["results"] if r["bench"] == "decode"]
    meta = torch_side["meta"]
    s = sizes(meta["cpu_mode"])
    lines = [
        f"Device: {meta.get('gpu', 'CPU (rehearsal, tiny shapes)')}; torch {meta['torch']}, "
        f"transformers {meta['transformers']}; quire {q_enc['device']} {q_enc['dtype']}.",
        "",
        "| measure | quire | PyTorch | quire / PyTorch |",
        "|---|---|---|---|",
        f"| embedding, chunks/s ({s['batch']} × {s['seq']} tokens; vs "
        f"{t_enc['impl']}) | {q_enc['chunks_per_s']:.0f} | {t_enc['chunks_per_s']:.0f} | "
        f"{q_enc['chunks_per_s'] / t_enc['chunks_per_s']:.2f}× |",
    ]
    if "encoder_padded" in quire:
        qp = quire["encoder_padded"]
        lines.append(f"| embedding, chunks/s, every other sequence a quarter padding (quire only)"
                     f" | {qp['chunks_per_s']:.0f} | | |")
    checks = []
    if "min_cosine_vs_quire" in t_enc and "first_vectors" in q_enc:
        checks.append("- embeddings: lowest cosine between quire's and PyTorch's vectors for the "
                      f"same ids, over {len(q_enc['first_vectors'])}: "
                      f"{t_enc['min_cosine_vs_quire']:.4f}")
    for t in t_decs:
        if q_dec and "greedy_tokens_equal_to_quire" in t:
            checks.append(f"- greedy tokens, {t['impl']}: {t['greedy_tokens_equal_to_quire']} "
                          "equal to quire's")
            if "first_top" in t and "first_top" in q_dec:
                fmt = lambda top: ", ".join(f"{i}: {v:.3f}" for i, v in top)
                shared = len({i for i, _ in q_dec["first_top"]} & {i for i, _ in t["first_top"]})
                checks.append(f"  - top-5 logits after the prompt ({shared} of 5 tokens shared), "
                              f"quire: {fmt(q_dec['first_top'])}; PyTorch: {fmt(t['first_top'])}")
        if "skipped" in t:
            lines.append(f"| decode vs {t['impl']} | | skipped: {t['skipped']} | |")
            continue
        for key, name, fmt in [("prompt_tokens_per_s", "prompt tok/s", "{:.0f}"),
                               ("decode_tokens_per_s", "decode tok/s", "{:.1f}"),
                               ("first_token_s", "first-token latency, ms", None)]:
            q, p = q_dec.get(key, nan), t[key]
            if fmt is None:
                lines.append(f"| {name} ({s['prompt']}-token prompt; vs {t['impl']})"
                             f" | {q * 1000:.1f} | {p * 1000:.1f} | {p / q:.2f}× (PyTorch's time"
                             " / quire's) |")
            else:
                lines.append(f"| {name} (vs {t['impl']}) | {fmt.format(q)} | {fmt.format(p)} |"
                             f" {q / p:.2f}× |")
    table = "\n".join(lines + ["", "Same-output checks:"] + checks) + "\n"
    (out / "table.md").write_text(table)
    print(table)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["models", "bench", "report"])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--parts", default="encoder,decode")
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("TORCH_BUDGET_S", 240)))
    a = ap.parse_args()
    if a.step == "models":
        make_models(a.work, a.cpu, a.parts.split(","))
    elif a.step == "bench":
        run_bench(a.work, a.out, a.cpu, a.budget_s, a.parts.split(","))
    else:
        report(a.out)


if __name__ == "__main__":
    main()
