//! Retrieval eval results per mode, and their Markdown table, JSON and SVG chart.

use std::collections::HashMap;

use crate::{Qrels, mrr_at_k, ndcg_at_k, recall_at_k};

/// Mean metrics of one retrieval mode over a query set, with its latency.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModeResult {
    /// The mode's name (`bm25`, `dense`, `hybrid-rrf`, ...).
    pub mode: String,
    /// Queries evaluated (those with judgements).
    pub queries: usize,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    /// Median and 99th-percentile latency of one timed retrieval call (the harness says
    /// which), in milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// Documents in the order of their best chunk: each document id at its first appearance in
/// `chunk_docs` (chunk hits, best first). A document's score is thus its best chunk's.
pub fn doc_ranking<'a>(chunk_docs: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    chunk_docs.into_iter().filter(|d| seen.insert(*d)).collect()
}

/// The `p`-th percentile (0–100) of `values` by the nearest-rank method; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Scores one mode: `rankings` maps query id → ranked document ids, `latencies_ms` holds one
/// entry per call. Queries in `qrels` missing from `rankings` count as retrieving nothing.
pub fn score_mode(
    mode: &str,
    rankings: &HashMap<String, Vec<String>>,
    qrels: &HashMap<String, Qrels>,
    latencies_ms: &[f64],
) -> ModeResult {
    let n = qrels.len().max(1) as f64;
    let (mut ndcg, mut r10, mut r100, mut mrr) = (0.0, 0.0, 0.0, 0.0);
    for (query, judged) in qrels {
        let ranked: Vec<&str> = rankings
            .get(query)
            .map(|r| r.iter().map(String::as_str).collect())
            .unwrap_or_default();
        ndcg += ndcg_at_k(&ranked, judged, 10);
        r10 += recall_at_k(&ranked, judged, 10);
        r100 += recall_at_k(&ranked, judged, 100);
        mrr += mrr_at_k(&ranked, judged, 10);
    }
    ModeResult {
        mode: mode.to_string(),
        queries: qrels.len(),
        ndcg_at_10: ndcg / n,
        recall_at_10: r10 / n,
        recall_at_100: r100 / n,
        mrr_at_10: mrr / n,
        latency_p50_ms: percentile(latencies_ms, 50.0),
        latency_p99_ms: percentile(latencies_ms, 99.0),
    }
}

/// A Markdown table, one row per mode.
pub fn markdown(results: &[ModeResult]) -> String {
    let mut out = String::from(
        "| mode | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | p50 ms | p99 ms | queries |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} | {:.1} | {} |\n",
            r.mode,
            r.ndcg_at_10,
            r.recall_at_10,
            r.recall_at_100,
            r.mrr_at_10,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.queries
        ));
    }
    out
}

/// A grouped bar chart: the four quality metrics, one bar per mode in each group.
pub fn svg(title: &str, results: &[ModeResult]) -> String {
    let series: Vec<Series> = results
        .iter()
        .map(|r| Series {
            name: r.mode.clone(),
            values: vec![r.ndcg_at_10, r.recall_at_10, r.recall_at_100, r.mrr_at_10],
        })
        .collect();
    grouped_bars(
        title,
        &["nDCG@10", "Recall@10", "Recall@100", "MRR@10"],
        &series,
    )
}

/// One coloured series of a [`grouped_bars`] chart: a value per group, each in [0, 1].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// An SVG grouped bar chart on a 0–1 axis: one group per entry of `groups`, one bar per series
/// in each. The legend gives each series' first value. Values outside [0, 1] are clamped; a
/// missing or NaN value draws no bar.
pub fn grouped_bars(title: &str, groups: &[&str], series: &[Series]) -> String {
    const COLORS: [&str; 6] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
    ];
    let (width, height, left, top, plot_h) = (760.0, 380.0, 50.0, 40.0, 260.0);
    let group_w = (width - left - 20.0) / groups.len().max(1) as f64;
    let bar_w = (group_w - 20.0) / series.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    for tick in 0..=5 {
        let v = tick as f64 / 5.0;
        let y = top + plot_h * (1.0 - v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>\n",
            width - 20.0,
            left - 6.0,
            y + 4.0
        ));
    }
    for (g, name) in groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w + 10.0;
        for (i, r) in series.iter().enumerate() {
            let Some(v) = r.values.get(g).copied().filter(|v| !v.is_nan()) else {
                continue;
            };
            let v = v.clamp(0.0, 1.0);
            let (x, h) = (x0 + i as f64 * bar_w, plot_h * v);
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{} {}: {v:.4}</title></rect>\n",
                top + plot_h - h,
                bar_w - 2.0,
                COLORS[i % COLORS.len()],
                escape(&r.name),
                escape(name)
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x0 + (group_w - 20.0) / 2.0,
            top + plot_h + 18.0,
            escape(name)
        ));
    }
    for (i, r) in series.iter().enumerate() {
        let x = left + i as f64 * 150.0;
        let y = top + plot_h + 45.0;
        let first = r.values.first().copied().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{y}\">{} ({first:.3})</text>\n",
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 16.0,
            escape(&r.name),
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_ranks_by_its_best_chunk() {
        assert_eq!(doc_ranking(["b", "a", "b", "c", "a"]), vec!["b", "a", "c"]);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn mode_scores_average_over_judged_queries() {
        let qrels: HashMap<String, Qrels> = [
            ("q1".to_string(), [("a".to_string(), 1)].into()),
            ("q2".to_string(), [("z".to_string(), 1)].into()),
        ]
        .into();
        // q1 finds its document first; q2 was never run and counts as zero.
        let rankings: HashMap<String, Vec<String>> =
            [("q1".to_string(), vec!["a".to_string(), "b".to_string()])].into();
        let r = score_mode("bm25", &rankings, &qrels, &[1.0, 3.0]);
        assert_eq!(r.queries, 2);
        assert!((r.ndcg_at_10 - 0.5).abs() < 1e-12);
        assert!((r.mrr_at_10 - 0.5).abs() < 1e-12);
        assert_eq!(r.latency_p50_ms, 1.0);
        let table = markdown(std::slice::from_ref(&r));
        assert!(table.contains("| bm25 | 0.5000 |"), "{table}");
        let chart = svg("SciFact <test>", &[r]);
        assert!(chart.starts_with("<svg") && chart.contains("SciFact &lt;test&gt;"));
    }
}
