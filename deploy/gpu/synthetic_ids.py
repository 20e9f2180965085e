"""quire's `synthetic_ids` (services/quire/src/bench.rs): the same 64-bit LCG, so a Python
reference runs on exactly the token ids quire's benchmarks used."""


def synthetic_ids(count, lo, hi, seed):
    span, state, out = max(hi - lo, 1), seed, []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(lo + (state >> 33) % span)
    return out
