//! Loads every PDF under a directory and reports what PDF extraction made of it.
//!
//! ```text
//! cargo run -p quire-ingest --example pdf_corpus -- DIR [--dump OUT_DIR]
//! ```
//!
//! Prints one line per file (outcome, milliseconds, pages, characters, path)
//! and then the number of files per outcome. With `--dump`, the text of every
//! file that loads is written to `OUT_DIR/<path with / replaced by __>.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use quire_ingest::{Error, Limits, MediaType, load};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first().map(PathBuf::from) else {
        eprintln!("usage: pdf_corpus DIR [--dump OUT_DIR]");
        return ExitCode::FAILURE;
    };
    let dump = match args.get(1).map(String::as_str) {
        Some("--dump") => match args.get(2) {
            Some(dir) => Some(PathBuf::from(dir)),
            None => {
                eprintln!("--dump needs a directory");
                return ExitCode::FAILURE;
            }
        },
        Some(other) => {
            eprintln!("unexpected argument {other:?}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    if let Some(dir) = &dump
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }

    let mut files = Vec::new();
    collect_pdfs(&root, &mut files);
    files.sort();

    let limits = Limits::default();
    let mut totals: BTreeMap<&'static str, (usize, u128)> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                continue;
            }
        };
        let started = Instant::now();
        let result = load(&bytes, MediaType::Pdf, &limits);
        let ms = started.elapsed().as_millis();
        let (outcome, pages, chars) = match &result {
            Ok(doc) => ("ok", doc.pages.len(), doc.text.chars().count()),
            Err(e) => (outcome_of(e), 0, 0),
        };
        println!(
            "{outcome:<18} {ms:>6} ms {pages:>5} p {chars:>8} c  {}",
            rel.display()
        );
        if let Err(e) = &result
            && outcome == "pdf-error"
        {
            println!("{:>20}{e}", "");
        }
        if let (Some(dir), Ok(doc)) = (&dump, &result) {
            let name = rel.to_string_lossy().replace('/', "__");
            let out = dir.join(format!("{name}.txt"));
            if let Err(e) = std::fs::write(&out, &doc.text) {
                eprintln!("{}: {e}", out.display());
            }
        }
        let entry = totals.entry(outcome).or_default();
        entry.0 += 1;
        entry.1 += ms;
    }
    println!();
    for (outcome, (count, ms)) in &totals {
        println!("{outcome:<18} {count:>4} files {ms:>7} ms");
    }
    println!("{:<18} {:>4} files", "total", files.len());
    ExitCode::SUCCESS
}

fn outcome_of(e: &Error) -> &'static str {
    match e {
        Error::Encrypted => "encrypted",
        Error::NoExtractableText => "no-extractable-text",
        Error::Pdf(_) => "pdf-error",
        Error::TimeLimit { .. } => "time-limit",
        Error::DecompressedTooLarge { .. } => "decompressed-limit",
        Error::TooManyPages { .. } => "too-many-pages",
        Error::TooLarge { .. } => "too-large",
        Error::TextTooLarge { .. } => "text-too-large",
        Error::Empty => "empty",
        _ => "other-error",
    }
}

/// Every `*.pdf` file (any case) under `dir`, following no symbolic links.
fn collect_pdfs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            collect_pdfs(&path, out);
        } else if kind.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pdf"))
        {
            out.push(path);
        }
    }
}
