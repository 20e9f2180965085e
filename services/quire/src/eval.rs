//! `quire eval`: quality measured on public datasets through quire's real paths.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use quire_engine::prompt::AnswerStyle;
use quire_engine::{
    Answer, AskQuery, Engine, EngineConfig, RetrievalMode, RetrieveQuery, citations, prompt,
};
use quire_evals::answers::{self, Gate, Sampled};
use quire_evals::report::{self, ModeResult};
use quire_evals::{beir, squad};
use quire_index::Hit;

use crate::BoxError;
use crate::bench::{IngestTally, ingest_docs};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality on a BEIR-format dataset or a SQuAD file: ingests the corpus into a
    /// fresh collection, runs every judged query in each mode, and reports nDCG@10,
    /// Recall@10/100, MRR@10 and latency as a Markdown table, JSON and an SVG chart.
    Retrieval(RetrievalArgs),
    /// Answer quality on a SQuAD v1.1 or v2.0 file: ingests every paragraph as a document
    /// into one fresh collection, asks a seeded sample of the questions through the real
    /// `Ask` path, and reports exact match, F1, citation accuracy, abstention precision and
    /// recall, and speed as a Markdown table, JSON, an SVG chart and one JSON line per
    /// question.
    Answers(AnswersArgs),
}

#[derive(Args)]
pub struct AnswersArgs {
    /// SQuAD-format JSON file.
    #[arg(long)]
    squad: PathBuf,
    /// Questions to ask, drawn at random with `--seed`; 0 asks every question.
    #[arg(long, default_value_t = 300)]
    limit: usize,
    /// Seed of the question sample.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Skip this many questions of the seeded order first, so that a calibration sample
    /// (`--offset 300`) shares no question with the report sample (`--offset 0`).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Sources given to the model; 0 means the configured default.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Most tokens per answer. Default: the configured one.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Where the report goes (answers-NAME.md, .json, .svg, .jsonl).
    #[arg(long, default_value = "evals/out")]
    out: PathBuf,
    /// NAME in the report's file names. Default: the SQuAD file's stem and the LLM's name.
    #[arg(long)]
    name: Option<String>,
    /// Data directory to ingest into. Default: a fresh temporary one, removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Documents ingested concurrently.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// LLM: `qwen2.5-1.5b` or `smollm2-135m`. Default: the configured one.
    #[arg(long, env = "QUIRE_LLM")]
    llm: Option<String>,
    /// Answer style: `concise` or `sentences`. Default: the configured one.
    #[arg(long, env = "QUIRE_ANSWER_STYLE")]
    answer_style: Option<AnswerStyle>,
    /// Relevance threshold below which Ask abstains. Default: the configured one.
    #[arg(long, env = "QUIRE_MIN_RELEVANCE")]
    min_relevance: Option<f32>,
    /// Abstain when the model's probability of replying that the sources do not hold the
    /// answer is above this; 1 turns it off. Default: the configured one.
    #[arg(long, env = "QUIRE_ABSTAIN_PROBABILITY")]
    abstain_probability: Option<f32>,
    /// Abstain when the model's log-odds that the cited sentence answers the question are below
    /// this; `-inf` turns the check off. Default: the configured one.
    #[arg(long, env = "QUIRE_MIN_VERIFICATION", allow_hyphen_values = true)]
    min_verification: Option<f32>,
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// BEIR directory: corpus.jsonl(.gz), queries.jsonl, qrels/<split>.tsv.
    #[arg(long, required_unless_present = "squad", conflicts_with = "squad")]
    beir: Option<PathBuf>,
    /// SQuAD-format JSON file instead of BEIR: every paragraph is a document, and each
    /// answerable question is judged by the paragraph it was asked about (the corpus and the
    /// questions of `quire eval answers`).
    #[arg(long)]
    squad: Option<PathBuf>,
    /// Which qrels file to judge by (BEIR only).
    #[arg(long, default_value = "test")]
    split: String,
    /// Modes to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bm25,dense,hybrid-rrf,hybrid-weighted"
    )]
    modes: Vec<RetrievalMode>,
    /// Where the report goes (NAME.md, NAME.json, NAME.svg; see `--name`).
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
    /// Also rerank the first N fused hits (of the configured fusion) with the LLM, on a
    /// seeded sample of the queries, and report that sample with and without the rerank.
    /// 0: no rerank rows.
    #[arg(long, default_value_t = 0, value_name = "N")]
    rerank_depth: usize,
    /// Queries in the rerank sample (each costs N LLM prompt passes); 0 means all.
    #[arg(long, default_value_t = 50)]
    rerank_queries: usize,
    /// Seed of the rerank sample.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// LLM for the rerank: `qwen2.5-1.5b` or `smollm2-135m`. Default: the configured one.
    #[arg(long, env = "QUIRE_LLM")]
    llm: Option<String>,
    /// Report file names: NAME.md, NAME.json, NAME.svg. Default: `retrieval` for BEIR,
    /// `retrieval-STEM` for a SQuAD file.
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(config: &EngineConfig, command: EvalCommand) -> Result<ExitCode, BoxError> {
    match command {
        EvalCommand::Retrieval(args) => retrieval(config, args).await,
        EvalCommand::Answers(args) => answers(config, args).await,
    }
}

const COLLECTION: &str = "eval";

/// An engine over the eval's data directory: a fresh temporary one (removed by
/// [`EvalStore::close`]) unless the user named one.
struct EvalStore {
    engine: Engine,
    data_dir: PathBuf,
    temporary: bool,
}

impl EvalStore {
    async fn open(
        config: &EngineConfig,
        data_dir: Option<PathBuf>,
        model_dir: Option<PathBuf>,
        max_top_k: usize,
    ) -> Result<EvalStore, BoxError> {
        let temporary = data_dir.is_none();
        let data_dir = data_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("quire-eval-{}", std::process::id()))
        });
        let engine = Engine::open(EngineConfig {
            data_dir: data_dir.clone(),
            model_dir: model_dir.unwrap_or_else(|| config.model_dir.clone()),
            max_top_k,
            ..config.clone()
        })
        .await?;
        Ok(EvalStore {
            engine,
            data_dir,
            temporary,
        })
    }

    /// Ingests `corpus` into the eval collection and optimises its vector index; returns the
    /// tally and the ingest time in seconds.
    async fn ingest(
        &self,
        dataset: &str,
        corpus: Vec<beir::Doc>,
        in_flight: usize,
    ) -> Result<(IngestTally, f64), BoxError> {
        let bar = indicatif::ProgressBar::new(corpus.len() as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "ingest {bar:30} {pos}/{len} docs, {per_sec}, eta {eta}",
            )?,
        );
        let started = Instant::now();
        let docs = corpus.len();
        let tally = ingest_docs(&self.engine, COLLECTION, corpus, in_flight, Some(&bar)).await;
        bar.finish_and_clear();
        let ingest_s = started.elapsed().as_secs_f64();
        println!(
            "{dataset}: ingested {} of {docs} documents ({} failed), {} chunks, in {ingest_s:.0} s",
            tally.ok, tally.failed, tally.chunks
        );
        let started = Instant::now();
        self.engine.index().optimize(COLLECTION).await?;
        println!(
            "vector index optimised in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok((tally, ingest_s))
    }

    /// Closes the engine and removes a temporary data directory.
    fn close(self) {
        drop(self.engine);
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Hits asked for when timing retrieval (quality is scored at `--depth`).
const LATENCY_TOP_K: usize = 10;

/// One ranking run: for every query, the documents in the order of their best chunk among
/// the top `args.depth` hits, and the latency of each query in milliseconds.
///
/// Without a rerank, latency is a second call per query asking for the top 10, as a typical
/// client would; with one, it is the scored call itself (its LLM passes dominate).
async fn rank_queries(
    engine: &Engine,
    queries: &[(&String, &String)],
    mode: RetrievalMode,
    rerank_depth: usize,
    args: &RetrievalArgs,
) -> Result<(HashMap<String, Vec<String>>, Vec<f64>), BoxError> {
    let mut rankings: HashMap<String, Vec<String>> = HashMap::new();
    let mut latencies = Vec::with_capacity(queries.len());
    let bar = indicatif::ProgressBar::new(queries.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}, eta {eta}")?,
    );
    bar.set_message(mode.name());
    for (id, text) in queries {
        bar.inc(1);
        let query = RetrieveQuery {
            collection: COLLECTION.into(),
            query: (*text).clone(),
            top_k: args.depth,
            mode: Some(mode),
            rrf_k: args.rrf_k,
            dense_weight: args.dense_weight,
            rerank_depth: Some(rerank_depth),
            ..Default::default()
        };
        let t = Instant::now();
        let hits = engine.retrieve(&query).await?;
        let mut latency = t.elapsed();
        if rerank_depth == 0 {
            let top10 = RetrieveQuery {
                top_k: LATENCY_TOP_K,
                ..query
            };
            let t = Instant::now();
            engine.retrieve(&top10).await?;
            latency = t.elapsed();
        }
        latencies.push(latency.as_secs_f64() * 1e3);
        let ranked = report::doc_ranking(hits.iter().map(|h| h.chunk.document_id.as_str()));
        rankings.insert(
            (*id).clone(),
            ranked.into_iter().map(String::from).collect(),
        );
    }
    bar.finish_and_clear();
    Ok((rankings, latencies))
}

/// What `quire eval retrieval` judges: the corpus, the judged queries, and how the report
/// names them.
struct RetrievalSet {
    /// The dataset's name in the report (the BEIR folder, or the SQuAD file's stem).
    dataset: String,
    /// What the queries are, for the report's title ("test split", "answerable questions").
    split: String,
    /// The report's file name, without extension.
    name: String,
    corpus: Vec<beir::Doc>,
    queries: HashMap<String, String>,
    qrels: HashMap<String, quire_evals::Qrels>,
}

/// Reads the BEIR folder or the SQuAD file that `args` names (clap requires exactly one).
fn retrieval_set(args: &RetrievalArgs) -> Result<RetrievalSet, BoxError> {
    let limit = args.limit_docs.unwrap_or(usize::MAX);
    let set = match (&args.beir, &args.squad) {
        (Some(dir), _) => RetrievalSet {
            dataset: dir
                .file_name()
                .map_or("dataset".into(), |n| n.to_string_lossy().into_owned()),
            split: format!("{} split", args.split),
            name: "retrieval".into(),
            corpus: beir::read_corpus(dir, limit)?,
            queries: beir::read_queries(dir)?,
            qrels: beir::read_qrels(dir, &args.split)?,
        },
        (None, Some(file)) => {
            let (_, articles) = squad::read(file)?;
            let mut corpus = answers::corpus(&articles);
            corpus.truncate(limit);
            let (queries, qrels) = answers::retrieval_judgements(&articles);
            let stem = squad_stem(file);
            RetrievalSet {
                name: format!("retrieval-{stem}"),
                dataset: stem,
                split: "answerable questions".into(),
                corpus,
                queries,
                qrels,
            }
        }
        (None, None) => return Err("give --beir DIR or --squad FILE".into()),
    };
    Ok(RetrievalSet {
        name: args.name.clone().unwrap_or(set.name),
        ..set
    })
}

/// A SQuAD file's name without its extension, as the reports name it.
fn squad_stem(file: &std::path::Path) -> String {
    file.file_stem()
        .map_or("squad".into(), |n| n.to_string_lossy().into_owned())
}

async fn retrieval(config: &EngineConfig, args: RetrievalArgs) -> Result<ExitCode, BoxError> {
    let mut config = config.clone();
    if let Some(llm) = &args.llm {
        config.llm = llm.clone();
    }
    let config = &config;
    let RetrievalSet {
        dataset,
        split,
        name,
        corpus,
        queries,
        qrels,
    } = retrieval_set(&args)?;
    let mut judged: Vec<(&String, &String)> = qrels
        .keys()
        .map(|id| {
            queries
                .get(id)
                .map(|text| (id, text))
                .ok_or_else(|| format!("query {id} is judged but has no text"))
        })
        .collect::<Result<_, _>>()?;
    judged.sort();

    let store = EvalStore::open(
        config,
        args.data_dir.clone(),
        args.model_dir.clone(),
        config.max_top_k.max(args.depth),
    )
    .await?;
    let docs = corpus.len();
    let (tally, ingest_s) = store.ingest(&dataset, corpus, args.in_flight).await?;
    let engine = &store.engine;

    let mut results: Vec<ModeResult> = Vec::new();
    let mut report_row = |r: ModeResult| {
        println!(
            "{}: nDCG@10 {:.4}, p50 {:.1} ms ({} queries)",
            r.mode, r.ndcg_at_10, r.latency_p50_ms, r.queries
        );
        results.push(r);
    };
    for &mode in &args.modes {
        let (rankings, latencies) = rank_queries(engine, &judged, mode, 0, &args).await?;
        report_row(report::score_mode(
            mode.name(),
            &rankings,
            &qrels,
            &latencies,
        ));
    }
    let rerank_mode = config.retrieval_mode;
    let mut rerank_sample = 0;
    if args.rerank_depth > 0 {
        engine.load_generator().await?;
        let sample = quire_evals::seeded_sample(judged.clone(), args.seed, args.rerank_queries);
        rerank_sample = sample.len();
        let sample_qrels: HashMap<String, quire_evals::Qrels> = sample
            .iter()
            .filter_map(|(id, _)| qrels.get(*id).map(|q| ((*id).clone(), q.clone())))
            .collect();
        for depth in [0, args.rerank_depth] {
            let (rankings, latencies) =
                rank_queries(engine, &sample, rerank_mode, depth, &args).await?;
            let name = match depth {
                0 => format!("{} (rerank sample)", rerank_mode.name()),
                d => format!("{} + LLM rerank@{d}", rerank_mode.name()),
            };
            report_row(report::score_mode(
                &name,
                &rankings,
                &sample_qrels,
                &latencies,
            ));
        }
    }
    store.close();

    let settings = serde_json::json!({
        "dataset": dataset,
        "split": split,
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
        "rerank_depth": args.rerank_depth,
        "rerank_queries": rerank_sample,
        "rerank_seed": args.seed,
        "rerank_llm": config.llm,
        "rerank_prompt_version": prompt::RERANK_VERSION,
        "rerank_fusion": rerank_mode.name(),
    });
    std::fs::create_dir_all(&args.out)?;
    let table = report::markdown(&results);
    let md = format!(
        "# Retrieval on {dataset} ({split}, {} queries)\n\n{table}\nSettings: `{settings}`\n",
        judged.len()
    );
    std::fs::write(args.out.join(format!("{name}.md")), &md)?;
    std::fs::write(
        args.out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": settings,
            "results": results,
        }))?,
    )?;
    std::fs::write(
        args.out.join(format!("{name}.svg")),
        report::svg(&format!("quire retrieval on {dataset} ({split})"), &results),
    )?;
    println!("\n{table}\nwritten to {}", args.out.display());
    Ok(if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn answers(config: &EngineConfig, args: AnswersArgs) -> Result<ExitCode, BoxError> {
    let mut config = config.clone();
    if let Some(llm) = &args.llm {
        config.llm = llm.clone();
    }
    if let Some(style) = args.answer_style {
        config.answer_style = style;
    }
    if let Some(min) = args.min_relevance {
        config.min_relevance = min;
    }
    if let Some(p) = args.abstain_probability {
        config.abstain_probability = Some(p);
    }
    if let Some(v) = args.min_verification {
        config.min_verification = Some(v);
    }
    let config = &config;
    let (version, articles) = squad::read(&args.squad)?;
    let questions = answers::sample(&articles, args.seed, args.offset, args.limit);
    let stem = squad_stem(&args.squad);
    let model = config
        .llm_dir
        .as_ref()
        .map_or(config.llm.clone(), |d| d.display().to_string());
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{stem}-{}", config.llm));
    let corpus = answers::corpus(&articles);
    let paragraphs = corpus.len();

    let store = EvalStore::open(
        config,
        args.data_dir.clone(),
        args.model_dir.clone(),
        config.max_top_k,
    )
    .await?;
    let (tally, ingest_s) = store.ingest(&stem, corpus, args.in_flight).await?;
    let engine = &store.engine;
    engine.load_generator().await?;
    let abstain_probability = engine.abstain_probability();
    let min_verification = engine.min_verification();

    let bar = indicatif::ProgressBar::new(questions.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("ask {bar:30} {pos}/{len}, {per_sec}, eta {eta}")?,
    );
    let sources = if args.top_k == 0 {
        config.ask_sources
    } else {
        args.top_k
    };
    std::fs::create_dir_all(&args.out)?;
    let path = |ext: &str| args.out.join(format!("answers-{name}.{ext}"));
    // One line per question as it is answered, so an interrupted run still shows its work.
    let mut lines = std::io::BufWriter::new(std::fs::File::create(path("jsonl"))?);
    let mut outcomes = Vec::with_capacity(questions.len());
    let mut failed = 0usize;
    for q in &questions {
        bar.inc(1);
        let query = AskQuery {
            collection: COLLECTION.into(),
            question: q.question.clone(),
            top_k: args.top_k,
            max_tokens: args.max_tokens,
            ..Default::default()
        };
        let started = Instant::now();
        let answer = match engine.ask(&query, None).await {
            Ok(a) => a,
            Err(e) => {
                failed += 1;
                bar.println(format!("{}: Ask failed: {e}", q.id));
                continue;
            }
        };
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        let o = outcome(q, &answer, total_ms);
        serde_json::to_writer(&mut lines, &o)?;
        lines.write_all(b"\n")?;
        lines.flush()?;
        outcomes.push(o);
    }
    bar.finish_and_clear();
    store.close();

    let summary = answers::summarize(&model, &outcomes);
    let threshold = answers::calibrate_threshold(&outcomes, CALIBRATION_KEEP);
    let unanswerable_below = threshold.map(|t| {
        let below = outcomes
            .iter()
            .filter(|o| !o.answerable() && o.best_similarity.is_some_and(|s| s < t))
            .count();
        (below, summary.unanswerable)
    });
    let settings = serde_json::json!({
        "squad": stem,
        "squad_version": version,
        "paragraphs": paragraphs,
        "paragraphs_failed": tally.failed,
        "chunks": tally.chunks,
        "ingest_s": ingest_s,
        "limit": args.limit,
        "seed": args.seed,
        "offset": args.offset,
        "asked": questions.len(),
        "ask_failed": failed,
        "llm": model,
        "sources": sources,
        "max_tokens": args.max_tokens.unwrap_or(config.max_answer_tokens),
        "min_relevance": config.min_relevance,
        "abstain_probability": abstain_probability,
        "min_verification": min_verification,
        "verify_version": prompt::VERIFY_VERSION,
        "retrieval_mode": config.retrieval_mode.name(),
        "prompt_version": prompt::PROMPT_VERSION,
        "answer_style": config.answer_style,
    });
    let table = answers::markdown(std::slice::from_ref(&summary));
    let curve = answers::abstention_curve(&outcomes, Gate::NoAnswer, Some(abstain_probability));
    let best = answers::calibrate_abstain_threshold(&curve, CALIBRATION_PRECISION);
    let verify_curve = answers::abstention_curve(&outcomes, Gate::Verification, min_verification);
    let verify_best = answers::calibrate_abstain_threshold(&verify_curve, CALIBRATION_PRECISION);
    let unanswerable = summary.unanswerable > 0;
    let abstain_line = gate_line(
        "Abstention threshold",
        "the no-answer probability above which abstaining",
        best,
        Some(abstain_probability),
        unanswerable,
    ) + &gate_line(
        "Answer-check threshold",
        "the answer check's log-odds below which abstaining",
        verify_best,
        min_verification,
        unanswerable && !verify_curve.is_empty(),
    );
    let calibration = match (threshold, unanswerable_below) {
        (Some(t), Some((below, of))) => format!(
            "Relevance threshold supported by this data: {t:.3} (the best-candidate similarity \
             that {:.0}% of answerable questions with their paragraph retrieved reach; \
             {below} of {of} unanswerable questions fall below it). Configured: {:.3}.\n",
            CALIBRATION_KEEP * 100.0,
            config.min_relevance
        ),
        _ => String::new(),
    };
    let md = format!(
        "# Answers on {stem} ({} questions, seed {}, offset {})\n\n{table}\n{calibration}\n\
         {abstain_line}\nSettings: `{settings}`\n",
        questions.len(),
        args.seed,
        args.offset
    );
    std::fs::write(path("md"), &md)?;
    std::fs::write(
        path("json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": settings,
            "summary": summary,
            "calibrated_min_relevance": threshold,
            "calibrated_abstain_probability": best,
            "abstention_curve": curve,
            "calibrated_min_verification": verify_best,
            "verification_curve": verify_curve,
        }))?,
    )?;
    std::fs::write(
        path("svg"),
        answers::svg(&format!("quire answers on {stem}"), &[summary]),
    )?;
    println!(
        "\n{table}\n{calibration}{abstain_line}written to {}",
        path("md").display()
    );
    Ok(if failed > 0 || tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The report's sentence on what threshold of one gate the run's data supports.
fn gate_line(
    name: &str,
    rule: &str,
    best: Option<&answers::AbstainPoint>,
    configured: Option<f32>,
    scorable: bool,
) -> String {
    let configured = configured.map_or("off".to_string(), |c| format!("{c:.4}"));
    match best {
        Some(b) => format!(
            "{name} supported by this data: {:.4} ({rule} catches the most unanswerable \
             questions at abstention precision ≥ {CALIBRATION_PRECISION}: there precision {:.3}, \
             recall {:.3}, F1 {:.3}, false abstention {:.3}, SQuAD v2.0 F1 over all questions \
             {:.3}). Configured: {configured}.\n",
            b.threshold,
            b.abstention_precision,
            b.abstention_recall,
            b.f1,
            b.false_abstention,
            b.squad_f1,
        ),
        None if scorable => format!(
            "{name}: no setting at least as strict as the configured {configured} keeps \
             abstention precision ≥ {CALIBRATION_PRECISION} on this data.\n"
        ),
        None => String::new(),
    }
}

/// Abstention precision the calibrated abstention threshold must keep.
const CALIBRATION_PRECISION: f64 = 0.8;

/// Share of answerable questions the calibrated relevance threshold must let through.
const CALIBRATION_KEEP: f64 = 0.99;

/// Scores one answer against the question's gold answers and paragraph.
fn outcome(q: &Sampled, answer: &Answer, total_ms: f64) -> answers::Outcome {
    let holds_answer = |hit: &Hit| {
        q.golds
            .iter()
            .any(|g| squad::contains_answer(&hit.chunk.text, g))
    };
    let holds_gold = |hit: &Hit| hit.chunk.document_id == q.document_id && holds_answer(hit);
    let answered = !q.golds.is_empty() && answer.abstained.is_none();
    let abstained = answer.abstained.is_some();
    let mut o = answers::Outcome {
        id: q.id.clone(),
        question: q.question.clone(),
        golds: q.golds.clone(),
        answer: answer.text.clone(),
        abstained,
        abstain_reason: answer.abstained.clone().unwrap_or_default(),
        cited_gold: answered.then(|| answer.citations.iter().any(|c| holds_gold(&c.hit))),
        cited_answer: answered.then(|| answer.citations.iter().any(|c| holds_answer(&c.hit))),
        cited_documents: answer
            .citations
            .iter()
            .map(|c| c.hit.chunk.document_id.clone())
            .collect(),
        source_documents: answer
            .sources
            .iter()
            .map(|h| h.chunk.document_id.clone())
            .collect(),
        gold_in_sources: answer
            .sources
            .iter()
            .any(|h| h.chunk.document_id == q.document_id),
        best_similarity: answer.best_similarity,
        no_answer_probability: answer.no_answer_probability,
        verification_log_odds: answer.verification_log_odds,
        verification_evidence: answer.verification_evidence.clone(),
        token_logprobs: answer.token_logprobs.clone(),
        sentences: answer.sentences.len(),
        supported_sentences: answer.sentences.iter().filter(|s| s.supported).count(),
        prompt_tokens: answer.prompt_tokens,
        completion_tokens: answer.completion_tokens,
        time_to_first_token_ms: answer.time_to_first_token.as_secs_f64() * 1e3,
        generate_ms: answer.generate_time.as_secs_f64() * 1e3,
        total_ms,
        ..Default::default()
    };
    o.score(&citations::strip_markers(&answer.text));
    o
}
