//! BM25 retrieval over chunk text with Tantivy: one index per collection.
//!
//! Writes (`add_chunks`, `delete_*`) are buffered in the writer and become
//! visible to searches, and durable, only after [`LexicalIndex::commit`] returns.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index as TantivyIndex, IndexReader, IndexWriter, ReloadPolicy, Searcher,
    TantivyDocument, Term,
};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metadata::{self, TermMatch};
use crate::{Filter, StoredChunk};

/// Name under which the English stemming analyzer is registered.
pub const ENGLISH_ANALYZER: &str = "quire_en_stem";

/// Tokens longer than this (in bytes) are dropped, as Tantivy's default analyzer does.
const MAX_TOKEN_LEN: usize = 40;

/// Indexing memory budget of the single writer thread.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

fn lex_err(e: impl std::fmt::Display) -> Error {
    Error::Lexical(e.to_string())
}

/// The analyzer used for `indexed_text` and for queries: simple tokenizer,
/// long-token removal, lowercasing, English Snowball stemming.
pub fn english_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

#[derive(Clone, Copy)]
struct Fields {
    chunk_id: Field,
    document_id: Field,
    ordinal: Field,
    page: Field,
    start: Field,
    end: Field,
    text: Field,
    indexed_text: Field,
    /// Exact metadata terms (see [`metadata::index_terms`]), for filters.
    meta: Field,
    /// The metadata as JSON, returned with hits.
    meta_json: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ENGLISH_ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        document_id: b.add_text_field("document_id", STRING | STORED),
        ordinal: b.add_u64_field("ordinal", STORED),
        page: b.add_u64_field("page", STORED),
        start: b.add_u64_field("start", STORED),
        end: b.add_u64_field("end", STORED),
        text: b.add_text_field("text", STORED),
        indexed_text: b.add_text_field("indexed_text", indexed),
        meta: b.add_text_field("meta", STRING),
        meta_json: b.add_text_field("meta_json", STORED),
    };
    (b.build(), fields)
}

/// A chunk as written to the lexical index.
#[derive(Debug, Clone)]
pub struct LexicalChunk {
    /// Stored fields, returned with hits; `chunk.text` is quoted in citations.
    pub chunk: StoredChunk,
    /// The text that is analysed and scored by BM25 (may add a heading path, etc.).
    pub indexed_text: String,
}

/// One collection's Tantivy index at `<data_dir>/lexical/<collection>`.
pub struct LexicalIndex {
    path: PathBuf,
    fields: Fields,
    index: TantivyIndex,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
}

impl LexicalIndex {
    /// Opens the index in `path`, creating the directory and an empty index if needed.
    /// Holds Tantivy's writer lock on the directory until dropped.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let (schema, fields) = schema();
        let dir = tantivy::directory::MmapDirectory::open(path).map_err(lex_err)?;
        let index = TantivyIndex::open_or_create(dir, schema).map_err(lex_err)?;
        index
            .tokenizers()
            .register(ENGLISH_ANALYZER, english_analyzer());
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(lex_err)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(lex_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            fields,
            index,
            reader,
            writer: Mutex::new(writer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::Lexical("writer lock poisoned".into()))?;
        f(&mut guard)
    }

    /// Buffers the chunks for indexing, each replacing any stored chunk with its id (Tantivy
    /// has no primary key: a chunk written again, as when a document goes back to an earlier
    /// version whose chunks were not yet collected, would otherwise be indexed twice). Visible
    /// after [`commit`](Self::commit).
    pub fn add_chunks(&self, chunks: &[LexicalChunk]) -> Result<()> {
        let f = self.fields;
        self.with_writer(|w| {
            for LexicalChunk {
                chunk: c,
                indexed_text,
            } in chunks
            {
                // A delete applies to documents added before it, so the add below survives.
                w.delete_term(Term::from_field_text(f.chunk_id, &c.id.to_string()));
                let mut doc = TantivyDocument::default();
                doc.add_text(f.chunk_id, c.id.to_string());
                doc.add_text(f.document_id, &c.document_id);
                doc.add_u64(f.ordinal, u64::from(c.ordinal));
                if let Some(p) = c.page {
                    doc.add_u64(f.page, u64::from(p));
                }
                doc.add_u64(f.start, c.start);
                doc.add_u64(f.end, c.end);
                doc.add_text(f.text, &c.text);
                doc.add_text(f.indexed_text, indexed_text);
                if !c.metadata.is_empty() {
                    for term in metadata::index_terms(&c.metadata) {
                        doc.add_text(f.meta, term);
                    }
                    doc.add_text(f.meta_json, metadata::to_json(&c.metadata).to_string());
                }
                w.add_document(doc).map_err(lex_err)?;
            }
            Ok(())
        })
    }

    /// Buffers deletion of the given chunks; effective after [`commit`](Self::commit).
    pub fn delete_chunks(&self, ids: &[Uuid]) -> Result<()> {
        let field = self.fields.chunk_id;
        self.with_writer(|w| {
            for id in ids {
                w.delete_term(Term::from_field_text(field, &id.to_string()));
            }
            Ok(())
        })
    }

    /// Buffers deletion of every chunk of a document; effective after [`commit`](Self::commit).
    pub fn delete_document(&self, document_id: &str) -> Result<()> {
        let field = self.fields.document_id;
        self.with_writer(|w| {
            w.delete_term(Term::from_field_text(field, document_id));
            Ok(())
        })
    }

    /// Commits buffered writes (fsync'd by Tantivy) and reloads the reader, so that
    /// everything written before the call is durable and searchable when it returns.
    pub fn commit(&self) -> Result<()> {
        self.with_writer(|w| w.commit().map(|_| ()).map_err(lex_err))?;
        self.reader.reload().map_err(lex_err)
    }

    /// Drops buffered, uncommitted writes.
    pub fn rollback(&self) -> Result<()> {
        self.with_writer(|w| w.rollback().map(|_| ()).map_err(lex_err))
    }

    /// Number of committed chunks, overall or for one document.
    pub fn count(&self, document_id: Option<&str>) -> Result<u64> {
        let searcher = self.reader.searcher();
        match document_id {
            None => Ok(searcher.num_docs()),
            Some(id) => {
                let q = TermQuery::new(
                    Term::from_field_text(self.fields.document_id, id),
                    IndexRecordOption::Basic,
                );
                searcher
                    .search(&q, &Count)
                    .map(|n| n as u64)
                    .map_err(lex_err)
            }
        }
    }

    /// The analyzed query terms (deduplicated, in order of first appearance).
    fn query_terms(&self, text: &str) -> Vec<Term> {
        let mut analyzer = english_analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if seen.insert(t.clone()) {
                terms.push(Term::from_field_text(self.fields.indexed_text, &t));
            }
        }
        terms
    }

    /// BM25 top-`limit` chunks for `query_text` among committed chunks passing `filter`,
    /// best first. Any string is accepted: the text is analysed into terms that form an
    /// OR query, so no query syntax can fail. Text without terms returns nothing.
    pub fn search(
        &self,
        query_text: &str,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<(StoredChunk, f32)>> {
        let terms = self.query_terms(query_text);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(
            terms
                .into_iter()
                .map(|t| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs));
                    (Occur::Should, q)
                })
                .collect(),
        ));
        let query: Box<dyn Query> = match self.filter_query(filter) {
            None => text_query,
            // A zero-score required clause restricts the hits without changing BM25 scores.
            Some(restrict) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text_query),
                (Occur::Must, Box::new(ConstScoreQuery::new(restrict, 0.0))),
            ])),
        };
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(lex_err)?;
        top.into_iter()
            .map(|(score, addr)| Ok((self.load(&searcher, addr)?, score)))
            .collect()
    }

    /// A query matching exactly the chunks that pass `filter`; `None` when it restricts nothing.
    fn filter_query(&self, filter: &Filter) -> Option<Box<dyn Query>> {
        let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !filter.document_ids.is_empty() {
            let ids = TermSetQuery::new(
                filter
                    .document_ids
                    .iter()
                    .map(|id| Term::from_field_text(self.fields.document_id, id)),
            );
            parts.push((Occur::Must, Box::new(ids)));
        }
        let field = self.fields.meta;
        let term = |t: &String| Term::from_field_text(field, t);
        for condition in &filter.metadata {
            let q: Box<dyn Query> = match metadata::term_match(condition) {
                TermMatch::Any(terms) => Box::new(TermSetQuery::new(terms.iter().map(term))),
                TermMatch::Range(lo, hi) => Box::new(RangeQuery::new(
                    lo.as_ref().map(term),
                    hi.as_ref().map(term),
                )),
            };
            parts.push((Occur::Must, q));
        }
        match parts.len() {
            0 => None,
            1 => parts.pop().map(|(_, q)| q),
            _ => Some(Box::new(BooleanQuery::new(parts))),
        }
    }

    /// The committed chunks with these ids, in no particular order; unknown ids are skipped.
    pub fn chunks(&self, ids: &[Uuid]) -> Result<Vec<StoredChunk>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = TermSetQuery::new(
            ids.iter()
                .map(|id| Term::from_field_text(self.fields.chunk_id, &id.to_string())),
        );
        let searcher = self.reader.searcher();
        let addrs = searcher.search(&q, &DocSetCollector).map_err(lex_err)?;
        addrs
            .into_iter()
            .map(|addr| self.load(&searcher, addr))
            .collect()
    }

    fn load(&self, searcher: &Searcher, addr: DocAddress) -> Result<StoredChunk> {
        let f = self.fields;
        let doc: TantivyDocument = searcher.doc(addr).map_err(lex_err)?;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num = |field: Field| doc.get_first(field).and_then(|v| v.as_u64());
        let id = text(f.chunk_id)
            .and_then(|s| Uuid::parse_str(&s).ok())
            .ok_or_else(|| Error::Lexical("stored chunk without a valid chunk_id".into()))?;
        Ok(StoredChunk {
            id,
            document_id: text(f.document_id).unwrap_or_default(),
            ordinal: num(f.ordinal)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default(),
            page: num(f.page).and_then(|n| u32::try_from(n).ok()),
            start: num(f.start).unwrap_or_default(),
            end: num(f.end).unwrap_or_default(),
            text: text(f.text).unwrap_or_default(),
            metadata: text(f.meta_json)
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default(),
        })
    }

    /// The underlying Tantivy index (read-only use, e.g. statistics).
    pub fn tantivy(&self) -> &TantivyIndex {
        &self.index
    }
}
