//! PDF loading against PDFs generated with lopdf (feature `test-util`).
#![cfg(feature = "test-util")]

mod common;

use common::{assert_chunk_invariants, chunker, prose, tokenizer};
use quire_ingest::testing::pdf_with_pages;
use quire_ingest::{Error, Limits, MediaType, load};

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn load_pdf(bytes: &[u8]) -> Result<quire_ingest::Document, Error> {
    load(bytes, MediaType::Pdf, &Limits::default())
}

#[test]
fn three_page_pdf_has_page_spans_with_each_pages_text() {
    let pages = [
        "The first page talks about harbors and the long ships that sail from them into the grey northern sea at dawn.",
        "Page two (with parentheses) and a back\\slash, plus café.\nA second line.",
        "The third page is short.",
    ];
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(doc.pages.len(), 3);
    for (i, (span, want)) in doc.pages.iter().zip(pages).enumerate() {
        assert_eq!(span.page as usize, i + 1);
        assert_eq!(
            words(&doc.text[span.start..span.end]),
            words(want),
            "page {}",
            i + 1
        );
        assert_eq!(doc.page_at(span.start), Some(span.page));
        assert_eq!(doc.page_at(span.end.saturating_sub(1)), Some(span.page));
    }
    // Wrapped lines come out as separate lines, and words are not glued together.
    let first = &doc.text[doc.pages[0].start..doc.pages[0].end];
    assert!(first.contains('\n'), "long line was wrapped: {first:?}");
    assert!(
        doc.text.contains("\n\n"),
        "pages are separated by a blank line"
    );
    assert_eq!(doc.page_at(doc.text.len() + 1), None);
}

#[test]
fn pdf_chunks_carry_the_page_they_start_on() {
    let tok = tokenizer();
    let texts: Vec<String> = (0..3)
        .map(|p| prose(25).replace("Sentence", &format!("P{} sentence", p + 1)))
        .collect();
    let pages: Vec<&str> = texts.iter().map(String::as_str).collect();
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    let chunks = chunker(64, 16).chunk(&doc, MediaType::Pdf);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);
    let mut seen = std::collections::BTreeSet::new();
    for c in &chunks {
        let page = c.page.expect("PDF chunks have a page");
        let span = doc.pages[page as usize - 1];
        assert!(
            span.start <= c.start && c.start < span.end,
            "chunk start lies on its page"
        );
        let head = c
            .text
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            words(&texts[page as usize - 1]).contains(&head),
            "chunk on page {page} starts with {head:?}, not from that page"
        );
        assert_eq!(c.indexed_text, c.text);
        seen.insert(page);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn truncated_pdf_is_a_pdf_error() {
    let bytes = pdf_with_pages(&[&prose(40), &prose(40)]);
    for cut in [bytes.len() / 2, bytes.len() / 3, 20] {
        match load_pdf(&bytes[..cut]) {
            Err(Error::Pdf(reason)) => assert!(!reason.is_empty()),
            other => panic!("cut at {cut}: expected Error::Pdf, got {other:?}"),
        }
    }
}

#[test]
fn garbage_declared_pdf_is_an_error_not_a_panic() {
    let mut state = 0x2545_f491_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let random: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
    assert!(matches!(load_pdf(&random), Err(Error::Pdf(_))));
    let mut headed = b"%PDF-1.7\n".to_vec();
    headed.extend_from_slice(&random);
    assert!(load_pdf(&headed).is_err());
    assert!(load_pdf(b"plain words, not a pdf").is_err());

    // Corrupt a valid PDF in many places: every outcome is a value, never a panic.
    let valid = pdf_with_pages(&["Some text on a page.", "More text."]);
    for _ in 0..300 {
        let mut bytes = valid.clone();
        for _ in 0..4 {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        let _ = load_pdf(&bytes);
    }
}

#[test]
fn pdf_limits_are_enforced() {
    let bytes = pdf_with_pages(&["one", "two", "three"]);
    let limits = Limits {
        max_pages: 2,
        ..Limits::default()
    };
    assert_eq!(
        load(&bytes, MediaType::Pdf, &limits),
        Err(Error::TooManyPages { pages: 3, limit: 2 })
    );
    let limits = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        load(&bytes, MediaType::Pdf, &limits),
        Err(Error::TooLarge { limit: 100, .. })
    ));
    let limits = Limits {
        max_decompressed_bytes: 16,
        ..Limits::default()
    };
    assert_eq!(
        load(&bytes, MediaType::Pdf, &limits),
        Err(Error::DecompressedTooLarge { limit: 16 })
    );
    let limits = Limits {
        max_extracted_chars: 8,
        ..Limits::default()
    };
    assert_eq!(
        load(&bytes, MediaType::Pdf, &limits),
        Err(Error::TextTooLarge { limit: 8 })
    );
}

#[test]
fn pdf_without_text_has_no_extractable_text() {
    let bytes = pdf_with_pages(&["", "   "]);
    assert_eq!(load_pdf(&bytes), Err(Error::NoExtractableText));
}

#[test]
fn encrypted_pdf_needs_password_unless_the_user_password_is_empty() {
    use lopdf::{EncryptionState, EncryptionVersion, Permissions};

    let encrypt = |user_password: &str| {
        let mut doc =
            lopdf::Document::load_mem(&pdf_with_pages(&["Confidential harbor report."])).unwrap();
        let state = EncryptionState::try_from(EncryptionVersion::V2 {
            document: &doc,
            owner_password: "owner-secret",
            user_password,
            key_length: 128,
            permissions: Permissions::all(),
        })
        .unwrap();
        doc.encrypt(&state).unwrap();
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        out
    };
    let locked = encrypt("user-secret");
    assert!(
        !locked.windows(10).any(|w| w == b"harbor rep"),
        "text is really encrypted"
    );
    assert_eq!(load_pdf(&locked), Err(Error::Encrypted));

    let open = encrypt("");
    let doc = load_pdf(&open).unwrap();
    assert_eq!(words(&doc.text), "Confidential harbor report.");
}
