//! Parsing `[n]` markers out of an answer and checking them against the given sources.

/// A marker found in the answer: the source number it names and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The number written in the marker.
    pub source: usize,
    /// Byte offset of the marker's opening bracket in the answer.
    pub at: usize,
}

/// Finds every source number cited in `answer`.
///
/// Accepts `[1]`, `[1][2]`, `[1, 2]` and `[1,2]`; anything else in brackets is ignored.
pub fn parse_markers(answer: &str) -> Vec<Marker> {
    let mut found = Vec::new();
    let bytes = answer.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'[' {
            i += 1;
            continue;
        }
        let Some(close) = answer[i + 1..].find(']') else {
            break;
        };
        let inner = &answer[i + 1..i + 1 + close];
        let numbers: Option<Vec<usize>> = inner
            .split(',')
            .map(|part| {
                let part = part.trim();
                if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    part.parse().ok()
                }
            })
            .collect();
        if let Some(numbers) = numbers {
            found.extend(numbers.into_iter().map(|source| Marker { source, at: i }));
        }
        i += 1 + close + 1;
    }
    found
}

/// The answer with its citation markers (as [`parse_markers`] finds them) removed and the
/// white space left before punctuation closed up: what a reader sees as the answer itself.
pub fn strip_markers(answer: &str) -> String {
    let markers = parse_markers(answer);
    let mut out = String::with_capacity(answer.len());
    let mut i = 0;
    for m in &markers {
        if m.at < i {
            continue; // a group like [1, 2] yields one marker per number at the same place
        }
        out.push_str(&answer[i..m.at]);
        let close = answer[m.at..]
            .find(']')
            .map_or(answer.len(), |c| m.at + c + 1);
        i = close;
    }
    out.push_str(&answer[i..]);
    let mut tidy = String::with_capacity(out.len());
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' '
            && chars
                .peek()
                .is_some_and(|n| *n == ' ' || ".,;:!?".contains(*n))
        {
            continue;
        }
        tidy.push(c);
    }
    tidy.trim().to_string()
}

/// The distinct valid source numbers cited, in order of first appearance.
///
/// A number is valid when it names one of the `source_count` sources given (1-based);
/// all others are dropped.
pub fn valid_sources(markers: &[Marker], source_count: usize) -> Vec<usize> {
    let mut seen = Vec::new();
    for m in markers {
        if (1..=source_count).contains(&m.source) && !seen.contains(&m.source) {
            seen.push(m.source);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(answer: &str) -> Vec<usize> {
        parse_markers(answer)
            .into_iter()
            .map(|m| m.source)
            .collect()
    }

    #[test]
    fn parses_single_grouped_and_adjacent_markers() {
        assert_eq!(numbers("A [1]. B [2][3]. C [4, 5]."), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn ignores_brackets_that_are_not_citations() {
        assert_eq!(
            numbers("see [note] and [a1] and [] and [1"),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn stripping_markers_leaves_the_prose() {
        assert_eq!(
            strip_markers("It opened in 1932 [1]. It is long [2, 3][4]."),
            "It opened in 1932. It is long."
        );
        assert_eq!(strip_markers("1932 [1]"), "1932");
        assert_eq!(strip_markers("see [note] here"), "see [note] here");
    }

    #[test]
    fn out_of_range_and_repeated_sources_are_dropped() {
        let markers = parse_markers("X [2]. Y [7]. Z [0]. W [2] [1].");
        assert_eq!(valid_sources(&markers, 3), vec![2, 1]);
    }
}
