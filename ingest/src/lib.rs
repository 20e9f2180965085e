//! quire-ingest: bytes + media type → [`Document`] (text with page and heading
//! positions) → [`Chunk`]s sized in embedding-model tokens.
//!
//! Pure: no I/O, no network, no async. Every input is bounded by [`Limits`];
//! hostile input yields an [`Error`], never a panic.

mod chunk;
mod error;
mod html;
mod markdown;
mod pdf;
mod text;
pub mod wire;

#[cfg(feature = "test-util")]
pub mod testing;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use chunk::{Chunk, Chunker, ChunkerConfig, MAX_BYTES_PER_TOKEN};
pub use error::Error;
pub use text::{TextEncoding, charset_param};

/// The kinds of document this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    PlainText,
    Markdown,
    Html,
    Pdf,
}

impl MediaType {
    /// The canonical MIME type, e.g. `"application/pdf"`.
    pub fn as_mime(&self) -> &'static str {
        match self {
            MediaType::PlainText => "text/plain",
            MediaType::Markdown => "text/markdown",
            MediaType::Html => "text/html",
            MediaType::Pdf => "application/pdf",
        }
    }

    /// The media type implied by the file extension (case-insensitive):
    /// `txt`, `text`, `md`, `markdown`, `html`, `htm`, `pdf`. `None` otherwise.
    pub fn from_path(p: &Path) -> Option<MediaType> {
        let ext = p.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(MediaType::PlainText),
            "md" | "markdown" => Some(MediaType::Markdown),
            "html" | "htm" => Some(MediaType::Html),
            "pdf" => Some(MediaType::Pdf),
            _ => None,
        }
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_mime())
    }
}

impl FromStr for MediaType {
    type Err = Error;

    /// Accepts MIME types (case-insensitive, parameters such as
    /// `; charset=utf-8` ignored) and the short names `text`, `markdown`, `md`,
    /// `html`, `pdf`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let essence = s.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "text/plain" | "text" | "txt" => Ok(MediaType::PlainText),
            "text/markdown" | "text/x-markdown" | "markdown" | "md" => Ok(MediaType::Markdown),
            "text/html" | "html" => Ok(MediaType::Html),
            "application/pdf" | "pdf" => Ok(MediaType::Pdf),
            _ => Err(Error::UnsupportedMediaType(s.to_owned())),
        }
    }
}

/// Bounds on the work and memory one document may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes. Default 64 MiB.
    pub max_bytes: usize,
    /// Most pages a PDF may have. Default 2000.
    pub max_pages: usize,
    /// Most bytes a PDF's streams may decompress to: per stream while loading,
    /// and in total over all page contents, form XObjects and font maps while
    /// extracting. Default 256 MiB.
    pub max_decompressed_bytes: usize,
    /// Most characters of extracted text. Default 20 million.
    pub max_extracted_chars: usize,
    /// Longest a PDF's text extraction may run; checked between pages and while
    /// walking content streams. Default 30 s.
    pub max_parse_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024 * 1024,
            max_pages: 2000,
            max_decompressed_bytes: 256 * 1024 * 1024,
            max_extracted_chars: 20_000_000,
            max_parse_time: Duration::from_secs(30),
        }
    }
}

/// Where one PDF page's text lies in [`Document::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSpan {
    /// 1-based page number.
    pub page: u32,
    /// Byte range `start..end` in [`Document::text`].
    pub start: usize,
    pub end: usize,
}

/// A heading found in a Markdown or HTML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1 for `h1`/`#`, up to 6.
    pub level: u8,
    /// The heading's text, without markup.
    pub text: String,
    /// Byte offset in [`Document::text`] where the heading starts.
    pub start: usize,
}

/// A loaded document: its text and the structure found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The text. For plain text and Markdown it is the input as written (less
    /// a UTF-8 BOM); for HTML the visible text; for PDFs the pages' text joined
    /// by `"\n\n"`.
    pub text: String,
    /// One span per PDF page, in page order; empty for non-paged media.
    pub pages: Vec<PageSpan>,
    /// The title, when the document declares one (HTML `<title>` or first
    /// `h1`, Markdown first `#` heading, PDF info dictionary).
    pub title: Option<String>,
    /// Headings in text order (Markdown and HTML; empty otherwise).
    pub headings: Vec<Heading>,
    /// How the bytes were decoded, for text media (plain, Markdown, HTML); `None` for PDF.
    pub encoding: Option<TextEncoding>,
}

impl Document {
    /// The page holding `byte_offset`: the last page starting at or before it.
    /// `None` for non-paged documents or an offset past the end of the text.
    pub fn page_at(&self, byte_offset: usize) -> Option<u32> {
        if byte_offset > self.text.len() {
            return None;
        }
        let idx = self.pages.partition_point(|p| p.start <= byte_offset);
        self.pages.get(idx.saturating_sub(1)).map(|p| p.page)
    }

    /// The heading path in force at `byte_offset` ("A > B"), i.e. the
    /// enclosing headings of the section containing it. `None` without headings.
    pub fn heading_path_at(&self, byte_offset: usize) -> Option<String> {
        let mut path = HeadingPath::default();
        path.advance(&self.headings, byte_offset);
        path.render(&self.headings)
    }
}

/// Incremental heading-path tracker for increasing offsets.
#[derive(Default, Clone)]
pub(crate) struct HeadingPath {
    next: usize,
    stack: Vec<usize>,
}

impl HeadingPath {
    /// Takes in all headings starting at or before `offset`.
    pub(crate) fn advance(&mut self, headings: &[Heading], offset: usize) {
        while let Some(h) = headings.get(self.next) {
            if h.start > offset {
                break;
            }
            while let Some(&top) = self.stack.last() {
                match headings.get(top) {
                    Some(t) if t.level >= h.level => {
                        self.stack.pop();
                    }
                    _ => break,
                }
            }
            self.stack.push(self.next);
            self.next += 1;
        }
    }

    /// Whether the path holds the heading at index `heading` of the document's headings.
    pub(crate) fn holds(&self, heading: usize) -> bool {
        self.stack.contains(&heading)
    }

    pub(crate) fn render(&self, headings: &[Heading]) -> Option<String> {
        let parts: Vec<&str> = self
            .stack
            .iter()
            .filter_map(|&i| headings.get(i))
            .map(|h| h.text.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" > "))
    }
}

/// Loads `bytes` as `media` into a [`Document`].
///
/// Guarantees: the result's text is non-empty and not only whitespace; page
/// spans and heading offsets are valid byte ranges of that text. Input over
/// `limits` is rejected, never truncated.
pub fn load(bytes: &[u8], media: MediaType, limits: &Limits) -> Result<Document, Error> {
    load_declared(bytes, media, None, limits)
}

/// [`load`], with the charset declared for a text document (the `charset` parameter of its
/// media type, [`charset_param`]). A byte-order mark overrides it; without either, text is
/// UTF-8 when valid, an HTML `<meta charset>` is followed when it is not, text that is
/// UTF-8 with damage (at least four valid multi-byte characters for each invalid sequence)
/// is [`Error::InvalidEncoding`] at its first bad byte, and anything else is Latin-1. A
/// charset quire does not know, or bytes not valid in the declared one, are
/// [`Error::InvalidEncoding`]. PDFs ignore it.
pub fn load_declared(
    bytes: &[u8],
    media: MediaType,
    charset: Option<&str>,
    limits: &Limits,
) -> Result<Document, Error> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty);
    }
    let doc = match media {
        MediaType::Pdf => pdf::load(bytes, limits, Instant::now() + limits.max_parse_time)?,
        text_media => {
            let (text, encoding) =
                text::decode_declared(bytes, charset, text_media == MediaType::Html)?;
            let mut doc = match text_media {
                MediaType::Markdown => markdown::load(text.into_owned()),
                MediaType::Html => html::load(&text)?,
                _ => Document {
                    text: text.into_owned(),
                    pages: Vec::new(),
                    title: None,
                    headings: Vec::new(),
                    encoding: None,
                },
            };
            doc.encoding = Some(encoding);
            doc
        }
    };
    if doc.text.trim().is_empty() {
        return Err(Error::Empty);
    }
    // Byte length bounds char count, so only count when it might matter.
    if doc.text.len() > limits.max_extracted_chars
        && doc.text.chars().count() > limits.max_extracted_chars
    {
        return Err(Error::TextTooLarge {
            limit: limits.max_extracted_chars,
        });
    }
    Ok(doc)
}
