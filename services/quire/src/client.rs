//! The client commands: `ingest`, `ask`, `search` and `health`, speaking gRPC to a running
//! server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};
use indicatif::{ProgressBar, ProgressStyle};
use quire_engine::RetrievalMode;
use quire_ingest::MediaType;
use quire_proto::v1 as pb;
use quire_proto::v1::document_result::Status as DocStatus;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use quire_proto::v1::query_service_client::QueryServiceClient;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::{BoxError, meta_args};

/// Where the server is.
#[derive(Args)]
pub struct Connection {
    /// Server address; overrides the config file's `endpoint`.
    #[arg(long, env = "QUIRE_ENDPOINT")]
    endpoint: Option<String>,
    /// Collection to use.
    #[arg(long, short, env = "QUIRE_COLLECTION", default_value = "default")]
    collection: String,
    /// API key the server requires (sent as `authorization: Bearer <key>`); overrides the
    /// config file's `api_key`.
    #[arg(long, env = "QUIRE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// A channel that sends the API key, when there is one, with every call.
type Chan = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <key>` to each request.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Connection {
    /// Connects to the server: the `--endpoint` given or the configured one, with the
    /// `--api-key` given or the configured one.
    async fn connect(&self, cfg: &Config) -> Result<Chan, BoxError> {
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| cfg.endpoint.clone());
        let channel = Endpoint::from_shared(endpoint)?.connect().await?;
        let header = match self.api_key.as_deref().or(cfg.api_key.as_deref()) {
            None | Some("") => None,
            Some(key) => Some(
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| "the API key must be printable ASCII")?,
            ),
        };
        Ok(InterceptedService::new(channel, Bearer(header)))
    }
}

/// Options of `quire health`.
#[derive(Args)]
pub struct HealthArgs {
    /// Server address; overrides the config file's `endpoint`.
    #[arg(long, env = "QUIRE_ENDPOINT")]
    endpoint: Option<String>,
    /// Service to ask about, such as `quire.v1.QueryService`; empty asks about the server as
    /// a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for the connection and for the answer, each.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Asks the server's `grpc.health.v1.Health` service about `args.service` and prints the
/// status. Succeeds only when it is SERVING; an unreachable server or an unknown service is
/// an error. Health needs no API key.
pub async fn health(cfg: &Config, args: HealthArgs) -> Result<ExitCode, BoxError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| "--timeout must be a non-negative number of seconds")?;
    let endpoint = args.endpoint.unwrap_or_else(|| cfg.endpoint.clone());
    let channel = Endpoint::from_shared(endpoint)?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service,
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Args)]
pub struct IngestArgs {
    /// Files or directories (walked recursively) to ingest.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    conn: Connection,
    /// Documents read ahead and in flight at once; the server bounds how many it
    /// processes in parallel.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Only files whose id (path relative to the directory given) matches one of these
    /// globs, e.g. `--include '**/*.pdf'`. Repeatable. Default: every supported file.
    #[arg(long = "include", value_name = "GLOB")]
    include: Vec<String>,
    /// Skip files whose id matches one of these globs, e.g. `--exclude 'drafts/**'`.
    /// Repeatable; wins over `--include`.
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// Metadata stored with every document of this run, as KEY=VALUE (`true`/`false`
    /// and numbers are typed). Repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Send every file, even when the server already holds the same bytes and metadata
    /// under that id (by default those are skipped without being sent).
    #[arg(long)]
    no_skip: bool,
    /// Exit 0 even when some documents failed.
    #[arg(long)]
    allow_failures: bool,
    /// Skip the final OptimizeCollection call (compaction and the HNSW index build that
    /// follow a run that wrote chunks).
    #[arg(long)]
    no_optimize: bool,
}

#[derive(Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    conn: Connection,
    /// Sources to give the model (0: server default).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Most tokens to generate.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature (0: greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the answer as it is generated.
    #[arg(long)]
    stream: bool,
    /// Only use documents whose metadata passes: KEY=VALUE, KEY=V1|V2, KEY>=N, KEY<N, ...
    /// Repeatable; all must hold.
    #[arg(long = "where", value_name = "CONDITION")]
    conditions: Vec<String>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// The query.
    query: String,
    #[command(flatten)]
    conn: Connection,
    /// Hits to show.
    #[arg(long, default_value_t = 5)]
    top_k: u32,
    /// Only search documents whose metadata passes: KEY=VALUE, KEY=V1|V2, KEY>=N, ...
    /// Repeatable; all must hold.
    #[arg(long = "where", value_name = "CONDITION")]
    conditions: Vec<String>,
    /// Retrievers and fusion: hybrid-rrf, hybrid-weighted, dense or bm25. Default: the
    /// server's.
    #[arg(long)]
    mode: Option<RetrievalMode>,
    /// Rerank the first N fused hits with the server's LLM (one prompt pass per hit).
    /// Default: the server's (off unless configured).
    #[arg(long, value_name = "N")]
    rerank: Option<u32>,
}

/// A file to send, with its id (path relative to the root it was found under).
struct FileJob {
    path: PathBuf,
    id: String,
    media: MediaType,
}

fn glob_set(patterns: &[String], flag: &str) -> Result<Option<GlobSet>, BoxError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| format!("{flag} `{p}`: {e}"))?);
    }
    Ok(Some(b.build()?))
}

/// Files under `roots` to ingest, in a stable order, and those skipped for an unknown type.
/// Ids are paths relative to the directory given (or the file name for a file given).
fn collect_files(
    roots: &[PathBuf],
    include: Option<&GlobSet>,
    exclude: Option<&GlobSet>,
) -> Result<(Vec<FileJob>, Vec<PathBuf>), BoxError> {
    let (mut jobs, mut skipped) = (Vec::new(), Vec::new());
    for root in roots {
        if !root.exists() {
            return Err(format!("{}: no such file or directory", root.display()).into());
        }
        let base = if root.is_dir() {
            root.as_path()
        } else {
            root.parent().unwrap_or(Path::new(""))
        };
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.into_path();
            let id = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if include.is_some_and(|g| !g.is_match(&id)) || exclude.is_some_and(|g| g.is_match(&id))
            {
                continue;
            }
            match MediaType::from_path(&path) {
                Some(media) => jobs.push(FileJob { id, path, media }),
                None => skipped.push(path),
            }
        }
    }
    Ok((jobs, skipped))
}

type Meta = std::collections::HashMap<String, pb::MetadataValue>;

/// What the server holds: content hash and metadata by document id (empty if the
/// collection does not exist yet).
async fn stored_documents(
    client: &mut IngestServiceClient<Chan>,
    collection: &str,
) -> Result<std::collections::HashMap<String, (String, Meta)>, BoxError> {
    let req = pb::ListDocumentsRequest {
        collection: collection.to_string(),
    };
    match client.list_documents(req).await {
        Ok(r) => Ok(r
            .into_inner()
            .documents
            .into_iter()
            .map(|d| (d.id, (d.content_hash, d.metadata)))
            .collect()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Default::default()),
        Err(s) => Err(s.into()),
    }
}

/// Outcomes decided by the client without a server result.
#[derive(Default)]
struct LocalOutcomes {
    /// Same bytes and metadata already stored: not sent.
    skipped_same_hash: u64,
    /// Files that could not be read: (id, message).
    unreadable: Vec<(String, String)>,
}

/// Streams every file under `args.paths` to the server and prints a summary table.
///
/// Files whose bytes and metadata match what the server holds are skipped unsent, so an
/// interrupted job can be rerun and resumes where it stopped. Exits non-zero when any
/// document failed, unless `--allow-failures`.
pub async fn ingest(cfg: &Config, args: IngestArgs) -> Result<ExitCode, BoxError> {
    let include = glob_set(&args.include, "--include")?;
    let exclude = glob_set(&args.exclude, "--exclude")?;
    let meta = meta_args::metadata(&args.meta)?;
    let (jobs, skipped) = collect_files(&args.paths, include.as_ref(), exclude.as_ref())?;
    let mut client = IngestServiceClient::new(args.conn.connect(cfg).await?)
        .max_encoding_message_size(usize::MAX);
    let stored = if args.no_skip {
        Default::default()
    } else {
        stored_documents(&mut client, &args.conn.collection).await?
    };
    let total = jobs.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} docs  {per_sec}  {msg}  [{elapsed_precise}]",
    )?);
    let (tx, rx) = mpsc::channel(args.in_flight.max(1));
    let collection = args.conn.collection.clone();
    let sender_bar = bar.clone();
    let sender = tokio::spawn(async move {
        let mut local = LocalOutcomes::default();
        for job in jobs {
            let content = match tokio::fs::read(&job.path).await {
                Ok(c) => c,
                Err(e) => {
                    local
                        .unreadable
                        .push((job.id, format!("{}: {e}", job.path.display())));
                    sender_bar.inc(1);
                    continue;
                }
            };
            if let Some((hash, stored_meta)) = stored.get(&job.id)
                && *stored_meta == meta
                && *hash == hex::encode(Sha256::digest(&content))
            {
                local.skipped_same_hash += 1;
                sender_bar.inc(1);
                continue;
            }
            let req = pb::IngestDocumentRequest {
                collection: collection.clone(),
                document: Some(pb::Document {
                    id: job.id,
                    media_type: job.media.as_mime().to_string(),
                    content,
                    title: String::new(),
                    metadata: meta.clone(),
                }),
            };
            if tx.send(req).await.is_err() {
                break;
            }
        }
        local
    });

    let started = Instant::now();
    let mut results = client
        .ingest_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut chunks, mut counts) = (0u64, BTreeMap::<String, u64>::new());
    let mut failures = Vec::new();
    while let Some(r) = results.message().await? {
        let status = DocStatus::try_from(r.status).unwrap_or(DocStatus::Unspecified);
        let key = match status {
            DocStatus::Failed => {
                let err = r.error.unwrap_or_default();
                failures.push((r.document_id.clone(), err.message));
                format!("failed: {}", err.code)
            }
            DocStatus::Created => "ingested (new)".to_string(),
            DocStatus::Replaced => "ingested (replaced)".to_string(),
            DocStatus::Unchanged => "unchanged".to_string(),
            DocStatus::Unspecified => "unknown".to_string(),
        };
        if matches!(status, DocStatus::Created | DocStatus::Replaced) {
            chunks += u64::from(r.chunk_count);
        }
        *counts.entry(key).or_default() += 1;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{:.1} chunks/s", chunks as f64 / secs));
        bar.inc(1);
    }
    bar.finish();
    let local = sender.await?;
    if local.skipped_same_hash > 0 {
        *counts.entry("unchanged".into()).or_default() += local.skipped_same_hash;
    }
    for (id, msg) in local.unreadable {
        *counts.entry("failed: unreadable".into()).or_default() += 1;
        failures.push((id, msg));
    }
    let elapsed = started.elapsed();
    print_summary(&counts, &failures, &skipped, chunks, total, elapsed);
    if chunks > 0 && !args.no_optimize {
        let collection = &args.conn.collection;
        let request = pb::OptimizeCollectionRequest {
            name: collection.clone(),
        };
        // The documents are durable already; a failed optimisation is reported, and the
        // collection stays searchable without its index.
        match client.optimize_collection(request).await {
            Ok(r) => println!(
                "optimised collection {collection} in {:.1} s",
                r.into_inner().took_ms as f64 / 1e3
            ),
            Err(e) => eprintln!("warning: optimising collection {collection} failed: {e}"),
        }
    }
    let failed: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("failed"))
        .map(|(_, v)| v)
        .sum();
    Ok(if failed > 0 && !args.allow_failures {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(
    counts: &BTreeMap<String, u64>,
    failures: &[(String, String)],
    skipped: &[PathBuf],
    chunks: u64,
    docs: usize,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    println!("\n{:<32} {:>8}", "outcome", "docs");
    for (k, v) in counts {
        println!("{k:<32} {v:>8}");
    }
    if !skipped.is_empty() {
        println!("{:<32} {:>8}", "skipped (unknown type)", skipped.len());
    }
    println!(
        "{docs} documents, {chunks} new chunks in {secs:.2} s ({:.2} docs/s, {:.1} chunks/s)",
        docs as f64 / secs,
        chunks as f64 / secs
    );
    for (id, msg) in failures {
        println!("  failed {id}: {msg}");
    }
}

/// Asks a question and prints the answer with its cited sources.
pub async fn ask(cfg: &Config, args: AskArgs) -> Result<ExitCode, BoxError> {
    let mut client = QueryServiceClient::new(args.conn.connect(cfg).await?);
    let req = pb::AskRequest {
        collection: args.conn.collection,
        question: args.question,
        top_k: args.top_k,
        filter: meta_args::filter(&args.conditions)?,
        generation: Some(pb::GenerationOptions {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_p: None,
            seed: args.seed,
        }),
    };
    let response = if args.stream {
        use pb::ask_stream_event::Event;
        use std::io::Write;
        let mut events = client.ask_stream(req).await?.into_inner();
        let mut last = None;
        while let Some(ev) = events.message().await? {
            match ev.event {
                Some(Event::Delta(d)) => {
                    print!("{d}");
                    let _ = std::io::stdout().flush();
                }
                Some(Event::Final(f)) => last = Some(f),
                None => {}
            }
        }
        println!();
        last.ok_or("the stream ended without a final answer")?
    } else {
        client.ask(req).await?.into_inner()
    };
    print_answer(&response, !args.stream);
    Ok(ExitCode::SUCCESS)
}

fn print_answer(r: &pb::AskResponse, with_text: bool) {
    if r.abstained {
        println!("(abstained: {})", r.abstain_reason);
        if !r.answer.is_empty() && with_text {
            println!("model said: {}", r.answer.trim());
        }
        return;
    }
    if with_text {
        println!("{}", r.answer.trim());
    }
    println!("\nSources:");
    for c in &r.citations {
        let page = if c.page > 0 {
            format!(", page {}", c.page)
        } else {
            String::new()
        };
        let span = c.span.unwrap_or_default();
        println!(
            "  [{}] {}{page}, bytes {}..{}: \"{}\"",
            c.source,
            c.document_id,
            span.start,
            span.end,
            excerpt(&c.quote, 160)
        );
    }
    if let Some(u) = &r.usage {
        println!(
            "\n({}: {} prompt + {} generated tokens; retrieve {} ms, first token {} ms, generate {} ms)",
            u.model,
            u.prompt_tokens,
            u.completion_tokens,
            u.retrieve_ms,
            u.time_to_first_token_ms,
            u.generate_ms
        );
    }
}

fn excerpt(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let cut: String = flat.chars().take(max_chars).collect();
    format!("{cut}…")
}

/// The wire value of a retrieval mode.
fn pb_mode(mode: RetrievalMode) -> pb::RetrievalMode {
    match mode {
        RetrievalMode::HybridRrf => pb::RetrievalMode::HybridRrf,
        RetrievalMode::HybridWeighted => pb::RetrievalMode::HybridWeighted,
        RetrievalMode::Dense => pb::RetrievalMode::Dense,
        RetrievalMode::Bm25 => pb::RetrievalMode::Bm25,
    }
}

/// Prints the fused hits for a query with their dense, BM25 and fused scores.
pub async fn search(cfg: &Config, args: SearchArgs) -> Result<ExitCode, BoxError> {
    let mut client = QueryServiceClient::new(args.conn.connect(cfg).await?);
    let r = client
        .retrieve(pb::RetrieveRequest {
            collection: args.conn.collection,
            query: args.query,
            top_k: args.top_k,
            filter: meta_args::filter(&args.conditions)?,
            mode: args.mode.map_or(pb::RetrievalMode::Unspecified, pb_mode) as i32,
            rerank_depth: args.rerank,
            ..Default::default()
        })
        .await?
        .into_inner();
    for (i, h) in r.hits.iter().enumerate() {
        let dense = h.dense_score.map_or("-".into(), |s| format!("{s:.3}"));
        let bm25 = h.bm25_score.map_or("-".into(), |s| format!("{s:.2}"));
        let rerank = h
            .rerank_score
            .map_or(String::new(), |s| format!("  rerank {s:.2}"));
        let page = if h.page > 0 {
            format!(" p.{}", h.page)
        } else {
            String::new()
        };
        println!(
            "{:>2}. {}{page} #{}  fused {:.4}  dense {dense}  bm25 {bm25}{rerank}\n    {}",
            i + 1,
            h.document_id,
            h.ordinal,
            h.fused_score,
            excerpt(&h.text, 200)
        );
    }
    println!("({} hits in {} ms)", r.hits.len(), r.took_ms);
    Ok(ExitCode::SUCCESS)
}
