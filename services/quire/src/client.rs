//! The client commands: `ingest`, `ask` and `search`, speaking gRPC to a running server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quire_ingest::MediaType;
use quire_proto::v1 as pb;
use quire_proto::v1::document_result::Status as DocStatus;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use quire_proto::v1::query_service_client::QueryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::BoxError;

/// Where the server is.
#[derive(Args)]
pub struct Connection {
    /// Server address; overrides the config file's `endpoint`.
    #[arg(long, env = "QUIRE_ENDPOINT")]
    endpoint: Option<String>,
    /// Collection to use.
    #[arg(long, short, env = "QUIRE_COLLECTION", default_value = "default")]
    collection: String,
}

impl Connection {
    fn endpoint(&self, configured: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| configured.to_string())
    }
}

#[derive(Args)]
pub struct IngestArgs {
    /// Files or directories (walked recursively) to ingest.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    conn: Connection,
    /// Documents in flight at once.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Exit 0 even when some documents failed.
    #[arg(long)]
    allow_failures: bool,
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
}

/// A file to send, with its id (path relative to the root it was found under).
struct FileJob {
    path: PathBuf,
    id: String,
    media: MediaType,
}

fn collect_files(roots: &[PathBuf]) -> Result<(Vec<FileJob>, Vec<PathBuf>), BoxError> {
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
            match MediaType::from_path(&path) {
                Some(media) => {
                    let rel = path.strip_prefix(base).unwrap_or(&path);
                    jobs.push(FileJob {
                        id: rel.to_string_lossy().into_owned(),
                        path,
                        media,
                    });
                }
                None => skipped.push(path),
            }
        }
    }
    Ok((jobs, skipped))
}

/// Streams every file under `args.paths` to the server and prints a summary.
///
/// Exits non-zero when any document failed, unless `--allow-failures`.
pub async fn ingest(configured: &str, args: IngestArgs) -> Result<ExitCode, BoxError> {
    let (jobs, skipped) = collect_files(&args.paths)?;
    let mut client = IngestServiceClient::connect(args.conn.endpoint(configured))
        .await?
        .max_encoding_message_size(usize::MAX);
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} docs  {per_sec}  {msg}  [{elapsed_precise}]",
    )?);
    let (tx, rx) = mpsc::channel(args.in_flight.max(1));
    let collection = args.conn.collection.clone();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let sender = tokio::spawn(async move {
        for job in jobs {
            let content = match tokio::fs::read(&job.path).await {
                Ok(c) => c,
                Err(e) => return Err(format!("{}: {e}", job.path.display())),
            };
            let req = pb::IngestDocumentRequest {
                collection: collection.clone(),
                document: Some(pb::Document {
                    id: job.id,
                    media_type: job.media.as_mime().to_string(),
                    content,
                    title: String::new(),
                }),
            };
            if tx.send(req).await.is_err() {
                break;
            }
        }
        Ok(())
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
            DocStatus::Created | DocStatus::Replaced => "ingested".to_string(),
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
    sender.await??;
    let elapsed = started.elapsed();
    print_summary(&counts, &failures, &skipped, chunks, ids.len(), elapsed);
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
pub async fn ask(configured: &str, args: AskArgs) -> Result<ExitCode, BoxError> {
    let mut client = QueryServiceClient::connect(args.conn.endpoint(configured)).await?;
    let req = pb::AskRequest {
        collection: args.conn.collection,
        question: args.question,
        top_k: args.top_k,
        filter: None,
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

/// Prints the fused hits for a query with their dense, BM25 and fused scores.
pub async fn search(configured: &str, args: SearchArgs) -> Result<ExitCode, BoxError> {
    let mut client = QueryServiceClient::connect(args.conn.endpoint(configured)).await?;
    let r = client
        .retrieve(pb::RetrieveRequest {
            collection: args.conn.collection,
            query: args.query,
            top_k: args.top_k,
            filter: None,
            fusion: None,
        })
        .await?
        .into_inner();
    for (i, h) in r.hits.iter().enumerate() {
        let dense = h.dense_score.map_or("-".into(), |s| format!("{s:.3}"));
        let bm25 = h.bm25_score.map_or("-".into(), |s| format!("{s:.2}"));
        let page = if h.page > 0 {
            format!(" p.{}", h.page)
        } else {
            String::new()
        };
        println!(
            "{:>2}. {}{page} #{}  fused {:.4}  dense {dense}  bm25 {bm25}\n    {}",
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
