//! Evaluation metrics for quire.
//!
//! Retrieval metrics follow the standard definitions used by `pytrec_eval` and BEIR: graded
//! relevance from qrels, gain `rel` (not `2^rel - 1`), log2 discount, ideal ranking from the
//! qrels. The harnesses that drive them over BEIR and SQuAD data build on this module.

use std::collections::HashMap;

pub mod answers;
pub mod beir;
pub mod report;
pub mod squad;

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Malformed content; `line` is 1-based where the format has lines.
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Format {
        path: String,
        line: Option<usize>,
        message: String,
    },
}

/// `items` shuffled with `seed`, the first `limit` of them (all when `limit` is 0). The same
/// items, seed and limit always give the same sample.
pub fn seeded_sample<T>(mut items: Vec<T>, seed: u64, limit: usize) -> Vec<T> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    // ChaCha8 is portable across platforms and versions, so a seed names one sample for good.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
    if limit > 0 {
        items.truncate(limit);
    }
    items
}

/// Relevance judgements for one query: document id → graded relevance (> 0 is relevant).
pub type Qrels = HashMap<String, u32>;

/// nDCG@k of a ranked list of document ids (best first, no duplicates) against `qrels`.
///
/// Returns 0 when the query has no relevant document.
pub fn ndcg_at_k(ranked: &[&str], qrels: &Qrels, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| f64::from(qrels.get(*id).copied().unwrap_or(0)) / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = qrels.values().copied().filter(|r| *r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| f64::from(*r) / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Recall@k: the share of relevant documents found in the first `k`.
pub fn recall_at_k(ranked: &[&str], qrels: &Qrels, k: usize) -> f64 {
    let relevant = qrels.values().filter(|r| **r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| qrels.get(**id).is_some_and(|r| *r > 0))
        .count();
    found as f64 / relevant as f64
}

/// MRR@k: the reciprocal rank of the first relevant document within `k`, or 0.
pub fn mrr_at_k(ranked: &[&str], qrels: &Qrels, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|id| qrels.get(*id).is_some_and(|r| *r > 0))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(pairs: &[(&str, u32)]) -> Qrels {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn ndcg_matches_a_hand_worked_example() {
        // Relevant: a (2), b (1). Ranking: x, a, b.
        // DCG = 2/log2(3) + 1/log2(4) = 1.26186 + 0.5 = 1.76186
        // IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093
        let q = qrels(&[("a", 2), ("b", 1)]);
        let got = ndcg_at_k(&["x", "a", "b"], &q, 10);
        assert!((got - 1.76186 / 2.63093).abs() < 1e-4, "{got}");
        assert_eq!(ndcg_at_k(&["a", "b"], &q, 10), 1.0);
        // Cut-off: only "x" is inside k = 1.
        assert_eq!(ndcg_at_k(&["x", "a", "b"], &q, 1), 0.0);
    }

    #[test]
    fn recall_and_mrr_match_hand_worked_examples() {
        let q = qrels(&[("a", 1), ("b", 1), ("c", 0)]);
        assert_eq!(recall_at_k(&["c", "a", "z"], &q, 10), 0.5);
        assert_eq!(recall_at_k(&["c", "a", "b"], &q, 2), 0.5);
        assert_eq!(mrr_at_k(&["c", "z", "b"], &q, 10), 1.0 / 3.0);
        assert_eq!(mrr_at_k(&["c", "z", "b"], &q, 2), 0.0);
        assert_eq!(recall_at_k(&["a"], &qrels(&[]), 10), 0.0);
    }
}
