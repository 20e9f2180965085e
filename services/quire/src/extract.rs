//! `quire extract`: what the loaders make of files, without a server or models. PDFs are read
//! in a child process with capped memory, as `serve` reads them, unless `isolate_pdf` is off.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use quire_engine::EngineConfig;
use quire_engine::pdf_worker::load_document;
use quire_ingest::MediaType;

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

/// Loads each file with the configured limits, as the engine would (PDFs in the child process
/// of [`EngineConfig::pdf_worker`] when it has one). Exits non-zero if any file fails.
pub fn run(cfg: &EngineConfig, args: ExtractArgs) -> Result<ExitCode, BoxError> {
    let worker = cfg.pdf_worker();
    let limits = cfg.limits();
    let mut failed = 0;
    for path in &args.files {
        let media = MediaType::from_path(path)
            .ok_or_else(|| format!("{}: unknown file type", path.display()))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let started = Instant::now();
        let result = load_document(worker.as_ref(), &bytes, media, None, &limits);
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
