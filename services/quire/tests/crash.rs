//! Fault test: stream-ingest a corpus into the real `quire serve` process while killing it with
//! SIGKILL at random points, 20 times, restarting after each kill. Afterwards every
//! acknowledged document must be in both stores with exactly its chunk count, with no orphan
//! chunks and no duplicates.
//!
//! Seeded (`QUIRE_FAULT_SEED`, default 7) so a failure can be replayed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

mod common;

use common::Server;
use quire_proto::v1 as pb;
use quire_proto::v1::document_result::Status;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use sha2::{Digest, Sha256};

const KILLS: usize = 20;
const DOCS: usize = 40;
const COLLECTION: &str = "crash";

/// xorshift64*: enough randomness for kill points, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 24] = [
    "river", "stone", "lantern", "harbor", "meadow", "copper", "violet", "engine", "garden",
    "winter", "signal", "marble", "forest", "canyon", "pepper", "silver", "rocket", "bridge",
    "candle", "island", "falcon", "timber", "orchid", "glacier",
];

/// Text of document `i` at `version`: about 1 to 3 chunks of plain words.
fn content(i: usize, version: u32) -> String {
    let words = 40 + (i % 3) * 120;
    let mut s = format!("Document {i}, version {version}. ");
    for w in 0..words {
        s.push_str(WORDS[(w * 7 + i * 13 + version as usize) % WORDS.len()]);
        s.push_str(if w % 10 == 9 { ". " } else { " " });
    }
    s
}

fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What the client knows of one document.
#[derive(Default, Clone)]
struct Known {
    /// Last acknowledged (hash, chunk count).
    acked: Option<(String, u32)>,
    /// Hashes sent after the last acknowledgement: any of them may have been committed.
    unacked: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_stream_ingest_loses_no_acknowledged_document() {
    let seed: u64 = std::env::var("QUIRE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("fault test seed {seed}");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut versions = [1u32; DOCS];
    let mut known: Vec<Known> = vec![Known::default(); DOCS];
    let started = Instant::now();
    let mut acks_total = 0;

    for round in 0..=KILLS {
        let server = Server::start(&data, &log);
        let mut client = IngestServiceClient::connect(server.url.clone())
            .await
            .expect("connect");
        // Some documents change every round, so replacements are interrupted too.
        for (i, v) in versions.iter_mut().enumerate() {
            if round > 0 && (i + round) % 5 == 0 {
                *v += 1;
            }
        }
        let first = rng.below(DOCS as u64) as usize;
        let requests: Vec<pb::IngestDocumentRequest> = (0..DOCS)
            .map(|k| (first + k) % DOCS)
            .map(|i| {
                let text = content(i, versions[i]);
                known[i].unacked.push(hash(&text));
                pb::IngestDocumentRequest {
                    collection: COLLECTION.into(),
                    document: Some(pb::Document {
                        id: format!("doc-{i:02}"),
                        media_type: "text/plain".into(),
                        content: text.into_bytes(),
                        ..Default::default()
                    }),
                }
            })
            .collect();
        let last_round = round == KILLS;
        let kill_after = Duration::from_millis(200 + rng.below(4000));
        let deadline = tokio::time::Instant::now() + kill_after;
        let mut results = client
            .ingest_stream(tokio_stream::iter(requests))
            .await
            .expect("stream opens")
            .into_inner();
        let mut acks = 0;
        loop {
            let next = if last_round {
                results.message().await
            } else {
                match tokio::time::timeout_at(deadline, results.message()).await {
                    Ok(r) => r,
                    Err(_) => break, // time to kill
                }
            };
            let Some(r) = next.expect("the stream only breaks when the server is killed") else {
                break;
            };
            let i: usize = r.document_id["doc-".len()..].parse().unwrap();
            let status = Status::try_from(r.status).unwrap();
            assert!(
                matches!(
                    status,
                    Status::Created | Status::Replaced | Status::Unchanged
                ),
                "{}: {r:?}",
                r.document_id
            );
            let k = &mut known[i];
            assert!(
                k.unacked.contains(&r.content_hash),
                "ack for a version never sent"
            );
            k.acked = Some((r.content_hash.clone(), r.chunk_count));
            k.unacked.clear();
            acks += 1;
        }
        acks_total += acks;
        let how = if last_round {
            "ran to the end".to_string()
        } else {
            format!("SIGKILL after {} ms", kill_after.as_millis())
        };
        println!("round {round:>2}: {acks:>2} acknowledged, {how}");
        server.kill();
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    println!(
        "the server recovered {} interrupted document writes at start-up",
        log_text
            .matches("recovering interrupted document write")
            .count()
    );
    assert!(
        !log_text.contains("panicked"),
        "the server panicked:\n{log_text}"
    );

    // Open the data directory directly (recovery runs) and compare with what was acknowledged.
    let index = quire_index::Index::open(&data)
        .await
        .expect("data dir opens");
    let check = index.check(COLLECTION).await.unwrap();
    println!(
        "after {KILLS} kills in {:.0} s: {acks_total} acknowledgements; {check:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        check.is_consistent(),
        "stores disagree with the catalog: {check:?}"
    );
    for (i, k) in known.iter().enumerate() {
        let id = format!("doc-{i:02}");
        let Some((acked_hash, acked_chunks)) = &k.acked else {
            continue;
        };
        let doc = index
            .document(COLLECTION, &id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id}: acknowledged but lost"));
        if doc.content_hash == *acked_hash {
            assert_eq!(doc.chunk_count, *acked_chunks, "{id}: chunk count");
        } else {
            assert!(
                k.unacked.contains(&doc.content_hash),
                "{id}: holds a version neither acknowledged last nor sent after"
            );
        }
    }
    // The last round ran to the end: every document is stored at its newest version.
    let newest: HashMap<String, String> = (0..DOCS)
        .map(|i| (format!("doc-{i:02}"), hash(&content(i, versions[i]))))
        .collect();
    let stored = index.list_documents(COLLECTION).await.unwrap();
    assert_eq!(stored.len(), DOCS);
    for doc in stored {
        assert_eq!(Some(&doc.content_hash), newest.get(&doc.id), "{}", doc.id);
    }
}
