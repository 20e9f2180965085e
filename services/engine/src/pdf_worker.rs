//! Reading PDFs in a child process, so that a hostile file cannot take the server's memory or
//! time: lopdf parses a whole file before quire's limits can act, and a 200 KB PDF whose object
//! stream lists one large array 20,000 times asks for gigabytes.
//!
//! The child is quire's own binary running its hidden `pdf-worker` command: it caps its own
//! address space at `--memory-limit` before reading the PDF on stdin, and answers with
//! [`quire_ingest::wire::load_pdf_to_wire`]'s output. The child caps itself so that it can be
//! started with `posix_spawn`: forking the server, with its models mapped, cost about 17 ms a
//! PDF. It is killed when it outlives the parse-time limit by [`GRACE`].

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quire_ingest::{Document, Error as IngestError, Limits, MediaType, wire};

/// The reader's exit status when it could not start its work (its limits, its input, its
/// memory cap): the server's fault, not the document's.
pub const SETUP_FAILED: u8 = 3;

/// The most of the reader's stderr kept, from its end, for the error message.
const STDERR_TAIL: usize = 64 << 10;

/// Variables the reader inherits; everything else (API keys among them) is withheld.
const INHERITED_ENV: [&str; 3] = ["PATH", "LD_LIBRARY_PATH", "TMPDIR"];

/// The most lines of a successful reader's stderr (lopdf's warnings) logged per PDF.
const MAX_WARNINGS: usize = 20;

/// How long the child may run past [`Limits::max_parse_time`] (process start, lopdf's load,
/// which cannot be interrupted from inside) before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);

/// The program that reads PDFs, and the memory each of its runs may use.
#[derive(Debug, Clone)]
pub struct PdfWorker {
    /// The program; it is started as `PROGRAM pdf-worker --limits JSON --memory-limit BYTES`.
    pub program: PathBuf,
    /// Address space the child may map for its work, in bytes, on top of what it has mapped
    /// when it starts (its `RLIMIT_AS`, which the child sets, is the sum).
    pub memory_limit: u64,
}

impl PdfWorker {
    /// Reads `bytes` as a PDF in a fresh child process and returns what
    /// [`quire_ingest::load`] would have. Errors beyond that function's own: the child ran
    /// out of its memory ([`IngestError::MemoryLimit`]), outlived the time limit
    /// ([`IngestError::TimeLimit`]), died otherwise ([`IngestError::Pdf`], with its last line
    /// of stderr), or could not be started or set up ([`crate::Error::Internal`]). Either way
    /// the child has been reaped when this returns.
    pub fn load(&self, bytes: &[u8], limits: &Limits) -> Result<Document, crate::Error> {
        // Computed before the child exists, so nothing between its start and its reaping can
        // panic; an absurd time limit is held to a week.
        let budget = limits
            .max_parse_time
            .saturating_add(GRACE)
            .min(Duration::from_secs(7 * 24 * 3600));
        let mut command = Command::new(&self.program);
        command
            .arg("pdf-worker")
            .arg("--limits")
            .arg(wire::encode_limits(limits))
            .arg("--memory-limit")
            .arg(self.memory_limit.to_string())
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            crate::Error::Internal(format!(
                "cannot start the PDF reader {}: {e}",
                self.program.display()
            ))
        })?;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(crate::Error::Internal("the PDF reader has no pipes".into()));
        };
        let deadline = Instant::now() + budget;
        let (status, reply, diagnostics) = std::thread::scope(|s| {
            // A child that dies early closes its stdin; the write error is then moot.
            s.spawn(move || {
                let _ = stdin.write_all(bytes);
            });
            let (done, reply) = std::sync::mpsc::channel();
            s.spawn(move || {
                let mut buf = Vec::new();
                let _ = stdout.read_to_end(&mut buf);
                let _ = done.send(buf);
            });
            let err = s.spawn(move || {
                let mut tail = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                let keep = tail.len().saturating_sub(STDERR_TAIL);
                tail.split_off(keep)
            });
            // The reply is complete when the child closes its stdout, which it does by
            // exiting; then it has until the deadline to be reaped.
            let reply = reply
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok();
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) if reply.is_some() => break Some(status),
                    Ok(None) if reply.is_some() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    // Past the deadline, or the child cannot be polled: stop it.
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            let reply = reply.unwrap_or_default();
            let diagnostics = err.join().unwrap_or_default();
            (status, reply, diagnostics)
        });
        let Some(status) = status else {
            return Err(IngestError::TimeLimit {
                limit_ms: limits.max_parse_time.as_millis(),
            }
            .into());
        };
        let diagnostics = String::from_utf8_lossy(&diagnostics);
        if status.success() {
            log_warnings(&diagnostics);
            return Ok(wire::pdf_from_wire(&reply)?);
        }
        let last_words = diagnostics
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        if status.code() == Some(i32::from(SETUP_FAILED)) {
            return Err(crate::Error::Internal(format!(
                "the PDF reader could not start: {last_words}"
            )));
        }
        // Rust aborts (SIGABRT) when an allocation fails; under RLIMIT_AS that is the cap.
        #[cfg(unix)]
        let aborted = {
            use std::os::unix::process::ExitStatusExt;
            status.signal() == Some(libc::SIGABRT)
        };
        #[cfg(not(unix))]
        let aborted = false;
        if aborted || diagnostics.contains("memory allocation of") {
            return Err(IngestError::MemoryLimit {
                limit: self.memory_limit,
            }
            .into());
        }
        Err(IngestError::Pdf(format!(
            "the PDF reader stopped ({status}){}",
            if last_words.is_empty() {
                String::new()
            } else {
                format!(": {last_words}")
            }
        ))
        .into())
    }
}

/// Logs what a reader that succeeded wrote on stderr (lopdf's warnings about the parts of a
/// file it skipped), as the in-process reader would have: at most [`MAX_WARNINGS`] lines,
/// then how many more there were.
fn log_warnings(diagnostics: &str) {
    let mut lines = diagnostics.lines().map(str::trim).filter(|l| !l.is_empty());
    for line in lines.by_ref().take(MAX_WARNINGS) {
        tracing::warn!(target: "quire::pdf_reader", "{line}");
    }
    let more = lines.count();
    if more > 0 {
        tracing::warn!(target: "quire::pdf_reader", "{more} more warnings from the PDF reader");
    }
}

/// Loads a document as the engine does: a PDF through `worker` when there is one, anything
/// else (and every PDF without a worker) in this process with [`quire_ingest::load_declared`].
pub fn load_document(
    worker: Option<&PdfWorker>,
    bytes: &[u8],
    media: MediaType,
    charset: Option<&str>,
    limits: &Limits,
) -> Result<Document, crate::Error> {
    match (worker, media) {
        (Some(worker), MediaType::Pdf) => worker.load(bytes, limits),
        _ => Ok(quire_ingest::load_declared(bytes, media, charset, limits)?),
    }
}

/// The child's side, run by quire's hidden `pdf-worker` command with the arguments
/// [`PdfWorker::load`] passes: caps this process's address space at what it has mapped so
/// far plus `memory_limit` (or at the hard limit it inherited, if lower), so the binary's
/// own libraries (CUDA's take about 850 MiB) do not eat into the parse's share; sets core
/// dumps at 0, offers itself first to the kernel's out-of-memory killer, reads a PDF on
/// stdin and writes [`wire::load_pdf_to_wire`]'s reply on stdout. Call it before starting any runtime or
/// thread, so the process holds nothing but the parse. An allocation past the cap aborts it
/// with "memory allocation of N bytes failed" on stderr, which the parent reports as
/// `memory_limit`; it exits with [`SETUP_FAILED`] when it cannot start its work. Warnings
/// it logs on stderr while it reads are logged by the parent when the read succeeds.
pub fn run_child(limits: &str, memory_limit: u64) -> std::process::ExitCode {
    let setup_failed = |what: String| {
        eprintln!("error: {what}");
        std::process::ExitCode::from(SETUP_FAILED)
    };
    #[cfg(unix)]
    {
        let mut inherited = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct passed to it.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut inherited) } != 0 {
            return setup_failed(format!(
                "cannot read the memory limit: {}",
                std::io::Error::last_os_error()
            ));
        }
        let cap = memory_limit
            .saturating_add(mapped_bytes())
            .min(inherited.rlim_max);
        for (resource, value) in [(libc::RLIMIT_AS, cap), (libc::RLIMIT_CORE, 0)] {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: setrlimit reads only the struct passed to it.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return setup_failed(format!(
                    "cannot set the memory limit: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        // If the machine runs out of memory anyway, this process is the one to go. Best
        // effort: not every system lets a process raise its own score.
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    }
    let limits = match wire::decode_limits(limits) {
        Ok(l) => l,
        Err(e) => return setup_failed(e.to_string()),
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        return setup_failed(format!("cannot read the PDF from stdin: {e}"));
    }
    let reply = wire::load_pdf_to_wire(&bytes, &limits);
    drop(bytes);
    let mut out = std::io::stdout().lock();
    match out.write_all(&reply).and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => setup_failed(format!("cannot write the reply: {e}")),
    }
}

/// This process's address space now (`/proc/self/statm`); 0 where that cannot be read.
#[cfg(unix)]
fn mapped_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |pages| pages.saturating_mul(page))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for the reader: a shell script that ignores its arguments.
    fn worker(dir: &std::path::Path, script: &str) -> PdfWorker {
        let program = dir.join("reader.sh");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        PdfWorker {
            program,
            memory_limit: 1 << 30,
        }
    }

    fn ingest_error(result: Result<Document, crate::Error>) -> IngestError {
        match result {
            Err(crate::Error::Document(e)) => e,
            other => panic!("expected a document error, got {other:?}"),
        }
    }

    #[test]
    fn a_reader_that_outlives_the_deadline_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), "exec sleep 60");
        let limits = Limits {
            max_parse_time: Duration::ZERO,
            ..Limits::default()
        };
        let started = Instant::now();
        let err = ingest_error(w.load(b"%PDF-1.4", &limits));
        assert!(
            matches!(err, IngestError::TimeLimit { limit_ms: 0 }),
            "{err:?}"
        );
        assert!(started.elapsed() < GRACE + Duration::from_secs(10));
    }

    #[test]
    fn a_reader_that_runs_out_of_memory_or_crashes_is_an_error_not_a_document() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits::default();
        let w = worker(
            dir.path(),
            "cat >/dev/null; echo 'memory allocation of 4096 bytes failed' >&2; kill -ABRT $$",
        );
        let err = ingest_error(w.load(b"%PDF-1.4", &limits));
        assert!(
            matches!(err, IngestError::MemoryLimit { limit } if limit == 1 << 30),
            "{err:?}"
        );

        let w = worker(
            dir.path(),
            "cat >/dev/null; echo 'segfault' >&2; kill -SEGV $$",
        );
        let err = ingest_error(w.load(b"%PDF-1.4", &limits));
        assert!(
            matches!(&err, IngestError::Pdf(m) if m.contains("segfault")),
            "{err:?}"
        );

        let w = worker(
            dir.path(),
            "cat >/dev/null; echo 'error: cannot set the memory limit' >&2; exit 3",
        );
        let result = w.load(b"%PDF-1.4", &limits);
        assert!(
            matches!(&result, Err(crate::Error::Internal(m)) if m.contains("memory limit")),
            "{result:?}"
        );

        let w = worker(dir.path(), "cat >/dev/null; echo not-a-reply");
        let err = ingest_error(w.load(b"%PDF-1.4", &limits));
        assert!(
            matches!(&err, IngestError::Pdf(m) if m.contains("unreadable")),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_reader_is_an_internal_error() {
        let w = PdfWorker {
            program: "/nonexistent/quire".into(),
            memory_limit: 1 << 30,
        };
        let result = w.load(b"%PDF-1.4", &Limits::default());
        assert!(
            matches!(result, Err(crate::Error::Internal(_))),
            "{result:?}"
        );
    }
}
