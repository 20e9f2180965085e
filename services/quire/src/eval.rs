//! `quire eval`: quality measured on public datasets through quire's real paths.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use quire_engine::{Engine, EngineConfig, RetrievalMode, RetrieveQuery};
use quire_evals::beir;
use quire_evals::report::{self, ModeResult};

use crate::BoxError;
use crate::bench::ingest_docs;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality on a BEIR-format dataset: ingests the corpus into a fresh collection,
    /// runs every judged query in each mode, and reports nDCG@10, Recall@10/100, MRR@10 and
    /// latency as a Markdown table, JSON and an SVG chart.
    Retrieval(RetrievalArgs),
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// BEIR directory: corpus.jsonl(.gz), queries.jsonl, qrels/<split>.tsv.
    #[arg(long)]
    beir: PathBuf,
    /// Which qrels file to judge by.
    #[arg(long, default_value = "test")]
    split: String,
    /// Modes to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bm25,dense,hybrid-rrf,hybrid-weighted"
    )]
    modes: Vec<RetrievalMode>,
    /// Where the report goes (retrieval.md, retrieval.json, retrieval.svg).
    #[arg(long, default_value = "evals/out")]
    out: PathBuf,
    /// Data directory to ingest into. Default: a fresh temporary one, removed afterwards.
    /// A directory that already holds the corpus is reused (unchanged documents are skipped).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Chunks retrieved per query for scoring; documents are ranked by their best chunk
    /// among them. Latency is timed on a second call per query asking for the top 10.
    #[arg(long, default_value_t = 300)]
    depth: usize,
    /// RRF constant for hybrid-rrf. Default: the configured one.
    #[arg(long)]
    rrf_k: Option<f32>,
    /// Dense weight for hybrid-weighted. Default: the configured one.
    #[arg(long)]
    dense_weight: Option<f32>,
    /// Only the first N corpus documents (for a quick run; judged documents may be missing).
    #[arg(long)]
    limit_docs: Option<usize>,
    /// Documents ingested concurrently.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
}

pub async fn run(config: &EngineConfig, command: EvalCommand) -> Result<ExitCode, BoxError> {
    match command {
        EvalCommand::Retrieval(args) => retrieval(config, args).await,
    }
}

const COLLECTION: &str = "eval";
/// Hits asked for when timing retrieval (quality is scored at `--depth`).
const LATENCY_TOP_K: usize = 10;

async fn retrieval(config: &EngineConfig, args: RetrievalArgs) -> Result<ExitCode, BoxError> {
    let corpus = beir::read_corpus(&args.beir, args.limit_docs.unwrap_or(usize::MAX))?;
    let queries = beir::read_queries(&args.beir)?;
    let qrels = beir::read_qrels(&args.beir, &args.split)?;
    let mut judged: Vec<(&String, &String)> = qrels
        .keys()
        .map(|id| {
            queries
                .get(id)
                .map(|text| (id, text))
                .ok_or_else(|| format!("query {id} is judged in qrels but not in queries.jsonl"))
        })
        .collect::<Result<_, _>>()?;
    judged.sort();
    let dataset = args
        .beir
        .file_name()
        .map_or("dataset".into(), |n| n.to_string_lossy().into_owned());

    let temp = args.data_dir.is_none();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("quire-eval-{}", std::process::id())));
    let engine = Engine::open(EngineConfig {
        data_dir: data_dir.clone(),
        model_dir: args
            .model_dir
            .clone()
            .unwrap_or_else(|| config.model_dir.clone()),
        max_top_k: config.max_top_k.max(args.depth),
        ..config.clone()
    })
    .await?;

    let bar = indicatif::ProgressBar::new(corpus.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "ingest {bar:30} {pos}/{len} docs, {per_sec}, eta {eta}",
        )?,
    );
    let started = Instant::now();
    let docs = corpus.len();
    let tally = ingest_docs(&engine, COLLECTION, corpus, args.in_flight, Some(&bar)).await;
    bar.finish_and_clear();
    let ingest_s = started.elapsed().as_secs_f64();
    println!(
        "{dataset}: ingested {} of {docs} documents ({} failed), {} chunks, in {ingest_s:.0} s",
        tally.ok, tally.failed, tally.chunks
    );
    let started = Instant::now();
    engine.index().optimize(COLLECTION).await?;
    println!(
        "vector index optimised in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut results: Vec<ModeResult> = Vec::new();
    for &mode in &args.modes {
        let mut rankings: HashMap<String, Vec<String>> = HashMap::new();
        let mut latencies = Vec::with_capacity(judged.len());
        for (id, text) in &judged {
            let query = RetrieveQuery {
                collection: COLLECTION.into(),
                query: (*text).clone(),
                top_k: args.depth,
                mode: Some(mode),
                rrf_k: args.rrf_k,
                dense_weight: args.dense_weight,
                ..Default::default()
            };
            let hits = engine.retrieve(&query).await?;
            // Latency as a client sees it for a typical request: the same query, top 10.
            let top10 = RetrieveQuery {
                top_k: LATENCY_TOP_K,
                ..query
            };
            let t = Instant::now();
            engine.retrieve(&top10).await?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            let ranked = report::doc_ranking(hits.iter().map(|h| h.chunk.document_id.as_str()));
            rankings.insert(
                (*id).clone(),
                ranked.into_iter().map(String::from).collect(),
            );
        }
        let r = report::score_mode(mode.name(), &rankings, &qrels, &latencies);
        println!(
            "{}: nDCG@10 {:.4}, p50 {:.1} ms",
            r.mode, r.ndcg_at_10, r.latency_p50_ms
        );
        results.push(r);
    }
    drop(engine);
    if temp {
        let _ = std::fs::remove_dir_all(&data_dir);
    }

    let settings = serde_json::json!({
        "dataset": dataset,
        "split": args.split,
        "documents": docs,
        "documents_failed": tally.failed,
        "chunks": tally.chunks,
        "ingest_s": ingest_s,
        "depth_chunks": args.depth,
        "latency_top_k": LATENCY_TOP_K,
        "rrf_k": args.rrf_k.unwrap_or(config.rrf_k),
        "dense_weight": args.dense_weight.unwrap_or(config.dense_weight),
        "chunk_tokens": config.chunk_tokens,
        "chunk_overlap_tokens": config.chunk_overlap_tokens,
        "candidates": config.candidates.max(args.depth),
    });
    std::fs::create_dir_all(&args.out)?;
    let table = report::markdown(&results);
    let md = format!(
        "# Retrieval on {dataset} ({} split, {} queries)\n\n{table}\nSettings: `{settings}`\n",
        args.split,
        judged.len()
    );
    std::fs::write(args.out.join("retrieval.md"), &md)?;
    std::fs::write(
        args.out.join("retrieval.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": settings,
            "results": results,
        }))?,
    )?;
    std::fs::write(
        args.out.join("retrieval.svg"),
        report::svg(
            &format!("quire retrieval on {dataset} ({})", args.split),
            &results,
        ),
    )?;
    println!("\n{table}\nwritten to {}", args.out.display());
    Ok(if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
