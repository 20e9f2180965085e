//! Dense vector storage behind [`VectorStore`], with the embedded qdrant-edge implementation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qdrant_edge::{
    CountRequest, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParamsBuilder,
    Filter as EdgeFilter, NamedQuery, PointId, PointInsertOperations, PointOperations, PointStruct,
    QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, WithPayloadInterface, WithVector,
};
use serde_json::json;
use uuid::Uuid;

use crate::error::{Error, Result, blocking};
use crate::metadata::{self, MetaCondition};
use crate::{Filter, Metadata};

/// Payload key holding the owning document's id; filters and deletes use it.
pub const DOCUMENT_ID_KEY: &str = "document_id";

/// One point to upsert.
#[derive(Debug, Clone)]
pub struct VectorPoint {
    pub id: Uuid,
    pub vector: Vec<f32>,
    /// Stored in the payload under [`DOCUMENT_ID_KEY`].
    pub document_id: String,
    /// Extra payload fields (must not use [`DOCUMENT_ID_KEY`] or [`metadata::META_KEY`]).
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// The document's metadata, stored under [`metadata::META_KEY`] for filters.
    pub metadata: Metadata,
}

/// Dense vector storage with cosine similarity, organised in named collections.
///
/// Writes may be visible to searches before [`flush`](VectorStore::flush), but are only
/// guaranteed durable once `flush` has returned. Implementations: [`EmbeddedVectorStore`]
/// (qdrant-edge, in process) and [`crate::RemoteVectorStore`] (a Qdrant server).
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Creates the collection (cosine distance) if it does not exist; opens it if it does.
    async fn ensure_collection(&self, name: &str, dimension: u32) -> Result<()>;
    /// Removes the collection and all its points. Absent collections are not an error.
    async fn drop_collection(&self, name: &str) -> Result<()>;
    /// Inserts or replaces points by id.
    async fn upsert(&self, collection: &str, points: Vec<VectorPoint>) -> Result<()>;
    /// Deletes points by id; unknown ids are ignored.
    async fn delete_points(&self, collection: &str, ids: &[Uuid]) -> Result<()>;
    /// Deletes every point whose payload `document_id` equals `document_id`.
    async fn delete_document(&self, collection: &str, document_id: &str) -> Result<()>;
    /// Top-`limit` points by cosine similarity to `vector` among those passing `filter`,
    /// best first.
    async fn search(
        &self,
        collection: &str,
        vector: &[f32],
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<(Uuid, f32)>>;
    /// Exact number of points, overall or for one document.
    async fn count(&self, collection: &str, document_id: Option<&str>) -> Result<u64>;
    /// Makes every write accepted so far durable before returning.
    async fn flush(&self, collection: &str) -> Result<()>;
    /// Compacts storage and builds search indexes; may take a while. Default: nothing.
    async fn optimize(&self, _collection: &str) -> Result<()> {
        Ok(())
    }
}

fn vec_err(e: impl std::fmt::Display) -> Error {
    Error::Vector(e.to_string())
}

/// One open edge shard. Mutations (update, flush, optimize) are serialised by `write`:
/// `EdgeShard::flush` panics if it finds the WAL or segment holder locked.
struct Shard {
    shard: EdgeShard,
    write: Mutex<()>,
}

impl Shard {
    /// Runs `f` alone on the shard. A panic inside qdrant-edge (its flush `expect`s the WAL
    /// write, so a full disk panics) comes back as an error with its message, and leaves the
    /// lock usable: otherwise it would poison it and every later write to the collection would
    /// fail with no cause given.
    fn mutate<T>(&self, f: impl FnOnce(&EdgeShard) -> Result<T>) -> Result<T> {
        let _guard = self
            .write
            .lock()
            .map_err(|_| Error::Vector("shard write lock poisoned".into()))?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self.shard))).unwrap_or_else(
            |panic| {
                let cause = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                Err(Error::Vector(format!("the vector store failed: {cause}")))
            },
        )
    }
}

/// [`VectorStore`] on qdrant-edge: one edge shard per collection under `<root>/<collection>`.
pub struct EmbeddedVectorStore {
    root: PathBuf,
    shards: RwLock<HashMap<String, Arc<Shard>>>,
}

impl EmbeddedVectorStore {
    /// Uses `root` (created if missing) as the parent of the per-collection shard directories.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        Ok(Self {
            root: root.to_path_buf(),
            shards: RwLock::new(HashMap::new()),
        })
    }

    fn shard(&self, name: &str) -> Result<Arc<Shard>> {
        let map = self
            .shards
            .read()
            .map_err(|_| Error::Vector("shard map lock poisoned".into()))?;
        map.get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))
    }

    async fn with_shard<T, F>(&self, name: &str, f: F) -> Result<T>
    where
        F: FnOnce(&Shard) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let shard = self.shard(name)?;
        blocking(move || f(&shard)).await
    }
}

/// Qdrant's filter JSON for chunks of `document_ids` (all when empty) passing every metadata
/// condition; `None` when nothing is restricted. The edge shard reads it as is, and
/// [`crate::remote`] translates it for a Qdrant server, so both stores filter alike.
pub(crate) fn filter_json(
    document_ids: &[String],
    meta: &[MetaCondition],
) -> Option<serde_json::Value> {
    let mut must: Vec<serde_json::Value> = meta.iter().map(metadata::qdrant_condition).collect();
    match document_ids {
        [] => {}
        [one] => must.push(json!({ "key": DOCUMENT_ID_KEY, "match": { "value": one } })),
        many => must.push(json!({ "key": DOCUMENT_ID_KEY, "match": { "any": many } })),
    }
    (!must.is_empty()).then(|| json!({ "must": must }))
}

/// The edge shard's filter for [`filter_json`].
fn edge_filter(document_ids: &[String], meta: &[MetaCondition]) -> Result<Option<EdgeFilter>> {
    filter_json(document_ids, meta)
        .map(|json| {
            serde_json::from_value(json)
                .map_err(|e| Error::Vector(format!("cannot build filter: {e}")))
        })
        .transpose()
}

fn point_uuid(id: &PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(u) => Some(*u),
        PointId::NumId(_) => None,
    }
}

#[async_trait]
impl VectorStore for EmbeddedVectorStore {
    async fn ensure_collection(&self, name: &str, dimension: u32) -> Result<()> {
        if self.shard(name).is_ok() {
            return Ok(());
        }
        let path = self.root.join(name);
        let dim = dimension as usize;
        let shard = blocking(move || {
            let config = EdgeConfig::builder()
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
                )
                .build();
            if path.join("edge_config.json").exists() {
                EdgeShard::load(&path, None).map_err(vec_err)
            } else {
                std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                EdgeShard::new(&path, config).map_err(vec_err)
            }
        })
        .await?;
        let mut map = self
            .shards
            .write()
            .map_err(|_| Error::Vector("shard map lock poisoned".into()))?;
        map.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Shard {
                shard,
                write: Mutex::new(()),
            })
        });
        Ok(())
    }

    async fn drop_collection(&self, name: &str) -> Result<()> {
        let removed = self
            .shards
            .write()
            .map_err(|_| Error::Vector("shard map lock poisoned".into()))?
            .remove(name);
        let path = self.root.join(name);
        blocking(move || {
            if let Some(mut shard) = removed {
                // Wait for in-flight operations: the shard flushes into its directory on drop.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match Arc::try_unwrap(shard) {
                        Ok(s) => {
                            drop(s);
                            break;
                        }
                        Err(still_shared) if Instant::now() < deadline => {
                            shard = still_shared;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => {
                            return Err(Error::Vector(
                                "collection still in use; cannot drop it".into(),
                            ));
                        }
                    }
                }
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(&path, e)),
            }
        })
        .await
    }

    async fn upsert(&self, collection: &str, points: Vec<VectorPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.with_shard(collection, move |s| {
            let points = points
                .into_iter()
                .map(|p| {
                    let mut payload = p.payload;
                    payload.insert(
                        DOCUMENT_ID_KEY.to_string(),
                        serde_json::Value::String(p.document_id),
                    );
                    if !p.metadata.is_empty() {
                        payload.insert(metadata::META_KEY.into(), metadata::to_json(&p.metadata));
                    }
                    PointStruct::new(
                        PointId::Uuid(p.id),
                        p.vector,
                        serde_json::Value::Object(payload),
                    )
                    .into()
                })
                .collect();
            let op = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points),
            ));
            s.mutate(|shard| shard.update(op).map_err(vec_err))
        })
        .await
    }

    async fn delete_points(&self, collection: &str, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|u| PointId::Uuid(*u)).collect();
        self.with_shard(collection, move |s| {
            let op = UpdateOperation::PointOperation(PointOperations::DeletePoints { ids });
            s.mutate(|shard| shard.update(op).map_err(vec_err))
        })
        .await
    }

    async fn delete_document(&self, collection: &str, document_id: &str) -> Result<()> {
        let filter = edge_filter(&[document_id.to_string()], &[])?;
        self.with_shard(collection, move |s| {
            let Some(filter) = filter else {
                return Ok(());
            };
            let op = UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter));
            s.mutate(|shard| shard.update(op).map_err(vec_err))
        })
        .await
    }

    async fn search(
        &self,
        collection: &str,
        vector: &[f32],
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<(Uuid, f32)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                NamedQuery::default_dense(vector.to_vec()),
            ))),
            filter: edge_filter(&filter.document_ids, &filter.metadata)?,
            score_threshold: None,
            limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(false),
        };
        self.with_shard(collection, move |s| {
            let points = s.shard.query(request).map_err(vec_err)?;
            Ok(points
                .into_iter()
                .filter_map(|p| point_uuid(&p.id).map(|id| (id, p.score)))
                .collect())
        })
        .await
    }

    async fn count(&self, collection: &str, document_id: Option<&str>) -> Result<u64> {
        let filter = match document_id {
            Some(d) => edge_filter(&[d.to_string()], &[])?,
            None => None,
        };
        self.with_shard(collection, move |s| {
            let n = s
                .shard
                .count(CountRequest {
                    filter,
                    exact: true,
                })
                .map_err(vec_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn flush(&self, collection: &str) -> Result<()> {
        self.with_shard(collection, |s| {
            s.mutate(|shard| {
                shard.flush();
                Ok(())
            })
        })
        .await
    }

    async fn optimize(&self, collection: &str) -> Result<()> {
        self.with_shard(collection, |s| {
            s.mutate(|shard| {
                shard.optimize().map_err(vec_err)?;
                shard.flush();
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_inside_the_store_is_an_error_and_later_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedVectorStore::new(dir.path()).unwrap();
        store.ensure_collection("c", 2).await.unwrap();
        let err = store
            .shard("c")
            .unwrap()
            .mutate(|_| -> Result<()> { panic!("No space left on device") })
            .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        let point = VectorPoint {
            id: Uuid::new_v4(),
            vector: vec![1.0, 0.0],
            document_id: "d".into(),
            payload: Default::default(),
            metadata: Default::default(),
        };
        store.upsert("c", vec![point]).await.unwrap();
        store.flush("c").await.unwrap();
        assert_eq!(store.count("c", None).await.unwrap(), 1);
    }
}
