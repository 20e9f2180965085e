//! The real `quire serve` with its vectors on a Qdrant server or cluster (`QDRANT_URL`, its
//! gRPC URL): what is ingested is found, a delete removes it, a restart keeps the rest, and
//! `quire check` finds the catalog and both stores in agreement. Skipped, visibly, without
//! `QDRANT_URL`. `QDRANT_REPLICATION_FACTOR` (with a cluster) creates the collection with that
//! many copies of each shard, and as many acknowledgements per write.

use std::process::Command;

mod common;

use common::{Server, text_document, top_hit};
use quire_proto::v1 as pb;
use quire_proto::v1::ingest_service_client::IngestServiceClient;

const COLLECTION: &str = "e2e";

const DOCS: [(&str, &str); 3] = [
    (
        "lighthouse.txt",
        "The Varrow Point lighthouse was first lit in 1871. Its lamp burned colza oil.",
    ),
    (
        "ferry.txt",
        "The ferry to Ostby leaves the north quay at 7:40 every weekday morning.",
    ),
    (
        "bread.txt",
        "A sourdough starter is fed with equal weights of flour and water each day.",
    ),
];

/// The config file for this run: its own collection prefix, so runs never share collections.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut engine = format!(
        "qdrant_collection_prefix = \"quire_e2e_{}_\"\n",
        std::process::id()
    );
    if let Ok(n) = std::env::var("QDRANT_REPLICATION_FACTOR") {
        engine.push_str(&format!(
            "qdrant_replication_factor = {n}\nqdrant_write_consistency_factor = {n}\n"
        ));
    }
    let path = dir.join("quire.toml");
    std::fs::write(&path, format!("[engine]\n{engine}")).unwrap();
    path
}

/// The document of the best dense hit: the answer comes from the Qdrant server, not BM25.
async fn top_document(url: &str, question: &str) -> Option<String> {
    top_hit(url, COLLECTION, question, pb::RetrievalMode::Dense)
        .await
        .map(|h| h.document_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_vectors_on_a_qdrant_server() {
    let Ok(qdrant) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: set QDRANT_URL (gRPC, http://host:6334) to test a Qdrant server !!!!!!!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let args = ["--config", cfg, "--qdrant-url", &qdrant];
    let server = Server::start_with(&data, &log, &args);

    let mut ingest = IngestServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    for (id, text) in DOCS {
        let r = ingest
            .ingest_document(text_document(COLLECTION, id, text))
            .await
            .unwrap()
            .into_inner();
        assert!(r.chunk_count > 0, "{id}: {r:?}");
    }
    // Dense retrieval only: the answer comes from the Qdrant server, not from BM25.
    assert_eq!(
        top_document(&server.url, "When was the lighthouse first lit?").await,
        Some("lighthouse.txt".into())
    );
    assert_eq!(
        top_document(&server.url, "What time does the boat depart?").await,
        Some("ferry.txt".into())
    );
    ingest
        .delete_documents(pb::DeleteDocumentsRequest {
            collection: COLLECTION.into(),
            document_ids: vec!["ferry.txt".into()],
        })
        .await
        .unwrap();
    assert_ne!(
        top_document(&server.url, "What time does the boat depart?").await,
        Some("ferry.txt".into())
    );
    server.kill();

    // The catalog in the data directory and the vectors on the server agree.
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["check", "--data-dir"])
        .arg(&data)
        .args(args)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("e2e: 2 documents") && report.contains(": ok"),
        "{report}"
    );

    let server = Server::start_with(&data, &log, &args);
    assert_eq!(
        top_document(&server.url, "How is a sourdough starter fed?").await,
        Some("bread.txt".into())
    );
    // Leave the server as it was found.
    let mut ingest = IngestServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    ingest
        .delete_collection(pb::DeleteCollectionRequest {
            name: COLLECTION.into(),
        })
        .await
        .unwrap();
}
