//! One behaviour contract for every [`VectorStore`]: the embedded qdrant-edge store always,
//! and a Qdrant server when `QDRANT_URL` (its gRPC URL, `http://host:6334`) is set.

use std::ops::Bound;

use quire_index::{
    EmbeddedVectorStore, Filter, MetaCondition, MetaValue, Metadata, RemoteOptions,
    RemoteVectorStore, VectorPoint, VectorStore,
};
use uuid::Uuid;

fn point(n: u128, vector: [f32; 4], doc: &str, meta: &[(&str, MetaValue)]) -> VectorPoint {
    VectorPoint {
        id: Uuid::from_u128(n),
        vector: vector.to_vec(),
        document_id: doc.into(),
        payload: serde_json::Map::new(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Metadata>(),
    }
}

fn ids(hits: &[(Uuid, f32)]) -> Vec<u128> {
    hits.iter().map(|(id, _)| id.as_u128()).collect()
}

/// What the index relies on: upserts replace by id, search ranks by cosine under the same
/// filters the BM25 side gets, counts are exact, deletes by id and by document work, and a
/// dropped collection is gone.
async fn contract(store: &dyn VectorStore, collection: &str) {
    store.drop_collection(collection).await.unwrap();
    store.ensure_collection(collection, 4).await.unwrap();
    store.ensure_collection(collection, 4).await.unwrap();
    let team = |s: &str| ("team", MetaValue::String(s.into()));
    store
        .upsert(
            collection,
            vec![
                point(
                    1,
                    [1.0, 0.0, 0.0, 0.0],
                    "a.txt",
                    &[team("red fox"), ("year", MetaValue::Number(2021.0))],
                ),
                point(
                    2,
                    [0.9, 0.1, 0.0, 0.0],
                    "a.txt",
                    &[team("red fox"), ("year", MetaValue::Number(2021.0))],
                ),
                point(
                    3,
                    [0.0, 1.0, 0.0, 0.0],
                    "b.txt",
                    &[team("blue"), ("year", MetaValue::Number(2024.0))],
                ),
                point(
                    4,
                    [0.7, 0.7, 0.0, 0.0],
                    "c.txt",
                    &[team("red"), ("draft", MetaValue::Bool(true))],
                ),
            ],
        )
        .await
        .unwrap();
    store.flush(collection).await.unwrap();
    assert_eq!(store.count(collection, None).await.unwrap(), 4);
    assert_eq!(store.count(collection, Some("a.txt")).await.unwrap(), 2);

    let query = [1.0, 0.0, 0.0, 0.0];
    let all = store
        .search(collection, &query, 10, &Filter::default())
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![1, 2, 4, 3]);
    assert!((all[0].1 - 1.0).abs() < 1e-4, "{all:?}");

    // A value with a space matches exactly, not as words: "red" does not match "red fox".
    let red = Filter {
        metadata: vec![MetaCondition::Equals {
            key: "team".into(),
            value: MetaValue::String("red".into()),
        }],
        ..Default::default()
    };
    assert_eq!(
        ids(&store.search(collection, &query, 10, &red).await.unwrap()),
        vec![4]
    );
    let recent = Filter {
        metadata: vec![MetaCondition::Range {
            key: "year".into(),
            lower: Bound::Excluded(2021.0),
            upper: Bound::Unbounded,
        }],
        ..Default::default()
    };
    assert_eq!(
        ids(&store.search(collection, &query, 10, &recent).await.unwrap()),
        vec![3]
    );
    let either = Filter {
        document_ids: vec!["b.txt".into(), "c.txt".into()],
        metadata: vec![MetaCondition::AnyOf {
            key: "team".into(),
            values: vec![
                MetaValue::String("blue".into()),
                MetaValue::String("red".into()),
            ],
        }],
    };
    assert_eq!(
        ids(&store.search(collection, &query, 10, &either).await.unwrap()),
        vec![4, 3]
    );
    let draft = Filter {
        metadata: vec![MetaCondition::Equals {
            key: "draft".into(),
            value: MetaValue::Bool(true),
        }],
        ..Default::default()
    };
    assert_eq!(
        ids(&store.search(collection, &query, 10, &draft).await.unwrap()),
        vec![4]
    );

    // Upsert replaces by id.
    store
        .upsert(
            collection,
            vec![point(3, [1.0, 0.0, 0.0, 0.0], "b.txt", &[])],
        )
        .await
        .unwrap();
    let top = store
        .search(collection, &query, 1, &Filter::default())
        .await
        .unwrap();
    assert!(top[0].1 > 0.999, "{top:?}");
    assert_eq!(store.count(collection, None).await.unwrap(), 4);

    store.delete_document(collection, "a.txt").await.unwrap();
    store
        .delete_points(collection, &[Uuid::from_u128(3), Uuid::from_u128(99)])
        .await
        .unwrap();
    store.flush(collection).await.unwrap();
    assert_eq!(store.count(collection, None).await.unwrap(), 1);
    assert_eq!(
        ids(&store
            .search(collection, &query, 10, &Filter::default())
            .await
            .unwrap()),
        vec![4]
    );

    store.drop_collection(collection).await.unwrap();
    store.drop_collection(collection).await.unwrap();
    assert!(store.count(collection, None).await.is_err());
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedVectorStore::new(dir.path()).unwrap();
    contract(&store, "contract").await;
}

#[tokio::test]
async fn qdrant_server_keeps_the_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: set QDRANT_URL (gRPC, http://host:6334) to test a Qdrant server !!!!!!!!\n"
        );
        return;
    };
    let options = RemoteOptions {
        api_key: std::env::var("QDRANT_API_KEY").ok(),
        prefix: format!("quire_test_{}_", std::process::id()),
        ..Default::default()
    };
    let store = RemoteVectorStore::connect(&url, options).await.unwrap();
    contract(&store, "contract").await;
}
