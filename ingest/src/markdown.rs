//! Markdown: text kept as written; headings located with pulldown-cmark.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::{Document, Heading};

/// Builds a document whose text is `text` unchanged, with its headings and
/// title (the first level-1 heading).
pub(crate) fn load(text: String) -> Document {
    let headings = headings(&text);
    let title = headings
        .iter()
        .find(|h| h.level == 1)
        .map(|h| h.text.clone());
    Document {
        text,
        pages: Vec::new(),
        title,
        headings,
        encoding: None,
    }
}

fn headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    // (level, start offset, collected text) of the heading being read.
    let mut current: Option<(u8, usize, String)> = None;
    // Same options as text-splitter's MarkdownSplitter, so both see the same structure.
    for (event, range) in Parser::new_ext(text, Options::all()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((level_number(level), range.start, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, start, raw)) = current.take() {
                    let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !text.is_empty() {
                        out.push(Heading { level, text, start });
                    }
                }
            }
            Event::Text(s) | Event::Code(s) | Event::InlineMath(s) => {
                if let Some((_, _, buf)) = current.as_mut() {
                    buf.push_str(&s);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, _, buf)) = current.as_mut() {
                    buf.push(' ');
                }
            }
            _ => {}
        }
    }
    out
}

fn level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}
