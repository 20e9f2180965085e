//! Chunking with the real all-MiniLM-L6-v2 tokenizer.

mod common;

use common::{assert_chunk_invariants, chunker, prose, tokenizer};
use quire_ingest::{Chunker, ChunkerConfig, Error, Limits, MediaType, load};

#[test]
fn plain_text_chunks_are_exact_bounded_and_overlapping() {
    let tok = tokenizer();
    let text = prose(120);
    let doc = load(text.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunker = chunker(64, 16);
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);
    assert!(
        chunks.len() > 10,
        "long text gives many chunks, got {}",
        chunks.len()
    );
    // text-splitter overlaps within a paragraph, not across a paragraph break.
    let overlapping = chunks.windows(2).filter(|p| p[1].start < p[0].end).count();
    assert!(
        overlapping * 2 >= chunks.len(),
        "{overlapping} of {} overlap",
        chunks.len()
    );
    for c in &chunks {
        assert_eq!(c.indexed_text, c.text, "plain text has no heading path");
        assert_eq!(c.page, None);
    }
    // Every sentence lands whole in some chunk.
    for i in 0..120 {
        let needle = format!("Sentence {i} says");
        assert!(
            chunks.iter().any(|c| c.text.contains(&needle)),
            "{needle} lost"
        );
    }
    // One long paragraph: every consecutive pair overlaps.
    let one_para = text.replace("\n\n", "");
    let doc = load(
        one_para.as_bytes(),
        MediaType::PlainText,
        &Limits::default(),
    )
    .unwrap();
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);
    for pair in chunks.windows(2) {
        assert!(
            pair[1].start < pair[0].end,
            "consecutive chunks overlap: {:?} then {:?}",
            pair[0].text,
            pair[1].text
        );
    }
    // The chunker's own count agrees with the tokenizer's.
    assert_eq!(chunker.count_tokens("Hello, world!"), 4);
}

#[test]
fn short_text_is_one_chunk() {
    let doc = load(
        b"  A short note.\n",
        MediaType::PlainText,
        &Limits::default(),
    )
    .unwrap();
    let chunks = chunker(200, 32).chunk(&doc, MediaType::PlainText);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, "A short note.");
    assert_eq!((chunks[0].start, chunks[0].end), (2, 15));
}

#[test]
fn overlap_must_be_smaller_than_max() {
    for (max, overlap) in [(32, 32), (32, 40), (0, 0)] {
        let r = Chunker::new(
            tokenizer(),
            ChunkerConfig {
                max_tokens: max,
                overlap_tokens: overlap,
            },
        );
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{max}/{overlap}");
    }
    assert_eq!(
        ChunkerConfig::default(),
        ChunkerConfig {
            max_tokens: 200,
            overlap_tokens: 32
        }
    );
}

#[test]
fn markdown_chunks_carry_heading_path_in_indexed_text_only() {
    let tok = tokenizer();
    let mut src = String::from("# Field Guide\n\nWelcome to the guide.\n\n## Gulls\n\n");
    src.push_str(&prose(30));
    src.push_str(
        "\n\n### Herring gull\n\nThe herring gull has pink legs and a red spot on its bill. ",
    );
    src.push_str(&prose(20));
    src.push_str("\n\n## Terns\n\n");
    src.push_str(&prose(30));
    let doc = load(src.as_bytes(), MediaType::Markdown, &Limits::default()).unwrap();
    let chunks = chunker(64, 8).chunk(&doc, MediaType::Markdown);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);

    // A chunk's path is the section it starts in.
    let herring_start = src.find("### Herring").unwrap();
    let in_herring: Vec<_> = chunks
        .iter()
        .filter(|c| c.start >= herring_start && c.start < src.find("## Terns").unwrap())
        .collect();
    assert!(!in_herring.is_empty());
    for c in in_herring {
        assert!(
            c.indexed_text
                .starts_with("Field Guide > Gulls > Herring gull\n\n"),
            "{:?}",
            c.indexed_text
        );
        assert!(c.indexed_text.ends_with(&c.text));
    }
    let first = &chunks[0];
    assert!(
        first
            .indexed_text
            .starts_with("Field Guide\n\n# Field Guide"),
        "{:?}",
        first.indexed_text
    );
    let terns_start = src.find("## Terns").unwrap();
    let after_terns: Vec<_> = chunks.iter().filter(|c| c.start > terns_start).collect();
    assert!(!after_terns.is_empty());
    for c in after_terns {
        assert!(
            c.indexed_text.starts_with("Field Guide > Terns\n\n"),
            "{:?}",
            c.indexed_text
        );
        assert!(!c.text.contains("Field Guide > Terns"));
    }
    for c in &chunks {
        assert!(
            !c.text.contains(" > "),
            "heading path leaked into text: {:?}",
            c.text
        );
        assert_eq!(c.page, None);
    }
}

#[test]
fn html_chunks_carry_heading_path() {
    let tok = tokenizer();
    let mut src = String::from("<html><body><h1>Manual</h1><h2>Setup</h2>");
    for para in prose(40).split("\n\n") {
        src.push_str(&format!("<p>{para}</p>"));
    }
    src.push_str("<h2>Teardown</h2><p>Remove the unit carefully.</p>");
    for para in prose(20).split("\n\n") {
        src.push_str(&format!("<p>{para}</p>"));
    }
    src.push_str("</body></html>");
    let doc = load(src.as_bytes(), MediaType::Html, &Limits::default()).unwrap();
    let chunks = chunker(48, 8).chunk(&doc, MediaType::Html);
    assert_chunk_invariants(&doc, &chunks, &tok, 48);
    let teardown = doc.text.find("Teardown").unwrap();
    for c in &chunks {
        let want = if c.start == 0 {
            "Manual\n\nManual\n\nSetup"
        } else if c.start < teardown {
            "Manual > Setup\n\n"
        } else {
            "Manual > Teardown\n\n"
        };
        assert!(c.indexed_text.starts_with(want), "{:?}", c.indexed_text);
        assert!(!c.text.contains("Manual > "));
    }
    assert!(chunks.iter().filter(|c| c.start > teardown).count() >= 2);
}

#[test]
fn chunks_stay_within_budget_for_unbroken_and_non_latin_text() {
    let tok = tokenizer();
    let mut text = "x".repeat(3000);
    text.push_str("\n\n");
    text.push_str(&"東京は日本の首都です。".repeat(80));
    text.push_str("\n\n");
    text.push_str(&"Ünïcödé façade naïve café; ".repeat(60));
    // A run of letters and digits the tokenizer reads as one [UNK] token, however long.
    text.push_str("\n\nsee ");
    text.push_str(&"a1".repeat(50_000));
    let doc = load(text.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunks = chunker(50, 10).chunk(&doc, MediaType::PlainText);
    assert_chunk_invariants(&doc, &chunks, &tok, 50);
    // At most one token per MAX_BYTES_PER_TOKEN bytes of text other than whitespace.
    let max_bytes = 51 * quire_ingest::MAX_BYTES_PER_TOKEN;
    for c in &chunks {
        let text = c.text.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        assert!(text < max_bytes, "{text} bytes");
    }
    assert!(chunks.iter().map(|c| c.text.len()).sum::<usize>() >= 100_000);
}

/// The chunker counts a candidate's tokens from one tokenization of the whole document; the
/// chunks must be the ones text-splitter makes when it tokenizes every candidate itself.
#[test]
fn whole_document_token_counts_give_the_same_chunks() {
    use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
    let mut text = prose(150);
    text.push_str(
        "\n\nThe Ångström-scale β-catenin complex (n = 42; p < 0.05) rose 3.5% in café \
         samples — see Müller et al., 2019 [12]. 東京の研究者は結果を確認した。",
    );
    let markdown = format!("# Title\n\n{}\n\n## Part\n\n{}", prose(40), text);
    for (src, media) in [
        (&text, MediaType::PlainText),
        (&markdown, MediaType::Markdown),
    ] {
        let doc = load(src.as_bytes(), media, &Limits::default()).unwrap();
        let ours: Vec<(usize, String)> = chunker(64, 16)
            .chunk(&doc, media)
            .into_iter()
            .map(|c| (c.start, c.text))
            .collect();
        // Counted as the chunker counts: the whole text, no truncation.
        let config = || {
            let mut tok = tokenizer();
            tok.with_truncation(None).unwrap();
            tok.with_padding(None);
            ChunkConfig::new(64)
                .with_sizer(tok)
                .with_overlap(16)
                .unwrap()
        };
        let spans: Vec<(usize, &str)> = match media {
            MediaType::Markdown => MarkdownSplitter::new(config())
                .chunk_indices(&doc.text)
                .collect(),
            _ => TextSplitter::new(config())
                .chunk_indices(&doc.text)
                .collect(),
        };
        let reference: Vec<(usize, String)> = spans
            .into_iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(s, t)| (s, t.to_string()))
            .collect();
        assert!(reference.len() > 5, "{media:?}: {} chunks", reference.len());
        // The chunker leaves out heading lines the splitter cut alone (they ride in the next
        // chunk's heading path); every other chunk is the splitter's.
        let left_out: Vec<_> = reference.iter().filter(|r| !ours.contains(r)).collect();
        assert!(
            left_out
                .iter()
                .all(|(_, t)| t.starts_with('#') && !t.contains('\n')),
            "{media:?}: {left_out:?}"
        );
        let kept: Vec<(usize, String)> = reference
            .iter()
            .filter(|r| !left_out.contains(r))
            .cloned()
            .collect();
        assert_eq!(ours, kept, "{media:?}");
    }
}

/// A plain-text document that opens with a title line too long to share a chunk with the
/// text after it: the title is no chunk of its own (a title alone matches every question about
/// its subject, and all such chunks of one title tie), but every chunk is indexed under it.
#[test]
fn an_opening_title_line_is_indexed_with_every_chunk_not_alone() {
    let tok = tokenizer();
    let body = prose(40).replace("\n\n", "");
    let text = format!("Harbour ledger review\n\n{body}");
    let doc = load(text.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunker = chunker(64, 16);
    // Without the title rule the splitter's first chunk is the title alone.
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    assert_eq!(chunks[0].start, text.find("Sentence 0").unwrap());
    for c in &chunks {
        assert!(!c.text.contains("Harbour ledger"), "{:?}", c.text);
        assert_eq!(
            c.indexed_text,
            format!("Harbour ledger review\n\n{}", c.text)
        );
    }
    assert!(chunks.iter().any(|c| c.text.contains("Sentence 39 says")));

    // A title that fits with its text stays in the one chunk, as written.
    let short = "Harbour ledger review\n\nSentence 0 says the ledger balances.";
    let doc = load(short.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (chunks[0].text.as_str(), chunks[0].indexed_text.as_str()),
        (short, short)
    );

    // A document that is only a title line keeps it.
    let doc = load(
        b"Harbour ledger review",
        MediaType::PlainText,
        &Limits::default(),
    )
    .unwrap();
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, "Harbour ledger review");

    // An opening line over a quarter of the chunk size is text, not a title.
    let long_line = "Sentence 100 says the harbor protects the garden before the evening review \
                     and the river follows the ledger";
    let text = format!("{long_line}\n\n{body}");
    let doc = load(text.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunks = chunker.chunk(&doc, MediaType::PlainText);
    assert!(chunker.count_tokens(long_line) > 16);
    assert_eq!(chunks[0].text, long_line);
    assert!(chunks.iter().all(|c| c.indexed_text == c.text));
}

/// A Markdown heading the splitter cut alone is left out as a chunk when the next chunk is in
/// its section: that chunk's heading path already carries it.
#[test]
fn a_lone_markdown_heading_rides_in_the_next_chunks_path() {
    let tok = tokenizer();
    let body = prose(20).replace("\n\n", "");
    let src =
        format!("# Field Guide\n\n## Terns\n\n{body}\n\n## Gulls\n\n## Skuas\n\nSkuas steal fish.");
    let doc = load(src.as_bytes(), MediaType::Markdown, &Limits::default()).unwrap();
    let chunks = chunker(64, 8).chunk(&doc, MediaType::Markdown);
    assert_chunk_invariants(&doc, &chunks, &tok, 64);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    for heading in ["# Field Guide", "## Terns"] {
        assert!(!texts.contains(&heading), "{heading} alone in {texts:?}");
    }
    let first = &chunks[0];
    assert!(first.text.starts_with("Sentence 0"), "{:?}", first.text);
    assert!(
        first.indexed_text.starts_with("Field Guide > Terns\n\n"),
        "{:?}",
        first.indexed_text
    );
    // "Gulls" has no text of its own: the next chunk's path is "Field Guide > Skuas", so the
    // heading stays searchable only as its own chunk, or in a chunk with "## Skuas".
    assert!(
        chunks.iter().any(|c| c.text.contains("## Gulls")),
        "{texts:?}"
    );
}
