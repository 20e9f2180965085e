//! The real `quire serve` binary, started for a test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use quire_proto::v1 as pb;

/// An ingest request for a plain-text document.
pub fn text_document(collection: &str, id: &str, content: &str) -> pb::IngestDocumentRequest {
    pb::IngestDocumentRequest {
        collection: collection.into(),
        document: Some(pb::Document {
            id: id.into(),
            media_type: "text/plain".into(),
            content: content.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

/// The best hit for `query` in `collection` on the server at `url`, by `mode`.
pub async fn top_hit(
    url: &str,
    collection: &str,
    query: &str,
    mode: pb::RetrievalMode,
) -> Option<pb::Hit> {
    let mut client =
        quire_proto::v1::query_service_client::QueryServiceClient::connect(url.to_string())
            .await
            .expect("server reachable");
    client
        .retrieve(pb::RetrieveRequest {
            collection: collection.into(),
            query: query.into(),
            top_k: 1,
            mode: mode as i32,
            ..Default::default()
        })
        .await
        .expect("retrieve succeeds")
        .into_inner()
        .hits
        .into_iter()
        .next()
}

/// A running `quire serve`, killed with SIGKILL when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data: &Path, log: &Path) -> Server {
        Self::start_with(data, log, &[])
    }

    /// Like [`Server::start`], with `extra` arguments after `serve`'s own.
    pub fn start_with(data: &Path, log: &Path, extra: &[&str]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("quire serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("quire listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server listens within 2 minutes (see the log)");
        Server {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its exit
    /// status, or `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) only sends a signal, to this test's own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
