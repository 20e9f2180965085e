//! Lexical support: how much of an answer sentence a source states.
//!
//! Used to attribute sentences to sources when the model wrote no `[n]` marker (small models
//! often do not), so that every citation quire returns is still checked against a given source,
//! and to report, for every answer sentence, whether a source it cites states it.

use std::ops::Range;

use crate::citations;

/// Question-context scores closer than this count as equal, so the model's own citation is kept.
const CONTEXT_TIE: f32 = 1e-6;

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
    tokens(text)
        .into_iter()
        .filter(|w| {
            (w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
                && !STOP.contains(&w.as_str())
        })
        .collect()
}

/// How many of `words` are among the content words of `text`.
fn found_in(words: &[String], text: &str) -> usize {
    let present: std::collections::HashSet<String> = content_words(text).into_iter().collect();
    words.iter().filter(|w| present.contains(*w)).count()
}

/// Lower-cased alphanumeric runs of `text`, in order.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The share of `sentence`'s content words that occur in `source`. A sentence with no content
/// word (a short answer such as "k" or "L") scores 1 when its words occur in `source` as one
/// run of whole words, else 0.
pub fn support(sentence: &str, source: &str) -> f32 {
    let words = content_words(sentence);
    if words.is_empty() {
        let run = tokens(sentence);
        let found = !run.is_empty() && tokens(source).windows(run.len()).any(|w| w == run);
        return if found { 1.0 } else { 0.0 };
    }
    found_in(&words, source) as f32 / words.len() as f32
}

/// Byte ranges of the sentences of `text` (split at `.`, `!`, `?` followed by white space, and
/// at newlines), trimmed of surrounding white space, in order.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut push = |from: usize, to: usize| {
        let piece = &text[from..to];
        let trimmed = piece.trim_start();
        let begin = from + (piece.len() - trimmed.len());
        let end = begin + trimmed.trim_end().len();
        if end > begin {
            out.push(begin..end);
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        let end_here = b == b'\n'
            || (matches!(b, b'.' | b'!' | b'?')
                && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()));
        if end_here {
            push(start, i + 1);
            start = i + 1;
        }
    }
    push(start, text.len());
    out
}

/// How well the sources back one sentence of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceSupport {
    /// Byte range of the sentence in the answer, markers included.
    pub span: Range<usize>,
    /// Valid source numbers (1-based) the sentence's own markers name.
    pub written: Vec<usize>,
    /// The sources quire cites for the sentence. Of the sources that state it, those that also
    /// state the most of the question next to it ([`question_context`]) are preferred:
    /// `cited` holds those of `written` that are; when none is, the one preferred source that
    /// states the most of the sentence (ties to the better-ranked); when no source states it,
    /// `written` as it is.
    pub cited: Vec<usize>,
    /// The largest share of the sentence's content words that one cited source contains.
    pub support: f32,
    /// `support` reaches the threshold.
    pub supported: bool,
}

/// How much of the question a source states next to `sentence`: the largest share of
/// `question`'s content words found in a window of three consecutive source sentences that
/// states `sentence` (support at least `min`); 0 when no such window does, or the question has
/// no content words.
///
/// A short answer ("1907") is often stated by several sources; the one that also states what
/// was asked ("dredged", "harbour") is the one that answers the question.
pub fn question_context(question: &str, sentence: &str, source: &str, min: f32) -> f32 {
    let asked = content_words(question);
    if asked.is_empty() {
        return 0.0;
    }
    let spans = sentence_spans(source);
    let mut best = 0.0f32;
    for i in 0..spans.len() {
        let window =
            &source[spans[i.saturating_sub(1)].start..spans[(i + 1).min(spans.len() - 1)].end];
        if support(sentence, window) < min {
            continue;
        }
        best = best.max(found_in(&asked, window) as f32 / asked.len() as f32);
    }
    best
}

/// The sentence of `source` that best states `sentence`: the most of its content words (see
/// [`support`]), ties to the one with the most of `question`'s content words, then the first.
/// When no single sentence holds any of it, as for a short answer that the source's sentence
/// split cuts in two ("St. Ia" read as "…St." and "Ia…"), two consecutive sentences are
/// searched the same way. `None` when no such window of `source` holds any of it.
pub fn evidence(question: &str, sentence: &str, source: &str) -> Option<Range<usize>> {
    let asked = content_words(question);
    let spans = sentence_spans(source);
    let pairs = spans.windows(2).map(|w| w[0].start..w[1].end);
    best_window(&asked, sentence, source, spans.iter().cloned())
        .or_else(|| best_window(&asked, sentence, source, pairs))
}

/// Of `windows` (byte ranges of `source`), the one that states the most of `sentence`, ties
/// to the most of `asked` (content words of the question), then the first; `None` when none
/// states any of it.
fn best_window(
    asked: &[String],
    sentence: &str,
    source: &str,
    windows: impl Iterator<Item = Range<usize>>,
) -> Option<Range<usize>> {
    let mut best: Option<(f32, usize, Range<usize>)> = None;
    for span in windows {
        let score = support(sentence, &source[span.clone()]);
        if score == 0.0 {
            continue;
        }
        let context = found_in(asked, &source[span.clone()]);
        if best
            .as_ref()
            .is_none_or(|(s, c, _)| score > *s || (score == *s && context > *c))
        {
            best = Some((score, context, span));
        }
    }
    best.map(|(_, _, span)| span)
}

/// Which neighbouring sentence of a source an evidence sentence is read with ([`widen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// The sentence alone.
    None,
    /// With the sentence before it.
    Before,
    /// With the sentence after it.
    After,
}

/// `span` (a sentence of `source`, from [`evidence`]) extended over its `neighbour` sentence,
/// when `source` has one on that side in the same line (a title or heading line above a
/// paragraph, or another paragraph, is not read with it); `span` unchanged otherwise.
pub fn widen(source: &str, span: Range<usize>, neighbour: Neighbour) -> Range<usize> {
    let spans = sentence_spans(source);
    let Some(i) = spans.iter().position(|s| *s == span) else {
        return span;
    };
    let wider = match neighbour {
        Neighbour::Before if i > 0 => spans[i - 1].start..span.end,
        Neighbour::After if i + 1 < spans.len() => span.start..spans[i + 1].end,
        _ => return span,
    };
    if source[wider.clone()].contains('\n') {
        span
    } else {
        wider
    }
}

/// Checks every sentence of `answer` to `question` against the sources: the share of the
/// sentence's content words (markers aside) that a source contains. A marker standing alone
/// after a sentence's full stop belongs to that sentence. Of the sources that state a
/// sentence, those that also state the most of the question next to it
/// ([`question_context`]) are preferred: a sentence whose markers name none of them is
/// attributed to one that is (see [`SentenceSupport::cited`]).
pub fn check_sentences(
    question: &str,
    answer: &str,
    sources: &[&str],
    min: f32,
) -> Vec<SentenceSupport> {
    let markers = citations::parse_markers(answer);
    let mut spans: Vec<Range<usize>> = Vec::new();
    for span in sentence_spans(answer) {
        let marker_only = citations::strip_markers(&answer[span.clone()]).is_empty();
        match spans.last_mut() {
            // A marker after a full stop, or the piece after an abbreviation ("St. Bartholomew"
            // splits into "The St." and the rest), belongs to the sentence before it.
            Some(last)
                if marker_only
                    || content_words(&citations::strip_markers(&answer[last.clone()]))
                        .is_empty() =>
            {
                last.end = span.end
            }
            _ => spans.push(span),
        }
    }
    spans
        .into_iter()
        .map(|span| {
            let plain = citations::strip_markers(&answer[span.clone()]);
            let scores: Vec<f32> = sources.iter().map(|s| support(&plain, s)).collect();
            let score = |n: usize| scores[n - 1];
            let in_span: Vec<citations::Marker> = markers
                .iter()
                .filter(|m| span.contains(&m.at))
                .cloned()
                .collect();
            let written = citations::valid_sources(&in_span, sources.len());
            // Sources that state the sentence, with how much of the question they state by it.
            let stating: Vec<(usize, f32)> = (1..=sources.len())
                .filter(|&n| score(n) >= min)
                .map(|n| (n, question_context(question, &plain, sources[n - 1], min)))
                .collect();
            let top = stating.iter().map(|&(_, c)| c).fold(0.0, f32::max);
            let preferred: Vec<usize> = stating
                .iter()
                .filter(|&&(_, c)| c >= top - CONTEXT_TIE)
                .map(|&(n, _)| n)
                .collect();
            let mut cited: Vec<usize> = written
                .iter()
                .copied()
                .filter(|n| preferred.contains(n))
                .collect();
            if cited.is_empty() {
                let best = preferred
                    .iter()
                    .copied()
                    .fold(None::<usize>, |best, n| match best {
                        Some(b) if score(b) >= score(n) => best,
                        _ => Some(n),
                    });
                cited = match best {
                    Some(n) => vec![n],
                    None => written.clone(),
                };
            }
            let best = cited.iter().map(|&n| score(n)).fold(0.0, f32::max);
            SentenceSupport {
                span,
                written,
                cited,
                support: best,
                supported: best >= min,
            }
        })
        .collect()
}

/// The distinct sources the sentences cite, in order of first appearance.
pub fn cited_sources(sentences: &[SentenceSupport]) -> Vec<usize> {
    let mut found = Vec::new();
    for &n in sentences.iter().flat_map(|s| &s.cited) {
        if !found.contains(&n) {
            found.push(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributed(answer: &str, sources: &[&str], min: f32) -> Vec<usize> {
        cited_sources(&check_sentences("", answer, sources, min))
    }

    #[test]
    fn a_sentence_is_attributed_to_the_source_that_states_it() {
        let sources = [
            "Mount Kessik last erupted in 1911 and buried the village of Tarra.",
            "The 2019 winner was grandmaster Ilse Brenner with seven and a half points.",
        ];
        let answer = "Ilse Brenner won the 2019 edition. She scored seven and a half points.";
        assert_eq!(attributed(answer, &sources, 0.5), vec![2]);
    }

    #[test]
    fn unsupported_sentences_are_not_attributed() {
        let sources = ["The ferry to Ostby leaves at 7:40 every weekday."];
        assert!(attributed("Paris is the capital of France.", &sources, 0.5).is_empty());
        assert_eq!(support("", sources[0]), 0.0);
    }

    #[test]
    fn each_sentence_is_checked_against_the_sources_it_cites() {
        let sources = [
            "Mount Kessik last erupted in 1911 and buried the village of Tarra.",
            "The 2019 winner was grandmaster Ilse Brenner with seven and a half points.",
        ];
        let answer =
            "Ilse Brenner won in 2019 [2]. Kessik erupted in 1911 [2]. It buried Tarra. [1]";
        let checked = check_sentences("", answer, &sources, 0.6);
        assert_eq!(checked.len(), 3);
        assert_eq!(
            &answer[checked[0].span.clone()],
            "Ilse Brenner won in 2019 [2]."
        );
        assert_eq!(
            (checked[0].cited.clone(), checked[0].supported),
            (vec![2], true)
        );
        // Cites a source that does not state it: the one that does is cited instead.
        assert_eq!(
            (checked[1].written.clone(), checked[1].cited.clone()),
            (vec![2], vec![1])
        );
        assert!(checked[1].supported);
        // The marker after the full stop belongs to the sentence before it.
        assert_eq!(&answer[checked[2].span.clone()], "It buried Tarra. [1]");
        assert_eq!(
            (checked[2].cited.clone(), checked[2].supported),
            (vec![1], true)
        );
    }

    #[test]
    fn an_unsupported_citation_is_kept_only_when_no_source_states_the_sentence() {
        let sources = [
            "The ferry to Ostby leaves at 7:40 daily.",
            "Ostby has a ferry, a bridge and a harbour.",
        ];
        // A short answer is checked word for word: [2] does not hold "7:40", [1] does.
        let checked = check_sentences("", "7:40 [2]", &sources, 0.6);
        assert_eq!(
            (checked[0].written.clone(), checked[0].cited.clone()),
            (vec![2], vec![1])
        );
        // Of two cited sources, only the one that states the sentence is kept.
        let checked = check_sentences("", "7:40 [1][2]", &sources, 0.6);
        assert_eq!(checked[0].cited, vec![1]);
        // Nothing states it: the model's citation stands, flagged unsupported.
        let checked = check_sentences("", "Paris is big [2].", &sources, 0.6);
        assert_eq!(
            (checked[0].cited.clone(), checked[0].supported),
            (vec![2], false)
        );
    }

    #[test]
    fn without_markers_each_sentence_gets_its_best_supporting_source() {
        let sources = [
            "The ferry leaves at 7:40.",
            "The ferry to Ostby leaves at 7:40 daily.",
        ];
        let checked = check_sentences(
            "",
            "The Ostby ferry leaves at 7:40. Paris is big.",
            &sources,
            0.6,
        );
        assert_eq!(checked[0].cited, vec![2]);
        assert!(checked[0].supported);
        assert!(checked[1].cited.is_empty() && !checked[1].supported);
    }

    #[test]
    fn of_sources_stating_a_short_answer_the_one_stating_the_question_is_cited() {
        let sources = [
            "Jean Ribault was a French naval officer. He later died at Fort Caroline.",
            "In 1562 Jean Ribault led an expedition. He established a colony in Florida.",
            "The colony in Florida was attacked in 1565 by the Spanish.",
        ];
        let question = "Who established the colony in Florida?";
        // The model cites [1], which names Ribault but not the colony: [2] states both.
        let checked = check_sentences(question, "Jean Ribault [1]", &sources, 0.6);
        assert_eq!(
            (checked[0].written.clone(), checked[0].cited.clone()),
            (vec![1], vec![2])
        );
        assert!(checked[0].supported);
        // Cited right, it stays; [3] states the question but not the answer, so it never is.
        let checked = check_sentences(question, "Jean Ribault [2]", &sources, 0.6);
        assert_eq!(checked[0].cited, vec![2]);
        assert!(question_context(question, "Jean Ribault", sources[2], 0.6) == 0.0);
        // Without the question, a supporting citation is kept as the model wrote it.
        let checked = check_sentences("", "Jean Ribault [1]", &sources, 0.6);
        assert_eq!(checked[0].cited, vec![1]);
    }

    #[test]
    fn short_answers_and_abbreviations_are_checked_whole() {
        let sources = [
            "The factor k is found in polynomial time.",
            "The St. Bartholomew's Day massacre of 1572 killed thousands.",
        ];
        // No content word: the words must occur as a whole run.
        assert_eq!(support("k", sources[0]), 1.0);
        assert_eq!(support("x", sources[0]), 0.0);
        assert_eq!(support("kn", sources[0]), 0.0);
        let answer = "The St. Bartholomew's Day massacre [2]";
        let checked = check_sentences("", answer, &sources, 0.6);
        assert_eq!(
            checked.len(),
            1,
            "the abbreviation does not end the sentence"
        );
        assert_eq!(
            (checked[0].cited.clone(), checked[0].supported),
            (vec![2], true)
        );
    }

    #[test]
    fn evidence_is_the_source_sentence_stating_the_answer_and_the_question() {
        let source = "The bridge opened in 1932. It was painted in 1932 and in 1960. \
                      Trains cross it daily.";
        let span = evidence("When did the bridge open?", "1932", source).unwrap();
        assert_eq!(&source[span], "The bridge opened in 1932.");
        let span = evidence("When was it painted?", "1932", source).unwrap();
        assert_eq!(&source[span], "It was painted in 1932 and in 1960.");
        assert_eq!(evidence("When?", "1850", source), None);
    }

    #[test]
    fn evidence_spans_two_sentences_when_the_split_cuts_a_short_answer() {
        let source = "The chapel of St. Ia stands on the cliff. It was built in 1520.";
        let question = "Which saint is the chapel named after?";
        let span = evidence(question, "St. Ia", source).unwrap();
        assert_eq!(&source[span], "The chapel of St. Ia stands on the cliff.");
        assert_eq!(evidence(question, "St. Ives", source), None);
    }

    #[test]
    fn evidence_widens_over_the_sentence_before_or_after_when_there_is_one() {
        let source = "The bridge opened in 1932. It was painted in 1960. Trains cross it daily.";
        let span = evidence("When was it painted?", "1960", source).unwrap();
        let read = |n| &source[widen(source, span.clone(), n)];
        assert_eq!(read(Neighbour::None), "It was painted in 1960.");
        assert_eq!(
            read(Neighbour::Before),
            "The bridge opened in 1932. It was painted in 1960."
        );
        assert_eq!(
            read(Neighbour::After),
            "It was painted in 1960. Trains cross it daily."
        );
        let first = evidence("When did the bridge open?", "1932", source).unwrap();
        assert_eq!(
            &source[widen(source, first, Neighbour::Before)],
            "The bridge opened in 1932."
        );
        let last = evidence("How often do trains cross?", "daily", source).unwrap();
        assert_eq!(
            &source[widen(source, last, Neighbour::After)],
            "Trains cross it daily."
        );

        // A title line, or the next paragraph, is not read with the sentence.
        let source = "Veltra Bridge\n\nThe bridge opened in 1932.\nTrains cross it daily.";
        let span = evidence("When did the bridge open?", "1932", source).unwrap();
        assert_eq!(
            &source[widen(source, span.clone(), Neighbour::Before)],
            "The bridge opened in 1932."
        );
        assert_eq!(
            &source[widen(source, span, Neighbour::After)],
            "The bridge opened in 1932."
        );
    }

    #[test]
    fn sentences_split_on_terminators_and_newlines_but_not_decimals() {
        let text = "It is 3.5 m tall. Built in 1873!\nA list";
        let sentences: Vec<&str> = sentence_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(
            sentences,
            vec!["It is 3.5 m tall.", "Built in 1873!", "A list"]
        );
    }
}
