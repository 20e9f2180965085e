//! Behaviour of `Index` over a real data directory (qdrant-edge + Tantivy + redb).

use quire_index::*;

fn norm(v: [f32; 4]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn spec() -> CollectionSpec {
    CollectionSpec {
        embedding_model: "test-model".into(),
        dimension: 4,
    }
}

fn doc(id: &str, hash: &str) -> NewDocument {
    NewDocument {
        id: id.into(),
        content_hash: hash.into(),
        media_type: "text/plain".into(),
        title: None,
        bytes: 100,
        metadata: Default::default(),
    }
}

fn chunk(ordinal: u32, text: &str, v: [f32; 4]) -> NewChunk {
    NewChunk {
        ordinal,
        page: Some(ordinal + 1),
        start: u64::from(ordinal) * 100,
        end: u64::from(ordinal) * 100 + text.len() as u64,
        text: text.into(),
        indexed_text: text.into(),
        vector: norm(v),
    }
}

/// Three documents with hand-made vectors: A (fox, quantum), B (ownership, foxes), C (Paris).
async fn seed(index: &Index) {
    index.create_collection("c", spec()).await.unwrap();
    let a = vec![
        chunk(
            0,
            "The quick brown fox jumps over the lazy dog",
            [1.0, 0.0, 0.0, 0.0],
        ),
        chunk(1, "Quantum entanglement experiments", [0.0, 0.3, 1.0, 0.0]),
    ];
    let b = vec![
        chunk(
            0,
            "Rust ownership and borrowing rules",
            [0.0, 0.0, 1.0, 0.1],
        ),
        chunk(
            1,
            "Foxes are small omnivorous mammals",
            [1.0, 1.0, 0.0, 0.0],
        ),
    ];
    let c = vec![chunk(
        0,
        "Paris is the capital of France",
        [0.0, 0.0, 0.0, 1.0],
    )];
    let meta = |lang: &str, year: f64, draft: Option<bool>| -> Metadata {
        let mut m = Metadata::new();
        m.insert("lang".into(), MetaValue::String(lang.into()));
        m.insert("year".into(), MetaValue::Number(year));
        if let Some(d) = draft {
            m.insert("draft".into(), MetaValue::Bool(d));
        }
        m
    };
    let metas = [
        meta("en", 2019.0, Some(false)),
        meta("de", 2021.0, None),
        meta("fr", 2023.5, Some(true)),
    ];
    for ((id, chunks), metadata) in [("A", a), ("B", b), ("C", c)].into_iter().zip(metas) {
        let out = index
            .put_document(
                "c",
                NewDocument {
                    metadata,
                    ..doc(id, "h1")
                },
                chunks,
            )
            .await
            .unwrap();
        assert!(
            matches!(out, PutOutcome::Created { version: 1, .. }),
            "{out:?}"
        );
    }
}

fn params(top_k: usize) -> RetrieveParams {
    RetrieveParams {
        top_k,
        candidates: 10,
        fusion: Fusion::default(),
    }
}

fn texts(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bm25_dense_and_fused_rankings() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    seed(&index).await;
    let all = Filter::default();

    // BM25 only (no vector): stemming matches "borrowed" to "borrowing".
    let hits = index
        .retrieve("c", "who borrowed ownership?", &[], &params(3), &all)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.text, "Rust ownership and borrowing rules");
    assert_eq!(hits[0].bm25_rank, Some(1));
    assert_eq!(hits[0].dense_rank, None);
    assert_eq!(hits[0].chunk.document_id, "B");
    assert_eq!(hits[0].chunk.page, Some(1));
    assert_eq!(hits[0].chunk.end, 34);

    // Dense only (no query terms): nearest vector first.
    let hits = index
        .retrieve("c", "", &norm([0.1, 0.0, 0.0, 1.0]), &params(3), &all)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.text, "Paris is the capital of France");
    assert_eq!(hits[0].dense_rank, Some(1));
    assert!(hits[0].dense_score.unwrap() > 0.99);
    assert_eq!(hits[0].bm25_rank, None);

    // Fused: BM25 ranks B/0 first ("ownership" is rarer than "fox"), dense ranks C first;
    // B/1 is second in both and wins under RRF.
    let q = norm([0.5, 0.5, 0.0, 0.8]);
    let hits = index
        .retrieve("c", "ownership fox", &q, &params(3), &all)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    let top = &hits[0];
    assert_eq!(top.chunk.text, "Foxes are small omnivorous mammals");
    assert_eq!((top.dense_rank, top.bm25_rank), (Some(2), Some(2)));
    assert!((top.fused_score - 2.0 / 62.0).abs() < 1e-6);
    assert!(
        hits.windows(2)
            .all(|w| w[0].fused_score >= w[1].fused_score)
    );

    // Any user text parses: query syntax is not interpreted.
    let hits = index
        .retrieve("c", "fox AND (\"unclosed -[ *:", &[], &params(3), &all)
        .await
        .unwrap();
    assert!(texts(&hits).contains(&"The quick brown fox jumps over the lazy dog"));

    // Wrong query dimension is an error, not a panic.
    let err = index
        .retrieve("c", "fox", &[1.0, 0.0], &params(3), &all)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::DimensionMismatch {
            expected: 4,
            got: 2
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_restricts_both_retrievers() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    seed(&index).await;
    let only_a = Filter {
        document_ids: vec!["A".into()],
        ..Filter::default()
    };
    // Without the filter, C (dense) and B (BM25) would rank first.
    let hits = index
        .retrieve(
            "c",
            "ownership fox",
            &norm([0.5, 0.5, 0.0, 0.8]),
            &params(10),
            &only_a,
        )
        .await
        .unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h.chunk.document_id == "A"),
        "{:?}",
        texts(&hits)
    );
    assert!(hits.iter().any(|h| h.bm25_rank == Some(1)));
    assert!(hits.iter().any(|h| h.dense_rank == Some(1)));

    let a_or_c = Filter {
        document_ids: vec!["A".into(), "C".into()],
        ..Filter::default()
    };
    let hits = index
        .retrieve(
            "c",
            "ownership fox",
            &norm([0.5, 0.5, 0.0, 0.8]),
            &params(10),
            &a_or_c,
        )
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.chunk.document_id != "B"));
    assert!(hits.iter().any(|h| h.chunk.document_id == "C"));
}

/// Documents whose chunks pass `conditions`, from BM25 alone, dense alone, and fused.
async fn passing(index: &Index, conditions: Vec<MetaCondition>) -> [Vec<String>; 3] {
    let filter = Filter {
        metadata: conditions,
        ..Filter::default()
    };
    let query = "fox ownership quantum Paris capital foxes";
    let vector = norm([0.5, 0.5, 0.5, 0.5]);
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (i, v) in [&[][..], &vector[..], &vector[..]].into_iter().enumerate() {
        let text = if i == 1 { "" } else { query };
        let hits = index
            .retrieve("c", text, v, &params(10), &filter)
            .await
            .unwrap();
        let mut docs: Vec<String> = hits.into_iter().map(|h| h.chunk.document_id).collect();
        docs.sort();
        docs.dedup();
        out[i] = docs;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_filters_restrict_both_retrievers_alike() {
    use std::ops::Bound::*;
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    seed(&index).await;
    let s = |v: &str| MetaValue::String(v.into());
    let cases: Vec<(Vec<MetaCondition>, Vec<&str>)> = vec![
        (vec![], vec!["A", "B", "C"]),
        (
            vec![MetaCondition::Equals {
                key: "lang".into(),
                value: s("de"),
            }],
            vec!["B"],
        ),
        (
            vec![MetaCondition::AnyOf {
                key: "lang".into(),
                values: vec![s("en"), s("fr"), s("xx")],
            }],
            vec!["A", "C"],
        ),
        // Numbers compare numerically: 2021 matches the stored 2021.0.
        (
            vec![MetaCondition::Equals {
                key: "year".into(),
                value: MetaValue::Number(2021.0),
            }],
            vec!["B"],
        ),
        (
            vec![MetaCondition::Range {
                key: "year".into(),
                lower: Excluded(2019.0),
                upper: Unbounded,
            }],
            vec!["B", "C"],
        ),
        (
            vec![MetaCondition::Range {
                key: "year".into(),
                lower: Included(2019.0),
                upper: Excluded(2023.5),
            }],
            vec!["A", "B"],
        ),
        // A document without the key never passes.
        (
            vec![MetaCondition::Equals {
                key: "draft".into(),
                value: MetaValue::Bool(false),
            }],
            vec!["A"],
        ),
        // Conditions are ANDed.
        (
            vec![
                MetaCondition::Range {
                    key: "year".into(),
                    lower: Unbounded,
                    upper: Included(2023.5),
                },
                MetaCondition::Equals {
                    key: "draft".into(),
                    value: MetaValue::Bool(true),
                },
            ],
            vec!["C"],
        ),
        // A string is not a number: "2021" does not match year 2021.
        (
            vec![MetaCondition::Equals {
                key: "year".into(),
                value: s("2021"),
            }],
            vec![],
        ),
    ];
    for (conditions, want) in cases {
        let got = passing(&index, conditions.clone()).await;
        for (mode, docs) in ["bm25", "dense", "hybrid"].iter().zip(&got) {
            assert_eq!(docs, &want, "{mode} under {conditions:?}");
        }
    }

    // Hits and the catalog carry the metadata; bad conditions are refused.
    let a = index.document("c", "A").await.unwrap().unwrap();
    assert_eq!(a.metadata.get("lang"), Some(&s("en")));
    let hits = index
        .retrieve("c", "quick brown fox", &[], &params(1), &Filter::default())
        .await
        .unwrap();
    assert_eq!(
        hits[0].chunk.metadata.get("year"),
        Some(&MetaValue::Number(2019.0))
    );
    let bad = Filter {
        metadata: vec![MetaCondition::Equals {
            key: "a.b".into(),
            value: s("x"),
        }],
        ..Filter::default()
    };
    let err = index
        .retrieve("c", "fox", &[], &params(1), &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_metadata_alone_replaces_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    seed(&index).await;
    let c = || {
        vec![chunk(
            0,
            "Paris is the capital of France",
            [0.0, 0.0, 0.0, 1.0],
        )]
    };
    let same = index.document("c", "C").await.unwrap().unwrap().metadata;
    let out = index
        .put_document(
            "c",
            NewDocument {
                metadata: same,
                ..doc("C", "h1")
            },
            c(),
        )
        .await
        .unwrap();
    assert!(
        matches!(out, PutOutcome::Unchanged { version: 1, .. }),
        "{out:?}"
    );
    let mut changed = Metadata::new();
    changed.insert("lang".into(), MetaValue::String("en".into()));
    let out = index
        .put_document(
            "c",
            NewDocument {
                metadata: changed,
                ..doc("C", "h1")
            },
            c(),
        )
        .await
        .unwrap();
    assert!(
        matches!(out, PutOutcome::Replaced { version: 2, .. }),
        "{out:?}"
    );
    let [bm25, dense, _] = passing(
        &index,
        vec![MetaCondition::Equals {
            key: "lang".into(),
            value: MetaValue::String("en".into()),
        }],
    )
    .await;
    assert_eq!(bm25, vec!["A", "C"]);
    assert_eq!(dense, vec!["A", "C"]);
    assert_eq!(index.chunk_counts("c", "C").await.unwrap(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_unchanged_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    seed(&index).await;
    assert_eq!(index.chunk_counts("c", "B").await.unwrap(), (2, 2));

    // Same hash and metadata: nothing written.
    let stored = index.document("c", "B").await.unwrap().unwrap();
    let out = index
        .put_document(
            "c",
            NewDocument {
                metadata: stored.metadata,
                ..doc("B", "h1")
            },
            vec![chunk(0, "ignored", [1.0, 0.0, 0.0, 0.0])],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        PutOutcome::Unchanged {
            version: 1,
            chunks: 2
        }
    );

    // Changed: old chunks leave both stores, new ones arrive.
    let out = index
        .put_document(
            "c",
            doc("B", "h2"),
            vec![chunk(
                0,
                "Badgers dig setts underground",
                [0.0, 1.0, 0.0, 0.0],
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        PutOutcome::Replaced {
            version: 2,
            chunks: 1
        }
    );
    assert_eq!(index.chunk_counts("c", "B").await.unwrap(), (1, 1));
    let info = index.document("c", "B").await.unwrap().unwrap();
    assert_eq!(
        (info.version, info.chunk_count, info.content_hash.as_str()),
        (2, 1, "h2")
    );
    let hits = index
        .retrieve(
            "c",
            "ownership badgers",
            &norm([0.0, 1.0, 0.0, 0.0]),
            &params(10),
            &Filter::default(),
        )
        .await
        .unwrap();
    let t = texts(&hits);
    assert!(t.contains(&"Badgers dig setts underground"));
    assert!(!t.contains(&"Rust ownership and borrowing rules"));
    assert!(!t.contains(&"Foxes are small omnivorous mammals"));
    assert_eq!(hits[0].chunk.text, "Badgers dig setts underground");
    let coll = index.collection("c").await.unwrap();
    assert_eq!((coll.document_count, coll.chunk_count), (3, 4));

    // Delete.
    let res = index
        .delete_documents("c", &["B".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(res, vec![("B".into(), true), ("nope".into(), false)]);
    assert_eq!(index.chunk_counts("c", "B").await.unwrap(), (0, 0));
    assert!(index.document("c", "B").await.unwrap().is_none());
    let hits = index
        .retrieve(
            "c",
            "badgers",
            &norm([0.0, 1.0, 0.0, 0.0]),
            &params(10),
            &Filter::default(),
        )
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.chunk.document_id != "B"));
    let ids: Vec<_> = index
        .list_documents("c")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec!["A", "C"]);

    // Deleted then re-put starts again at version 1.
    let out = index
        .put_document(
            "c",
            doc("B", "h2"),
            vec![chunk(0, "Badgers again", [0.0, 1.0, 0.0, 0.0])],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        PutOutcome::Created {
            version: 1,
            chunks: 1
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = Index::open(dir.path()).await.unwrap();
        seed(&index).await;
        index
            .put_document(
                "c",
                doc("C", "h2"),
                vec![chunk(0, "Lyon is in France", [0.0, 0.0, 0.0, 1.0])],
            )
            .await
            .unwrap();
    }
    let index = Index::open(dir.path()).await.unwrap();
    let colls = index.list_collections().await.unwrap();
    assert_eq!(colls.len(), 1);
    assert_eq!((colls[0].document_count, colls[0].chunk_count), (3, 5));
    assert_eq!(colls[0].embedding_model, "test-model");
    assert_eq!(index.chunk_counts("c", "A").await.unwrap(), (2, 2));
    assert_eq!(index.chunk_counts("c", "C").await.unwrap(), (1, 1));
    let hits = index
        .retrieve(
            "c",
            "ownership fox",
            &norm([0.5, 0.5, 0.0, 0.8]),
            &params(10),
            &Filter::default(),
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 5);
    assert!(texts(&hits).contains(&"Lyon is in France"));
    assert!(!texts(&hits).contains(&"Paris is the capital of France"));
    assert_eq!(index.document("c", "C").await.unwrap().unwrap().version, 2);
    // Writes still work after reopening (the stores are writable, not just readable).
    let out = index
        .put_document(
            "c",
            doc("D", "h1"),
            vec![chunk(0, "Otters hold hands", [0.0, 1.0, 1.0, 0.0])],
        )
        .await
        .unwrap();
    assert!(matches!(out, PutOutcome::Created { .. }));
    assert_eq!(index.chunk_counts("c", "D").await.unwrap(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).await.unwrap();
    assert!(matches!(
        index.create_collection("bad name", spec()).await,
        Err(Error::InvalidName(_))
    ));
    seed(&index).await;
    assert!(matches!(
        index.create_collection("c", spec()).await,
        Err(Error::CollectionExists(_))
    ));
    let other = CollectionSpec {
        embedding_model: "other".into(),
        dimension: 4,
    };
    assert!(matches!(
        index.ensure_collection("c", other).await,
        Err(Error::ModelMismatch { .. })
    ));
    index.ensure_collection("c", spec()).await.unwrap();
    assert_eq!(index.collection("c").await.unwrap().document_count, 3);
    let err = index
        .put_document(
            "c",
            doc("X", "h"),
            vec![
                chunk(0, "x", [1.0, 0.0, 0.0, 0.0]),
                NewChunk {
                    vector: vec![1.0; 3],
                    ..chunk(1, "y", [1.0, 0.0, 0.0, 0.0])
                },
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::DimensionMismatch {
            expected: 4,
            got: 3
        }
    ));
    assert!(index.document("c", "X").await.unwrap().is_none());

    index.delete_collection("c").await.unwrap();
    assert!(!dir.path().join("vectors/c").exists());
    assert!(!dir.path().join("lexical/c").exists());
    assert!(matches!(
        index.collection("c").await,
        Err(Error::CollectionNotFound(_))
    ));
    assert!(matches!(
        index
            .retrieve("c", "fox", &[], &params(3), &Filter::default())
            .await,
        Err(Error::CollectionNotFound(_))
    ));
    drop(index);

    // Gone from the catalog too; the name can be reused and starts empty.
    let index = Index::open(dir.path()).await.unwrap();
    assert!(index.list_collections().await.unwrap().is_empty());
    let info = index.create_collection("c", spec()).await.unwrap();
    assert_eq!((info.document_count, info.chunk_count), (0, 0));
    assert_eq!(index.chunk_counts("c", "A").await.unwrap(), (0, 0));
}

#[test]
fn chunk_ids_are_deterministic() {
    let a = chunk_id("c", "doc", 3, "hash");
    assert_eq!(a, chunk_id("c", "doc", 3, "hash"));
    assert_eq!(a.get_version_num(), 5);
    assert_ne!(a, chunk_id("c", "doc", 4, "hash"));
    assert_ne!(a, chunk_id("c", "doc", 3, "hash2"));
    assert_ne!(a, chunk_id("c2", "doc", 3, "hash"));
    // Length prefixes keep field boundaries unambiguous.
    assert_ne!(chunk_id("c", "ab", 1, "x"), chunk_id("c", "a", 1, "bx"));
}
