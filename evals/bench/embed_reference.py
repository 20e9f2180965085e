"""Reference embedding throughput: sentence-transformers on PyTorch (CPU), on the same texts
quire's `quire bench embed` uses (the first N abstracts of a BEIR corpus, truncated at 256
tokens, length-sorted by sentence-transformers itself).

Run by evals/bench/embed_vs_reference.sh inside a throwaway virtual environment; not part of CI.
"""
import argparse, gzip, json, os, statistics, time

import torch
from sentence_transformers import SentenceTransformer


def read_corpus(path, limit):
    plain = os.path.join(path, "corpus.jsonl")
    opener = (lambda: open(plain)) if os.path.exists(plain) else (
        lambda: gzip.open(os.path.join(path, "corpus.jsonl.gz"), "rt"))
    texts = []
    with opener() as f:
        for line in f:
            if len(texts) >= limit:
                break
            if line.strip():
                texts.append(json.loads(line).get("text", ""))
    return texts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--model", required=True, help="sentence-transformers model directory")
    p.add_argument("--docs", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-sizes", default="32,64")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = 256
    texts = read_corpus(a.corpus, a.docs)
    tokens = sum(min(len(ids), 256) for ids in model.tokenizer(texts)["input_ids"])
    print(f"reference: {len(texts)} texts, {tokens} tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    model.encode(texts[:32], batch_size=32)  # warm-up
    for bs in [int(b) for b in a.batch_sizes.split(",")]:
        rates = []
        for r in range(a.rounds):
            t = time.perf_counter()
            model.encode(texts, batch_size=bs, normalize_embeddings=True)
            secs = time.perf_counter() - t
            rates.append(tokens / secs)
            print(f"  batch {bs:>3} round {r + 1}: {secs:.2f} s, {tokens / secs:.0f} tokens/s")
        print(f"reference batch={bs}: median {statistics.median(rates):.0f} tokens/s")


if __name__ == "__main__":
    main()
