//! `quire extract`: what the loaders make of files, without a server or models. PDFs are read
//! in a child process with capped memory, as `serve` reads them, unless `isolate_pdf` is off.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use quire_engine::EngineConfig;
use quire_engine::pdf_worker::PdfWorker;
use quire_ingest::{Limits, MediaType};

use crate::BoxError;

#[derive(Args)]
pub struct ExtractArgs {
    /// Files to extract.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one summary line per file (outcome, time, pages, characters) instead of the text.
    #[arg(long)]
    summary: bool,
}

/// Loads each file with the configured limits, PDFs in a child process run from `reader`
/// (capped as `serve` caps it) when one is given. Exits non-zero if any file fails.
pub fn run(
    cfg: &EngineConfig,
    reader: Option<PathBuf>,
    args: ExtractArgs,
) -> Result<ExitCode, BoxError> {
    let worker = reader.map(|program| PdfWorker {
        program,
        memory_limit: cfg.pdf_memory_limit_bytes,
    });
    let limits = Limits {
        max_bytes: cfg.max_document_bytes,
        max_pages: cfg.max_pages,
        max_decompressed_bytes: cfg.max_decompressed_bytes,
        max_extracted_chars: cfg.max_extracted_chars,
        max_parse_time: Duration::from_millis(cfg.max_parse_ms),
    };
    let mut failed = 0;
    for path in &args.files {
        let media = MediaType::from_path(path)
            .ok_or_else(|| format!("{}: unknown file type", path.display()))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let started = Instant::now();
        let result = match (&worker, media) {
            (Some(worker), MediaType::Pdf) => {
                worker.load(&bytes, &limits).map_err(|e| e.to_string())
            }
            _ => quire_ingest::load(&bytes, media, &limits).map_err(|e| e.to_string()),
        };
        let ms = started.elapsed().as_millis();
        match (result, args.summary) {
            (Ok(doc), true) => println!(
                "ok\t{ms}\t{}\t{}\t{}",
                doc.pages.len(),
                doc.text.chars().count(),
                path.display()
            ),
            (Ok(doc), false) => println!("{}", doc.text),
            (Err(e), _) => {
                failed += 1;
                println!("error\t{ms}\t{e}\t{}", path.display());
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
