//! Rough timings; run with `cargo test -p quire-index --test perf -- --ignored --nocapture`.

use std::time::Instant;

use quire_index::*;

fn pseudo_vec(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, not a correctness check"]
async fn ingest_and_query_timings() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    let spec = CollectionSpec {
        embedding_model: "m".into(),
        dimension: 384,
    };
    index.create_collection("p", spec).await.unwrap();
    let (docs, per_doc) = (200u64, 10u32);
    let t = Instant::now();
    for d in 0..docs {
        let chunks = (0..per_doc)
            .map(|o| {
                let text = format!(
                    "document {d} chunk {o} about topic{} and subject{}",
                    d % 17,
                    o % 5
                );
                NewChunk {
                    ordinal: o,
                    page: None,
                    start: 0,
                    end: 10,
                    indexed_text: text.clone(),
                    text,
                    vector: pseudo_vec(d * 100 + u64::from(o), 384),
                }
            })
            .collect();
        let doc = NewDocument {
            id: format!("d{d}"),
            content_hash: "h".into(),
            media_type: "text/plain".into(),
            title: None,
            bytes: 1,
            metadata: Default::default(),
        };
        index.put_document("p", doc, chunks).await.unwrap();
    }
    let put = t.elapsed();
    println!(
        "put: {docs} docs x {per_doc} chunks in {put:?} ({:?}/doc)",
        put / docs as u32
    );
    let q = pseudo_vec(7, 384);
    let params = RetrieveParams::default();
    let t = Instant::now();
    let n = 50;
    for _ in 0..n {
        let hits = index
            .retrieve("p", "topic3 subject2", &q, &params, &Filter::default())
            .await
            .unwrap();
        assert_eq!(hits.len(), 10);
    }
    println!("retrieve (plain segment): {:?}/query", t.elapsed() / n);
    let t = Instant::now();
    index.optimize("p").await.unwrap();
    println!("optimize: {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..n {
        index
            .retrieve("p", "topic3 subject2", &q, &params, &Filter::default())
            .await
            .unwrap();
    }
    println!("retrieve (after optimize): {:?}/query", t.elapsed() / n);
}
