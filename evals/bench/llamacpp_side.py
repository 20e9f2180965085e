"""Prompt and generation speed of a GGUF model under llama.cpp (llama-cpp-python), on the
synthetic prompt `quire bench decode` used: reads quire's JSON report line, draws the same token
ids, and prints one JSON line with the same fields. Greedy; end tokens do not stop it."""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "gpu"))
from synthetic_ids import synthetic_ids  # noqa: E402

from llama_cpp import Llama  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--quire", required=True, help="quire bench decode's JSON line")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    q = json.loads(Path(a.quire).read_text().strip().splitlines()[-1])
    ids = q["ids"]
    prompt = synthetic_ids(q["prompt_tokens"], ids["lo"], ids["hi"], ids["seed"])
    new = q["new_tokens"]
    llm = Llama(model_path=a.gguf, n_ctx=len(prompt) + new + 16, n_batch=512,
                n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    # Warm-up, as quire does: a short prompt, a few tokens.
    run(llm, prompt[:128], 8)
    firsts, prefill, decode, tokens = [], [], [], []
    for _ in range(a.rounds):
        first_s, decode_s, tokens = run(llm, prompt, new)
        firsts.append(first_s)
        prefill.append(len(prompt) / first_s)
        decode.append((new - 1) / decode_s)
    print(json.dumps({
        "bench": "decode", "engine": "llama.cpp", "gguf": a.gguf,
        "prompt_tokens": len(prompt), "new_tokens": new, "threads": a.threads,
        "first_token_s": statistics.median(firsts),
        "prompt_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens": tokens,
        "same_tokens_as_quire": sum(x == y for x, y in zip(tokens, q.get("tokens", []))),
    }))


def run(llm, prompt, new):
    """Seconds to the first token (prompt evaluated, first token chosen), seconds for the
    rest, and the tokens."""
    llm.reset()
    started = time.perf_counter()
    stream = llm.generate(prompt, top_k=1, temp=0.0, reset=True)
    tokens = [next(stream)]
    first = time.perf_counter()
    while len(tokens) < new:
        tokens.append(next(stream))
    done = time.perf_counter()
    stream.close()
    return first - started, done - first, tokens


if __name__ == "__main__":
    main()
