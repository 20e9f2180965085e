//! quire's core: the ingest and query pipelines that every transport shares.
//!
//! [`Engine`] owns the models and the stores. The gRPC layer only decodes requests, calls
//! these methods and maps [`Error`] to status codes.
//!
//! * Ingest: load → chunk → embed → write both stores → commit (see [`Engine::ingest`]).
//! * Query: embed the question → dense ‖ BM25 under one filter → RRF ([`Engine::retrieve`]),
//!   then prompt the LLM with numbered sources and check the `[n]` citations ([`Engine::ask`]).

pub mod citations;
mod config;
mod error;
pub mod packing;
pub mod pdf_worker;
pub mod prompt;
pub mod support;
mod telemetry;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use quire_index::{
    CollectionInfo, CollectionSpec, DocumentInfo, Fusion, Hit, Index, NewChunk, NewDocument,
    PutOutcome, RemoteOptions, RemoteVectorStore, RetrieveParams,
};
pub use quire_index::{Filter, MetaCondition, MetaValue, Metadata};
use quire_ingest::{Chunker, ChunkerConfig, Limits, MediaType};
use quire_models::{Embedder, GenerationParams, Generator, LlmChoice, ReplyProbe, StopReason};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, info};

pub use config::{EngineConfig, RetrievalMode};
pub use error::{Error, ErrorKind, Result};

/// Collection used when a request names none.
pub const DEFAULT_COLLECTION: &str = "default";
/// Most sources `Ask` gives the model.
pub const MAX_ASK_SOURCES: usize = 20;

/// Longest query or question accepted, in bytes: far above any question, and well inside the
/// smallest model context with room for sources.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
const MAX_DOCUMENT_ID_BYTES: usize = 512;

/// A document as received from a client.
#[derive(Debug, Clone)]
pub struct IncomingDocument {
    /// Caller-chosen id, unique within the collection.
    pub id: String,
    /// Media type as sent, e.g. `application/pdf`.
    pub media_type: String,
    /// The document's bytes.
    pub content: Vec<u8>,
    /// Title to store; `None` uses the one found in the document.
    pub title: Option<String>,
    /// Stored with the document and every chunk; filters test it.
    pub metadata: Metadata,
}

/// What ingesting one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStatus {
    /// A new document was written.
    Created,
    /// An existing document with other content was replaced.
    Replaced,
    /// The stored version has the same content hash; nothing was written.
    Unchanged,
}

/// The result of a successful [`Engine::ingest`].
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    /// What happened.
    pub status: IngestStatus,
    /// Stored version after the call.
    pub version: u64,
    /// Chunks stored for the document.
    pub chunks: u32,
    /// SHA-256 of the bytes, lower-case hex.
    pub content_hash: String,
    /// How a text document was decoded (`utf-8`, `utf-16le`, `utf-16be`, `latin-1`, or a
    /// declared encoding's WHATWG name such as `windows-1251`);
    /// `None` for PDFs and for unchanged documents, which are not decoded.
    pub text_encoding: Option<&'static str>,
    /// Where the time went (zero for stages an unchanged document skipped).
    pub timings: StageTimings,
}

/// Time one ingest spent in each stage, and the tokens it embedded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// Waiting for an ingest slot (`ingest_workers`).
    pub queue: Duration,
    /// Decoding the bytes into text (PDF extraction, HTML parsing, ...).
    pub parse: Duration,
    /// Splitting into chunks.
    pub chunk: Duration,
    /// Embedding the chunks.
    pub embed: Duration,
    /// Writing both stores and the catalog, durably.
    pub write: Duration,
    /// Tokens the embedder ran over for this document (all chunks, after truncation).
    pub embedded_tokens: u64,
}

impl std::ops::AddAssign for StageTimings {
    /// Sums every stage time and the token count.
    fn add_assign(&mut self, o: StageTimings) {
        self.queue += o.queue;
        self.parse += o.parse;
        self.chunk += o.chunk;
        self.embed += o.embed;
        self.write += o.write;
        self.embedded_tokens += o.embedded_tokens;
    }
}

/// The result of [`Engine::delete_documents`].
#[derive(Debug, Clone, Default)]
pub struct DeleteOutcome {
    /// Ids that existed and were removed from both stores.
    pub deleted: Vec<String>,
    /// Ids that did not exist.
    pub not_found: Vec<String>,
}

/// A retrieval request.
#[derive(Debug, Clone, Default)]
pub struct RetrieveQuery {
    /// Collection; empty means [`DEFAULT_COLLECTION`].
    pub collection: String,
    /// Query text; must not be blank.
    pub query: String,
    /// Hits wanted; 0 means the configured default.
    pub top_k: usize,
    /// Restriction applied to both retrievers.
    pub filter: Filter,
    /// Retrievers and fusion; `None` means the configured default.
    pub mode: Option<RetrievalMode>,
    /// RRF constant; `None` means the configured default.
    pub rrf_k: Option<f32>,
    /// Dense weight of weighted fusion; `None` means the configured default.
    pub dense_weight: Option<f32>,
    /// Fused hits the LLM reranks; `None` means the configured default, 0 none.
    pub rerank_depth: Option<usize>,
}

/// A question for [`Engine::ask`].
#[derive(Debug, Clone, Default)]
pub struct AskQuery {
    /// Collection; empty means [`DEFAULT_COLLECTION`].
    pub collection: String,
    /// The question; must not be blank.
    pub question: String,
    /// Sources to give the model; 0 means the configured default.
    pub top_k: usize,
    /// Restriction applied to retrieval.
    pub filter: Filter,
    /// Most tokens to generate; `None` means the configured default.
    pub max_tokens: Option<usize>,
    /// Sampling temperature; `None` means greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    /// Sampling seed; `None` means a fixed default, so answers are reproducible.
    pub seed: Option<u64>,
}

/// Where a citation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitationOrigin {
    /// The model wrote the `[n]` marker, and `n` names a source it was given.
    Model,
    /// quire attributed an answer sentence to the source that states most of its content
    /// words (see [`support`]), because no source the model marked it with states it. The text
    /// holds no marker for it.
    Support,
}

/// A checked citation: a source the model was given, and why it is cited.
#[derive(Debug, Clone)]
pub struct Citation {
    /// The source's number `n`; indexes [`Answer::sources`] from 1.
    pub source: usize,
    /// The cited chunk, as retrieved.
    pub hit: Hit,
    /// Who made the link.
    pub origin: CitationOrigin,
}

/// Share of an answer sentence's content words a source must contain to be cited by support.
pub const MIN_SUPPORT: f32 = 0.6;

/// The result of [`Engine::ask`].
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The model's answer, markers included; empty when abstained before generation.
    pub text: String,
    /// Valid citations in order of first appearance.
    pub citations: Vec<Citation>,
    /// Each answer sentence and whether a source it cites states it; empty when abstained
    /// before generation or when the model found no answer.
    pub sentences: Vec<support::SentenceSupport>,
    /// Why quire declined to answer, if it did.
    pub abstained: Option<String>,
    /// The best dense similarity among the retrieved candidates, before the relevance gate
    /// (what `min_relevance` is compared with); `None` when nothing was retrieved.
    pub best_similarity: Option<f32>,
    /// The model's probability, after reading the prompt, of replying exactly
    /// [`prompt::NOT_FOUND_REPLY`] (what `abstain_probability` is compared with); `None` when
    /// the model was not asked or cannot be probed.
    pub no_answer_probability: Option<f32>,
    /// The log-odds of the model judging, when shown the source sentence that states the
    /// answer ([`prompt::verify_messages`]), that it answers the question (what
    /// `min_verification` is compared with); `None` when the check did not run.
    pub verification_log_odds: Option<f32>,
    /// The evidence the answer check read, one text per view of it (the sentences alone, with
    /// the sentence before, with the sentence after), in the order scored; empty when the
    /// check did not run.
    pub verification_evidence: Vec<String>,
    /// The model's log-probability of each token it generated, in order (before temperature
    /// or top-p); empty when nothing was generated.
    pub token_logprobs: Vec<f32>,
    /// The numbered sources the model saw; `sources[0]` is `[1]`.
    pub sources: Vec<Hit>,
    /// Name of the LLM; empty when it was not called.
    pub model: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Time spent embedding and retrieving.
    pub retrieve_time: Duration,
    /// Time from the start of generation to the first token.
    pub time_to_first_token: Duration,
    /// Time spent generating.
    pub generate_time: Duration,
}

/// The shared core: models, stores and the pipelines over them.
pub struct Engine {
    config: EngineConfig,
    index: Index,
    embedder: Arc<Embedder>,
    chunker: Arc<Chunker>,
    limits: Limits,
    /// Reads PDFs in a child process when set (`isolate_pdf` with a `pdf_reader`).
    pdf_worker: Option<pdf_worker::PdfWorker>,
    llm: LlmChoice,
    generator: OnceCell<Arc<Generator>>,
    /// Parse-and-embed slots (`ingest_workers`), held until that work ends.
    cpu: Arc<Semaphore>,
    /// One lock per document being ingested, by (collection, id); see [`Engine::ingest`].
    documents: DocumentLocks,
    /// `Ask` calls in progress, at most `max_concurrent_asks`. A call's permit is held by its
    /// model work too, which can outlive a cancelled request.
    asks: Arc<Semaphore>,
}

/// Locks keyed by (collection, document id), created on demand and dropped with their last
/// holder or waiter.
#[derive(Default)]
struct DocumentLocks(std::sync::Mutex<HashMap<DocumentKey, Weak<tokio::sync::Mutex<()>>>>);

/// (collection, document id).
type DocumentKey = (String, String);

impl DocumentLocks {
    /// Waits for the document's lock. Waiters get it in the order they first polled.
    async fn lock(&self, collection: &str, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = (collection.to_string(), id.to_string());
            match map.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if map.len() >= 1024 {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// Opens the stores `config` names: the catalog and the BM25 indexes in `data_dir`, and the
/// vectors in the embedded store there or on the Qdrant server at `qdrant_url`. Work that an
/// earlier process left unfinished is recovered before this returns, against those same stores.
pub async fn open_index(config: &EngineConfig) -> Result<Index> {
    Ok(match &config.qdrant_url {
        None => Index::open(&config.data_dir).await?,
        Some(url) => {
            let vectors = RemoteVectorStore::connect(
                url,
                RemoteOptions {
                    api_key: config.qdrant_api_key.clone(),
                    prefix: config.qdrant_collection_prefix.clone(),
                    shards: config.qdrant_shards,
                    replication_factor: config.qdrant_replication_factor,
                    write_consistency_factor: config.qdrant_write_consistency_factor,
                },
            )
            .await?;
            info!(url, "vectors on a Qdrant server");
            Index::open_with_vector_store(&config.data_dir, Arc::new(vectors)).await?
        }
    })
}

impl Engine {
    /// Opens the stores in `config.data_dir` (recovering interrupted writes) and loads the
    /// embedder. The LLM is loaded on first use, or by [`Engine::load_generator`].
    pub async fn open(config: EngineConfig) -> Result<Engine> {
        let llm: LlmChoice = config
            .llm
            .parse()
            .map_err(|e: quire_models::Error| Error::InvalidArgument(e.to_string()))?;
        if let Some(p) = config.abstain_probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(Error::InvalidArgument(format!(
                "abstain_probability must be in [0, 1], got {p}"
            )));
        }
        if config.min_verification.is_some_and(f32::is_nan) {
            return Err(Error::InvalidArgument(
                "min_verification must be a number or -inf".into(),
            ));
        }
        if config.chunk_tokens == 0 || config.chunk_overlap_tokens >= config.chunk_tokens {
            return Err(Error::InvalidArgument(format!(
                "chunk_overlap_tokens ({}) must be smaller than chunk_tokens ({})",
                config.chunk_overlap_tokens, config.chunk_tokens
            )));
        }
        let model_dir = config.model_dir.clone();
        let embedder = blocking(move || Embedder::load(&model_dir).map_err(Error::from)).await?;
        if config.chunk_tokens > embedder.max_tokens() {
            return Err(Error::InvalidArgument(format!(
                "chunk_tokens ({}) exceeds the embedding model's limit ({})",
                config.chunk_tokens,
                embedder.max_tokens()
            )));
        }
        let chunker = Chunker::new(
            embedder.tokenizer().clone(),
            ChunkerConfig {
                max_tokens: config.chunk_tokens,
                overlap_tokens: config.chunk_overlap_tokens,
            },
        )?;
        let limits = config.limits();
        let index = open_index(&config).await?;
        let pdf_worker = config.pdf_worker();
        info!(
            data_dir = %config.data_dir.display(),
            embedder = embedder.model_id(),
            pdf_in_child_process = pdf_worker.is_some(),
            "engine open"
        );
        Ok(Engine {
            pdf_worker,
            cpu: Arc::new(Semaphore::new(config.ingest_workers.max(1))),
            documents: DocumentLocks::default(),
            asks: Arc::new(Semaphore::new(config.max_concurrent_asks.max(1))),
            config,
            index,
            embedder: Arc::new(embedder),
            chunker: Arc::new(chunker),
            limits,
            llm,
            generator: OnceCell::new(),
        })
    }

    /// The settings in effect.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The no-answer probability above which `Ask` abstains before generating: the configured
    /// one, else the one calibrated for the LLM (1, never, for an LLM from `llm_dir`).
    pub fn abstain_probability(&self) -> f32 {
        match (self.config.abstain_probability, &self.config.llm_dir) {
            (Some(p), _) => p,
            (None, Some(_)) => 1.0,
            (None, None) => prompt::calibrated_abstain_probability(self.llm),
        }
    }

    /// The answer-check log-odds below which `Ask` abstains: the configured one, else the one
    /// calibrated for the LLM; `None` when the check is off (`-inf`, an LLM from `llm_dir`, or
    /// an LLM with no calibration).
    pub fn min_verification(&self) -> Option<f32> {
        let min = match (self.config.min_verification, &self.config.llm_dir) {
            (Some(v), _) => Some(v),
            (None, Some(_)) => None,
            (None, None) => prompt::calibrated_min_verification(self.llm),
        };
        min.filter(|v| *v > f32::NEG_INFINITY)
    }

    /// The stores, for inspection (tests, stats).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Loads the LLM now instead of on the first `Ask`. Idempotent.
    pub async fn load_generator(&self) -> Result<Arc<Generator>> {
        let generator = self
            .generator
            .get_or_try_init(|| async {
                let dir = self.config.model_dir.clone();
                let hf_dir = self.config.llm_dir.clone();
                let llm = self.llm;
                let started = Instant::now();
                let g = blocking(move || match hf_dir {
                    Some(hf) => Generator::load_dir(&hf).map_err(Error::from),
                    None => Generator::load(&dir, llm).map_err(Error::from),
                })
                .await?;
                info!(
                    model = g.name(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "LLM loaded"
                );
                Ok::<_, Error>(Arc::new(g))
            })
            .await?;
        Ok(generator.clone())
    }

    fn spec(&self) -> CollectionSpec {
        CollectionSpec {
            embedding_model: self.embedder.model_id().to_string(),
            dimension: self.embedder.dimension() as u32,
        }
    }

    /// Creates an empty collection bound to this server's embedding model.
    pub async fn create_collection(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.index.create_collection(name, self.spec()).await?)
    }

    /// Every collection, ordered by name.
    pub async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        Ok(self.index.list_collections().await?)
    }

    /// Deletes a collection and all of its data; gone from both stores when this returns.
    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        Ok(self.index.delete_collection(name).await?)
    }

    /// Counts `written` chunks toward the collection's next optimisation and runs it once
    /// [`EngineConfig::optimize_after_chunks`] have accumulated. The document is durable
    /// before this runs, so a failure here is logged, not returned.
    async fn optimize_if_due(&self, collection: &str, written: u64) {
        let every = self.config.optimize_after_chunks;
        let started = Instant::now();
        let result = match self.index.count_written(collection, written, every).await {
            Ok(false) => return,
            Ok(true) => self.index.optimize(collection).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => info!(
                collection,
                ms = started.elapsed().as_millis() as u64,
                "optimised after {every} chunks"
            ),
            Err(e) => tracing::warn!(collection, error = %e, "optimisation failed"),
        }
    }

    /// Compacts the collection's vector storage and builds its HNSW index when large
    /// enough; searches after it returns use the index. Writes to the collection wait.
    pub async fn optimize_collection(&self, name: &str) -> Result<()> {
        Ok(self.index.optimize(name).await?)
    }

    /// A collection's committed documents.
    pub async fn list_documents(&self, collection: &str) -> Result<Vec<DocumentInfo>> {
        Ok(self
            .index
            .list_documents(collection_name(collection))
            .await?)
    }

    /// Ingests one document: parse, chunk, embed, write both stores.
    ///
    /// The collection is created if missing. A document whose bytes hash to the stored version
    /// is reported [`IngestStatus::Unchanged`] without being parsed. When this returns `Ok`, the
    /// document is durable and visible in both stores; on `Err`, nothing of it was written.
    ///
    /// Ingests of one document run one at a time, in the order their futures were first
    /// polled (an ingest stream's order), so the last one sent is the version kept. Once the
    /// write to the stores has begun it runs to its end even if this future is dropped.
    pub async fn ingest(&self, collection: &str, doc: IncomingDocument) -> Result<IngestOutcome> {
        let started = Instant::now();
        let result = self.ingest_document(collection, doc).await;
        telemetry::observe_ingest(&result, started.elapsed());
        result
    }

    /// [`Engine::ingest`], without the metrics.
    async fn ingest_document(
        &self,
        collection: &str,
        doc: IncomingDocument,
    ) -> Result<IngestOutcome> {
        let collection = collection_name(collection);
        let document = self.documents.lock(collection, &doc.id).await;
        validate_document_id(&doc.id)?;
        quire_index::metadata::validate_metadata(&doc.metadata)?;
        let media: MediaType = doc.media_type.parse()?;
        let charset = quire_ingest::charset_param(&doc.media_type)
            .filter(|_| media != MediaType::Pdf)
            .map(str::to_ascii_lowercase);
        // Stored with the declared charset, so that re-sending the bytes with a corrected
        // one is a new version.
        let stored_type = match &charset {
            Some(c) => format!("{}; charset={c}", media.as_mime()),
            None => media.as_mime().to_string(),
        };
        if doc.content.len() > self.limits.max_bytes {
            return Err(quire_ingest::Error::TooLarge {
                bytes: doc.content.len(),
                limit: self.limits.max_bytes,
            }
            .into());
        }
        let content_hash = hex::encode(Sha256::digest(&doc.content));
        self.index
            .ensure_collection(collection, self.spec())
            .await?;
        // Unchanged: the same bytes, read the same way (media type), with the same metadata,
        // and no new title given. (A title found in the text is the same for the same bytes.)
        let explicit_title = doc
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(existing) = self.index.document(collection, &doc.id).await?
            && existing.content_hash == content_hash
            && existing.media_type == stored_type
            && explicit_title.is_none_or(|t| existing.title.as_deref() == Some(t))
            && existing.metadata == doc.metadata
        {
            return Ok(IngestOutcome {
                status: IngestStatus::Unchanged,
                version: existing.version,
                chunks: existing.chunk_count,
                content_hash,
                text_encoding: None,
                timings: StageTimings::default(),
            });
        }

        let queued = Instant::now();
        // Moved into the blocking work below, so the slot stays taken until that work ends
        // even if this request is cancelled meanwhile.
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("engine is shutting down".into()))?;
        let timings = StageTimings {
            queue: queued.elapsed(),
            ..StageTimings::default()
        };
        let (embedder, chunker, limits, pdf_worker) = (
            self.embedder.clone(),
            self.chunker.clone(),
            self.limits.clone(),
            self.pdf_worker.clone(),
        );
        let size = doc.content.len() as u64;
        let content = doc.content;
        let limit_ms = self.config.max_document_ms;
        let (loaded_title, encoding, chunks, t) = blocking(move || {
            let _permit = permit;
            let mut t = timings;
            let clock = Instant::now();
            let deadline = clock + Duration::from_millis(limit_ms);
            let loaded = pdf_worker::load_document(
                pdf_worker.as_ref(),
                &content,
                media,
                charset.as_deref(),
                &limits,
            )?;
            t.parse = clock.elapsed();
            let clock = Instant::now();
            let chunks = chunker.chunk(&loaded, media);
            t.chunk = clock.elapsed();
            if chunks.is_empty() {
                return Err(quire_ingest::Error::Empty.into());
            }
            let texts: Vec<&str> = chunks.iter().map(|c| c.indexed_text.as_str()).collect();
            let clock = Instant::now();
            let embedded = embedder
                .embed_before(&texts, Some(deadline))
                .map_err(|e| match e {
                    quire_models::Error::Deadline { .. } => Error::DocumentTimeLimit { limit_ms },
                    e => e.into(),
                })?;
            t.embed = clock.elapsed();
            t.embedded_tokens = embedded.tokens as u64;
            let chunks: Vec<NewChunk> = chunks
                .into_iter()
                .zip(embedded.vectors)
                .map(|(c, vector)| NewChunk {
                    ordinal: c.ordinal,
                    page: c.page,
                    start: c.start as u64,
                    end: c.end as u64,
                    text: c.text,
                    indexed_text: c.indexed_text,
                    vector,
                })
                .collect();
            Ok((loaded.title, loaded.encoding, chunks, t))
        })
        .await?;
        let mut timings = t;

        let new_doc = NewDocument {
            id: doc.id,
            content_hash: content_hash.clone(),
            media_type: stored_type,
            title: explicit_title.map(str::to_string).or(loaded_title),
            bytes: size,
            metadata: doc.metadata,
        };
        let clock = Instant::now();
        // The write runs to its end on its own task, holding the document's lock, even if
        // this request is cancelled: the next ingest of the document waits for it.
        let (index, name) = (self.index.clone(), collection.to_string());
        let outcome = detached(async move {
            let _document = document;
            Ok(index.put_document(&name, new_doc, chunks).await?)
        })
        .await?;
        timings.write = clock.elapsed();
        let (status, version, chunks) = match outcome {
            PutOutcome::Created { version, chunks } => (IngestStatus::Created, version, chunks),
            PutOutcome::Replaced { version, chunks } => (IngestStatus::Replaced, version, chunks),
            PutOutcome::Unchanged { version, chunks } => (IngestStatus::Unchanged, version, chunks),
        };
        if status != IngestStatus::Unchanged {
            self.optimize_if_due(collection, u64::from(chunks)).await;
        }
        debug!(collection, ?status, chunks, "document ingested");
        Ok(IngestOutcome {
            status,
            version,
            chunks,
            content_hash,
            text_encoding: encoding.map(|e| e.label()),
            timings,
        })
    }

    /// Deletes documents from both stores; gone from both when this returns.
    pub async fn delete_documents(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<DeleteOutcome> {
        let collection = collection_name(collection);
        if ids.is_empty() {
            return Err(Error::InvalidArgument("no document ids given".into()));
        }
        let mut out = DeleteOutcome::default();
        // Each document's lock, in id order (an ingest holds one at a time, so no cycle):
        // an ingest already under way finishes first, and none starts until the delete ends.
        let mut sorted: Vec<&String> = ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut locks = Vec::with_capacity(sorted.len());
        for id in sorted {
            locks.push(self.documents.lock(collection, id).await);
        }
        let (index, name, wanted) = (self.index.clone(), collection.to_string(), ids.to_vec());
        let deleted = detached(async move {
            let _locks = locks;
            Ok(index.delete_documents(&name, &wanted).await?)
        })
        .await?;
        for (id, existed) in deleted {
            if existed {
                out.deleted.push(id);
            } else {
                out.not_found.push(id);
            }
        }
        Ok(out)
    }

    /// Hybrid retrieval: the query is embedded, dense and BM25 candidates are taken under the
    /// same filter, and the two rankings are fused (RRF by default). With a rerank depth, the
    /// first that many fused hits are then reordered by the LLM's relevance judgement (see
    /// [`Engine::rerank`]). Best hit first.
    pub async fn retrieve(&self, query: &RetrieveQuery) -> Result<Vec<Hit>> {
        let started = Instant::now();
        let result = self.retrieve_hits(query).await;
        telemetry::observe_retrieve(&result, started.elapsed());
        result
    }

    /// [`Engine::retrieve`], without the metrics.
    async fn retrieve_hits(&self, query: &RetrieveQuery) -> Result<Vec<Hit>> {
        let top_k = match query.top_k {
            0 => self.config.default_top_k,
            k => k,
        };
        let max = self.config.max_top_k;
        if top_k > max {
            return Err(Error::InvalidArgument(format!(
                "top_k must be at most {max}, got {top_k}"
            )));
        }
        let depth = query.rerank_depth.unwrap_or(self.config.rerank_depth);
        if depth > max {
            return Err(Error::InvalidArgument(format!(
                "rerank_depth must be at most {max}, got {depth}"
            )));
        }
        let fusion = self.fusion(query.mode, query.rrf_k, query.dense_weight)?;
        let mut hits = self
            .hybrid(
                &query.collection,
                &query.query,
                top_k.max(depth),
                &query.filter,
                fusion,
            )
            .await?;
        if depth > 0 {
            hits = self.rerank(&query.query, hits, depth).await?;
        }
        hits.truncate(top_k);
        Ok(hits)
    }

    /// Pointwise LLM rerank: each of the first `depth` hits is shown to the generator with
    /// the query ([`prompt::rerank_messages`]), and scored by the log-odds of its reply
    /// starting with "yes" rather than "no" (one prompt pass, nothing generated). Those hits
    /// are reordered by that score, ties kept in fused order, and carry it in
    /// [`Hit::rerank_score`]; the hits after them keep their fused order.
    pub async fn rerank(&self, query: &str, mut hits: Vec<Hit>, depth: usize) -> Result<Vec<Hit>> {
        let n = depth.min(hits.len());
        if n == 0 {
            return Ok(hits);
        }
        let generator = self.load_generator().await?;
        let query = query.to_string();
        blocking(move || {
            for hit in &mut hits[..n] {
                let messages = prompt::rerank_messages(&query, &hit.chunk.text);
                hit.rerank_score = Some(yes_log_odds(&generator, &messages)?);
            }
            hits[..n].sort_by(|a, b| {
                let score = |h: &Hit| h.rerank_score.unwrap_or(f32::NEG_INFINITY);
                score(b).total_cmp(&score(a))
            });
            Ok(hits)
        })
        .await
    }

    /// The index's fusion for a request's settings, defaults filled in from the config.
    fn fusion(
        &self,
        mode: Option<RetrievalMode>,
        rrf_k: Option<f32>,
        dense_weight: Option<f32>,
    ) -> Result<Fusion> {
        let rrf_k = rrf_k.filter(|k| *k > 0.0).unwrap_or(self.config.rrf_k);
        if !rrf_k.is_finite() {
            return Err(Error::InvalidArgument(
                "rrf_k must be a finite number".into(),
            ));
        }
        let dense_weight = dense_weight.unwrap_or(self.config.dense_weight);
        if !(0.0..=1.0).contains(&dense_weight) {
            return Err(Error::InvalidArgument(format!(
                "dense_weight must be between 0 and 1, got {dense_weight}"
            )));
        }
        Ok(match mode.unwrap_or(self.config.retrieval_mode) {
            RetrievalMode::HybridRrf => Fusion::Rrf { k: rrf_k },
            RetrievalMode::HybridWeighted => Fusion::Weighted { dense_weight },
            RetrievalMode::Dense => Fusion::Dense,
            RetrievalMode::Bm25 => Fusion::Bm25,
        })
    }

    async fn hybrid(
        &self,
        collection: &str,
        text: &str,
        top_k: usize,
        filter: &Filter,
        fusion: Fusion,
    ) -> Result<Vec<Hit>> {
        let collection = collection_name(collection);
        if text.trim().is_empty() {
            return Err(Error::InvalidArgument("the query is empty".into()));
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
                text.len()
            )));
        }
        self.index
            .check_collection(collection, &self.spec())
            .await?;
        let vector = if fusion.uses_dense() {
            let embedder = self.embedder.clone();
            let owned = text.to_string();
            blocking(move || {
                let mut v = embedder.embed(&[owned.as_str()])?;
                v.pop()
                    .ok_or_else(|| Error::Internal("embedder returned no vector".into()))
            })
            .await?
        } else {
            Vec::new()
        };
        let params = RetrieveParams {
            top_k,
            candidates: self.config.candidates.max(top_k),
            fusion,
        };
        Ok(self
            .index
            .retrieve(collection, text, &vector, &params, filter)
            .await?)
    }

    /// Answers a question from the collection, or abstains.
    ///
    /// Each text delta is sent to `deltas` as it is generated, without waiting for the
    /// receiver (a slow reader never holds the model); when that receiver is dropped,
    /// generation stops at the next token and the answer check is not run. A caller that
    /// wants no deltas but wants a cancelled request to stop generating passes a sender and
    /// keeps its receiver for as long as it waits. Citations in the returned answer name only
    /// sources the model was given. Beyond `max_concurrent_asks` calls in progress, a call
    /// fails at once with [`Error::Busy`].
    pub async fn ask(
        &self,
        query: &AskQuery,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let Ok(turn) = self.asks.clone().try_acquire_owned() else {
            let busy = Error::Busy(format!(
                "{} questions are already being answered or waiting for the model; retry later",
                self.config.max_concurrent_asks.max(1)
            ));
            telemetry::observe_refused("ask", &busy);
            return Err(busy);
        };
        let result = self.answer(query, deltas, Arc::new(turn)).await;
        telemetry::observe_ask(&result, started.elapsed());
        result
    }

    /// [`Engine::ask`], without the metrics. `turn` is the call's place among
    /// `max_concurrent_asks`; every blocking model task of the call holds a clone.
    async fn answer(
        &self,
        query: &AskQuery,
        deltas: Option<mpsc::UnboundedSender<String>>,
        turn: Arc<OwnedSemaphorePermit>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let top_k = match query.top_k {
            0 => self.config.ask_sources,
            k => k,
        };
        if top_k > MAX_ASK_SOURCES {
            return Err(Error::InvalidArgument(format!(
                "top_k must be at most {MAX_ASK_SOURCES} for Ask, got {top_k}"
            )));
        }
        let min_no_answer = self.abstain_probability();
        let mut params = generation_params(query, self.config.max_answer_tokens)?;
        params.probe = Some(ReplyProbe {
            reply: prompt::NOT_FOUND_REPLY.into(),
            stop_above: min_no_answer,
        });
        let fusion = self.fusion(None, None, None)?;
        let hits = self
            .hybrid(
                &query.collection,
                &query.question,
                top_k,
                &query.filter,
                fusion,
            )
            .await?;
        let retrieve_time = started.elapsed();
        let min = self.config.min_relevance;
        let best_similarity = hits.iter().filter_map(|h| h.dense_score).reduce(f32::max);
        let relevant: Vec<Hit> = hits.into_iter().filter(|h| is_relevant(h, min)).collect();
        if relevant.is_empty() {
            let best = match best_similarity {
                None => "no source was found".to_string(),
                Some(best) => format!("best similarity {best:.2}"),
            };
            return Ok(Answer {
                abstained: Some(format!(
                    "no source scored above the relevance threshold ({best}; threshold {min:.2})"
                )),
                best_similarity,
                retrieve_time,
                ..Answer::default()
            });
        }

        let generator = self.load_generator().await?;
        let question = query.question.clone();
        let gen_for_task = generator.clone();
        let gen_for_check = generator.clone();
        let asked = question.clone();
        let (sources, blocks) = blocking(move || {
            let passages = packing::merge_overlapping(relevant);
            pack_sources(&gen_for_task, &asked, passages, params.max_tokens)
        })
        .await?;
        let messages = prompt::messages(&question, &blocks, self.config.answer_style);
        let held = turn.clone();
        let generation = blocking(move || {
            let _turn = held;
            // A request cancelled while this waited for the pool: no model pass for it.
            if deltas.as_ref().is_some_and(|tx| tx.is_closed()) {
                return Err(Error::Internal("the request was cancelled".into()));
            }
            let mut on_token = |piece: &str| match &deltas {
                Some(tx) => tx.send(piece.to_string()).is_ok(),
                None => true,
            };
            generator
                .generate(&messages, &params, &mut on_token)
                .map_err(Error::from)
        })
        .await?;

        let mut answer = Answer {
            model: self.llm.to_string(),
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.generated_tokens,
            best_similarity,
            retrieve_time,
            time_to_first_token: generation.time_to_first_token,
            generate_time: generation.total,
            no_answer_probability: generation.probe_probability,
            token_logprobs: generation.token_logprobs,
            ..Answer::default()
        };
        if generation.stop == StopReason::Probe {
            let p = generation.probe_probability.unwrap_or(1.0);
            answer.abstained = Some(format!(
                "the model judged that the sources likely do not hold the answer (probability \
                 {p:.3} of saying so; threshold {min_no_answer:.3})"
            ));
        } else if prompt::is_not_found(&generation.text) {
            answer.abstained = Some("the model found no answer in the sources".into());
        } else if citations::strip_markers(&generation.text).is_empty() {
            answer.abstained = Some("the answer held nothing but citation markers".into());
        } else {
            let texts: Vec<&str> = sources.iter().map(|h| h.chunk.text.as_str()).collect();
            answer.sentences =
                support::check_sentences(&question, &generation.text, &texts, MIN_SUPPORT);
            answer.citations = cite(&sources, &answer.sentences);
            if answer.citations.is_empty() {
                answer.abstained = Some("the answer cited no source that was given".into());
            } else if !answer.sentences.iter().any(|s| s.supported) {
                answer.abstained = Some(
                    "no source states the answer: no answer sentence passed the support check"
                        .into(),
                );
            } else if generation.stop != StopReason::Cancelled
                && let Some(min) = self.min_verification()
            {
                // A cancelled request has no reader left: the check is not run for it.
                let spans =
                    evidence_spans(&question, &generation.text, &answer.sentences, &sources);
                check_answer(gen_for_check, question, &spans, min, &mut answer, turn).await?;
            }
        }
        answer.text = generation.text;
        answer.sources = sources;
        Ok(answer)
    }
}

/// Runs the answer check on the evidence `spans` ([`evidence_spans`]) and records it in
/// `answer`: the score and the views read, and an abstention when the score is below `min`.
/// With no evidence it abstains without a model pass, rather than have an empty text judged.
async fn check_answer(
    generator: Arc<Generator>,
    question: String,
    spans: &[(&str, std::ops::Range<usize>)],
    min: f32,
    answer: &mut Answer,
    turn: Arc<OwnedSemaphorePermit>,
) -> Result<()> {
    if spans.is_empty() {
        answer.abstained = Some(
            "the answer could not be checked: no sentence of its cited source states it".into(),
        );
        return Ok(());
    }
    let views: Vec<String> = EVIDENCE_VIEWS
        .iter()
        .map(|&n| evidence_text(spans, n))
        .collect();
    let (score, views) = blocking(move || {
        let _turn = turn;
        check_score(&generator, &question, &views).map(|score| (score, views))
    })
    .await?;
    answer.verification_log_odds = Some(score);
    answer.verification_evidence = views;
    if score < min {
        answer.abstained = Some(format!(
            "the model, shown the cited sentence that states the answer, judged that it does \
             not answer this question (log-odds {score:.2} of yes; threshold {min:.2})"
        ));
    }
    Ok(())
}

/// The source sentences that state `answer`'s supported sentences: for each, the sentence of
/// its first cited source that states the most of it ([`support::evidence`]), as (source
/// text, sentence span), in order.
fn evidence_spans<'a>(
    question: &str,
    answer: &str,
    sentences: &[support::SentenceSupport],
    sources: &'a [Hit],
) -> Vec<(&'a str, std::ops::Range<usize>)> {
    sentences
        .iter()
        .filter(|s| s.supported)
        .filter_map(|s| {
            let plain = citations::strip_markers(answer.get(s.span.clone()).unwrap_or_default());
            let text = s
                .cited
                .first()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| sources.get(i))
                .map(|h| h.chunk.text.as_str())?;
            support::evidence(question, &plain, text).map(|span| (text, span))
        })
        .collect()
}

/// The evidence as the check reads it: each of `spans` read with its `neighbour`
/// ([`support::widen`]), each text once, in order.
fn evidence_text(
    spans: &[(&str, std::ops::Range<usize>)],
    neighbour: support::Neighbour,
) -> String {
    let mut picked: Vec<&str> = Vec::new();
    for (text, span) in spans {
        let sentence = &text[support::widen(text, span.clone(), neighbour)];
        if !picked.contains(&sentence) {
            picked.push(sentence);
        }
    }
    picked.join(" ")
}

/// The answer check reads the evidence three ways: the sentences alone, each with the sentence
/// before it, and each with the sentence after it. Averaging the three separates unanswerable
/// questions better than any one of them on the calibration questions (README, "Answer check").
const EVIDENCE_VIEWS: [support::Neighbour; 3] = [
    support::Neighbour::None,
    support::Neighbour::Before,
    support::Neighbour::After,
];

/// The answer check's score: the mean over `views` (the evidence read each way) of the
/// log-odds that the model judges the evidence to answer `question`.
fn check_score(generator: &Generator, question: &str, views: &[String]) -> Result<f32> {
    mean_of_distinct(views, |view| {
        yes_log_odds(generator, &prompt::verify_messages(question, view))
    })
}

/// The mean of `score` over `views`, calling it once per distinct view (a source of one
/// sentence reads the same every way).
fn mean_of_distinct(views: &[String], mut score: impl FnMut(&str) -> Result<f32>) -> Result<f32> {
    let mut seen: Vec<(&str, f32)> = Vec::with_capacity(views.len());
    let mut total = 0.0;
    for view in views {
        let s = match seen.iter().find(|(v, _)| *v == view.as_str()) {
            Some(&(_, s)) => s,
            None => {
                let s = score(view)?;
                seen.push((view, s));
                s
            }
        };
        total += s;
    }
    Ok(total / views.len().max(1) as f32)
}

/// The log-odds of the model's reply to `messages` starting with yes rather than no (one
/// prompt pass, nothing generated).
fn yes_log_odds(generator: &Generator, messages: &[quire_models::ChatMessage]) -> Result<f32> {
    let choices: Vec<&str> = prompt::RERANK_YES
        .iter()
        .chain(prompt::RERANK_NO.iter())
        .copied()
        .collect();
    let logits = generator.first_token_logits(messages, &choices)?;
    let (yes, no) = logits.split_at(prompt::RERANK_YES.len());
    Ok(log_sum_exp(yes) - log_sum_exp(no))
}

/// The checked citations of an answer: the sources its sentences cite (see
/// [`support::SentenceSupport::cited`]), in order of first appearance. A source is of origin
/// [`CitationOrigin::Model`] when a sentence that the model marked with it is cited by it.
fn cite(sources: &[Hit], sentences: &[support::SentenceSupport]) -> Vec<Citation> {
    support::cited_sources(sentences)
        .into_iter()
        .filter_map(|n| {
            let by_model = sentences
                .iter()
                .any(|s| s.written.contains(&n) && s.cited.contains(&n));
            sources.get(n - 1).map(|hit| Citation {
                source: n,
                hit: hit.clone(),
                origin: if by_model {
                    CitationOrigin::Model
                } else {
                    CitationOrigin::Support
                },
            })
        })
        .collect()
}

/// `ln(Σ exp(x))`, computed without overflow; `-inf` for no values.
fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f32>().ln()
}

/// True when a hit is close enough to the question to be worth giving to the model.
fn is_relevant(hit: &Hit, min: f32) -> bool {
    match (hit.dense_score, hit.bm25_rank) {
        (Some(d), _) if d >= min => true,
        (Some(d), Some(_)) => d >= min / 2.0,
        _ => false,
    }
}

/// Numbers the sources and keeps as many as fit the generator's context next to the
/// question and the answer.
fn pack_sources(
    generator: &Generator,
    question: &str,
    hits: Vec<Hit>,
    max_tokens: usize,
) -> Result<(Vec<Hit>, Vec<String>)> {
    // Room for the system prompt, the worked examples and the chat template.
    const RESERVED: usize = 512;
    let budget = generator
        .context_length()
        .saturating_sub(max_tokens + RESERVED + generator.count_tokens(question)?);
    let (mut used, mut sources, mut blocks) = (0, Vec::new(), Vec::new());
    for hit in hits {
        let block = prompt::format_source(sources.len() + 1, &hit);
        let tokens = generator.count_tokens(&block)?;
        if used + tokens > budget {
            break;
        }
        used += tokens;
        sources.push(hit);
        blocks.push(block);
    }
    Ok((sources, blocks))
}

fn generation_params(query: &AskQuery, default_max: usize) -> Result<GenerationParams> {
    let defaults = GenerationParams::default();
    let temperature = query.temperature.unwrap_or(0.0);
    if !(0.0..=5.0).contains(&temperature) {
        return Err(Error::InvalidArgument(format!(
            "temperature must be in [0, 5], got {temperature}"
        )));
    }
    if let Some(p) = query.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Error::InvalidArgument(format!(
            "top_p must be in (0, 1], got {p}"
        )));
    }
    let max_tokens = query.max_tokens.unwrap_or(default_max);
    if max_tokens == 0 || max_tokens > 4096 {
        return Err(Error::InvalidArgument(format!(
            "max_tokens must be in 1..=4096, got {max_tokens}"
        )));
    }
    Ok(GenerationParams {
        max_tokens,
        temperature,
        top_p: query.top_p,
        seed: query.seed.unwrap_or(defaults.seed),
        probe: None,
    })
}

fn collection_name(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT_COLLECTION
    } else {
        name
    }
}

fn validate_document_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_DOCUMENT_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "document id must be 1 to {MAX_DOCUMENT_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "document id contains control characters".into(),
        ));
    }
    Ok(())
}

/// Runs `work` on its own task and waits for it: it runs to its end (and drops what it holds,
/// such as document locks) even if the caller stops waiting.
async fn detached<T, F>(work: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Internal(format!("worker task failed: {e}")))?
}

/// Runs CPU-bound work off the async runtime.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("worker task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::{Error, log_sum_exp, mean_of_distinct};

    #[test]
    fn the_check_averages_its_views_and_scores_a_repeated_view_once() {
        let views: Vec<String> = ["a b.", "a b. c.", "a b."].map(String::from).into();
        let mut calls = Vec::new();
        let mean = mean_of_distinct(&views, |v| {
            calls.push(v.to_string());
            Ok(if v == "a b." { 1.0 } else { -2.0 })
        })
        .unwrap();
        assert_eq!(calls, ["a b.", "a b. c."]);
        assert_eq!(mean, 0.0);
        let failed = mean_of_distinct(&views, |_| Err(Error::Internal("no model".into())));
        assert!(failed.is_err());
    }

    #[test]
    fn log_sum_exp_is_stable_and_exact() {
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f32.ln()).abs() < 1e-6);
        // Large logits do not overflow.
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        // A choice the tokenizer could not encode (-inf) adds nothing.
        assert_eq!(log_sum_exp(&[3.0, f32::NEG_INFINITY]), 3.0);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}
