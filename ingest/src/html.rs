//! HTML: visible text extracted with scraper, blocks separated by blank lines.

use scraper::{ElementRef, Html, Node};

use crate::{Document, Error, Heading};

/// Budget for [`estimated_parse_work`]. html5ever scans the stack of open
/// elements for most start tags, so parsing costs about the sum of the nesting
/// depths at each tag: ~1.5 s per 100M on a fast core. Real pages are far
/// below this (500k tags at depth 40 is 20M).
const MAX_PARSE_WORK: u64 = 100_000_000;

/// The namespace of HTML elements, as the parser assigns it.
const HTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";

/// HTML's "special" elements: a generic end tag never closes past one of them.
const SPECIAL: &[&str] = &[
    "address",
    "applet",
    "area",
    "article",
    "aside",
    "base",
    "basefont",
    "bgsound",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "dd",
    "details",
    "dir",
    "div",
    "dl",
    "dt",
    "embed",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "img",
    "input",
    "keygen",
    "li",
    "link",
    "listing",
    "main",
    "marquee",
    "menu",
    "meta",
    "nav",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "ol",
    "p",
    "param",
    "plaintext",
    "pre",
    "script",
    "search",
    "section",
    "select",
    "source",
    "style",
    "summary",
    "table",
    "tbody",
    "td",
    "template",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "track",
    "ul",
    "wbr",
    "xmp",
];

/// Most open elements a generic end tag looks back over for its match.
const MAX_LOOK_BACK: usize = 64;

/// Elements that never hold children.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "keygen", "frame", "basefont", "bgsound",
];

/// Elements the parser closes implicitly, so they do not deepen the tree.
const SELF_LIMITING: &[&str] = &[
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rb", "rt", "rp", "rtc",
    "tbody", "thead", "tfoot", "colgroup", "caption", "html", "head", "body",
];

/// Elements whose content is raw text up to their end tag.
const RAW_TEXT: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
];

/// Elements whose content is never visible text.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "noscript", "head", "template", "title", "svg", "iframe", "object",
    "canvas",
];

/// Elements that start a paragraph-level block (blank line around them).
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "center",
    "details",
    "dialog",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "html",
    "main",
    "menu",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "ul",
];

/// Elements that start a new line but not a new paragraph.
const LINES: &[&str] = &["li", "dt", "dd", "tr", "br", "caption", "option"];

/// Extracts the visible text of `src`, its headings and title (`<title>`,
/// else the first `h1`). html5ever repairs any markup; the only failure is
/// [`Error::HtmlTooComplex`] for nesting so deep that parsing would take minutes.
pub(crate) fn load(src: &str) -> Result<Document, Error> {
    if estimated_parse_work(src.as_bytes()) > MAX_PARSE_WORK {
        return Err(Error::HtmlTooComplex);
    }
    let html = Html::parse_document(src);
    let mut w = Writer::default();

    // Iterative walk: deeply nested input must not overflow the stack.
    let root = html.tree.root();
    let mut node = root;
    'walk: loop {
        let opened = w.open(node.value());
        if opened && let Some(child) = node.first_child() {
            node = child;
            continue;
        }
        let mut cur = node;
        let mut close = opened;
        loop {
            if close {
                w.close(cur.value());
            }
            close = true;
            if cur.id() == root.id() {
                break 'walk;
            }
            if let Some(next) = cur.next_sibling() {
                node = next;
                continue 'walk;
            }
            match cur.parent() {
                Some(parent) => cur = parent,
                None => break 'walk,
            }
        }
    }

    // The page's own <title>, not an SVG icon's (same local name, SVG namespace).
    let title = html
        .tree
        .nodes()
        .filter_map(ElementRef::wrap)
        .find(|e| e.value().name() == "title" && &*e.value().name.ns == HTML_NAMESPACE)
        .map(|e| collapse(&e.text().collect::<String>()))
        .filter(|t| !t.is_empty())
        .or(w.first_h1);
    Ok(Document {
        text: w.text,
        pages: Vec::new(),
        title,
        headings: w.headings,
        encoding: None,
    })
}

/// Sum over start tags of the approximate nesting depth at that tag, from a
/// linear scan of the markup (comments and raw-text elements skipped,
/// quoted attribute values respected). Saturates rather than overflowing.
///
/// The depth follows the parser: an end tag closes the innermost open element
/// of its name and those inside it, and one that matches no open element is
/// ignored; `<div/>` opens a `div` like `<div>` (the slash only closes void
/// elements and SVG/MathML ones, which this counts as open: an overestimate).
fn estimated_parse_work(src: &[u8]) -> u64 {
    let mut open: Vec<String> = Vec::new();
    // How many of each name are open, so an end tag that matches none costs no scan.
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut work: u64 = 0;
    let mut i = 0;
    while let Some(off) = memchr(b'<', src.get(i..).unwrap_or_default()) {
        i += off + 1;
        let rest = src.get(i..).unwrap_or_default();
        if rest.starts_with(b"!--") {
            i += find(rest, b"-->").map_or(rest.len(), |p| p + 3);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = usize::from(closing);
        let name_len = rest
            .get(name_start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 || !rest.get(name_start).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let name = String::from_utf8_lossy(
            rest.get(name_start..name_start + name_len)
                .unwrap_or_default(),
        )
        .to_ascii_lowercase();
        let tag_end = tag_end(rest);
        i += tag_end;
        let neutral = VOID.contains(&name.as_str()) || SELF_LIMITING.contains(&name.as_str());
        if closing {
            // A special element's end tag closes back to it; any other end tag closes the
            // innermost element of its name unless a special element lies in between, and
            // is ignored then, as the parser does. The look-back is bounded, and a tag it
            // cannot place is ignored (an overestimate, the safe side).
            let special = SPECIAL.contains(&name.as_str());
            let found = || {
                open.iter()
                    .rev()
                    .take(MAX_LOOK_BACK)
                    .position(|n| *n == name || (!special && SPECIAL.contains(&n.as_str())))
                    .map(|back| open.len() - 1 - back)
                    .filter(|&at| open[at] == name)
            };
            if !neutral
                && counts.get(&name).is_some_and(|&n| n > 0)
                && let Some(at) = if special {
                    open.iter().rposition(|n| *n == name)
                } else {
                    found()
                }
            {
                // Each element scanned here is closed, so the scans add up to the pushes.
                for closed in open.drain(at..) {
                    if let Some(n) = counts.get_mut(&closed) {
                        *n -= 1;
                    }
                }
            }
            continue;
        }
        work = work.saturating_add(open.len() as u64);
        if RAW_TEXT.contains(&name.as_str()) {
            let body = src.get(i..).unwrap_or_default();
            let close = format!("</{name}");
            i += find_ignore_case(body, close.as_bytes()).unwrap_or(body.len());
        } else if !neutral {
            // In SVG and MathML `<x/>` closes itself; in HTML the slash is ignored.
            let foreign = ["svg", "math"]
                .iter()
                .any(|f| counts.get(*f).is_some_and(|&n| n > 0));
            let self_closed = tag_end >= 2 && rest.get(tag_end - 2) == Some(&b'/');
            if !(foreign && self_closed) {
                *counts.entry(name.clone()).or_default() += 1;
                open.push(name);
            }
        }
    }
    work
}

/// Offset just past the `>` ending the tag that `rest` starts in, skipping
/// quoted attribute values; `rest.len()` if unterminated.
fn tag_end(rest: &[u8]) -> usize {
    let mut quote: Option<u8> = None;
    for (j, &b) in rest.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return j + 1,
            None => {}
        }
    }
    rest.len()
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Separator owed before the next text; the strongest request wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Gap {
    #[default]
    None,
    Space,
    Cell,
    Line,
    Para,
}

#[derive(Default)]
struct Writer {
    text: String,
    gap: Gap,
    headings: Vec<Heading>,
    /// Level and text start of the heading being written.
    heading: Option<(u8, Option<usize>)>,
    first_h1: Option<String>,
    pre_depth: usize,
    /// Open lists: `Some(next number)` for `ol`, `None` for `ul`.
    lists: Vec<Option<u64>>,
}

impl Writer {
    fn want(&mut self, gap: Gap) {
        self.gap = self.gap.max(gap);
    }

    /// Appends `s` after the owed separator (none at the very start).
    fn push(&mut self, s: &str) {
        if !self.text.is_empty() {
            let sep = match self.gap {
                Gap::None => "",
                Gap::Space if self.text.ends_with(char::is_whitespace) => "",
                Gap::Space => " ",
                Gap::Cell => " | ",
                Gap::Line => "\n",
                Gap::Para => "\n\n",
            };
            self.text.push_str(sep);
        }
        self.gap = Gap::None;
        if let Some((_, start @ None)) = &mut self.heading {
            *start = Some(self.text.len());
        }
        self.text.push_str(s);
    }

    fn push_text(&mut self, s: &str) {
        if self.pre_depth > 0 {
            if !s.is_empty() {
                self.push(s);
            }
            return;
        }
        if s.starts_with(char::is_whitespace) {
            self.want(Gap::Space);
        }
        let mut words = s.split_whitespace().peekable();
        let had_words = words.peek().is_some();
        let mut first = true;
        for word in words {
            if !first {
                self.want(Gap::Space);
            }
            self.push(word);
            first = false;
        }
        if had_words && s.ends_with(char::is_whitespace) {
            self.want(Gap::Space);
        }
    }

    /// Handles entering `node`; returns whether to walk its children.
    fn open(&mut self, node: &Node) -> bool {
        let el = match node {
            Node::Document | Node::Fragment => return true,
            Node::Text(t) => {
                self.push_text(t);
                return false;
            }
            Node::Element(el) => el,
            _ => return false,
        };
        let name = el.name();
        if SKIPPED.contains(&name)
            || el.attr("hidden").is_some()
            || el.attr("aria-hidden") == Some("true")
        {
            return false;
        }
        if let Some(level) = heading_level(name) {
            self.want(Gap::Para);
            self.heading = Some((level, None));
        } else if BLOCKS.contains(&name) {
            self.want(Gap::Para);
        } else if LINES.contains(&name) {
            self.want(Gap::Line);
        }
        match name {
            "pre" => self.pre_depth += 1,
            "ul" | "menu" => self.lists.push(None),
            "ol" => {
                let start = el.attr("start").and_then(|s| s.trim().parse().ok());
                self.lists.push(Some(start.unwrap_or(1)));
            }
            "li" => {
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n = n.saturating_add(1);
                        m
                    }
                    _ => "- ".to_owned(),
                };
                self.push(&marker);
            }
            _ => {}
        }
        true
    }

    /// Handles leaving an element whose children were walked.
    fn close(&mut self, node: &Node) {
        let Node::Element(el) = node else { return };
        let name = el.name();
        if heading_level(name).is_some() {
            if let Some((level, Some(start))) = self.heading.take() {
                let text = self.text.get(start..).map(collapse).unwrap_or_default();
                if !text.is_empty() {
                    if level == 1 && self.first_h1.is_none() {
                        self.first_h1 = Some(text.clone());
                    }
                    self.headings.push(Heading { level, text, start });
                }
            }
            self.heading = None;
            self.want(Gap::Para);
        } else if BLOCKS.contains(&name) {
            self.want(Gap::Para);
        } else if LINES.contains(&name) {
            self.want(Gap::Line);
        } else if name == "td" || name == "th" {
            self.want(Gap::Cell);
        }
        match name {
            "pre" => self.pre_depth = self.pre_depth.saturating_sub(1),
            "ul" | "ol" | "menu" => {
                self.lists.pop();
            }
            _ => {}
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}
