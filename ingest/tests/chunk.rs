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
    let doc = load(text.as_bytes(), MediaType::PlainText, &Limits::default()).unwrap();
    let chunks = chunker(50, 10).chunk(&doc, MediaType::PlainText);
    assert_chunk_invariants(&doc, &chunks, &tok, 50);
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
        assert_eq!(ours, reference, "{media:?}");
    }
}
