//! What a container runtime relies on: `quire health` reports a running server as SERVING,
//! and SIGTERM (what `docker stop` and Kubernetes send) stops it cleanly: a stream already
//! open is served to its end and what it wrote is kept.

use std::process::Command;
use std::time::Duration;

mod common;

use common::{Server, text_document, top_hit};
use quire_proto::v1 as pb;
use quire_proto::v1::document_result::Status;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const COLLECTION: &str = "life";

/// `quire health --endpoint URL ARGS`: (success, stdout).
fn health(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["health", "--endpoint", url, "--timeout", "10"])
        .args(args)
        .output()
        .expect("quire health runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &dir.path().join("log"));
    assert_eq!(health(&server.url, &[]), (true, "SERVING".into()));
    assert_eq!(
        health(&server.url, &["--service", "quire.v1.QueryService"]),
        (true, "SERVING".into())
    );
    assert_eq!(
        health(&server.url, &["--service", "quire.v1.IngestService"]),
        (true, "SERVING".into())
    );
    // A service the server does not have is an error, not a pass.
    assert!(!health(&server.url, &["--service", "no.such.Service"]).0);
    drop(server);
    // Nor is a server that is not there.
    let (ok, _) = health(&server_gone_url(), &[]);
    assert!(!ok, "health passed with no server");
}

/// An address with nothing listening: a port bound, then released.
fn server_gone_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_open_stream_and_keeps_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let mut server = Server::start(&data, &log);
    let mut ingest = IngestServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut results = ingest
        .ingest_stream(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(text_document(
        COLLECTION,
        "before.txt",
        "The lamp room of Varrow Point is painted green.",
    ))
    .await
    .unwrap();
    let first = results.message().await.unwrap().expect("first result");
    assert_eq!(Status::try_from(first.status), Ok(Status::Created));

    // SIGTERM while the stream is open: the server stops taking new calls, but this stream
    // is in flight and must be served to its end.
    let pid_exit = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(120));
        (server, status)
    });
    // Give the signal time to arrive before the next document goes out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(text_document(
        COLLECTION,
        "after.txt",
        "The fog bell at Varrow Point rings every twenty seconds.",
    ))
    .await
    .unwrap();
    drop(tx);
    let second = results
        .message()
        .await
        .expect("the open stream is served after SIGTERM")
        .expect("second result");
    assert_eq!(second.document_id, "after.txt");
    assert_eq!(Status::try_from(second.status), Ok(Status::Created));
    assert!(results.message().await.unwrap().is_none());

    let (server, status) = pid_exit.await.unwrap();
    let status = status.expect("the server exits within 2 minutes of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("shutting down"), "{text}");

    // Both documents are there after a restart.
    let server = Server::start(&data, &log);
    for (question, want) in [
        ("What colour is the lamp room?", "before.txt"),
        ("How often does the fog bell ring?", "after.txt"),
    ] {
        let hit = top_hit(
            &server.url,
            COLLECTION,
            question,
            pb::RetrievalMode::Unspecified,
        )
        .await;
        assert_eq!(hit.map(|h| h.document_id), Some(want.to_string()));
    }
}

/// SIGTERM while the server is still loading its models (here the LLM, preloaded) stops it at
/// once and cleanly: as a container's PID 1 it would otherwise lose the signal and be killed
/// at the end of the grace period.
#[test]
fn sigterm_during_start_up_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--preload-llm",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Long enough for the process to reach `serve`, short of loading the models.
    std::thread::sleep(Duration::from_millis(300));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) only sends a signal, to this test's own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running a minute after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    println!(
        "exited {:?} after SIGTERM; listening before it: {}",
        started.elapsed(),
        out.contains("quire listening")
    );
}
