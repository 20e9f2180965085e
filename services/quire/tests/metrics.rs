//! `quire serve --metrics-listen` publishes what the engine did, in Prometheus' text format.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

mod common;

use common::{Server, text_document};
use quire_proto::v1 as pb;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use quire_proto::v1::query_service_client::QueryServiceClient;

/// The body of `GET /metrics`.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: quire\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_ingest_retrieval_and_ask_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // A free port for the metrics listener (the exporter binds it itself).
    let metrics = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("log"),
        &["--metrics-listen", &metrics, "--llm", "smollm2-135m"],
    );
    let mut ingest = IngestServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    // Created, then unchanged.
    for _ in 0..2 {
        ingest
            .ingest_document(text_document(
                "m",
                "a.txt",
                "The ferry to Ostby leaves at 7:40.",
            ))
            .await
            .unwrap();
    }
    let err = ingest
        .ingest_document(text_document("m", "empty.txt", "  "))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut query = QueryServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    query
        .retrieve(pb::RetrieveRequest {
            collection: "m".into(),
            query: "ferry".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let answer = query
        .ask(pb::AskRequest {
            collection: "m".into(),
            question: "When does the ferry to Ostby leave?".into(),
            generation: Some(pb::GenerationOptions {
                max_tokens: Some(12),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let text = scrape(&metrics);
    let outcome = if answer.abstained {
        "abstained"
    } else {
        "answered"
    };
    let asked = format!("quire_ask_total{{outcome=\"{outcome}\"}} 1");
    assert!(text.lines().any(|l| l == asked), "no `{asked}` in:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("quire_generated_tokens_total ")),
        "{text}"
    );
    for line in [
        "quire_ingest_documents_total{status=\"created\"} 1",
        "quire_ingest_documents_total{status=\"unchanged\"} 1",
        "quire_ingest_documents_total{status=\"failed\",code=\"empty_document\"} 1",
        "quire_ingest_chunks_total 1",
        "quire_ingest_seconds_count 3",
        "quire_retrieve_seconds_count 1",
        "quire_ask_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    server.kill();
}
