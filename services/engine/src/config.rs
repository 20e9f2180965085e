//! Engine settings. Every field has a default, written next to it.

use std::path::PathBuf;

use quire_models::LlmChoice;

use crate::prompt::AnswerStyle;
use serde::{Deserialize, Serialize};

/// Settings of the engine; the binary layers them from a TOML file, `QUIRE_*` variables and flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Where the stores and the catalog live. Default: `./quire-data`.
    pub data_dir: PathBuf,
    /// Where model packages are installed. Default: `$QUIRE_MODEL_DIR` or `~/.cache/quire/models`.
    pub model_dir: PathBuf,
    /// LLM used by `Ask`: `qwen2.5-1.5b` (default) or `smollm2-135m`.
    pub llm: String,
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json, chat
    /// template) of a `qwen2` or `llama` model, used by `Ask` instead of `llm`. It runs in
    /// bf16 on a GPU (feature `cuda`), f32 on the CPU. Default: none.
    pub llm_dir: Option<PathBuf>,
    /// Chunk size in embedding-model tokens. Default: 200.
    pub chunk_tokens: usize,
    /// Overlap between consecutive chunks, in embedding-model tokens. Default: 32.
    pub chunk_overlap_tokens: usize,
    /// Largest accepted document, in bytes. Default: 64 MiB.
    pub max_document_bytes: usize,
    /// Most PDF pages accepted per document. Default: 2,000.
    pub max_pages: usize,
    /// Most bytes a PDF's streams may decompress to. Default: 256 MiB.
    pub max_decompressed_bytes: usize,
    /// Most characters of text extracted from one document. Default: 20,000,000.
    pub max_extracted_chars: usize,
    /// Longest a PDF's text extraction may run, in milliseconds. Default: 30,000.
    pub max_parse_ms: u64,
    /// Read each PDF in a child process (quire's own binary; see [`Self::pdf_reader`]) whose
    /// memory is capped at `pdf_memory_limit_bytes` and which is killed 5 s past
    /// `max_parse_ms`, so a hostile file fails alone instead of taking the server with it.
    /// Default: true. Off, PDFs are parsed in the server's own process.
    pub isolate_pdf: bool,
    /// Address space the process reading one PDF may use for the parse, in bytes, beyond what
    /// it has mapped when it starts (quire's binary and its libraries, CUDA's included); a PDF
    /// that needs more is rejected with `memory_limit`. lopdf keeps about 2 KB per PDF
    /// object, so the default, 4 GiB, reads PDFs of about two million objects. Default: 4 GiB.
    pub pdf_memory_limit_bytes: u64,
    /// The program that reads PDFs when `isolate_pdf` is on, started as
    /// `PROGRAM pdf-worker --limits JSON --memory-limit BYTES`. Not a setting: `quire serve`
    /// and `quire extract` set it to their own binary. Without it PDFs are parsed in-process.
    #[serde(skip)]
    pub pdf_reader: Option<PathBuf>,
    /// Longest one document's processing (parse, chunk, embed) may run once it has a
    /// worker, in milliseconds; past it the document fails with `time_limit` and nothing of
    /// it is written. Default: 600,000.
    pub max_document_ms: u64,
    /// Hits returned by `Retrieve` when the request does not say. Default: 10.
    pub default_top_k: usize,
    /// Candidates each retriever contributes before fusion. Default: 50.
    pub candidates: usize,
    /// Retrievers and fusion used when a request does not say: `hybrid-rrf` (default),
    /// `hybrid-weighted`, `dense` or `bm25`.
    pub retrieval_mode: RetrievalMode,
    /// Reciprocal-rank-fusion constant. Default: 60.
    pub rrf_k: f32,
    /// Weight of the dense score in `hybrid-weighted` fusion, in [0, 1]. Default: 0.5.
    pub dense_weight: f32,
    /// Fused hits the LLM reranks (pointwise: "is this passage relevant to the query?",
    /// scored by the log-odds of its first reply token being yes rather than no) when a
    /// `Retrieve` request does not say. Costs one LLM prompt pass per hit; 0 turns it off.
    /// Default: 0.
    pub rerank_depth: usize,
    /// Most hits one `Retrieve` may ask for. Default: 100.
    pub max_top_k: usize,
    /// Sources given to the LLM by `Ask` when the request does not say. Default: 5.
    pub ask_sources: usize,
    /// A source is relevant when its dense cosine similarity reaches this, or when it is a BM25
    /// hit whose dense similarity reaches half of it. `Ask` abstains when no source is relevant.
    /// Default: 0.3.
    pub min_relevance: f32,
    /// Before generating, `Ask` measures the model's probability of replying that the sources
    /// do not contain the answer, and abstains when it is above this; 1 turns the check off.
    /// Default: the value calibrated for the configured LLM and prompt
    /// ([`crate::prompt::calibrated_abstain_probability`]), or 1 for an LLM from `llm_dir`.
    pub abstain_probability: Option<f32>,
    /// After answering, `Ask` shows the model the question and the sentence of the cited
    /// source that states the answer, asks whether that sentence answers exactly this
    /// question, and abstains when the log-odds of its reply being yes rather than no are
    /// below this. `-inf` turns the check off (no pass is run). Default: the value calibrated
    /// for the configured LLM and check ([`crate::prompt::calibrated_min_verification`]);
    /// off for an LLM from `llm_dir`.
    pub min_verification: Option<f32>,
    /// Tokens the LLM may generate when the request does not say. Default: 256.
    pub max_answer_tokens: usize,
    /// How long `Ask` asks the model to make its answers: `concise` (default; the fewest
    /// words that answer, each with its citation) or `sentences` (one to three sentences).
    pub answer_style: AnswerStyle,
    /// Documents ingested concurrently (parse, chunk, embed). Default: 2.
    pub ingest_workers: usize,
    /// Most `Ask` calls in progress at once: the model answers one at a time, and a call
    /// beyond this many is refused at once (`RESOURCE_EXHAUSTED`, retry later) rather than
    /// queued behind minutes of others. Default: 16.
    pub max_concurrent_asks: usize,
    /// gRPC URL of a Qdrant server or cluster (`http://host:6334`) to keep the vectors in,
    /// instead of the embedded store in `data_dir`; the catalog and the BM25 indexes stay in
    /// `data_dir`. Default: none (embedded).
    pub qdrant_url: Option<String>,
    /// API key for `qdrant_url`. Default: none. Set it with `QUIRE_QDRANT_API_KEY` rather
    /// than in a file others can read. `quire config` does not print it.
    #[serde(skip_serializing)]
    pub qdrant_api_key: Option<String>,
    /// Prefix of this deployment's collection names on the Qdrant server. Default: `quire_`.
    pub qdrant_collection_prefix: String,
    /// Shards of each collection quire creates on the Qdrant server. Default: unset (the
    /// server's default: one per node). Collections that exist keep their layout.
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard on different Qdrant nodes, for new collections. Default: unset
    /// (the server's default: 1, so losing a node loses its shards).
    pub qdrant_replication_factor: Option<u32>,
    /// Replicas that must have applied a write before the server acknowledges it, for new
    /// collections. Default: unset (the server's default: 1). Set it to the replication factor
    /// so that every acknowledged ingest is on every copy.
    pub qdrant_write_consistency_factor: Option<u32>,
    /// After this many chunks written to a collection since its last optimisation, the
    /// ingest that crosses the mark also optimises it (vector compaction and HNSW build; the
    /// collection's writes wait meanwhile), so the index keeps up with a steady stream of
    /// documents. 0 turns it off. Default: 20,000.
    pub optimize_after_chunks: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("quire-data"),
            model_dir: quire_models::default_model_dir(),
            llm: LlmChoice::default().to_string(),
            llm_dir: None,
            chunk_tokens: 200,
            chunk_overlap_tokens: 32,
            max_document_bytes: 64 << 20,
            max_pages: 2_000,
            max_decompressed_bytes: 256 << 20,
            max_extracted_chars: 20_000_000,
            max_parse_ms: 30_000,
            isolate_pdf: true,
            pdf_memory_limit_bytes: 4 << 30,
            pdf_reader: None,
            max_document_ms: 600_000,
            default_top_k: 10,
            candidates: 50,
            retrieval_mode: RetrievalMode::default(),
            rrf_k: 60.0,
            dense_weight: 0.5,
            rerank_depth: 0,
            max_top_k: 100,
            ask_sources: 5,
            min_relevance: 0.3,
            abstain_probability: None,
            min_verification: None,
            max_answer_tokens: 256,
            answer_style: AnswerStyle::default(),
            ingest_workers: 2,
            max_concurrent_asks: 16,
            optimize_after_chunks: 20_000,
            qdrant_url: None,
            qdrant_api_key: None,
            qdrant_collection_prefix: "quire_".into(),
            qdrant_shards: None,
            qdrant_replication_factor: None,
            qdrant_write_consistency_factor: None,
        }
    }
}

impl EngineConfig {
    /// The per-document limits these settings name.
    pub fn limits(&self) -> quire_ingest::Limits {
        quire_ingest::Limits {
            max_bytes: self.max_document_bytes,
            max_pages: self.max_pages,
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_extracted_chars: self.max_extracted_chars,
            max_parse_time: std::time::Duration::from_millis(self.max_parse_ms),
        }
    }

    /// The child-process PDF reader, when `isolate_pdf` is on and a `pdf_reader` is set.
    pub fn pdf_worker(&self) -> Option<crate::pdf_worker::PdfWorker> {
        let program = self.pdf_reader.clone().filter(|_| self.isolate_pdf)?;
        Some(crate::pdf_worker::PdfWorker {
            program,
            memory_limit: self.pdf_memory_limit_bytes,
        })
    }
}

/// Which retrievers run and how their rankings are fused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrievalMode {
    /// Dense and BM25, reciprocal rank fusion.
    #[default]
    HybridRrf,
    /// Dense and BM25, weighted sum of scores each scaled by its best candidate's.
    HybridWeighted,
    /// Dense (embedding cosine) alone.
    Dense,
    /// BM25 alone.
    Bm25,
}

impl RetrievalMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [RetrievalMode; 4] = [
        RetrievalMode::Bm25,
        RetrievalMode::Dense,
        RetrievalMode::HybridRrf,
        RetrievalMode::HybridWeighted,
    ];

    /// The mode's name in configuration files and reports (`hybrid-rrf`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RetrievalMode::HybridRrf => "hybrid-rrf",
            RetrievalMode::HybridWeighted => "hybrid-weighted",
            RetrievalMode::Dense => "dense",
            RetrievalMode::Bm25 => "bm25",
        }
    }
}

impl std::str::FromStr for RetrievalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetrievalMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RetrievalMode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown retrieval mode {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}
