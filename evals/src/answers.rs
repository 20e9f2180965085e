//! Answer eval results: what each question produced, the summary metrics over a run (SQuAD
//! exact match and F1, citation accuracy, abstention precision and recall, speed), the
//! relevance-threshold calibration, and their Markdown table and SVG chart.

use std::collections::HashMap;

use crate::report::{Series, grouped_bars, percentile};
use crate::squad::{self, Article};

/// A question drawn for the eval, with the paragraph (document) it was asked about.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub id: String,
    pub question: String,
    /// Gold answer texts; empty for an unanswerable (v2.0) question.
    pub golds: Vec<String>,
    /// Id of the paragraph's document, as [`paragraph_id`] names it.
    pub document_id: String,
}

/// The document id of paragraph `p` (0-based) of article `a` (0-based).
pub fn paragraph_id(a: usize, p: usize) -> String {
    format!("a{a:03}-p{p:03}")
}

/// Every paragraph of `articles` as a corpus document: id [`paragraph_id`], the article's
/// title (underscores as spaces), the paragraph's text.
pub fn corpus(articles: &[Article]) -> Vec<crate::beir::Doc> {
    articles
        .iter()
        .enumerate()
        .flat_map(|(a, article)| {
            article
                .paragraphs
                .iter()
                .enumerate()
                .map(move |(p, paragraph)| crate::beir::Doc {
                    id: paragraph_id(a, p),
                    title: article.title.replace('_', " "),
                    text: paragraph.context.clone(),
                })
        })
        .collect()
}

/// Retrieval judgements for `articles`: every answerable question (by id) and, as its one
/// relevant document (gain 1), the paragraph it was asked about. Unanswerable questions are
/// left out: no paragraph holds their answer.
pub fn retrieval_judgements(
    articles: &[Article],
) -> (HashMap<String, String>, HashMap<String, crate::Qrels>) {
    let mut queries = HashMap::new();
    let mut qrels = HashMap::new();
    for q in sample(articles, 0, 0, 0) {
        if q.golds.is_empty() {
            continue;
        }
        qrels.insert(q.id.clone(), crate::Qrels::from([(q.document_id, 1)]));
        queries.insert(q.id, q.question);
    }
    (queries, qrels)
}

/// Every question of `articles`, shuffled with `seed`; after the first `offset` of that order,
/// the next `limit` (all when `limit` is 0). The same file, seed, offset and limit always give
/// the same sample, and samples of one seed at disjoint offsets share no question.
pub fn sample(articles: &[Article], seed: u64, offset: usize, limit: usize) -> Vec<Sampled> {
    let mut all: Vec<Sampled> = Vec::new();
    for (a, article) in articles.iter().enumerate() {
        for (p, paragraph) in article.paragraphs.iter().enumerate() {
            for q in &paragraph.qas {
                let golds = if q.is_impossible {
                    Vec::new()
                } else {
                    q.answers.iter().map(|x| x.text.clone()).collect()
                };
                all.push(Sampled {
                    id: q.id.clone(),
                    question: q.question.clone(),
                    golds,
                    document_id: paragraph_id(a, p),
                });
            }
        }
    }
    let mut order = crate::seeded_sample(all, seed, 0);
    order.drain(..offset.min(order.len()));
    if limit > 0 {
        order.truncate(limit);
    }
    order
}

/// What one question produced through the real `Ask` path.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub id: String,
    pub question: String,
    pub golds: Vec<String>,
    /// The answer as returned, markers included.
    pub answer: String,
    pub abstained: bool,
    pub abstain_reason: String,
    /// Answered questions with gold answers only: whether some citation's chunk belongs to
    /// the gold paragraph and contains a gold answer.
    pub cited_gold: Option<bool>,
    /// Answered questions with gold answers only: whether some citation's chunk, of any
    /// document, contains a gold answer (SQuAD's articles often state a fact in several
    /// paragraphs).
    pub cited_answer: Option<bool>,
    /// Documents of the citations, in order.
    pub cited_documents: Vec<String>,
    /// Documents of the sources given to the model, in their numbered order.
    pub source_documents: Vec<String>,
    /// Whether the gold paragraph was among the sources given to the model.
    pub gold_in_sources: bool,
    /// Best dense similarity among the question's retrieved candidates.
    pub best_similarity: Option<f32>,
    /// The model's probability of replying that the sources do not hold the answer, measured
    /// before generating; `None` when the model was not asked.
    pub no_answer_probability: Option<f32>,
    /// The model's log-odds that the cited sentence answers the question, measured after
    /// answering; `None` when the check did not run.
    pub verification_log_odds: Option<f32>,
    /// The evidence the answer check read, one text per view; empty when it did not run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verification_evidence: Vec<String>,
    /// The model's log-probability of each token of its answer, markers included, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub token_logprobs: Vec<f32>,
    /// Answer sentences, and those a cited source supports.
    pub sentences: usize,
    pub supported_sentences: usize,
    pub exact_match: f64,
    pub f1: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub generate_ms: f64,
    pub total_ms: f64,
}

impl Outcome {
    /// True when the question has a gold answer.
    pub fn answerable(&self) -> bool {
        !self.golds.is_empty()
    }

    /// Sets exact match and F1 from `prediction` (the answer without markers). An abstention
    /// predicts the empty string, as SQuAD v2.0 scores "no answer".
    pub fn score(&mut self, prediction: &str) {
        let prediction = if self.abstained { "" } else { prediction };
        let golds: Vec<&str> = self.golds.iter().map(String::as_str).collect();
        self.exact_match = squad::exact_match(prediction, &golds);
        self.f1 = squad::f1(prediction, &golds);
    }
}

/// The metrics of one run. Shares are in [0, 1]; a share with nothing to count is NaN
/// (written as null in JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub model: String,
    pub questions: usize,
    pub answerable: usize,
    pub unanswerable: usize,
    /// Mean exact match over answerable questions (an abstention scores 0).
    pub exact_match: f64,
    /// Mean token F1 over answerable questions (an abstention scores 0).
    pub f1: f64,
    /// Mean token F1 over answerable questions quire answered.
    pub f1_answered: f64,
    /// Of answerable questions answered, the share whose citations include a chunk
    /// containing a gold answer.
    pub citation_accuracy: f64,
    /// Of answerable questions answered, the share whose citations include a chunk of any
    /// document that contains a gold answer.
    pub citation_contains_answer: f64,
    /// Of answerable questions, the share whose gold paragraph was among the sources.
    pub gold_in_sources: f64,
    /// Of answerable questions, the share quire abstained on.
    pub false_abstention: f64,
    /// Of abstentions, the share on unanswerable questions.
    pub abstention_precision: f64,
    /// Of unanswerable questions, the share quire abstained on.
    pub abstention_recall: f64,
    pub time_to_first_token_p50_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// Prompt tokens over time to first token, summed over questions that reached the model.
    pub prompt_tokens_per_s: f64,
    /// Tokens after the first over the time after the first, summed likewise.
    pub generation_tokens_per_s: f64,
}

fn share(count: usize, of: usize) -> f64 {
    if of == 0 {
        f64::NAN
    } else {
        count as f64 / of as f64
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Summarises a run.
pub fn summarize(model: &str, outcomes: &[Outcome]) -> Summary {
    let answerable: Vec<&Outcome> = outcomes.iter().filter(|o| o.answerable()).collect();
    let answered: Vec<&&Outcome> = answerable.iter().filter(|o| !o.abstained).collect();
    let unanswerable = outcomes.len() - answerable.len();
    let abstentions = outcomes.iter().filter(|o| o.abstained).count();
    let right_abstentions = outcomes
        .iter()
        .filter(|o| o.abstained && !o.answerable())
        .count();
    let generated: Vec<&Outcome> = outcomes.iter().filter(|o| o.prompt_tokens > 0).collect();
    let ttfts: Vec<f64> = generated.iter().map(|o| o.time_to_first_token_ms).collect();
    let totals: Vec<f64> = outcomes.iter().map(|o| o.total_ms).collect();
    let prompt_tokens: usize = generated.iter().map(|o| o.prompt_tokens).sum();
    let decoded: usize = generated
        .iter()
        .map(|o| o.completion_tokens.saturating_sub(1))
        .sum();
    let decode_ms: f64 = generated
        .iter()
        .filter(|o| o.completion_tokens > 1)
        .map(|o| o.generate_ms - o.time_to_first_token_ms)
        .sum();
    Summary {
        model: model.to_string(),
        questions: outcomes.len(),
        answerable: answerable.len(),
        unanswerable,
        exact_match: mean(answerable.iter().map(|o| o.exact_match)),
        f1: mean(answerable.iter().map(|o| o.f1)),
        f1_answered: mean(answered.iter().map(|o| o.f1)),
        citation_accuracy: share(
            answered
                .iter()
                .filter(|o| o.cited_gold == Some(true))
                .count(),
            answered.len(),
        ),
        citation_contains_answer: share(
            answered
                .iter()
                .filter(|o| o.cited_answer == Some(true))
                .count(),
            answered.len(),
        ),
        gold_in_sources: share(
            answerable.iter().filter(|o| o.gold_in_sources).count(),
            answerable.len(),
        ),
        false_abstention: share(answerable.len() - answered.len(), answerable.len()),
        abstention_precision: share(right_abstentions, abstentions),
        abstention_recall: share(right_abstentions, unanswerable),
        time_to_first_token_p50_ms: percentile(&ttfts, 50.0),
        latency_p50_ms: percentile(&totals, 50.0),
        latency_p95_ms: percentile(&totals, 95.0),
        prompt_tokens_per_s: prompt_tokens as f64 * 1e3 / ttfts.iter().sum::<f64>(),
        generation_tokens_per_s: decoded as f64 * 1e3 / decode_ms,
    }
}

/// A score `Ask` abstains on, and which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The no-answer probability before generating: abstain above the threshold.
    NoAnswer,
    /// The answer check's log-odds after answering: abstain below the threshold.
    Verification,
}

impl Gate {
    fn value(self, o: &Outcome) -> Option<f32> {
        match self {
            Gate::NoAnswer => o.no_answer_probability,
            Gate::Verification => o.verification_log_odds,
        }
    }

    /// True when the gate set at `threshold` abstains on `value`.
    fn abstains(self, value: f32, threshold: f32) -> bool {
        match self {
            Gate::NoAnswer => value > threshold,
            Gate::Verification => value < threshold,
        }
    }
}

/// One setting of an abstention threshold and what it does to a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AbstainPoint {
    /// The gate's threshold (see [`Gate`] for which way it abstains).
    pub threshold: f32,
    /// SQuAD v2.0's F1 over all questions: an unanswerable question scores 1 when abstained on.
    pub squad_f1: f64,
    /// Mean F1 over answerable questions (an abstention scores 0).
    pub f1: f64,
    pub false_abstention: f64,
    pub abstention_precision: f64,
    pub abstention_recall: f64,
}

/// The run's outcomes as if `Ask` had also abstained whenever `gate` at `threshold` does.
/// Exact only for thresholds at least as strict as the run's own: a question the run abstained
/// on by the gate has no answer to score.
pub fn with_abstain_threshold(outcomes: &[Outcome], gate: Gate, threshold: f32) -> Vec<Outcome> {
    outcomes
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if !o.abstained && gate.value(&o).is_some_and(|v| gate.abstains(v, threshold)) {
                o.abstained = true;
                o.cited_gold = None;
                o.cited_answer = None;
                o.score("");
            }
            o
        })
        .collect()
}

/// The run's metrics at every threshold of `gate` it can score: each value seen that is at
/// least as strict as `configured` (the run's own threshold), and `configured` itself when
/// there is one. Strictest (most abstentions) first.
pub fn abstention_curve(
    outcomes: &[Outcome],
    gate: Gate,
    configured: Option<f32>,
) -> Vec<AbstainPoint> {
    // Values the run's own threshold let through were answered, so they can be scored.
    let mut thresholds: Vec<f32> = outcomes
        .iter()
        .filter_map(|o| gate.value(o))
        .filter(|v| configured.is_none_or(|c| !gate.abstains(*v, c)))
        .chain(configured)
        .collect();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    if gate == Gate::Verification {
        thresholds.reverse();
    }
    thresholds
        .into_iter()
        .map(|threshold| {
            let run = with_abstain_threshold(outcomes, gate, threshold);
            let summary = summarize("", &run);
            AbstainPoint {
                threshold,
                squad_f1: mean(run.iter().map(|o| o.f1)),
                f1: summary.f1,
                false_abstention: summary.false_abstention,
                abstention_precision: summary.abstention_precision,
                abstention_recall: summary.abstention_recall,
            }
        })
        .collect()
}

/// The point of `curve` (strictest first, as [`abstention_curve`] orders it) that abstains
/// on the most unanswerable questions while at least `min_precision` of its abstentions are
/// right (the least strict among equals, so no answer is given up for nothing); `None` when
/// no point reaches that precision.
pub fn calibrate_abstain_threshold(
    curve: &[AbstainPoint],
    min_precision: f64,
) -> Option<&AbstainPoint> {
    curve
        .iter()
        .filter(|p| p.abstention_precision >= min_precision && p.abstention_recall > 0.0)
        .fold(None, |best: Option<&AbstainPoint>, p| match best {
            Some(b) if b.abstention_recall > p.abstention_recall => Some(b),
            _ => Some(p),
        })
}

/// The relevance threshold the dev data supports: the largest similarity that `keep` (e.g.
/// 0.99) of the answerable questions whose gold paragraph was retrieved still reach, so that
/// the threshold abstains on at most `1 - keep` of the questions quire could answer. `None`
/// when no such question was run.
pub fn calibrate_threshold(outcomes: &[Outcome], keep: f64) -> Option<f32> {
    let mut best: Vec<f32> = outcomes
        .iter()
        .filter(|o| o.answerable() && o.gold_in_sources)
        .filter_map(|o| o.best_similarity)
        .collect();
    best.sort_by(f32::total_cmp);
    // Values below index m are let go: at most (1 - keep) of them.
    let m = (best.len() as f64 * (1.0 - keep) + 1e-9).floor() as usize;
    best.get(m.min(best.len().saturating_sub(1))).copied()
}

fn cell(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}

/// A Markdown table, one row per run.
pub fn markdown(runs: &[Summary]) -> String {
    let mut out = String::from(
        "| model | questions | EM | F1 | F1 answered | citation accuracy | cited chunk has answer | gold in sources | \
         false abstention | abstention precision | abstention recall | TTFT p50 ms | \
         latency p50 / p95 ms | prompt tok/s | generation tok/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} | {} ({} answerable) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r.model,
            r.questions,
            r.answerable,
            cell(r.exact_match, 3),
            cell(r.f1, 3),
            cell(r.f1_answered, 3),
            cell(r.citation_accuracy, 3),
            cell(r.citation_contains_answer, 3),
            cell(r.gold_in_sources, 3),
            cell(r.false_abstention, 3),
            cell(r.abstention_precision, 3),
            cell(r.abstention_recall, 3),
            cell(r.time_to_first_token_p50_ms, 0),
            cell(r.latency_p50_ms, 0),
            cell(r.latency_p95_ms, 0),
            cell(r.prompt_tokens_per_s, 1),
            cell(r.generation_tokens_per_s, 1),
        ));
    }
    out
}

/// A bar chart of the quality measures, one series per run.
pub fn svg(title: &str, runs: &[Summary]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: r.model.clone(),
            values: vec![
                r.f1,
                r.exact_match,
                r.citation_accuracy,
                r.abstention_precision,
                r.abstention_recall,
            ],
        })
        .collect();
    grouped_bars(
        title,
        &[
            "F1",
            "EM",
            "citation acc.",
            "abst. precision",
            "abst. recall",
        ],
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(golds: &[&str], abstained: bool, prediction: &str) -> Outcome {
        let mut o = Outcome {
            golds: golds.iter().map(|g| g.to_string()).collect(),
            abstained,
            answer: prediction.into(),
            ..Outcome::default()
        };
        o.score(prediction);
        o
    }

    #[test]
    fn abstentions_score_as_empty_predictions() {
        // Right abstention on an unanswerable question: full marks, as SQuAD v2.0 scores it.
        assert_eq!(outcome(&[], true, "ignored").f1, 1.0);
        // Answering an unanswerable question scores 0; abstaining on an answerable one too.
        assert_eq!(outcome(&[], false, "Paris").f1, 0.0);
        assert_eq!(outcome(&["Paris"], true, "Paris").f1, 0.0);
        assert_eq!(outcome(&["Paris"], false, "Paris").exact_match, 1.0);
    }

    #[test]
    fn abstention_threshold_is_scored_from_the_probabilities_seen() {
        let with_p = |mut o: Outcome, p: f32| {
            o.no_answer_probability = Some(p);
            o
        };
        let run = vec![
            with_p(outcome(&["1932"], false, "1932"), 0.05),
            with_p(outcome(&["Brenner"], false, "Brenner"), 0.30),
            with_p(outcome(&[], false, "Tarra"), 0.35),
            with_p(outcome(&[], false, "Ostby"), 0.60),
        ];
        let curve = abstention_curve(&run, Gate::NoAnswer, Some(1.0));
        let thresholds: Vec<f32> = curve.iter().map(|p| p.threshold).collect();
        assert_eq!(thresholds, vec![0.05, 0.3, 0.35, 0.6, 1.0]);
        let at = |t: f32| curve.iter().find(|p| p.threshold == t).unwrap();
        // Above 0.35, only the Ostby question is abstained on.
        assert_eq!(at(0.35).abstention_recall, 0.5);
        // Above 0.05, the Brenner question is lost too.
        assert_eq!(at(0.05).abstention_recall, 1.0);
        assert_eq!((at(0.05).f1, at(0.05).false_abstention), (0.5, 0.5));
        // Above 0.3: both answers kept, both unanswerables abstained on.
        let best = calibrate_abstain_threshold(&curve, 0.8).unwrap();
        assert_eq!((best.threshold, best.squad_f1), (0.3, 1.0));
        assert_eq!(
            (best.abstention_precision, best.false_abstention),
            (1.0, 0.0)
        );
        // Without 0.3, 0.35 is as precise, and 0.05 catches more but at precision 2/3.
        let without: Vec<AbstainPoint> = curve
            .iter()
            .filter(|p| p.threshold != 0.3)
            .cloned()
            .collect();
        let best = calibrate_abstain_threshold(&without, 0.8).unwrap();
        assert_eq!((best.threshold, best.abstention_recall), (0.35, 0.5));
        assert!(calibrate_abstain_threshold(&without, 0.99).is_some());
        assert!(calibrate_abstain_threshold(&without[..1], 0.8).is_none());
        // A run that already abstained above 0.3 cannot score higher thresholds.
        let capped: Vec<f32> = abstention_curve(&run, Gate::NoAnswer, Some(0.3))
            .iter()
            .map(|p| p.threshold)
            .collect();
        assert_eq!(capped, vec![0.05, 0.3]);
    }

    #[test]
    fn verification_threshold_abstains_below_and_prefers_the_least_strict() {
        let with_v = |mut o: Outcome, v: f32| {
            o.verification_log_odds = Some(v);
            o
        };
        let run = vec![
            with_v(outcome(&["1932"], false, "1932"), 2.0),
            with_v(outcome(&["Brenner"], false, "Brenner"), 0.5),
            with_v(outcome(&[], false, "Tarra"), 0.2),
            with_v(outcome(&[], false, "Ostby"), -1.0),
            // Not checked (abstained before the check): never moved by the gate.
            outcome(&[], true, ""),
        ];
        let curve = abstention_curve(&run, Gate::Verification, None);
        let thresholds: Vec<f32> = curve.iter().map(|p| p.threshold).collect();
        assert_eq!(thresholds, vec![2.0, 0.5, 0.2, -1.0], "strictest first");
        let at = |t: f32| curve.iter().find(|p| p.threshold == t).unwrap();
        // Below 0.5: Tarra and Ostby, both unanswerable, plus the earlier abstention.
        assert_eq!((at(0.5).abstention_recall, at(0.5).f1), (1.0, 1.0));
        assert_eq!(at(-1.0).abstention_recall, 1.0 / 3.0);
        // Below 2.0 catches the same and loses Brenner; 0.5 is chosen.
        let best = calibrate_abstain_threshold(&curve, 0.8).unwrap();
        assert_eq!(best.threshold, 0.5);
        // A run that abstained below 0.3 cannot score less strict thresholds.
        let capped: Vec<f32> = abstention_curve(&run, Gate::Verification, Some(0.3))
            .iter()
            .map(|p| p.threshold)
            .collect();
        assert_eq!(capped, vec![2.0, 0.5, 0.3]);
    }

    #[test]
    fn summary_counts_citations_and_abstentions_over_the_right_sets() {
        let mut runs = vec![
            outcome(&["1932"], false, "It opened in 1932"),
            outcome(&["Brenner"], false, "Ilse Brenner"),
            outcome(&["Tarra"], true, ""),
            outcome(&[], true, ""),
            outcome(&[], false, "Ostby"),
        ];
        runs[0].cited_gold = Some(true);
        runs[1].cited_gold = Some(false);
        let s = summarize("m", &runs);
        assert_eq!((s.questions, s.answerable, s.unanswerable), (5, 3, 2));
        // Two answered answerable questions, one citing the gold chunk.
        assert_eq!(s.citation_accuracy, 0.5);
        // Two abstentions, one of them right; one of two unanswerables caught.
        assert_eq!(s.abstention_precision, 0.5);
        assert_eq!(s.abstention_recall, 0.5);
        assert!((s.false_abstention - 1.0 / 3.0).abs() < 1e-12);
        // F1 over answerable: 0.4 ("it opened in 1932" vs "1932"), 2/3 ("ilse brenner" vs
        // "brenner"), 0 (abstained).
        assert!((s.f1 - (0.4 + 2.0 / 3.0) / 3.0).abs() < 1e-9, "{}", s.f1);
        assert!(s.latency_p50_ms.is_finite());
        // Nothing reached the model: no speed to report.
        assert!(s.generation_tokens_per_s.is_nan());
    }

    #[test]
    fn calibration_keeps_the_asked_share_of_answerable_questions() {
        let runs: Vec<Outcome> = (1..=100)
            .map(|i| Outcome {
                golds: vec!["x".into()],
                gold_in_sources: true,
                best_similarity: Some(i as f32 / 100.0),
                ..Outcome::default()
            })
            .collect();
        // 95 of the 100 questions reach 0.06 or more; 96 reach 0.05.
        assert_eq!(calibrate_threshold(&runs, 0.95), Some(0.06));
        assert_eq!(calibrate_threshold(&runs, 1.0), Some(0.01));
        assert_eq!(calibrate_threshold(&[], 0.95), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_sample() {
        let json = r#"{"version":"v2.0","data":[{"title":"T","paragraphs":[
            {"context":"abc","qas":[
              {"id":"1","question":"q1","answers":[{"text":"a","answer_start":0}]},
              {"id":"2","question":"q2","answers":[],"is_impossible":true},
              {"id":"3","question":"q3","answers":[{"text":"b","answer_start":1}]}]}]}]}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, json).unwrap();
        let (_, articles) = squad::read(&path).unwrap();
        let a = sample(&articles, 7, 0, 2);
        let b = sample(&articles, 7, 0, 2);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter().map(|s| &s.id).collect::<Vec<_>>(),
            b.iter().map(|s| &s.id).collect::<Vec<_>>()
        );
        assert!(a.iter().all(|s| s.document_id == "a000-p000"));
        let all = sample(&articles, 7, 0, 0);
        assert_eq!(all.len(), 3);
        assert!(all.iter().any(|s| s.id == "2" && s.golds.is_empty()));
        // The first `limit` of the seeded order, and the rest after an offset: no overlap.
        let ids = |v: &[Sampled]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&all[..2]));
        let rest = sample(&articles, 7, 2, 5);
        assert_eq!(ids(&rest), ids(&all[2..]));
        assert!(sample(&articles, 7, 9, 0).is_empty());
    }

    #[test]
    fn retrieval_judges_each_answerable_question_by_its_own_paragraph() {
        let json = r#"{"version":"v2.0","data":[{"title":"Old_Town","paragraphs":[
            {"context":"The bridge opened in 1932.","qas":[
              {"id":"1","question":"When did it open?","answers":[{"text":"1932","answer_start":21}]},
              {"id":"2","question":"When did it close?","answers":[],"is_impossible":true}]},
            {"context":"The mill burned in 1907.","qas":[
              {"id":"3","question":"When did the mill burn?","answers":[{"text":"1907","answer_start":19}]}]}]}]}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, json).unwrap();
        let (_, articles) = squad::read(&path).unwrap();
        let docs = corpus(&articles);
        assert_eq!(
            docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a000-p000", "a000-p001"]
        );
        assert_eq!(docs[1].title, "Old Town");
        assert_eq!(docs[1].text, "The mill burned in 1907.");
        let (queries, qrels) = retrieval_judgements(&articles);
        assert_eq!(queries.len(), 2, "the unanswerable question is not judged");
        assert_eq!(queries["3"], "When did the mill burn?");
        assert_eq!(
            qrels["1"],
            crate::Qrels::from([("a000-p000".to_string(), 1)])
        );
        assert_eq!(
            qrels["3"],
            crate::Qrels::from([("a000-p001".to_string(), 1)])
        );
        assert!(!qrels.contains_key("2"));
    }
}
