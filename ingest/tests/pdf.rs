//! PDF loading against PDFs generated with lopdf (feature `test-util`).
#![cfg(feature = "test-util")]

mod common;

use common::{assert_chunk_invariants, chunker, prose, tokenizer};
use quire_ingest::testing::{CJK_FONT_CHARS, pdf_with_content, pdf_with_pages};
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

/// The text of each page, by its span.
fn page_texts(doc: &quire_ingest::Document) -> Vec<&str> {
    doc.pages
        .iter()
        .map(|s| &doc.text[s.start..s.end])
        .collect()
}

#[test]
fn form_xobjects_are_followed_with_their_own_or_the_pages_resources() {
    let page = "BT /F2 12 Tf 72 720 Td (Page text) Tj ET \
                q 1 0 0 1 0 -20 cm /Fm1 Do Q \
                /OwnForm Do \
                /Img Do";
    let forms = [
        ("Fm1", "BT /F2 12 Tf 72 720 Td (Inherited resources) Tj ET"),
        ("OwnForm", "BT /G2 12 Tf 72 684 Td (Own resources) Tj ET"),
    ];
    let doc = load_pdf(&pdf_with_content(&[page], &forms)).unwrap();
    assert_eq!(doc.text, "Page text\nInherited resources\nOwn resources");
    assert_eq!(doc.pages.len(), 1);
    assert_eq!((doc.pages[0].start, doc.pages[0].end), (0, doc.text.len()));
}

#[test]
fn forms_that_draw_themselves_or_nest_deeply_end() {
    let mut forms: Vec<(String, String)> = vec![
        (
            "Loop".into(),
            "BT /F2 12 Tf 72 740 Td (Loop) Tj ET /Loop Do".into(),
        ),
        (
            "A".into(),
            "BT /F2 12 Tf 72 720 Td (Alpha) Tj ET /B Do".into(),
        ),
        (
            "B".into(),
            "BT /F2 12 Tf 72 700 Td (Beta) Tj ET /A Do".into(),
        ),
    ];
    for i in 0..30 {
        forms.push((
            format!("N{i}"),
            format!(
                "BT /F2 12 Tf 72 {} Td (L{i}) Tj ET /N{} Do",
                680 - 20 * i,
                i + 1
            ),
        ));
    }
    let forms: Vec<(&str, &str)> = forms
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let doc = load_pdf(&pdf_with_content(&["/Loop Do /A Do /N0 Do"], &forms)).unwrap();
    let lines: Vec<&str> = doc.text.lines().collect();
    assert_eq!(lines[..3], ["Loop", "Alpha", "Beta"], "{:?}", doc.text);
    // Forms nest at most 12 deep: L0 to L11 are drawn, L12 is not.
    let chain: Vec<String> = (0..12).map(|i| format!("L{i}")).collect();
    assert_eq!(lines[3..], chain, "{:?}", doc.text);
}

#[test]
fn glyphs_placed_one_by_one_make_words_and_gaps_make_spaces() {
    // /F2 glyphs are 0.5 em wide and its space 0.25 em: at 10 pt a glyph
    // advances 5 pt, and a gap wider than about 1.25 pt reads as a space.
    let pages = [
        // One Td per glyph, a wider step between the words.
        "BT /F2 10 Tf 100 700 Td (p) Tj 5 0 Td (d) Tj 5 0 Td (f) Tj \
         8 0 Td (t) Tj 5 0 Td (e) Tj 5 0 Td (s) Tj 5 0 Td (t) Tj ET",
        // Kerning inside words, a wide TJ gap between them.
        "BT /F2 10 Tf 100 700 Td [(w) 30 (o) -40 (r) (d) -350 (t) 20 (w) (o)] TJ ET",
        // A text matrix per glyph, scaled text.
        "BT /F2 1 Tf 10 0 0 10 100 700 Tm (a) Tj 10 0 0 10 105 700 Tm (b) Tj \
         10 0 0 10 113 700 Tm (c) Tj ET",
        // One word over two text objects on the same baseline.
        "BT /F2 10 Tf 100 700 Td (hyph) Tj ET BT /F2 10 Tf 120 700 Td (en) Tj ET",
        // A superscript stays on its line; a lower baseline is a new line.
        "BT /F2 10 Tf 100 700 Td (x) Tj /F2 7 Tf 5 4 Td (2) Tj \
         /F2 10 Tf 3.5 -4 Td (+1) Tj 0 -12 Td (next line) Tj ET",
        // Helvetica without widths: estimated, still one space between words.
        "BT /F1 10 Tf 100 700 Td (Hello) Tj 26 0 Td (world) Tj ET",
        // Text drawn at the page's scale (cm) and word spacing (Tw) on the space.
        "q 2 0 0 2 0 0 cm BT /F2 5 Tf 50 350 Td 3 Tw (spaced out) Tj ET Q",
    ];
    let doc = load_pdf(&pdf_with_content(&pages, &[])).unwrap();
    assert_eq!(
        page_texts(&doc),
        [
            "pdf test",
            "word two",
            "ab c",
            "hyphen",
            "x2+1\nnext line",
            "Hello world",
            "spaced out"
        ]
    );
}

#[test]
fn type0_fonts_decode_two_byte_codes_through_tounicode() {
    let pages = [
        "BT /F3 12 Tf 72 700 Td <000100020003> Tj 0 -20 Td <0004000500060007> Tj ET",
        // A map written with every target byte-swapped is read the right way round.
        "BT /F4 12 Tf 72 700 Td <00010002000300010002> Tj ET",
    ];
    let doc = load_pdf(&pdf_with_content(&pages, &[])).unwrap();
    let cjk: Vec<char> = CJK_FONT_CHARS.chars().collect();
    let first: String = cjk[..3].iter().collect();
    let second: String = cjk[3..7].iter().collect();
    assert_eq!(
        page_texts(&doc),
        [format!("{first}\n{second}").as_str(), "Hi Hi"]
    );
}

#[test]
fn words_hyphenated_across_lines_are_joined_within_a_page() {
    let pages = [
        "A line that ends in an exam-\nple of hyphenation, a well-\nKnown name,\n\
         a dash -\nafter a space, the years 2020-\n2021, and a last continu-",
        "ation on the next page.",
    ];
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(
        page_texts(&doc),
        [
            "A line that ends in an example\nof hyphenation, a well-\nKnown name,\n\
             a dash -\nafter a space, the years 2020-\n2021, and a last continu-",
            "ation on the next page."
        ]
    );
}

#[test]
fn running_headers_and_page_number_footers_are_dropped() {
    let bodies = [
        "Harbors shelter the long ships.\nThey sail at dawn.",
        "The grey northern sea is cold.\nWinds blow from the east.",
        "Fishermen mend their nets.\nGulls circle the masts.",
        "The tide turns at noon.\nBoats return before dusk.",
    ];
    let pages: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| format!("ACME Harbor Report\n{body}\nPage {} of 4", i + 1))
        .collect();
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(page_texts(&doc), bodies);
    for (i, span) in doc.pages.iter().enumerate() {
        assert_eq!(span.page as usize, i + 1);
        assert_eq!(doc.page_at(span.start), Some(span.page));
    }
    assert!(!doc.text.contains("ACME") && !doc.text.contains("of 4"));

    // A line first on only half the pages is not a running header.
    let pages = [
        "Draft\nOne body line.\nMore on one.",
        "Draft\nTwo body line.\nMore on two.",
        "Three body line.\nMore on three.",
        "Four body line.\nMore on four.",
    ];
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(doc.text.matches("Draft").count(), 2);

    // Two pages are too few to tell a header from text.
    let pages = ["Title\nFirst body.\nPage 1", "Title\nSecond body.\nPage 2"];
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(page_texts(&doc), pages);

    // Pages holding nothing but the repeated lines keep them.
    let pages = ["Same\nPage 1", "Same\nPage 2", "Same\nPage 3"];
    let doc = load_pdf(&pdf_with_pages(&pages)).unwrap();
    assert_eq!(page_texts(&doc), pages);
}

#[test]
fn an_empty_owner_password_opens_a_pdf_that_has_a_user_password() {
    use lopdf::{EncryptionState, EncryptionVersion, Permissions};

    let mut doc =
        lopdf::Document::load_mem(&pdf_with_pages(&["Quarterly harbor figures."])).unwrap();
    let state = EncryptionState::try_from(EncryptionVersion::V2 {
        document: &doc,
        owner_password: "",
        user_password: "user-secret",
        key_length: 128,
        permissions: Permissions::all(),
    })
    .unwrap();
    doc.encrypt(&state).unwrap();
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"harbor fig"));
    let doc = load_pdf(&bytes).unwrap();
    assert_eq!(words(&doc.text), "Quarterly harbor figures.");
}

#[test]
fn hostile_content_streams_are_values_not_panics_or_hangs() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let numbers = [
        "0",
        "-0",
        "1",
        "-1",
        "12",
        "0.0001",
        "-1e38",
        "3.4e38",
        "99999999999999999999",
        "-2147483649",
        "1e-45",
        "NaN",
        "700",
    ];
    let ops = [
        "q", "Q", "cm", "BT", "ET", "Tf", "Tc", "Tw", "Tz", "TL", "Ts", "Td", "TD", "Tm", "T*",
        "Tj", "'", "\"", "TJ", "Do", "re", "f",
    ];
    let operands = [
        "/F1",
        "/F2",
        "/F3",
        "/F4",
        "/G2",
        "/Nope",
        "/Loop",
        "/Own",
        "(text)",
        "<0001000200>",
        "<>",
        "[(a) -500 (b) 1e30 <0003>]",
        "[]",
        "()",
    ];
    let forms = [
        ("Loop", "BT /F2 9 Tf (loop) Tj ET /Loop Do /Own Do"),
        ("Own", "BT /G2 9 Tf 1e30 0 Td (own) Tj ET /Loop Do"),
    ];
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let mut content = String::new();
        for _ in 0..(next() % 200) {
            for _ in 0..(next() % 4) {
                if next() % 2 == 0 {
                    content.push_str(numbers[(next() as usize) % numbers.len()]);
                } else {
                    content.push_str(operands[(next() as usize) % operands.len()]);
                }
                content.push(' ');
            }
            content.push_str(ops[(next() as usize) % ops.len()]);
            content.push('\n');
        }
        let pages = [content.as_str(), "BT /F2 12 Tf 72 700 Td (steady) Tj ET"];
        let doc = load_pdf(&pdf_with_content(&pages, &forms)).unwrap();
        assert!(page_texts(&doc)[1] == "steady", "{content}");
    }
    // Deep saves and many form calls stay cheap.
    let deep = "q ".repeat(100_000) + &"/Loop Do ".repeat(20_000) + &"Q ".repeat(100_000);
    let doc = load_pdf(&pdf_with_content(&[&deep], &forms)).unwrap();
    assert!(doc.text.starts_with("loop"));
    // Every glyph its own run (wide TJ gaps): the two-column search must not be quadratic.
    let runs = format!(
        "BT /F2 10 Tf 0 700 Td [{}] TJ ET",
        "(a) -3000 ".repeat(300_000)
    );
    let doc = load_pdf(&pdf_with_content(&[&runs], &[])).unwrap();
    assert!(doc.text.starts_with("a a a"), "{}", &doc.text[..20]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// A page drawn row by row across two columns: each left line, then the right line beside it.
fn two_column_page(left: &[&str], right: &[&str], title: Option<&str>) -> String {
    let mut content = String::new();
    if let Some(t) = title {
        content.push_str(&format!("BT /F2 14 Tf 72 740 Td ({t}) Tj ET "));
    }
    for (i, (l, r)) in left.iter().zip(right).enumerate() {
        let y = 700 - 14 * i as i32;
        content.push_str(&format!("BT /F2 10 Tf 72 {y} Td ({l}) Tj ET "));
        content.push_str(&format!("BT /F2 10 Tf 320 {y} Td ({r}) Tj ET "));
    }
    content
}

#[test]
fn two_columns_drawn_row_by_row_are_read_column_by_column() {
    let left = [
        "The left column begins the story here",
        "and it continues down the same column",
        "for several lines of ordinary prose in",
        "a narrow measure until it reaches the",
        "end of the left column at the bottom.",
    ];
    let right = [
        "The right column picks the story up in",
        "its own measure and carries it further",
        "down the page with more ordinary prose",
        "so that a reader finishes the page on",
        "the last line of the right column here.",
    ];
    let page = two_column_page(&left, &right, Some("A Two Column Title"));
    let doc = load_pdf(&pdf_with_content(&[&page], &[])).unwrap();
    let mut want = vec!["A Two Column Title"];
    want.extend(left);
    want.extend(right);
    assert_eq!(
        doc.text
            .lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        want
    );
}

#[test]
fn a_table_drawn_row_by_row_keeps_its_rows() {
    let names = ["Name", "Alpha", "Beta", "Gamma", "Delta", "Epsilon"];
    let values = [
        "Value",
        "one point five",
        "two",
        "three and a bit more than that",
        "four",
        "five",
    ];
    let page = two_column_page(&names, &values, None);
    let doc = load_pdf(&pdf_with_content(&[&page], &[])).unwrap();
    let rows: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    assert_eq!(doc.text.lines().collect::<Vec<_>>(), rows);
}
