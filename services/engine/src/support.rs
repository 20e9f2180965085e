//! Lexical support: how much of an answer sentence a source states.
//!
//! Used to attribute sentences to sources when the model wrote no `[n]` marker (small models
//! often do not), so that every citation quire returns is still checked against a given source.

/// Content words of `text`: lower-cased alphanumeric runs of three or more characters, or any
/// run containing a digit, minus a few function words.
fn content_words(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "with",
        "that",
        "this",
        "from",
        "has",
        "have",
        "had",
        "its",
        "his",
        "her",
        "their",
        "who",
        "what",
        "which",
        "when",
        "where",
        "how",
        "not",
        "but",
        "also",
        "into",
        "than",
        "then",
        "there",
        "they",
        "them",
        "been",
        "being",
        "over",
        "source",
        "sources",
        "answer",
        "according",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| {
            (w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
                && !STOP.contains(&w.as_str())
        })
        .collect()
}

/// The share of `sentence`'s content words that occur in `source` (0 when it has none).
pub fn support(sentence: &str, source: &str) -> f32 {
    let words = content_words(sentence);
    if words.is_empty() {
        return 0.0;
    }
    let source_words: std::collections::HashSet<String> =
        content_words(source).into_iter().collect();
    let found = words.iter().filter(|w| source_words.contains(*w)).count();
    found as f32 / words.len() as f32
}

/// Splits an answer into sentences (at `.`, `!`, `?` followed by white space, and at newlines).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end_here = b == b'\n'
            || (matches!(b, b'.' | b'!' | b'?')
                && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()));
        if end_here {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// For each sentence that some source supports with at least `min` of its content words, the
/// best such source (0-based index). Sources are tried in order; ties go to the earlier one.
pub fn attribute(answer: &str, sources: &[&str], min: f32) -> Vec<usize> {
    let mut found = Vec::new();
    for sentence in sentences(answer) {
        let best = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (i, support(sentence, s)))
            .fold(None::<(usize, f32)>, |acc, (i, score)| match acc {
                Some((_, best)) if best >= score => acc,
                _ => Some((i, score)),
            });
        if let Some((i, score)) = best
            && score >= min
            && !found.contains(&i)
        {
            found.push(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_is_attributed_to_the_source_that_states_it() {
        let sources = [
            "Mount Kessik last erupted in 1911 and buried the village of Tarra.",
            "The 2019 winner was grandmaster Ilse Brenner with seven and a half points.",
        ];
        let answer = "Ilse Brenner won the 2019 edition. She scored seven and a half points.";
        assert_eq!(attribute(answer, &sources, 0.5), vec![1]);
    }

    #[test]
    fn unsupported_sentences_are_not_attributed() {
        let sources = ["The ferry to Ostby leaves at 7:40 every weekday."];
        assert!(attribute("Paris is the capital of France.", &sources, 0.5).is_empty());
        assert_eq!(support("", sources[0]), 0.0);
    }

    #[test]
    fn sentences_split_on_terminators_and_newlines_but_not_decimals() {
        assert_eq!(
            sentences("It is 3.5 m tall. Built in 1873!\nA list"),
            vec!["It is 3.5 m tall.", "Built in 1873!", "A list"]
        );
    }
}
