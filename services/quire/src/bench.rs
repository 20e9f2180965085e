//! `quire bench`: throughput measurements on a real corpus (a BEIR directory such as SciFact).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use quire_engine::{
    Engine, EngineConfig, IncomingDocument, RetrievalMode, RetrieveQuery, StageTimings,
};
use quire_evals::beir::{Doc, read_corpus};
use quire_models::Embedder;

use crate::BoxError;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput of the embedder alone, in tokens/s.
    Embed(EmbedArgs),
    /// Whole-pipeline ingest throughput (parse, chunk, embed, write) into a fresh data
    /// directory, with the time split by stage and the peak memory.
    Ingest(IngestBenchArgs),
    /// Encoder throughput on synthetic token ids (any BERT config and safetensors), on the
    /// device quire selects; prints one JSON line. Used by deploy/gpu/check.sh.
    Encoder(EncoderArgs),
    /// Prompt and decode speed of a chat model on synthetic token ids (greedy, end tokens
    /// ignored); prints one JSON line. Used by deploy/gpu/check.sh.
    Decode(DecodeArgs),
    /// Retrieval latency at scale: a collection of `--chunks` chunks built around a BEIR corpus
    /// (real texts; vectors drawn around each document's real embedding), then the corpus's
    /// queries timed in each mode, before and after the vector index is optimised.
    Retrieve(RetrieveBenchArgs),
}

#[derive(Args)]
pub struct RetrieveBenchArgs {
    /// BEIR directory: the corpus the chunks are built from, and `queries.jsonl`.
    #[arg(long)]
    corpus: PathBuf,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Chunks in the collection.
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Chunks per stored document.
    #[arg(long, default_value_t = 10)]
    per_doc: usize,
    /// Corpus documents the chunks are built from, from the start (default: all).
    #[arg(long)]
    docs: Option<usize>,
    /// Queries timed per mode (the first ones of `queries.jsonl` by id).
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Hits asked for.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
}

#[derive(Args)]
pub struct EncoderArgs {
    /// BERT `config.json`.
    #[arg(long)]
    model_config: PathBuf,
    /// BERT weights (`model.safetensors`).
    #[arg(long)]
    weights: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Tokens per sequence (no padding).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed passes; the median is reported.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Then one more pass with the device synchronised after each stage, reporting the
    /// time per stage.
    #[arg(long)]
    profile: bool,
    /// Pad every other sequence: its last quarter is masked out (reported as
    /// `encoder_padded`).
    #[arg(long)]
    padding: bool,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json, chat
    /// template), run in bf16 on a GPU.
    #[arg(long, conflicts_with = "llm")]
    model: Option<PathBuf>,
    /// Or a GGUF model from the model directory: `qwen2.5-1.5b` or `smollm2-135m`.
    #[arg(long)]
    llm: Option<String>,
    /// Model directory, for `--llm`.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 2000)]
    prompt_tokens: usize,
    /// Tokens generated after the prompt.
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// Untimed runs first (short ones).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Deterministic pseudo-random token ids in `[lo, hi)` (64-bit LCG): synthetic input whose
/// content does not matter, only its shape. deploy/gpu/torch_side.py draws the same ids.
fn synthetic_ids(count: usize, lo: u32, hi: u32, seed: u64) -> Vec<u32> {
    let span = u64::from(hi.saturating_sub(lo).max(1));
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + ((state >> 33) % span) as u32
        })
        .collect()
}

fn encoder(args: EncoderArgs) -> Result<ExitCode, BoxError> {
    let device = quire_models::select_device();
    let dtype = quire_models::model_dtype(&device);
    let model =
        quire_models::EmbeddingModel::load(&args.model_config, &args.weights, &device, dtype)?;
    let (n, seq) = (args.batch.max(1), args.seq.max(1));
    // Ids above the special tokens of a BERT vocabulary.
    let vocab = u32::try_from(model.vocab_size())?;
    let id_range = (1000.min(vocab / 2), vocab);
    let ids = synthetic_ids(n * seq, id_range.0, id_range.1, 7);
    let mut mask = vec![1u32; n * seq];
    if args.padding {
        for row in (1..n).step_by(2) {
            let start = row * seq + seq - seq / 4;
            mask[start..(row + 1) * seq].fill(0);
        }
    }
    let mut times = Vec::new();
    let mut sample = Vec::new();
    for round in 0..args.warmup + args.rounds.max(1) {
        let started = Instant::now();
        let vectors = model.embed_ids(ids.clone(), mask.clone(), n, seq)?;
        let secs = started.elapsed().as_secs_f64();
        if vectors.len() != n {
            return Err(format!("{} vectors for {n} sequences", vectors.len()).into());
        }
        if round >= args.warmup {
            times.push(secs);
        }
        sample = vectors.into_iter().take(4).collect();
    }
    let secs = median(times);
    let mut stages = serde_json::Map::new();
    if args.profile {
        let mut profile = quire_models::StageProfile::default();
        model.embed_ids_profiled(ids, mask, n, seq, Some(&mut profile))?;
        for (stage, spent) in profile.stages {
            stages.insert(stage.to_string(), (spent.as_secs_f64() * 1e3).into());
        }
    }
    let report = serde_json::json!({
        "bench": if args.padding { "encoder_padded" } else { "encoder" },
        "profile_ms": stages,
        "device": format!("{device:?}"),
        "dtype": format!("{dtype:?}"),
        "cpu_amx": quire_models::cpu_amx(),
        "batch": n,
        "seq": seq,
        "median_batch_s": secs,
        "chunks_per_s": n as f64 / secs,
        "tokens_per_s": (n * seq) as f64 / secs,
        "ids": {"seed": 7, "lo": id_range.0, "hi": id_range.1},
        "first_vectors": sample,
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn decode(config: &EngineConfig, args: DecodeArgs) -> Result<ExitCode, BoxError> {
    let load_started = Instant::now();
    let generator = match (&args.model, &args.llm) {
        (Some(dir), _) => quire_models::Generator::load_dir(dir)?,
        (None, Some(name)) => {
            let dir = args
                .model_dir
                .clone()
                .unwrap_or_else(|| config.model_dir.clone());
            quire_models::Generator::load(&dir, name.parse()?)?
        }
        (None, None) => return Err("give --model DIR or --llm NAME".into()),
    };
    let load_s = load_started.elapsed().as_secs_f64();
    let vocab = generator.tokenizer().get_vocab_size(true) as u32;
    // Ordinary tokens only: the first 100 ids of these vocabularies are bytes and
    // punctuation, the last ones control tokens.
    let id_range = (100, vocab.saturating_sub(512).max(101));
    let prompt = synthetic_ids(args.prompt_tokens.max(1), id_range.0, id_range.1, 11);
    for _ in 0..args.warmup {
        generator.bench_decode(&prompt[..prompt.len().min(128)], 8)?;
    }
    let (mut ttft, mut prefill, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = Vec::new();
    let mut first_top = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let t = generator.bench_decode(&prompt, args.new_tokens.max(1))?;
        let p = t.prefill.as_secs_f64();
        ttft.push(p);
        prefill.push(t.prompt_tokens as f64 / p);
        if t.generated_tokens > 1 {
            decode.push((t.generated_tokens - 1) as f64 / t.decode.as_secs_f64());
        }
        tokens = t.tokens;
        first_top = t.first_top;
    }
    let report = serde_json::json!({
        "bench": "decode",
        "model": generator.name(),
        "load_s": load_s,
        "prompt_tokens": prompt.len(),
        "new_tokens": args.new_tokens,
        "first_token_s": median(ttft),
        "prompt_tokens_per_s": median(prefill),
        "decode_tokens_per_s": median(decode),
        "ids": {"seed": 11, "lo": id_range.0, "hi": id_range.1},
        "tokens": tokens,
        "first_top": first_top,
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct IngestBenchArgs {
    /// BEIR directory holding `corpus.jsonl` or `corpus.jsonl.gz`; each document is its title
    /// and text, as plain text.
    #[arg(long)]
    corpus: PathBuf,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Documents to ingest, from the start of the corpus.
    #[arg(long, default_value_t = 1000)]
    docs: usize,
    /// Documents in flight at once (the engine runs `ingest_workers` of them on the CPU).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// BEIR directory holding `corpus.jsonl` or `corpus.jsonl.gz`.
    #[arg(long)]
    corpus: PathBuf,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Documents (abstracts) to embed, from the start of the corpus.
    #[arg(long, default_value_t = 512)]
    docs: usize,
    /// Timed rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Token budgets of one forward pass to compare (texts × padded length).
    #[arg(long, value_delimiter = ',', default_value = "8192,16384")]
    batch_tokens: Vec<usize>,
}

/// What [`ingest_docs`] did.
#[derive(Default)]
pub struct IngestTally {
    pub ok: usize,
    pub failed: usize,
    pub chunks: u64,
    /// Stage times and embedded tokens, summed over the documents.
    pub timings: StageTimings,
}

/// Ingests BEIR documents (title, blank line, text, as plain text) into `collection` through
/// the engine's ingest path, `in_flight` at a time. Failures are printed and counted;
/// `progress` advances once per document.
pub async fn ingest_docs(
    engine: &Engine,
    collection: &str,
    docs: Vec<Doc>,
    in_flight: usize,
    progress: Option<&indicatif::ProgressBar>,
) -> IngestTally {
    use futures::StreamExt;
    let mut results = futures::stream::iter(docs)
        .map(|d| async move {
            let id = d.id.clone();
            let doc = IncomingDocument {
                id: d.id,
                media_type: "text/plain".into(),
                content: format!("{}\n\n{}", d.title, d.text).into_bytes(),
                title: Some(d.title).filter(|t| !t.is_empty()),
                metadata: Default::default(),
            };
            (id, engine.ingest(collection, doc).await)
        })
        .buffer_unordered(in_flight.max(1));
    let mut tally = IngestTally::default();
    while let Some((id, r)) = results.next().await {
        if let Some(bar) = progress {
            bar.inc(1);
        }
        match r {
            Ok(o) => {
                tally.ok += 1;
                tally.chunks += u64::from(o.chunks);
                tally.timings += o.timings;
            }
            Err(e) => {
                tally.failed += 1;
                eprintln!("{id}: failed: {e}");
            }
        }
    }
    tally
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(config: &EngineConfig, command: BenchCommand) -> Result<ExitCode, BoxError> {
    match command {
        BenchCommand::Embed(args) => embed(&config.model_dir, args),
        BenchCommand::Ingest(args) => ingest(config, args).await,
        BenchCommand::Encoder(args) => tokio::task::block_in_place(|| encoder(args)),
        BenchCommand::Decode(args) => tokio::task::block_in_place(|| decode(config, args)),
        BenchCommand::Retrieve(args) => retrieve(config, args).await,
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn ingest(config: &EngineConfig, args: IngestBenchArgs) -> Result<ExitCode, BoxError> {
    let docs = read_corpus(&args.corpus, args.docs)?;
    let data_dir = std::env::temp_dir().join(format!("quire-bench-{}", std::process::id()));
    let config = EngineConfig {
        data_dir: data_dir.clone(),
        model_dir: args.model_dir.unwrap_or_else(|| config.model_dir.clone()),
        ..config.clone()
    };
    let workers = config.ingest_workers;
    let engine = Engine::open(config).await?;
    let bytes: usize = docs.iter().map(|d| d.title.len() + d.text.len() + 2).sum();
    println!(
        "quire ingest: {} documents ({:.1} MB) from {}, {} in flight, {workers} ingest workers, \
         AMX {}",
        docs.len(),
        bytes as f64 / 1e6,
        args.corpus.display(),
        args.in_flight,
        on_off(quire_models::cpu_amx())
    );
    let started = Instant::now();
    let tally = ingest_docs(&engine, "bench", docs, args.in_flight, None).await;
    let wall = started.elapsed().as_secs_f64();
    let (ok, failed, chunks, t) = (tally.ok, tally.failed, tally.chunks, tally.timings);
    let work = (t.parse + t.chunk + t.embed + t.write)
        .as_secs_f64()
        .max(1e-9);
    println!(
        "ingested {ok} documents ({failed} failed), {chunks} chunks in {wall:.1} s: \
         {:.2} docs/s, {:.2} chunks/s",
        ok as f64 / wall,
        chunks as f64 / wall
    );
    println!(
        "embedded {} tokens: {:.0} tokens/s for the whole pipeline",
        t.embedded_tokens,
        t.embedded_tokens as f64 / wall
    );
    println!("stage time, summed over documents (stages of different documents overlap):");
    for (name, d) in [
        ("parse", t.parse),
        ("chunk", t.chunk),
        ("embed", t.embed),
        ("write", t.write),
    ] {
        let secs = d.as_secs_f64();
        println!("  {name:<6} {secs:>9.2} s  {:>5.1}%", 100.0 * secs / work);
    }
    println!(
        "  (waiting for an ingest slot: {:.2} s)",
        t.queue.as_secs_f64()
    );
    if let Some(mib) = peak_rss_mib() {
        println!("peak memory (VmHWM): {mib:.0} MiB");
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn embed(default_model_dir: &Path, args: EmbedArgs) -> Result<ExitCode, BoxError> {
    let model_dir = args
        .model_dir
        .unwrap_or_else(|| default_model_dir.to_path_buf());
    let docs = read_corpus(&args.corpus, args.docs)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let mut embedder = Embedder::load(&model_dir)?;
    let tokens: usize = embedder.token_counts(&texts)?.iter().sum();
    println!(
        "quire embed: {} texts, {tokens} tokens (truncated at {}), {} threads, AMX {}",
        texts.len(),
        embedder.max_tokens(),
        candle_core::utils::get_num_threads(),
        on_off(quire_models::cpu_amx())
    );
    embedder.embed(&texts[..texts.len().min(32)])?; // warm-up
    for budget in args.batch_tokens {
        embedder = embedder.with_batch_tokens(budget);
        let mut rates = Vec::new();
        for round in 0..args.rounds {
            let t = Instant::now();
            embedder.embed(&texts)?;
            let secs = t.elapsed().as_secs_f64();
            rates.push(tokens as f64 / secs);
            println!(
                "  batch_tokens {budget:>6} round {}: {secs:.2} s, {:.0} tokens/s",
                round + 1,
                tokens as f64 / secs
            );
        }
        println!(
            "quire batch_tokens={budget}: median {:.0} tokens/s",
            median(rates)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Cosine between a synthetic chunk's vector and its document's embedding, about.
const SYNTHETIC_COSINE: f64 = 0.9;

/// `base` (unit length) moved by uniform noise drawn from `seed`, renormalised, so that its
/// cosine to `base` is about [`SYNTHETIC_COSINE`].
fn perturbed(base: &[f32], seed: u64) -> Vec<f32> {
    let d = base.len() as f64;
    // Uniform noise in [-a, a] has variance a²/3; the noise norm² is about d·a²/3, and
    // cos = 1 / sqrt(1 + noise²).
    let a = (3.0 * (1.0 / (SYNTHETIC_COSINE * SYNTHETIC_COSINE) - 1.0) / d).sqrt();
    const STEPS: u32 = 1 << 20;
    let noise = synthetic_ids(base.len(), 0, STEPS, seed);
    let v: Vec<f32> = base
        .iter()
        .zip(noise)
        .map(|(b, n)| b + (a * (2.0 * f64::from(n) / f64::from(STEPS) - 1.0)) as f32)
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / norm).collect()
}

/// A synthetic chunk's text: up to three sentences of `text`, starting at sentence `k`.
fn synthetic_text(title: &str, text: &str, k: usize) -> String {
    let sentences: Vec<&str> = text.split_inclusive(". ").collect();
    if sentences.is_empty() {
        return title.to_string();
    }
    let start = k % sentences.len();
    let picked: String = sentences
        .iter()
        .cycle()
        .skip(start)
        .take(3.min(sentences.len()))
        .copied()
        .collect();
    format!("{title}. {picked}")
}

async fn retrieve(config: &EngineConfig, args: RetrieveBenchArgs) -> Result<ExitCode, BoxError> {
    let docs = read_corpus(&args.corpus, args.docs.unwrap_or(usize::MAX))?;
    if docs.is_empty() {
        return Err("the corpus has no documents".into());
    }
    let mut queries: Vec<(String, String)> = quire_evals::beir::read_queries(&args.corpus)?
        .into_iter()
        .collect();
    queries.sort();
    queries.truncate(args.queries.max(1));
    let model_dir = args
        .model_dir
        .clone()
        .unwrap_or_else(|| config.model_dir.clone());

    let started = Instant::now();
    let embedder = Embedder::load(&model_dir)?;
    let texts: Vec<String> = docs
        .iter()
        .map(|d| format!("{}\n\n{}", d.title, d.text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bases = tokio::task::block_in_place(|| embedder.embed(&refs))?;
    drop(embedder);
    let embed_s = started.elapsed().as_secs_f64();
    println!("embedded {} corpus documents in {embed_s:.0} s", docs.len());

    let data_dir = std::env::temp_dir().join(format!("quire-bench-{}", std::process::id()));
    let engine = Engine::open(EngineConfig {
        data_dir: data_dir.clone(),
        model_dir,
        // The benchmark decides when to optimise.
        optimize_after_chunks: 0,
        ..config.clone()
    })
    .await?;
    const COLLECTION: &str = "scale";
    engine.create_collection(COLLECTION).await?;
    let started = Instant::now();
    let per_doc = args.per_doc.max(1);
    let bar = indicatif::ProgressBar::new(args.chunks as u64).with_style(
        indicatif::ProgressStyle::with_template("write {bar:30} {pos}/{len} chunks, eta {eta}")?,
    );
    for (g, first) in (0..args.chunks).step_by(per_doc).enumerate() {
        let chunks: Vec<quire_index::NewChunk> = (first..(first + per_doc).min(args.chunks))
            .enumerate()
            .map(|(o, j)| {
                let (i, k) = (j % docs.len(), j / docs.len());
                let text = synthetic_text(&docs[i].title, &docs[i].text, k);
                quire_index::NewChunk {
                    ordinal: o as u32,
                    page: None,
                    start: 0,
                    end: text.len() as u64,
                    indexed_text: text.clone(),
                    text,
                    vector: perturbed(&bases[i], j as u64),
                }
            })
            .collect();
        bar.inc(chunks.len() as u64);
        let doc = quire_index::NewDocument {
            id: format!("s{g}"),
            content_hash: format!("synthetic-{g}"),
            media_type: "text/plain".into(),
            title: None,
            bytes: 0,
            metadata: Default::default(),
        };
        engine.index().put_document(COLLECTION, doc, chunks).await?;
    }
    bar.finish_and_clear();
    let write_s = started.elapsed().as_secs_f64();
    println!("wrote {} chunks in {write_s:.0} s", args.chunks);

    let modes = [
        RetrievalMode::HybridRrf,
        RetrievalMode::Dense,
        RetrievalMode::Bm25,
    ];
    let mut report = serde_json::Map::new();
    let unoptimised = time_queries(&engine, COLLECTION, &queries, args.top_k, &modes).await?;
    let started = Instant::now();
    engine.index().optimize(COLLECTION).await?;
    let optimize_s = started.elapsed().as_secs_f64();
    println!("optimised in {optimize_s:.0} s");
    let optimised = time_queries(&engine, COLLECTION, &queries, args.top_k, &modes).await?;
    for (phase, timings) in [
        ("before_optimize", unoptimised),
        ("after_optimize", optimised),
    ] {
        let mut m = serde_json::Map::new();
        for (mode, ms) in timings {
            let p50 = quire_evals::report::percentile(&ms, 50.0);
            let p99 = quire_evals::report::percentile(&ms, 99.0);
            println!(
                "{phase:<16} {:<16} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms",
                mode.name()
            );
            m.insert(
                mode.name().into(),
                serde_json::json!({"p50_ms": p50, "p99_ms": p99}),
            );
        }
        report.insert(phase.into(), m.into());
    }
    let summary = serde_json::json!({
        "bench": "retrieve",
        "chunks": args.chunks,
        "corpus_documents": docs.len(),
        "queries": queries.len(),
        "top_k": args.top_k,
        "candidates": config.candidates,
        "embed_corpus_s": embed_s,
        "write_s": write_s,
        "optimize_s": optimize_s,
        "peak_rss_mib": peak_rss_mib(),
        "latency": report,
    });
    println!("{summary}");
    drop(engine);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(ExitCode::SUCCESS)
}

/// Latency of one `Retrieve` per query (query embedding included), per mode, in ms, after a
/// warm-up pass over the first 20 queries.
async fn time_queries(
    engine: &Engine,
    collection: &str,
    queries: &[(String, String)],
    top_k: usize,
    modes: &[RetrievalMode],
) -> Result<Vec<(RetrievalMode, Vec<f64>)>, BoxError> {
    let mut out = Vec::new();
    for &mode in modes {
        let query = |text: &str| RetrieveQuery {
            collection: collection.into(),
            query: text.into(),
            top_k,
            mode: Some(mode),
            ..Default::default()
        };
        for (_, text) in queries.iter().take(20) {
            engine.retrieve(&query(text)).await?;
        }
        let mut ms = Vec::with_capacity(queries.len());
        for (_, text) in queries {
            let t = Instant::now();
            engine.retrieve(&query(text)).await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        out.push((mode, ms));
    }
    Ok(out)
}
