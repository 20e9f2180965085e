//! SQuAD v1.1 / v2.0 data and the official answer metrics (exact match and token F1 after
//! SQuAD's normalisation), for the answer eval.

use std::collections::HashMap;
use std::path::Path;

use crate::Error;

#[derive(Debug, Clone, serde::Deserialize)]
struct File {
    #[serde(default)]
    version: String,
    data: Vec<Article>,
}

/// One article: a title and its paragraphs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Article {
    #[serde(default)]
    pub title: String,
    pub paragraphs: Vec<Paragraph>,
}

/// A paragraph and the questions asked about it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Paragraph {
    pub context: String,
    pub qas: Vec<Question>,
}

/// A question with its gold answers; v2.0's unanswerable questions have none.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Question {
    pub id: String,
    pub question: String,
    #[serde(default)]
    pub answers: Vec<Answer>,
    /// v2.0 only: the paragraph does not answer the question.
    #[serde(default)]
    pub is_impossible: bool,
}

/// A gold answer span of the paragraph.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Answer {
    pub text: String,
    /// Character offset of `text` in the paragraph's context.
    pub answer_start: usize,
}

/// The articles of a SQuAD file and its `version` field (`"1.1"`, `"v2.0"`, ...).
pub fn read(path: &Path) -> Result<(String, Vec<Article>), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let file: File = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.display().to_string(),
        line: None,
        message: format!("not a SQuAD file: {e}"),
    })?;
    Ok((file.version, file.data))
}

/// SQuAD's answer normalisation: lower case, punctuation removed, the articles "a", "an"
/// and "the" removed, whitespace collapsed.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when `text` holds `answer` as a run of whole words, compared after
/// [`normalize_answer`], or with punctuation read as a word break, so that a span inside
/// "Myhill's" (which normalises to "myhills") still counts. An empty answer is held by nothing.
pub fn contains_answer(text: &str, answer: &str) -> bool {
    let loose = |s: &str| {
        let spaced: String = s
            .chars()
            .map(|c| if c.is_ascii_punctuation() { ' ' } else { c })
            .collect();
        normalize_answer(&spaced)
    };
    let holds =
        |t: String, a: String| !a.is_empty() && format!(" {t} ").contains(&format!(" {a} "));
    holds(normalize_answer(text), normalize_answer(answer)) || holds(loose(text), loose(answer))
}

/// Exact match of `prediction` against the best of `golds`, after normalisation. With no gold
/// answer (an unanswerable question), 1 when the prediction is empty (an abstention).
pub fn exact_match(prediction: &str, golds: &[&str]) -> f64 {
    let p = normalize_answer(prediction);
    if golds.is_empty() {
        return f64::from(u8::from(p.is_empty()));
    }
    let hit = golds.iter().any(|g| normalize_answer(g) == p);
    f64::from(u8::from(hit))
}

/// Token F1 of `prediction` against the best of `golds`, after normalisation. With no gold
/// answer, 1 when the prediction is empty, else 0 (as the official v2.0 script).
pub fn f1(prediction: &str, golds: &[&str]) -> f64 {
    let p = normalize_answer(prediction);
    if golds.is_empty() {
        return f64::from(u8::from(p.is_empty()));
    }
    golds
        .iter()
        .map(|g| token_f1(&p, &normalize_answer(g)))
        .fold(0.0, f64::max)
}

fn token_f1(prediction: &str, gold: &str) -> f64 {
    let (p, g): (Vec<&str>, Vec<&str>) = (
        prediction.split_whitespace().collect(),
        gold.split_whitespace().collect(),
    );
    if p.is_empty() || g.is_empty() {
        // The official script: F1 is 1 only when both are empty.
        return f64::from(u8::from(p == g));
    }
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *gold_counts.entry(t).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &p {
        if let Some(c) = gold_counts.get_mut(t).filter(|c| **c > 0) {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_official_script() {
        assert_eq!(
            normalize_answer("The  Normans, in France!"),
            "normans in france"
        );
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        assert_eq!(normalize_answer("Théâtre"), "théâtre");
    }

    #[test]
    fn exact_match_and_f1_match_hand_worked_examples() {
        assert_eq!(exact_match("the France", &["France", "in France"]), 1.0);
        assert_eq!(exact_match("Paris, France", &["France"]), 0.0);
        // "paris france" vs "france": common 1, precision 1/2, recall 1 -> F1 2/3.
        assert!((f1("Paris, France", &["France"]) - 2.0 / 3.0).abs() < 1e-12);
        // The best gold counts: "10th century" vs {"10th and 11th centuries", "10th century"}.
        assert_eq!(
            f1("10th century", &["10th and 11th centuries", "10th century"]),
            1.0
        );
        // A repeated token matches a gold token once: common 2, precision 2/3, recall 1.
        assert_eq!(f1("x x y", &["x y"]), 0.8);
        assert_eq!(f1("", &["France"]), 0.0);
    }

    #[test]
    fn unanswerable_questions_reward_an_empty_answer() {
        assert_eq!(exact_match("", &[]), 1.0);
        assert_eq!(f1("", &[]), 1.0);
        assert_eq!(exact_match("Normans", &[]), 0.0);
        assert_eq!(f1("Normans", &[]), 0.0);
    }

    #[test]
    fn reads_v2_files_with_unanswerable_questions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        std::fs::write(
            &path,
            r#"{"version":"v2.0","data":[{"title":"T","paragraphs":[{"context":"Normandy is in France.",
            "qas":[{"id":"1","question":"Where?","answers":[{"text":"France","answer_start":15}],"is_impossible":false},
                   {"id":"2","question":"Who?","answers":[],"plausible_answers":[],"is_impossible":true}]}]}]}"#,
        )
        .unwrap();
        let (version, articles) = read(&path).unwrap();
        assert_eq!(version, "v2.0");
        let qas = &articles[0].paragraphs[0].qas;
        assert_eq!(
            &articles[0].paragraphs[0].context[15..21],
            qas[0].answers[0].text
        );
        assert!(qas[1].is_impossible && qas[1].answers.is_empty());
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(read(&path), Err(Error::Format { .. })));
    }

    #[test]
    fn an_answer_is_contained_as_whole_words_even_before_a_possessive() {
        let text = "Examples include John Myhill's definition of linear bounded automata.";
        assert!(contains_answer(text, "John Myhill"));
        assert!(contains_answer(text, "linear bounded automata"));
        assert!(!contains_answer(text, "John Myhil"));
        assert!(!contains_answer(text, ""));
        assert!(contains_answer("It cost £304m.", "£304m"));
    }
}
