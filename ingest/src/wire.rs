//! A PDF read in another process, and its result carried back as bytes.
//!
//! lopdf parses a whole file before any of this crate's limits can act, and a small hostile
//! PDF can make that parse take unbounded memory and time (an object stream that lists one
//! large object thousands of times, say). A caller that must survive such input runs
//! [`load_pdf_to_wire`] in a child process with an address-space limit and a deadline, and
//! reads the child's output with [`pdf_from_wire`]. This module only encodes and decodes; it
//! starts no process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Document, Error, Limits, MediaType, PageSpan};

/// [`Limits`] as the child receives them.
#[derive(Serialize, Deserialize)]
struct WireLimits {
    max_bytes: usize,
    max_pages: usize,
    max_decompressed_bytes: usize,
    max_extracted_chars: usize,
    max_parse_ms: u64,
}

/// The child's answer: a PDF's document (no headings, no text encoding), or the error.
#[derive(Serialize, Deserialize)]
enum Reply {
    Document {
        text: String,
        /// (page, start, end) per page.
        pages: Vec<(u32, usize, usize)>,
        title: Option<String>,
    },
    Empty,
    TooLarge {
        bytes: usize,
        limit: usize,
    },
    TooManyPages {
        pages: usize,
        limit: usize,
    },
    DecompressedTooLarge {
        limit: usize,
    },
    TextTooLarge {
        limit: usize,
    },
    Pdf(String),
    Encrypted,
    TimeLimit {
        limit_ms: u128,
    },
    NoExtractableText,
}

/// `limits` as the one argument [`decode_limits`] reads.
pub fn encode_limits(limits: &Limits) -> String {
    let wire = WireLimits {
        max_bytes: limits.max_bytes,
        max_pages: limits.max_pages,
        max_decompressed_bytes: limits.max_decompressed_bytes,
        max_extracted_chars: limits.max_extracted_chars,
        max_parse_ms: u64::try_from(limits.max_parse_time.as_millis()).unwrap_or(u64::MAX),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The limits [`encode_limits`] wrote; [`Error::InvalidConfig`] for anything else.
pub fn decode_limits(text: &str) -> Result<Limits, Error> {
    let w: WireLimits = serde_json::from_str(text)
        .map_err(|e| Error::InvalidConfig(format!("unreadable PDF limits: {e}")))?;
    Ok(Limits {
        max_bytes: w.max_bytes,
        max_pages: w.max_pages,
        max_decompressed_bytes: w.max_decompressed_bytes,
        max_extracted_chars: w.max_extracted_chars,
        max_parse_time: Duration::from_millis(w.max_parse_ms),
    })
}

/// Loads `bytes` as a PDF ([`crate::load`]) and encodes the document or the error for
/// [`pdf_from_wire`].
pub fn load_pdf_to_wire(bytes: &[u8], limits: &Limits) -> Vec<u8> {
    let reply = match crate::load(bytes, MediaType::Pdf, limits) {
        Ok(doc) => Reply::Document {
            text: doc.text,
            pages: doc.pages.iter().map(|p| (p.page, p.start, p.end)).collect(),
            title: doc.title,
        },
        Err(e) => match e {
            Error::Empty => Reply::Empty,
            Error::TooLarge { bytes, limit } => Reply::TooLarge { bytes, limit },
            Error::TooManyPages { pages, limit } => Reply::TooManyPages { pages, limit },
            Error::DecompressedTooLarge { limit } => Reply::DecompressedTooLarge { limit },
            Error::TextTooLarge { limit } => Reply::TextTooLarge { limit },
            Error::Pdf(message) => Reply::Pdf(message),
            Error::Encrypted => Reply::Encrypted,
            Error::TimeLimit { limit_ms } => Reply::TimeLimit { limit_ms },
            Error::NoExtractableText => Reply::NoExtractableText,
            // Not produced for PDFs; carried as a message rather than lost.
            other => Reply::Pdf(other.to_string()),
        },
    };
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// The document or error that [`load_pdf_to_wire`] encoded. Output that is not such an
/// encoding (a child that died half-way) is [`Error::Pdf`]. The document's page spans are
/// checked against its text, so a garbled reply cannot yield out-of-range spans.
pub fn pdf_from_wire(bytes: &[u8]) -> Result<Document, Error> {
    let reply: Reply = serde_json::from_slice(bytes)
        .map_err(|e| Error::Pdf(format!("the PDF reader's reply is unreadable: {e}")))?;
    Err(match reply {
        Reply::Document { text, pages, title } => {
            let pages: Vec<PageSpan> = pages
                .into_iter()
                .map(|(page, start, end)| PageSpan { page, start, end })
                .collect();
            let valid = pages.iter().all(|p| {
                p.start <= p.end && text.is_char_boundary(p.start) && text.is_char_boundary(p.end)
            });
            if !valid {
                return Err(Error::Pdf(
                    "the PDF reader's reply has page spans outside its text".into(),
                ));
            }
            return Ok(Document {
                text,
                pages,
                title,
                headings: Vec::new(),
                encoding: None,
            });
        }
        Reply::Empty => Error::Empty,
        Reply::TooLarge { bytes, limit } => Error::TooLarge { bytes, limit },
        Reply::TooManyPages { pages, limit } => Error::TooManyPages { pages, limit },
        Reply::DecompressedTooLarge { limit } => Error::DecompressedTooLarge { limit },
        Reply::TextTooLarge { limit } => Error::TextTooLarge { limit },
        Reply::Pdf(message) => Error::Pdf(message),
        Reply::Encrypted => Error::Encrypted,
        Reply::TimeLimit { limit_ms } => Error::TimeLimit { limit_ms },
        Reply::NoExtractableText => Error::NoExtractableText,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdf_and_its_errors_survive_the_trip() {
        let limits = Limits {
            max_pages: 7,
            max_parse_time: Duration::from_millis(1234),
            ..Limits::default()
        };
        assert_eq!(decode_limits(&encode_limits(&limits)).unwrap(), limits);

        let pdf = crate::testing::pdf_with_pages(&["First page text.", "Second page text."]);
        let direct = crate::load(&pdf, MediaType::Pdf, &limits).unwrap();
        let carried = pdf_from_wire(&load_pdf_to_wire(&pdf, &limits)).unwrap();
        assert_eq!(carried, direct);
        assert_eq!(carried.pages.len(), 2);

        let err = pdf_from_wire(&load_pdf_to_wire(b"%PDF-1.4 garbage", &limits)).unwrap_err();
        assert!(matches!(err, Error::Pdf(_)), "{err:?}");
        let tight = Limits {
            max_pages: 1,
            ..limits
        };
        let err = pdf_from_wire(&load_pdf_to_wire(&pdf, &tight)).unwrap_err();
        assert!(
            matches!(err, Error::TooManyPages { pages: 2, limit: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn a_reply_cut_short_or_out_of_range_is_an_error() {
        let pdf = crate::testing::pdf_with_pages(&["Some text."]);
        let reply = load_pdf_to_wire(&pdf, &Limits::default());
        assert!(matches!(
            pdf_from_wire(&reply[..reply.len() / 2]),
            Err(Error::Pdf(_))
        ));
        let forged = br#"{"Document":{"text":"abc","pages":[[1,0,99]],"title":null}}"#;
        assert!(matches!(pdf_from_wire(forged), Err(Error::Pdf(_))));
    }
}
