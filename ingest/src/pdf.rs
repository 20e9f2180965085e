//! PDF: text extracted page by page with lopdf and a small content-stream walker.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use lopdf::content::Content;
use lopdf::{DecompressError, Encoding, LoadOptions, Object, ObjectId};

use crate::{Document, Error, Limits, PageSpan};

/// TJ displacement (thousandths of an em) at or beyond which a gap reads as a space.
const TJ_SPACE: f32 = 180.0;

/// Loads a PDF from memory and extracts its text page by page.
///
/// Pages are joined with `"\n\n"` and each gets a [`PageSpan`]. A PDF that
/// needs a password gives [`Error::Encrypted`] (an empty user password is
/// tried automatically); pages without any text give
/// [`Error::NoExtractableText`]. A panic inside lopdf on hostile input is
/// caught and reported as [`Error::Pdf`]. Extraction past `deadline` stops with
/// [`Error::TimeLimit`] (checked after parsing, between pages, and every
/// [`OPS_PER_CHECK`] content operators).
pub(crate) fn load(bytes: &[u8], limits: &Limits, deadline: Instant) -> Result<Document, Error> {
    let clock = Deadline {
        at: deadline,
        limit_ms: limits.max_parse_time.as_millis(),
    };
    match catch_unwind(AssertUnwindSafe(|| extract(bytes, limits, clock))) {
        Ok(result) => result,
        Err(_) => Err(Error::Pdf(
            "the PDF parser failed on malformed data".to_owned(),
        )),
    }
}

/// How many content-stream operators run between two deadline checks.
const OPS_PER_CHECK: usize = 4096;

#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    limit_ms: u128,
}

impl Deadline {
    fn check(self) -> Result<(), Error> {
        if Instant::now() > self.at {
            Err(Error::TimeLimit {
                limit_ms: self.limit_ms,
            })
        } else {
            Ok(())
        }
    }
}

fn extract(bytes: &[u8], limits: &Limits, clock: Deadline) -> Result<Document, Error> {
    if !bytes.starts_with(b"%PDF") && !bytes.get(..1024).is_some_and(has_pdf_header) {
        return Err(Error::Pdf("no %PDF header".to_owned()));
    }
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_decompressed_bytes),
        ..LoadOptions::default()
    };
    let pdf =
        lopdf::Document::load_mem_with_options(bytes, options).map_err(|e| map_err(e, limits))?;
    clock.check()?;
    // lopdf decrypts with the empty password itself; a remaining /Encrypt means
    // a real password is needed.
    if pdf.trailer.has(b"Encrypt") {
        return Err(Error::Encrypted);
    }
    pdf.catalog()
        .map_err(|e| Error::Pdf(format!("no document catalog ({e})")))?;
    let pages = pdf.get_pages();
    if pages.len() > limits.max_pages {
        return Err(Error::TooManyPages {
            pages: pages.len(),
            limit: limits.max_pages,
        });
    }
    if pages.is_empty() {
        return Err(Error::Pdf("the document has no pages".to_owned()));
    }

    let mut text = String::new();
    let mut spans = Vec::with_capacity(pages.len());
    let mut budget = limits.max_decompressed_bytes;
    let mut chars = 0usize;
    for (&number, &page_id) in &pages {
        clock.check()?;
        let page_text = page_text(&pdf, number, page_id, &mut budget, limits, clock)?;
        chars = chars.saturating_add(page_text.chars().count());
        if chars > limits.max_extracted_chars {
            return Err(Error::TextTooLarge {
                limit: limits.max_extracted_chars,
            });
        }
        if !spans.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.len();
        text.push_str(&page_text);
        spans.push(PageSpan {
            page: number,
            start,
            end: text.len(),
        });
    }
    if text.trim().is_empty() {
        return Err(Error::NoExtractableText);
    }
    Ok(Document {
        text,
        pages: spans,
        title: info_title(&pdf),
        headings: Vec::new(),
        encoding: None,
    })
}

fn has_pdf_header(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"%PDF")
}

fn map_err(e: lopdf::Error, limits: &Limits) -> Error {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => {
            Error::DecompressedTooLarge {
                limit: limits.max_decompressed_bytes,
            }
        }
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => Error::Encrypted,
        other => Error::Pdf(other.to_string()),
    }
}

fn info_title(pdf: &lopdf::Document) -> Option<String> {
    let info = pdf.trailer.get_deref(b"Info", pdf).ok()?.as_dict().ok()?;
    let raw = info.get_deref(b"Title", pdf).ok()?;
    let title = lopdf::decode_text_string(raw).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// Extracts one page's text, charging its decompressed content to `budget`.
fn page_text(
    pdf: &lopdf::Document,
    number: u32,
    page_id: ObjectId,
    budget: &mut usize,
    limits: &Limits,
    clock: Deadline,
) -> Result<String, Error> {
    for id in pdf.get_page_contents(page_id) {
        if pdf.get_object(id).is_err() {
            return Err(Error::Pdf(format!(
                "page {number}: content stream {} {} R is missing",
                id.0, id.1
            )));
        }
    }
    let too_large = || Error::DecompressedTooLarge {
        limit: limits.max_decompressed_bytes,
    };
    // Fonts that cannot be resolved are skipped: their text is lost, the rest of the page is kept.
    let mut encodings: BTreeMap<Vec<u8>, Encoding<'_>> = BTreeMap::new();
    if let Ok(fonts) = pdf.get_page_fonts(page_id) {
        for (name, font) in fonts {
            match font.get_font_encoding_with_limit(pdf, *budget) {
                Ok(enc) => {
                    encodings.insert(name, enc);
                }
                Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                    return Err(too_large());
                }
                Err(_) => {}
            }
        }
    }
    let content = pdf
        .get_page_content_with_limit(page_id, *budget)
        .map_err(|e| match e {
            lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => too_large(),
            other => Error::Pdf(format!("page {number}: {other}")),
        })?;
    *budget = budget.saturating_sub(content.len());

    let mut w = PageWriter::default();
    let mut encoding: Option<&Encoding<'_>> = None;
    // Content that fails to parse part-way keeps the text read up to there.
    for (n, op) in Content::decode_iter(&content).enumerate() {
        if n % OPS_PER_CHECK == OPS_PER_CHECK - 1 {
            clock.check()?;
        }
        let Ok(op) = op else { break };
        let args = &op.operands;
        match op.operator.as_str() {
            "Tf" => {
                encoding = args
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|n| encodings.get(n));
            }
            "Tj" => w.show(encoding, args.first()),
            "'" => {
                w.newline();
                w.show(encoding, args.first());
            }
            "\"" => {
                w.newline();
                w.show(encoding, args.get(2));
            }
            "TJ" => {
                if let Some(Object::Array(items)) = args.first() {
                    for item in items {
                        match number_of(item) {
                            Some(n) if n <= -TJ_SPACE => w.space(),
                            Some(_) => {}
                            None => w.show(encoding, Some(item)),
                        }
                    }
                }
            }
            "Td" | "TD" => {
                let tx = args.first().and_then(number_of).unwrap_or(0.0);
                let ty = args.get(1).and_then(number_of).unwrap_or(0.0);
                if ty.abs() > 0.01 {
                    w.newline();
                } else if tx.abs() > 0.01 {
                    w.space();
                }
            }
            "Tm" => {
                let y = args.get(5).and_then(number_of);
                match (w.line_y, y) {
                    (Some(prev), Some(y)) if (prev - y).abs() <= 0.5 => w.space(),
                    _ => w.newline(),
                }
                w.line_y = y;
            }
            "T*" | "ET" => w.newline(),
            "BT" => w.line_y = None,
            _ => {}
        }
    }
    Ok(tidy(&w.text))
}

fn number_of(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

#[derive(Default)]
struct PageWriter {
    text: String,
    /// Baseline of the current line from the last `Tm`, if any.
    line_y: Option<f32>,
}

impl PageWriter {
    fn show(&mut self, encoding: Option<&Encoding<'_>>, operand: Option<&Object>) {
        if let (Some(enc), Some(Object::String(bytes, _))) = (encoding, operand) {
            // Undecodable bytes are dropped rather than failing the page.
            let _ = enc.write_to_string(bytes, &mut self.text);
        }
    }

    fn space(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with(char::is_whitespace) {
            self.text.push(' ');
        }
    }

    fn newline(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }
}

/// Normalises extracted text: control characters dropped, runs of spaces
/// collapsed, lines trimmed, at most one blank line in a row, no outer whitespace.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0usize;
    for line in raw.lines() {
        let cleaned: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&line);
    }
    out
}
