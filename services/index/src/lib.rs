//! quire-index: the stores behind quire and hybrid retrieval over them.
//!
//! # Architecture
//!
//! A data directory holds three things:
//!
//! - `catalog.redb`: the [`Catalog`] (redb), the source of truth for which
//!   collections exist and which chunks each document version owns;
//! - `vectors/<collection>/`: dense vectors in a [`VectorStore`]
//!   ([`EmbeddedVectorStore`] on qdrant-edge; a Qdrant server can stand in);
//! - `lexical/<collection>/`: a Tantivy [`LexicalIndex`] with the chunk text for BM25
//!   and the stored fields returned with every hit.
//!
//! [`Index`] keeps the two stores consistent through the catalog. A document write
//! records the new version as `Writing` (with the version it replaces), writes both
//! stores, commits both, then marks the version `Committed`. Retrieval only returns
//! chunks that the catalog says are visible, so a reader never sees a document
//! half-written or twice. [`Index::open`] rolls back `Writing` documents and finishes
//! `Deleting` ones left by a crash.
//!
//! Chunk ids are UUIDv5 of (collection, document id, ordinal, content hash) — see
//! [`chunk_id`] — so a retried write is an idempotent upsert.

pub mod catalog;
mod error;
mod index;
pub mod lexical;
pub mod metadata;
pub mod remote;
pub mod vector;

pub use catalog::{Catalog, CollectionRecord, DocRecord, DocState};
pub use error::{Error, Result};
pub use index::Index;
pub use lexical::{ENGLISH_ANALYZER, LexicalChunk, LexicalIndex, english_analyzer};
pub use metadata::{MetaCondition, MetaValue, Metadata};
pub use remote::{RemoteOptions, RemoteVectorStore};
pub use vector::{DOCUMENT_ID_KEY, EmbeddedVectorStore, VectorPoint, VectorStore};

use uuid::Uuid;

/// Namespace of chunk ids (a fixed, random UUID; changing it changes every chunk id).
const CHUNK_NAMESPACE: Uuid = Uuid::from_u128(0x6b2f_5f3e_8d0c_4c1e_9a57_3f1d_2c44_b7a1);

/// Deterministic id of a chunk: UUIDv5 over the length-prefixed collection, document id,
/// ordinal and revision (the content hash, plus the metadata when there is any, see
/// [`revision`]). The same inputs always give the same id; different inputs cannot collide
/// by concatenation.
pub fn chunk_id(collection: &str, document_id: &str, ordinal: u32, revision: &str) -> Uuid {
    let name = format!(
        "{}:{collection}|{}:{document_id}|{ordinal}|{}:{revision}",
        collection.len(),
        document_id.len(),
        revision.len()
    );
    Uuid::new_v5(&CHUNK_NAMESPACE, name.as_bytes())
}

/// What a document version's chunk ids derive from: everything that changes its chunks or
/// their payloads (content hash, media type, title, and metadata when it has any), so that a
/// new version writes new chunks rather than rewriting visible ones in place.
pub fn revision(
    content_hash: &str,
    media_type: &str,
    title: Option<&str>,
    metadata: &Metadata,
) -> String {
    // Lengths first, so no two different inputs join to the same string.
    let title = title.unwrap_or_default();
    let mut rev = format!(
        "{content_hash}|{}:{media_type}|{}:{title}",
        media_type.len(),
        title.len()
    );
    if !metadata.is_empty() {
        rev.push('|');
        rev.push_str(&metadata::to_json(metadata).to_string());
    }
    rev
}

/// True for 1 to `max` bytes of `[A-Za-z0-9_-]`: collection names and metadata keys.
pub(crate) fn is_plain_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a collection is created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSpec {
    pub embedding_model: String,
    pub dimension: u32,
}

impl CollectionSpec {
    /// `Ok` when `info` was made for this model and dimension, else [`Error::ModelMismatch`].
    pub fn check(&self, info: &CollectionInfo) -> Result<()> {
        self.check_made_for(&info.name, &info.embedding_model, info.dimension)
    }

    /// `Ok` when `collection`, made for `model` and `dimension`, fits this spec.
    pub(crate) fn check_made_for(
        &self,
        collection: &str,
        model: &str,
        dimension: u32,
    ) -> Result<()> {
        if model == self.embedding_model && dimension == self.dimension {
            return Ok(());
        }
        Err(Error::ModelMismatch {
            collection: collection.to_string(),
            existing_model: model.to_string(),
            existing_dimension: dimension,
            requested_model: self.embedding_model.clone(),
            requested_dimension: self.dimension,
        })
    }
}

/// A collection and its current size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    pub name: String,
    pub embedding_model: String,
    pub dimension: u32,
    /// Documents with a visible (committed) version.
    pub document_count: u64,
    /// Chunks of those versions.
    pub chunk_count: u64,
    pub created_at_unix: i64,
}

/// The result of [`Index::check`]: a collection's catalog compared with both stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionCheck {
    pub collection: String,
    /// Committed documents.
    pub documents: u64,
    /// Sum of their chunk counts, per the catalog.
    pub catalog_chunks: u64,
    /// Points in the vector store.
    pub vector_points: u64,
    /// Chunks in the lexical index.
    pub lexical_chunks: u64,
    /// Documents whose chunk count is wrong in a store: (id, expected, vector, lexical).
    pub mismatched: Vec<(String, u64, u64, u64)>,
    /// Documents with interrupted work (writing, deleting, garbage) awaiting recovery.
    pub pending: u64,
}

impl CollectionCheck {
    /// True when both stores hold exactly the committed documents' chunks: no document
    /// missing chunks, no duplicates, no orphans, nothing pending.
    pub fn is_consistent(&self) -> bool {
        self.mismatched.is_empty()
            && self.pending == 0
            && self.vector_points == self.catalog_chunks
            && self.lexical_chunks == self.catalog_chunks
    }
}

/// One chunk of a document to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    /// Position in the document; unique within it.
    pub ordinal: u32,
    pub page: Option<u32>,
    /// Byte span of `text` in the document's extracted text.
    pub start: u64,
    pub end: u64,
    /// Text returned with hits and quoted in citations.
    pub text: String,
    /// Text scored by BM25 (for example the text with its heading).
    pub indexed_text: String,
    /// Embedding; its length must equal the collection's dimension.
    pub vector: Vec<f32>,
}

/// A document to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub id: String,
    pub content_hash: String,
    pub media_type: String,
    pub title: Option<String>,
    pub bytes: u64,
    /// Stored with the document and every chunk; filters test it.
    pub metadata: Metadata,
}

/// A document's committed version as recorded in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInfo {
    pub id: String,
    pub content_hash: String,
    pub media_type: String,
    pub title: Option<String>,
    pub version: u64,
    pub chunk_count: u32,
    pub bytes: u64,
    pub updated_at_unix: i64,
    pub metadata: Metadata,
}

/// Result of [`Index::put_document`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The document did not exist.
    Created { version: u64, chunks: u32 },
    /// A version with another content hash was replaced.
    Replaced { version: u64, chunks: u32 },
    /// The committed version has the same content hash; nothing was written.
    Unchanged { version: u64, chunks: u32 },
}

/// A chunk as stored, returned with hits.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub id: Uuid,
    pub document_id: String,
    pub ordinal: u32,
    pub page: Option<u32>,
    pub start: u64,
    pub end: u64,
    pub text: String,
    /// The document's metadata.
    pub metadata: Metadata,
}

/// One fused retrieval result. Ranks are 1-based; a retriever that did not return the
/// chunk leaves its score and rank `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk: StoredChunk,
    /// Cosine similarity.
    pub dense_score: Option<f32>,
    pub dense_rank: Option<u32>,
    pub bm25_score: Option<f32>,
    pub bm25_rank: Option<u32>,
    pub fused_score: f32,
    /// The LLM's relevance log-odds, when the engine's rerank stage judged this hit; hits it
    /// judged come first, ordered by it.
    pub rerank_score: Option<f32>,
}

/// Restricts retrieval; the same filter applies to both retrievers. A chunk passes when
/// every part passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only chunks of these documents; empty means all documents.
    pub document_ids: Vec<String>,
    /// Conditions on the document's metadata, all of which must hold.
    pub metadata: Vec<MetaCondition>,
}

impl Filter {
    /// True when the filter restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.document_ids.is_empty() && self.metadata.is_empty()
    }
}

/// How dense and BM25 rankings are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Fusion {
    /// Reciprocal rank fusion: `score = Σ 1 / (k + rank)` over the retrievers, rank 1-based.
    Rrf { k: f32 },
    /// A convex combination of normalised scores:
    /// `dense_weight · dense' + (1 − dense_weight) · bm25'`. Each retriever's scores are
    /// scaled to [0, 1] by dividing by its best candidate's score (theoretical minimum 0,
    /// observed maximum; a negative cosine counts as 0); a chunk absent from one list
    /// scores 0 there.
    Weighted { dense_weight: f32 },
    /// The dense ranking alone (cosine similarity); BM25 is not run.
    Dense,
    /// The BM25 ranking alone; the dense search is not run.
    Bm25,
}

impl Fusion {
    /// Whether the dense retriever contributes.
    pub fn uses_dense(&self) -> bool {
        !matches!(self, Fusion::Bm25)
    }

    /// Whether BM25 contributes.
    pub fn uses_bm25(&self) -> bool {
        !matches!(self, Fusion::Dense)
    }
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Rrf { k: 60.0 }
    }
}

/// Retrieval parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveParams {
    /// Number of fused hits returned.
    pub top_k: usize,
    /// Candidates taken from each retriever before fusion; raised to `top_k` if smaller.
    pub candidates: usize,
    pub fusion: Fusion,
}

impl Default for RetrieveParams {
    fn default() -> Self {
        Self {
            top_k: 10,
            candidates: 50,
            fusion: Fusion::default(),
        }
    }
}
