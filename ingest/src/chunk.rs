//! Splitting a document into chunks sized in embedding-model tokens.

use std::sync::Arc;

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use crate::{Document, Error, HeadingPath, MediaType};

/// Chunk size and overlap, in tokens of the embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Most tokens in a chunk (no special tokens counted). Default 200.
    pub max_tokens: usize,
    /// Tokens shared by consecutive chunks, when the text allows. Default 32.
    pub overlap_tokens: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            max_tokens: 200,
            overlap_tokens: 32,
        }
    }
}

/// One piece of a document, ready to embed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document's chunk sequence, from 0.
    pub ordinal: u32,
    /// Exactly `doc.text[start..end]`.
    pub text: String,
    /// What to embed and index: for Markdown and HTML the heading path
    /// (`"A > B\n\n"`) followed by `text`; for plain text and PDFs whose
    /// opening line was taken as their title (see [`Chunker::chunk`]), that
    /// title and a blank line followed by `text`; otherwise equal to `text`.
    pub indexed_text: String,
    /// Byte range in the document's text.
    pub start: usize,
    pub end: usize,
    /// Page on which the chunk starts (PDFs only).
    pub page: Option<u32>,
}

/// Counts tokens without special tokens, truncation or padding; shared by
/// both splitters so the tokenizer is held once.
#[derive(Clone)]
struct TokenCounter(Arc<Tokenizer>);

/// A piece counts as at least one token per this many bytes of text other than whitespace.
/// The tokenizer maps a word of over 100 characters to one [UNK] token, so a run of letters
/// with no break would otherwise fit any number of bytes in one chunk (and in the LLM's
/// context and the BM25 index). Prose, at 3 to 6 bytes a token, never reaches it, and
/// whitespace, which has no tokens, is not counted, so chunk boundaries in prose are the
/// tokenizer's alone.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

/// `tokens`, or more for a piece of more than [`MAX_BYTES_PER_TOKEN`] bytes per token.
fn bounded(tokens: usize, chunk: &str) -> usize {
    let text = chunk.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    tokens.max(text / MAX_BYTES_PER_TOKEN)
}

impl ChunkSizer for TokenCounter {
    fn size(&self, chunk: &str) -> usize {
        match self.0.encode_fast(chunk, false) {
            Ok(encoding) => bounded(encoding.len(), chunk),
            // Never panic on text the tokenizer rejects: bytes bound the token
            // count of any tokenizer with at least one byte per token.
            Err(_) => chunk.len(),
        }
    }
}

/// Token counts of pieces of one document from a single tokenization of the whole text: a
/// piece's count is the number of the document's tokens that overlap its byte range.
/// text-splitter sizes many overlapping candidates for every chunk it makes; tokenizing each
/// candidate again took about 7% of the ingest pipeline's time. A piece that is not a slice
/// of the document is tokenized on its own.
struct DocTokens {
    /// Address and length of the document's text.
    base: usize,
    len: usize,
    /// Byte offsets of the document's tokens; both ascend.
    starts: Vec<usize>,
    ends: Vec<usize>,
    fallback: TokenCounter,
}

impl DocTokens {
    /// Longest token span (bytes) for which counting by overlap matches tokenizing a piece:
    /// a longer span is a word the tokenizer maps to one [UNK] whole, while any piece of it
    /// alone would give several tokens.
    const MAX_SPAN: usize = 64;
    /// Documents above this size are counted piece by piece (bounded memory).
    const MAX_BYTES: usize = 4 << 20;

    /// `None` when the document is too large, fails to tokenize, or holds a token spanning
    /// more than [`Self::MAX_SPAN`] bytes: then pieces are tokenized one by one.
    fn new(counter: &TokenCounter, text: &str) -> Option<DocTokens> {
        if text.len() > Self::MAX_BYTES {
            return None;
        }
        let encoding = counter.0.encode(text, false).ok()?;
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for &(start, end) in encoding.get_offsets() {
            if end.saturating_sub(start) > Self::MAX_SPAN
                || starts.last().is_some_and(|&s| start < s)
                || ends.last().is_some_and(|&e| end < e)
            {
                return None;
            }
            starts.push(start);
            ends.push(end);
        }
        Some(DocTokens {
            base: text.as_ptr() as usize,
            len: text.len(),
            starts,
            ends,
            fallback: counter.clone(),
        })
    }
}

impl ChunkSizer for DocTokens {
    fn size(&self, chunk: &str) -> usize {
        let at = (chunk.as_ptr() as usize).wrapping_sub(self.base);
        if at > self.len || chunk.len() > self.len - at {
            return self.fallback.size(chunk);
        }
        let end = at + chunk.len();
        // Tokens ending after the piece starts, minus those starting at or after its end.
        let before = self.ends.partition_point(|&e| e <= at);
        let upto = self.starts.partition_point(|&s| s < end);
        bounded(upto.saturating_sub(before), chunk)
    }
}

/// Splits documents into overlapping, token-bounded chunks.
///
/// Safe to share between threads; splitting takes `&self`.
pub struct Chunker {
    config: ChunkerConfig,
    counter: TokenCounter,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Builds a chunker counting tokens with `tokenizer` (its truncation and
    /// padding are switched off so that counts reflect the whole text).
    ///
    /// Errors with [`Error::InvalidConfig`] when `max_tokens` is 0 or
    /// `overlap_tokens >= max_tokens`.
    pub fn new(mut tokenizer: Tokenizer, config: ChunkerConfig) -> Result<Chunker, Error> {
        if config.max_tokens == 0 {
            return Err(Error::InvalidConfig(
                "max_tokens must be at least 1".to_owned(),
            ));
        }
        if config.overlap_tokens >= config.max_tokens {
            return Err(Error::InvalidConfig(format!(
                "overlap_tokens ({}) must be less than max_tokens ({})",
                config.overlap_tokens, config.max_tokens
            )));
        }
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::InvalidConfig(format!("cannot disable truncation: {e}")))?;
        tokenizer.with_padding(None);
        let counter = TokenCounter(Arc::new(tokenizer));
        // Checked once here, so that `chunk` cannot fail on the configuration.
        ChunkConfig::new(config.max_tokens)
            .with_overlap(config.overlap_tokens)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(Chunker { config, counter })
    }

    /// The document's chunk spans, sized with `sizer`.
    fn spans<'t, S: ChunkSizer>(
        &self,
        text: &'t str,
        media: MediaType,
        sizer: S,
    ) -> Vec<(usize, &'t str)> {
        let Ok(config) = ChunkConfig::new(self.config.max_tokens)
            .with_sizer(sizer)
            .with_overlap(self.config.overlap_tokens)
        else {
            // Unreachable: `new` checked the same configuration.
            return vec![(0, text)];
        };
        match media {
            MediaType::Markdown => MarkdownSplitter::new(config).chunk_indices(text).collect(),
            _ => TextSplitter::new(config).chunk_indices(text).collect(),
        }
    }

    /// The configuration this chunker was built with.
    pub fn config(&self) -> ChunkerConfig {
        self.config
    }

    /// Splits `doc` into chunks in text order, numbered from 0.
    ///
    /// Guarantees: each chunk's `text` is `doc.text[start..end]`, is not
    /// whitespace-only, has no leading or trailing whitespace, and holds at
    /// most `max_tokens` tokens unless a single grapheme alone exceeds that.
    /// Markdown is split along its structure; other media as prose.
    ///
    /// Every non-blank part of the text is in some chunk's `text`, except a
    /// piece the splitter would have made a chunk of its own while it holds
    /// only a heading: such a piece is searched through the `indexed_text` of
    /// the chunks after it instead. That is a plain-text or PDF document's
    /// opening line of at most `max_tokens / 4` tokens ([`Chunk::indexed_text`]),
    /// and a Markdown or HTML heading line whose heading is in the next chunk's
    /// heading path. A document that is only such a piece keeps it as its chunk.
    pub fn chunk(&self, doc: &Document, media: MediaType) -> Vec<Chunk> {
        let spans = match DocTokens::new(&self.counter, &doc.text) {
            Some(sizer) => self.spans(&doc.text, media, sizer),
            None => self.spans(&doc.text, media, self.counter.clone()),
        };
        let mut spans: Vec<(usize, &str)> = spans
            .into_iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .collect();
        let with_headings = matches!(media, MediaType::Markdown | MediaType::Html);
        // The heading path at each span's start (Markdown and HTML only).
        let mut paths: Vec<HeadingPath> = Vec::new();
        if with_headings {
            let mut path = HeadingPath::default();
            let mut last_start = 0usize;
            for &(start, _) in &spans {
                if start < last_start {
                    path = HeadingPath::default();
                }
                last_start = start;
                path.advance(&doc.headings, start);
                paths.push(path.clone());
            }
            let heading_only = |i: usize| {
                let (start, text) = spans[i];
                // `Document::headings` is in text order.
                let heading = doc.headings.binary_search_by_key(&start, |h| h.start).ok();
                is_one_line(text)
                    && heading.is_some_and(|h| paths.get(i + 1).is_some_and(|p| p.holds(h)))
            };
            let keep: Vec<bool> = (0..spans.len()).map(|i| !heading_only(i)).collect();
            (spans, paths) = spans
                .into_iter()
                .zip(paths)
                .zip(keep)
                .filter_map(|(pair, keep)| keep.then_some(pair))
                .unzip();
        }
        let title = match spans.as_slice() {
            [(_, first), _, ..]
                if !with_headings
                    && is_one_line(first)
                    && self.counter.size(first) <= self.config.max_tokens / 4 =>
            {
                let title = first.trim();
                spans.remove(0);
                Some(title)
            }
            _ => None,
        };
        let mut chunks = Vec::with_capacity(spans.len());
        for (i, (start, text)) in spans.into_iter().enumerate() {
            let context = match (title, paths.get(i)) {
                (Some(t), _) => Some(t.to_owned()),
                (None, Some(path)) => path.render(&doc.headings),
                (None, None) => None,
            };
            let indexed_text = match context {
                Some(c) => format!("{c}\n\n{text}"),
                None => text.to_owned(),
            };
            chunks.push(Chunk {
                ordinal: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
                text: text.to_owned(),
                indexed_text,
                start,
                end: start + text.len(),
                page: doc.page_at(start),
            });
        }
        chunks
    }

    /// Number of tokens in `text` as the chunker counts them (no special tokens).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter.size(text)
    }
}

/// Whether `text` holds no line break once trimmed.
fn is_one_line(text: &str) -> bool {
    !text.trim().contains('\n')
}
