//! [`Index`]: collections, document writes and hybrid retrieval over both stores.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::catalog::{Catalog, CollectionRecord, DocRecord, DocState};
use crate::error::{Error, Result, blocking};
use crate::lexical::{LexicalChunk, LexicalIndex};
use crate::metadata;
use crate::vector::{EmbeddedVectorStore, VectorPoint, VectorStore};
use crate::{
    CollectionCheck, CollectionInfo, CollectionSpec, DocumentInfo, Filter, Fusion, Hit, NewChunk,
    NewDocument, PutOutcome, RetrieveParams, StoredChunk, chunk_id, revision,
};

const CATALOG_FILE: &str = "catalog.redb";
const VECTORS_DIR: &str = "vectors";
const LEXICAL_DIR: &str = "lexical";

struct Collection {
    name: String,
    record: CollectionRecord,
    lexical: Arc<LexicalIndex>,
    /// Serialises document writes and deletes in this collection.
    write: Mutex<()>,
    /// Chunks written since the collection was last optimised (in this process).
    unoptimized: AtomicU64,
}

impl Collection {
    fn new(name: &str, record: CollectionRecord, lexical: LexicalIndex) -> Arc<Collection> {
        Arc::new(Collection {
            name: name.to_string(),
            record,
            lexical: Arc::new(lexical),
            write: Mutex::new(()),
            unoptimized: AtomicU64::new(0),
        })
    }
}

/// The catalog plus both stores of one data directory.
///
/// All methods are safe to call concurrently. Writes to one collection are serialised;
/// retrieval runs alongside them and sees only committed document versions. A clone shares
/// the same stores.
#[derive(Clone)]
pub struct Index {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    vectors: Arc<dyn VectorStore>,
    collections: Arc<RwLock<HashMap<String, Arc<Collection>>>>,
}

/// One retrieval pass's candidates, kept to visible chunks.
struct Candidates {
    /// Dense hits, best first.
    dense: Vec<(Uuid, f32)>,
    /// BM25 hits, best first.
    sparse: Vec<(Uuid, f32)>,
    /// Stored fields of every kept candidate.
    chunks: HashMap<Uuid, StoredChunk>,
    /// How many hidden chunks a retriever that returned all its candidates dropped (so more
    /// visible ones may lie below them).
    hidden: usize,
}

/// Most passes of [`Index::retrieve`] when hidden chunks crowd out visible ones.
const MAX_CANDIDATE_ROUNDS: usize = 3;

/// Runs a write on its own task and waits for it. A write runs to its end even when the
/// caller stops waiting (a request cancelled by its client or its deadline): stopped
/// halfway, it would leave a half-written version or stray chunks for recovery at the next
/// open.
async fn to_completion<T, F>(write: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(write)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn validate_name(name: &str) -> Result<()> {
    if crate::is_plain_name(name, 64) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn document_info(id: String, r: &DocRecord) -> DocumentInfo {
    DocumentInfo {
        id,
        content_hash: r.content_hash.clone(),
        media_type: r.media_type.clone(),
        title: r.title.clone(),
        version: r.version,
        chunk_count: r.chunk_count,
        bytes: r.bytes,
        updated_at_unix: r.updated_at,
        metadata: metadata::from_json(&r.metadata),
    }
}

/// The committed version readers see: the record itself, or the one a `Writing` replaces.
fn visible_version(r: &DocRecord) -> Option<&DocRecord> {
    match r.state {
        DocState::Committed => Some(r),
        DocState::Writing => r.previous.as_deref(),
        DocState::Deleting => None,
    }
}

impl Index {
    /// Opens the data directory with the embedded vector store (`<data_dir>/vectors`),
    /// creating directories as needed, and recovers interrupted writes and deletes.
    pub async fn open(data_dir: &Path) -> Result<Index> {
        let root = data_dir.join(VECTORS_DIR);
        let vectors = blocking(move || EmbeddedVectorStore::new(&root)).await?;
        Self::open_with_vector_store(data_dir, Arc::new(vectors)).await
    }

    /// Like [`open`](Self::open) but with any [`VectorStore`] (for example a Qdrant server).
    /// The catalog and the Tantivy indexes stay in `data_dir`.
    pub async fn open_with_vector_store(
        data_dir: &Path,
        vectors: Arc<dyn VectorStore>,
    ) -> Result<Index> {
        let dir = data_dir.to_path_buf();
        let catalog = blocking(move || {
            std::fs::create_dir_all(dir.join(LEXICAL_DIR))
                .map_err(|e| Error::io(dir.join(LEXICAL_DIR), e))?;
            Catalog::open(&dir.join(CATALOG_FILE))
        })
        .await?;
        let index = Index {
            data_dir: data_dir.to_path_buf(),
            catalog: Arc::new(catalog),
            vectors,
            collections: Arc::new(RwLock::new(HashMap::new())),
        };
        index.load_collections().await?;
        index.remove_orphans().await?;
        index.recover().await?;
        Ok(index)
    }

    fn lexical_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(LEXICAL_DIR).join(name)
    }

    async fn catalog<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Catalog) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let catalog = self.catalog.clone();
        blocking(move || f(&catalog)).await
    }

    async fn open_collection(&self, name: &str, record: CollectionRecord) -> Result<()> {
        self.vectors
            .ensure_collection(name, record.dimension)
            .await?;
        let path = self.lexical_path(name);
        let lexical = blocking(move || LexicalIndex::open(&path)).await?;
        self.collections
            .write()
            .await
            .insert(name.to_string(), Collection::new(name, record, lexical));
        Ok(())
    }

    async fn load_collections(&self) -> Result<()> {
        for (name, record) in self.catalog(|c| c.collections()).await? {
            self.open_collection(&name, record).await?;
        }
        Ok(())
    }

    /// Removes store directories of collections the catalog does not know: left by a crash
    /// between creating the stores and recording the collection, or after unrecording it.
    async fn remove_orphans(&self) -> Result<()> {
        let known: HashSet<String> = self.collections.read().await.keys().cloned().collect();
        for sub in [LEXICAL_DIR, VECTORS_DIR] {
            let dir = self.data_dir.join(sub);
            let names = blocking(move || {
                let mut names = Vec::new();
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(e) => return Err(Error::io(&dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&dir, e))?;
                    if entry.path().is_dir() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                Ok(names)
            })
            .await?;
            for name in names.into_iter().filter(|n| !known.contains(n)) {
                tracing::warn!(collection = %name, "removing orphaned store directory");
                self.vectors.drop_collection(&name).await?;
                let path = self.lexical_path(&name);
                blocking(move || remove_dir_if_exists(&path)).await?;
            }
        }
        Ok(())
    }

    /// Rolls back `Writing` and finishes `Deleting` documents in every collection.
    async fn recover(&self) -> Result<()> {
        let collections: Vec<_> = self.collections.read().await.values().cloned().collect();
        for coll in collections {
            let name = coll.name.clone();
            let pending: Vec<_> = self
                .catalog(move |c| c.documents(&name))
                .await?
                .into_iter()
                .filter(|(_, r)| r.state != DocState::Committed || !r.garbage.is_empty())
                .collect();
            let _guard = coll.write.lock().await;
            for (id, record) in pending {
                tracing::warn!(collection = %coll.name, document = %id, state = ?record.state,
                    "recovering interrupted document write");
                self.recover_document(&coll, &id, record).await?;
            }
        }
        Ok(())
    }

    async fn commit_stores(&self, coll: &Collection) -> Result<()> {
        self.vectors.flush(&coll.name).await?;
        let lexical = coll.lexical.clone();
        blocking(move || lexical.commit()).await
    }

    async fn delete_document_chunks(&self, coll: &Collection, id: &str) -> Result<()> {
        self.vectors.delete_document(&coll.name, id).await?;
        let lexical = coll.lexical.clone();
        let id = id.to_string();
        blocking(move || lexical.delete_document(&id)).await
    }

    /// Brings a non-committed document back to a consistent state. Caller holds `coll.write`.
    async fn recover_document(&self, coll: &Collection, id: &str, record: DocRecord) -> Result<()> {
        let name = coll.name.clone();
        let doc_id = id.to_string();
        match record.state {
            DocState::Committed if record.garbage.is_empty() => Ok(()),
            DocState::Committed => self.collect_garbage(coll, id, record).await,
            DocState::Deleting => {
                self.delete_document_chunks(coll, id).await?;
                self.commit_stores(coll).await?;
                self.catalog(move |c| c.remove_documents(&name, &[doc_id.as_str()]))
                    .await
            }
            DocState::Writing => {
                let previous = record.previous.map(|p| *p);
                let keep: HashSet<Uuid> = previous
                    .as_ref()
                    .map(|p| p.chunk_ids.iter().copied().collect())
                    .unwrap_or_default();
                // The new version's chunks, and any uncollected garbage of the previous one.
                let leftovers = previous.iter().flat_map(|p| p.garbage.iter());
                let new_only: Vec<Uuid> = record
                    .chunk_ids
                    .iter()
                    .chain(leftovers)
                    .filter(|c| !keep.contains(c))
                    .copied()
                    .collect();
                self.vectors.delete_points(&coll.name, &new_only).await?;
                let lexical = coll.lexical.clone();
                blocking(move || {
                    lexical.rollback()?;
                    lexical.delete_chunks(&new_only)
                })
                .await?;
                self.commit_stores(coll).await?;
                if let Some(mut prev) = previous {
                    prev.garbage.clear();
                    let (v, l) = self.chunk_counts_in(coll, id).await?;
                    let want = u64::from(prev.chunk_count);
                    if v == want && l == want {
                        return self
                            .catalog(move |c| c.put_documents(&name, &[(doc_id.as_str(), &prev)]))
                            .await;
                    }
                    tracing::warn!(collection = %coll.name, document = %id, vector = v,
                        lexical = l, expected = want,
                        "previous version incomplete after interrupted write; removing document");
                }
                self.delete_document_chunks(coll, id).await?;
                self.commit_stores(coll).await?;
                self.catalog(move |c| c.remove_documents(&name, &[doc_id.as_str()]))
                    .await
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))
    }

    async fn info(&self, coll: &Collection) -> Result<CollectionInfo> {
        let name = coll.name.clone();
        let docs = self.catalog(move |c| c.documents(&name)).await?;
        let (mut document_count, mut chunk_count) = (0u64, 0u64);
        for (_, r) in &docs {
            if let Some(v) = visible_version(r) {
                document_count += 1;
                chunk_count += u64::from(v.chunk_count);
            }
        }
        Ok(CollectionInfo {
            name: coll.name.clone(),
            embedding_model: coll.record.embedding_model.clone(),
            dimension: coll.record.dimension,
            document_count,
            chunk_count,
            created_at_unix: coll.record.created_at,
        })
    }

    /// Creates an empty collection in both stores and the catalog; durable on return.
    /// Fails with [`Error::InvalidName`] or [`Error::CollectionExists`].
    pub async fn create_collection(
        &self,
        name: &str,
        spec: CollectionSpec,
    ) -> Result<CollectionInfo> {
        validate_name(name)?;
        if spec.dimension == 0 {
            return Err(Error::InvalidArgument("dimension must be positive".into()));
        }
        let mut map = self.collections.write().await;
        if map.contains_key(name) {
            return Err(Error::CollectionExists(name.to_string()));
        }
        // Stale data under this name is not in the catalog: clear it before creating.
        self.vectors.drop_collection(name).await?;
        let path = self.lexical_path(name);
        let lexical = blocking(move || {
            remove_dir_if_exists(&path)?;
            LexicalIndex::open(&path)
        })
        .await?;
        self.vectors.ensure_collection(name, spec.dimension).await?;
        let record = CollectionRecord {
            embedding_model: spec.embedding_model,
            dimension: spec.dimension,
            created_at: now_unix(),
        };
        let (n, r) = (name.to_string(), record.clone());
        self.catalog(move |c| c.create_collection(&n, &r)).await?;
        let coll = Collection::new(name, record, lexical);
        map.insert(name.to_string(), coll.clone());
        drop(map);
        self.info(&coll).await
    }

    /// Creates the collection if absent. Fails with [`Error::ModelMismatch`] if it exists
    /// with another embedding model or dimension. Reads no document records.
    pub async fn ensure_collection(&self, name: &str, spec: CollectionSpec) -> Result<()> {
        loop {
            match self.check_collection(name, &spec).await {
                Ok(()) => return Ok(()),
                Err(Error::CollectionNotFound(_)) => {
                    match self.create_collection(name, spec.clone()).await {
                        Err(Error::CollectionExists(_)) => continue, // lost a race; re-check
                        other => return other.map(|_| ()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `Ok` when the collection exists and was made for `spec`'s model and dimension;
    /// [`Error::CollectionNotFound`] or [`Error::ModelMismatch`] otherwise. Reads no
    /// document records, so its cost does not grow with the collection.
    pub async fn check_collection(&self, name: &str, spec: &CollectionSpec) -> Result<()> {
        let coll = self.get(name).await?;
        spec.check_made_for(name, &coll.record.embedding_model, coll.record.dimension)
    }

    /// The collection's description and counts (from every document record, so its cost
    /// grows with the collection), or [`Error::CollectionNotFound`].
    pub async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        let coll = self.get(name).await?;
        self.info(&coll).await
    }

    /// All collections, ordered by name.
    pub async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let mut colls: Vec<_> = self.collections.read().await.values().cloned().collect();
        colls.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(colls.len());
        for c in colls {
            out.push(self.info(&c).await?);
        }
        Ok(out)
    }

    /// Deletes the collection: its catalog entries first (atomically), then both stores'
    /// directories. Waits for in-flight writes to the collection. Once called, it runs to its
    /// end even if the returned future is dropped.
    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        let (index, name) = (self.clone(), name.to_string());
        to_completion(async move { index.remove_collection(&name).await }).await
    }

    /// [`Index::delete_collection`], on the caller's task.
    async fn remove_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write().await;
        let coll = map
            .remove(name)
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))?;
        let _guard = coll.write.lock().await;
        let n = name.to_string();
        self.catalog(move |c| c.delete_collection(&n)).await?;
        self.vectors.drop_collection(name).await?;
        let lexical = coll.lexical.clone();
        let path = self.lexical_path(name);
        drop(_guard);
        drop(coll);
        blocking(move || {
            // Releases Tantivy's writer lock once no retrieval holds the index.
            drop(lexical);
            remove_dir_if_exists(&path)
        })
        .await
    }

    /// The document's visible (committed) version, if any.
    pub async fn document(&self, collection: &str, id: &str) -> Result<Option<DocumentInfo>> {
        self.get(collection).await?;
        let (c, i) = (collection.to_string(), id.to_string());
        let rec = self.catalog(move |cat| cat.document(&c, &i)).await?;
        Ok(rec.and_then(|r| visible_version(&r).map(|v| document_info(id.to_string(), v))))
    }

    /// Visible documents of a collection, ordered by id.
    pub async fn list_documents(&self, collection: &str) -> Result<Vec<DocumentInfo>> {
        self.get(collection).await?;
        let c = collection.to_string();
        let docs = self.catalog(move |cat| cat.documents(&c)).await?;
        Ok(docs
            .into_iter()
            .filter_map(|(id, r)| visible_version(&r).map(|v| document_info(id.clone(), v)))
            .collect())
    }

    /// Writes a document version to both stores.
    ///
    /// If the committed version has the same content hash, media type, title and metadata,
    /// nothing is written ([`PutOutcome::Unchanged`]). Otherwise the new chunks replace the old ones; when
    /// this returns `Ok`, the new version is durable in both stores and the catalog, and
    /// retrieval returns only its chunks. Until then retrieval returns only the old
    /// version's. On error the write is rolled back. Writes to one collection are serialised.
    /// Once called, the write runs to its end even if the returned future is dropped.
    pub async fn put_document(
        &self,
        collection: &str,
        doc: NewDocument,
        chunks: Vec<NewChunk>,
    ) -> Result<PutOutcome> {
        let (index, collection) = (self.clone(), collection.to_string());
        to_completion(async move { index.write_document(&collection, doc, chunks).await }).await
    }

    /// [`Index::put_document`], on the caller's task.
    async fn write_document(
        &self,
        collection: &str,
        doc: NewDocument,
        chunks: Vec<NewChunk>,
    ) -> Result<PutOutcome> {
        let coll = self.get(collection).await?;
        if doc.id.is_empty() {
            return Err(Error::InvalidArgument("document id is empty".into()));
        }
        metadata::validate_metadata(&doc.metadata)?;
        let meta_json = metadata::to_json(&doc.metadata);
        let expected = coll.record.dimension as usize;
        let mut ordinals = HashSet::with_capacity(chunks.len());
        for c in &chunks {
            if c.vector.len() != expected {
                return Err(Error::DimensionMismatch {
                    expected,
                    got: c.vector.len(),
                });
            }
            if !ordinals.insert(c.ordinal) {
                return Err(Error::InvalidArgument(format!(
                    "duplicate chunk ordinal {} in document `{}`",
                    c.ordinal, doc.id
                )));
            }
        }
        let chunk_count = u32::try_from(chunks.len())
            .map_err(|_| Error::InvalidArgument("too many chunks".into()))?;

        let _guard = coll.write.lock().await;
        let (c, i) = (collection.to_string(), doc.id.clone());
        let mut existing = self.catalog(move |cat| cat.document(&c, &i)).await?;
        if let Some(rec) = existing.take_if(|r| r.state != DocState::Committed) {
            self.recover_document(&coll, &doc.id, rec).await?;
            let (c, i) = (collection.to_string(), doc.id.clone());
            existing = self.catalog(move |cat| cat.document(&c, &i)).await?;
        }
        if let Some(old) = &existing
            && old.content_hash == doc.content_hash
            && old.media_type == doc.media_type
            && old.title == doc.title
            && metadata::from_json(&old.metadata) == doc.metadata
        {
            return Ok(PutOutcome::Unchanged {
                version: old.version,
                chunks: old.chunk_count,
            });
        }

        let version = existing.as_ref().map_or(1, |r| r.version + 1);
        let rev = revision(
            &doc.content_hash,
            &doc.media_type,
            doc.title.as_deref(),
            &doc.metadata,
        );
        let ids: Vec<Uuid> = chunks
            .iter()
            .map(|c| chunk_id(collection, &doc.id, c.ordinal, &rev))
            .collect();
        // Everything the old version may have left in the stores, collected after the switch.
        let old_ids: Vec<Uuid> = existing
            .as_ref()
            .map(|r| r.chunk_ids.iter().chain(&r.garbage).copied().collect())
            .unwrap_or_default();
        let replaced = existing.is_some();
        let writing = DocRecord {
            content_hash: doc.content_hash.clone(),
            media_type: doc.media_type.clone(),
            title: doc.title.clone(),
            version,
            chunk_ids: ids.clone(),
            chunk_count,
            state: DocState::Writing,
            bytes: doc.bytes,
            updated_at: now_unix(),
            metadata: meta_json,
            previous: existing.map(Box::new),
            garbage: Vec::new(),
        };
        let (c, i, w) = (collection.to_string(), doc.id.clone(), writing.clone());
        self.catalog(move |cat| cat.put_documents(&c, &[(i.as_str(), &w)]))
            .await?;

        if let Err(err) = self.write_chunks(&coll, &doc, &ids, chunks).await {
            tracing::error!(collection, document = %doc.id, error = %err,
                "document write failed; rolling back");
            if let Err(rollback_err) = self.recover_document(&coll, &doc.id, writing).await {
                tracing::error!(collection, document = %doc.id, error = %rollback_err,
                    "rollback failed; will retry at next open or write");
            }
            return Err(err);
        }

        // The switch: from here on readers see the new version only.
        let new: HashSet<&Uuid> = ids.iter().collect();
        let garbage: Vec<Uuid> = old_ids.into_iter().filter(|i| !new.contains(i)).collect();
        let committed = DocRecord {
            state: DocState::Committed,
            previous: None,
            garbage,
            ..writing
        };
        let (c, i, r) = (collection.to_string(), doc.id.clone(), committed.clone());
        self.catalog(move |cat| cat.put_documents(&c, &[(i.as_str(), &r)]))
            .await?;
        if !committed.garbage.is_empty()
            && let Err(err) = self.collect_garbage(&coll, &doc.id, committed).await
        {
            // The new version is committed; the old chunks are invisible and go at next open.
            tracing::warn!(collection, document = %doc.id, error = %err,
                "could not delete the replaced version's chunks yet");
        }
        Ok(if replaced {
            PutOutcome::Replaced {
                version,
                chunks: chunk_count,
            }
        } else {
            PutOutcome::Created {
                version,
                chunks: chunk_count,
            }
        })
    }

    /// Upserts the new version's chunks into both stores and commits both. The chunks stay
    /// invisible to retrieval until the catalog switches to the new version.
    async fn write_chunks(
        &self,
        coll: &Collection,
        doc: &NewDocument,
        ids: &[Uuid],
        chunks: Vec<NewChunk>,
    ) -> Result<()> {
        let document_id = doc.id.as_str();
        let mut points = Vec::with_capacity(chunks.len());
        let mut lex = Vec::with_capacity(chunks.len());
        for (c, id) in chunks.into_iter().zip(ids) {
            let mut payload = serde_json::Map::new();
            payload.insert("ordinal".into(), c.ordinal.into());
            if let Some(p) = c.page {
                payload.insert("page".into(), p.into());
            }
            points.push(VectorPoint {
                id: *id,
                vector: c.vector,
                document_id: document_id.to_string(),
                payload,
                metadata: doc.metadata.clone(),
            });
            lex.push(LexicalChunk {
                chunk: StoredChunk {
                    id: *id,
                    document_id: document_id.to_string(),
                    ordinal: c.ordinal,
                    page: c.page,
                    start: c.start,
                    end: c.end,
                    text: c.text,
                    metadata: doc.metadata.clone(),
                },
                indexed_text: c.indexed_text,
            });
        }
        self.vectors.upsert(&coll.name, points).await?;
        let lexical = coll.lexical.clone();
        blocking(move || lexical.add_chunks(&lex)).await?;
        self.commit_stores(coll).await
    }

    /// Deletes a committed record's garbage chunks from both stores, commits, and clears the
    /// list in the catalog (unless the document changed meanwhile). Caller holds `coll.write`.
    async fn collect_garbage(&self, coll: &Collection, id: &str, record: DocRecord) -> Result<()> {
        self.vectors
            .delete_points(&coll.name, &record.garbage)
            .await?;
        let (lexical, garbage) = (coll.lexical.clone(), record.garbage.clone());
        blocking(move || lexical.delete_chunks(&garbage)).await?;
        self.commit_stores(coll).await?;
        let clean = DocRecord {
            garbage: Vec::new(),
            ..record
        };
        let (c, i) = (coll.name.clone(), id.to_string());
        self.catalog(move |cat| cat.put_documents(&c, &[(i.as_str(), &clean)]))
            .await
    }

    /// Deletes documents from both stores and the catalog; durable on return. Returns,
    /// for each requested id in order, whether it existed. Once called, the deletion runs to
    /// its end even if the returned future is dropped.
    pub async fn delete_documents(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<(String, bool)>> {
        let (index, collection, ids) = (self.clone(), collection.to_string(), ids.to_vec());
        to_completion(async move { index.remove_documents(&collection, &ids).await }).await
    }

    /// [`Index::delete_documents`], on the caller's task.
    async fn remove_documents(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<(String, bool)>> {
        let coll = self.get(collection).await?;
        let _guard = coll.write.lock().await;
        let (c, wanted) = (collection.to_string(), ids.to_vec());
        let found = self
            .catalog(move |cat| cat.documents_by_id(&c, wanted.iter().map(String::as_str)))
            .await?;
        if !found.is_empty() {
            let deleting: Vec<(String, DocRecord)> = found
                .iter()
                .map(|(id, r)| {
                    let mut r = r.clone();
                    r.state = DocState::Deleting;
                    r.previous = None;
                    (id.clone(), r)
                })
                .collect();
            let c = collection.to_string();
            self.catalog(move |cat| {
                let refs: Vec<(&str, &DocRecord)> =
                    deleting.iter().map(|(i, r)| (i.as_str(), r)).collect();
                cat.put_documents(&c, &refs)
            })
            .await?;
            for id in found.keys() {
                self.delete_document_chunks(&coll, id).await?;
            }
            self.commit_stores(&coll).await?;
            let (c, gone): (String, Vec<String>) =
                (collection.to_string(), found.keys().cloned().collect());
            self.catalog(move |cat| {
                let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
                cat.remove_documents(&c, &refs)
            })
            .await?;
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), found.contains_key(id)))
            .collect())
    }

    /// Hybrid retrieval: dense top-`candidates` and BM25 top-`candidates`, both under
    /// `filter` and restricted to committed document versions, fused (RRF by default),
    /// best first, at most `top_k`. Each hit carries its stored chunk text.
    ///
    /// An empty `query_vector` skips the dense retriever; query text without terms skips
    /// BM25. A non-empty vector of the wrong length is [`Error::DimensionMismatch`].
    pub async fn retrieve(
        &self,
        collection: &str,
        query_text: &str,
        query_vector: &[f32],
        params: &RetrieveParams,
        filter: &Filter,
    ) -> Result<Vec<Hit>> {
        let coll = self.get(collection).await?;
        metadata::validate_conditions(&filter.metadata)?;
        let expected = coll.record.dimension as usize;
        if !query_vector.is_empty() && query_vector.len() != expected {
            return Err(Error::DimensionMismatch {
                expected,
                got: query_vector.len(),
            });
        }
        if params.top_k == 0 {
            return Ok(Vec::new());
        }
        // Chunks of versions not (or no longer) visible take candidate slots. When they
        // crowd out visible ones, ask again for more, up to MAX_CANDIDATE_ROUNDS times.
        let mut candidates = params.candidates.max(params.top_k);
        let mut round = 1;
        loop {
            let Candidates {
                dense,
                sparse,
                chunks,
                hidden,
            } = self
                .visible_candidates(&coll, query_text, query_vector, params, filter, candidates)
                .await?;
            // Short: a retriever this fusion uses came back with fewer than top_k.
            let short = (params.fusion.uses_dense()
                && !query_vector.is_empty()
                && dense.len() < params.top_k)
                || (params.fusion.uses_bm25() && sparse.len() < params.top_k);
            if hidden == 0 || !short || round == MAX_CANDIDATE_ROUNDS {
                return Ok(fuse(&dense, &sparse, params.fusion, params.top_k, chunks));
            }
            candidates += hidden;
            round += 1;
        }
    }

    /// One pass of [`Index::retrieve`]: the top `candidates` of each retriever, kept to
    /// visible chunks ([`Candidates`]).
    async fn visible_candidates(
        &self,
        coll: &Collection,
        query_text: &str,
        query_vector: &[f32],
        params: &RetrieveParams,
        filter: &Filter,
        candidates: usize,
    ) -> Result<Candidates> {
        let collection = coll.name.as_str();
        let dense = async {
            if query_vector.is_empty() || !params.fusion.uses_dense() {
                Ok(Vec::new())
            } else {
                self.vectors
                    .search(collection, query_vector, candidates, filter)
                    .await
            }
        };
        let lexical = coll.lexical.clone();
        let (text, f) = (query_text.to_string(), filter.clone());
        let bm25 = params.fusion.uses_bm25();
        let sparse = async move {
            if bm25 {
                blocking(move || lexical.search(&text, candidates, &f)).await
            } else {
                Ok(Vec::new())
            }
        };
        let (dense, sparse) = tokio::try_join!(dense, sparse)?;

        // Stored fields for every candidate, from Tantivy.
        let mut chunks: HashMap<Uuid, StoredChunk> =
            sparse.iter().map(|(c, _)| (c.id, c.clone())).collect();
        let missing: Vec<Uuid> = dense
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !chunks.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let lexical = coll.lexical.clone();
            for c in blocking(move || lexical.chunks(&missing)).await? {
                chunks.insert(c.id, c);
            }
        }

        // Only chunks of committed versions are visible.
        let doc_ids: HashSet<String> = chunks.values().map(|c| c.document_id.clone()).collect();
        let c = collection.to_string();
        let records = self
            .catalog(move |cat| cat.documents_by_id(&c, doc_ids.iter().map(String::as_str)))
            .await?;
        let visible: HashSet<Uuid> = records
            .values()
            .flat_map(|r| r.visible_chunks().iter().copied())
            .collect();

        let (dense_found, sparse_found) = (dense.len(), sparse.len());
        let dense: Vec<(Uuid, f32)> = dense
            .into_iter()
            .filter(|(id, _)| visible.contains(id) && chunks.contains_key(id))
            .collect();
        let sparse: Vec<(Uuid, f32)> = sparse
            .into_iter()
            .map(|(c, s)| (c.id, s))
            .filter(|(id, _)| visible.contains(id))
            .collect();
        let hidden_below = |found: usize, kept: usize| {
            if found == candidates { found - kept } else { 0 }
        };
        let hidden =
            hidden_below(dense_found, dense.len()).max(hidden_below(sparse_found, sparse.len()));
        Ok(Candidates {
            dense,
            sparse,
            chunks,
            hidden,
        })
    }

    async fn chunk_counts_in(&self, coll: &Collection, document_id: &str) -> Result<(u64, u64)> {
        let v = self.vectors.count(&coll.name, Some(document_id)).await?;
        let lexical = coll.lexical.clone();
        let id = document_id.to_string();
        let l = blocking(move || lexical.count(Some(&id))).await?;
        Ok((v, l))
    }

    /// How many points the vector store and the lexical index hold for the document
    /// (committed data of the lexical index; anything accepted by the vector store).
    pub async fn chunk_counts(&self, collection: &str, document_id: &str) -> Result<(u64, u64)> {
        let coll = self.get(collection).await?;
        self.chunk_counts_in(&coll, document_id).await
    }

    /// Cross-checks the collection's catalog against both stores: every committed document
    /// must have exactly its chunk count in each store, and the stores must hold nothing else.
    /// Waits for in-flight writes to the collection, so the answer is one consistent snapshot.
    pub async fn check(&self, collection: &str) -> Result<CollectionCheck> {
        let coll = self.get(collection).await?;
        let _guard = coll.write.lock().await;
        let name = collection.to_string();
        let docs = self.catalog(move |c| c.documents(&name)).await?;
        let mut out = CollectionCheck {
            collection: collection.to_string(),
            ..CollectionCheck::default()
        };
        for (id, r) in &docs {
            if r.state != DocState::Committed || !r.garbage.is_empty() {
                out.pending += 1;
                continue;
            }
            out.documents += 1;
            let want = u64::from(r.chunk_count);
            out.catalog_chunks += want;
            let (v, l) = self.chunk_counts_in(&coll, id).await?;
            if v != want || l != want {
                out.mismatched.push((id.clone(), want, v, l));
            }
        }
        out.vector_points = self.vectors.count(collection, None).await?;
        let lexical = coll.lexical.clone();
        out.lexical_chunks = blocking(move || lexical.count(None)).await?;
        Ok(out)
    }

    /// Compacts the collection's vector storage and builds its HNSW index when large enough.
    /// Blocks writes to the collection while it runs. Useful after a large batch ingest.
    pub async fn optimize(&self, collection: &str) -> Result<()> {
        let coll = self.get(collection).await?;
        let _guard = coll.write.lock().await;
        self.vectors.optimize(&coll.name).await?;
        // No write can land while the guard is held, so the count restarts exactly here.
        coll.unoptimized.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Adds `chunks` to the count of chunks written to the collection since its last
    /// [`Index::optimize`]; true when that count has reached `every` (never for 0). A failed
    /// optimisation leaves the count standing, so the next write asks again.
    pub async fn count_written(&self, collection: &str, chunks: u64, every: u64) -> Result<bool> {
        let coll = self.get(collection).await?;
        let now = coll.unoptimized.fetch_add(chunks, Ordering::Relaxed) + chunks;
        Ok(every > 0 && now >= every)
    }
}

/// Fuses two ranked lists (best first) into at most `top_k` hits, best first. Equal scores,
/// within a list and after fusion, are ordered by document id and then chunk ordinal.
fn fuse(
    dense: &[(Uuid, f32)],
    sparse: &[(Uuid, f32)],
    fusion: Fusion,
    top_k: usize,
    mut chunks: HashMap<Uuid, StoredChunk>,
) -> Vec<Hit> {
    // Chunk ids are random, so equal scores are ordered by what the chunk is: the same ties
    // rank the same way in every run and after every re-ingest.
    let key = |id: &Uuid| chunks.get(id).map(|c| (c.document_id.as_str(), c.ordinal));
    let settle = |list: &[(Uuid, f32)]| {
        let mut list = list.to_vec();
        list.sort_by(|(ia, a), (ib, b)| {
            b.total_cmp(a)
                .then_with(|| key(ia).cmp(&key(ib)))
                .then_with(|| ia.cmp(ib))
        });
        list
    };
    let (dense, sparse) = (&settle(dense)[..], &settle(sparse)[..]);
    // Each retriever's contribution to the fused score, by its 1-based rank and score.
    let top = |list: &[(Uuid, f32)]| list.first().map_or(0.0, |x| x.1);
    let (dense_top, sparse_top) = (top(dense), top(sparse));
    let scaled = |s: f32, max: f32| {
        if max > 0.0 {
            (s / max).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let dense_part = |rank: u32, score: f32| match fusion {
        Fusion::Rrf { k } => 1.0 / (k + rank as f32),
        Fusion::Weighted { dense_weight } => dense_weight * scaled(score, dense_top),
        Fusion::Dense => score,
        Fusion::Bm25 => 0.0,
    };
    let sparse_part = |rank: u32, score: f32| match fusion {
        Fusion::Rrf { k } => 1.0 / (k + rank as f32),
        Fusion::Weighted { dense_weight } => (1.0 - dense_weight) * scaled(score, sparse_top),
        Fusion::Bm25 => score,
        Fusion::Dense => 0.0,
    };
    struct Acc {
        dense: Option<(f32, u32)>,
        sparse: Option<(f32, u32)>,
        fused: f32,
    }
    let mut acc: HashMap<Uuid, Acc> = HashMap::new();
    for (i, (id, score)) in dense.iter().enumerate() {
        let rank = i as u32 + 1;
        let e = acc.entry(*id).or_insert(Acc {
            dense: None,
            sparse: None,
            fused: 0.0,
        });
        if e.dense.is_none() {
            e.dense = Some((*score, rank));
            e.fused += dense_part(rank, *score);
        }
    }
    for (i, (id, score)) in sparse.iter().enumerate() {
        let rank = i as u32 + 1;
        let e = acc.entry(*id).or_insert(Acc {
            dense: None,
            sparse: None,
            fused: 0.0,
        });
        if e.sparse.is_none() {
            e.sparse = Some((*score, rank));
            e.fused += sparse_part(rank, *score);
        }
    }
    let mut ranked: Vec<(Uuid, Acc)> = acc.into_iter().collect();
    ranked.sort_by(|(ia, a), (ib, b)| {
        b.fused
            .total_cmp(&a.fused)
            .then_with(|| {
                let best = |x: &Acc| {
                    x.dense
                        .map(|d| d.1)
                        .unwrap_or(u32::MAX)
                        .min(x.sparse.map(|s| s.1).unwrap_or(u32::MAX))
                };
                best(a).cmp(&best(b))
            })
            .then_with(|| key(ia).cmp(&key(ib)))
            .then_with(|| ia.cmp(ib))
    });
    ranked
        .into_iter()
        .filter_map(|(id, a)| {
            chunks.remove(&id).map(|chunk| Hit {
                rerank_score: None,
                chunk,
                dense_score: a.dense.map(|d| d.0),
                dense_rank: a.dense.map(|d| d.1),
                bm25_score: a.sparse.map(|s| s.0),
                bm25_rank: a.sparse.map(|s| s.1),
                fused_score: a.fused,
            })
        })
        .take(top_k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn chunk(n: u128) -> (Uuid, StoredChunk) {
        (
            id(n),
            StoredChunk {
                id: id(n),
                document_id: "d".into(),
                ordinal: n as u32,
                page: None,
                start: 0,
                end: 0,
                text: String::new(),
                metadata: Default::default(),
            },
        )
    }

    #[test]
    fn rrf_prefers_chunks_ranked_by_both() {
        let chunks: HashMap<_, _> = (1..=4).map(chunk).collect();
        let dense = [(id(1), 0.9), (id(2), 0.8), (id(3), 0.7)];
        let sparse = [(id(4), 9.0), (id(2), 5.0)];
        let hits = fuse(&dense, &sparse, Fusion::default(), 3, chunks);
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, vec![id(2), id(1), id(4)]);
        let top = &hits[0];
        assert_eq!((top.dense_rank, top.bm25_rank), (Some(2), Some(2)));
        assert!((top.fused_score - 2.0 / 62.0).abs() < 1e-6);
        assert_eq!(hits[1].bm25_rank, None);
    }

    #[test]
    fn weighted_fusion_combines_scores_scaled_by_each_best() {
        let chunks: HashMap<_, _> = (1..=3).map(chunk).collect();
        let dense = [(id(1), 0.8), (id(2), 0.4)];
        let sparse = [(id(3), 10.0), (id(2), 9.0)];
        // dense' = [1.0, 0.5], bm25' = [1.0, 0.9]; at 0.5 each: 1 → 0.5, 2 → 0.7, 3 → 0.5.
        let hits = fuse(
            &dense,
            &sparse,
            Fusion::Weighted { dense_weight: 0.5 },
            3,
            chunks.clone(),
        );
        assert_eq!(hits[0].chunk.id, id(2));
        assert!((hits[0].fused_score - 0.7).abs() < 1e-6);
        // All weight on dense: the dense order, BM25-only chunks last.
        let hits = fuse(
            &dense,
            &sparse,
            Fusion::Weighted { dense_weight: 1.0 },
            3,
            chunks,
        );
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, vec![id(1), id(2), id(3)]);
    }

    #[test]
    fn single_retriever_modes_keep_that_retrievers_order() {
        let chunks: HashMap<_, _> = (1..=3).map(chunk).collect();
        let dense = [(id(1), 0.9), (id(2), 0.8)];
        let sparse = [(id(3), 7.0), (id(2), 5.0)];
        let hits = fuse(&dense, &[], Fusion::Dense, 3, chunks.clone());
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, vec![id(1), id(2)]);
        assert!((hits[0].fused_score - 0.9).abs() < 1e-6);
        let hits = fuse(&[], &sparse, Fusion::Bm25, 3, chunks);
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, vec![id(3), id(2)]);
        assert_eq!(hits[0].dense_rank, None);
    }

    /// Equal scores rank by document and ordinal, whatever the (random) chunk ids and the
    /// order the store returned them in.
    #[test]
    fn ties_rank_by_document_and_ordinal_not_chunk_id() {
        let doc = |n: u128, document: &str, ordinal: u32| {
            let (i, mut c) = chunk(n);
            c.document_id = document.into();
            c.ordinal = ordinal;
            (i, c)
        };
        // Ids deliberately in the opposite order of (document, ordinal).
        let chunks: HashMap<_, _> = [doc(9, "a", 0), doc(8, "a", 1), doc(7, "b", 0)]
            .into_iter()
            .collect();
        let want = vec![id(9), id(8), id(7)];
        for dense in [
            [(id(7), 0.5), (id(8), 0.5), (id(9), 0.5)],
            [(id(8), 0.5), (id(9), 0.5), (id(7), 0.5)],
        ] {
            for fusion in [Fusion::Dense, Fusion::default()] {
                let hits = fuse(&dense, &[], fusion, 3, chunks.clone());
                let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
                assert_eq!(order, want, "{fusion:?} from {dense:?}");
                assert_eq!(hits[0].dense_rank, Some(1));
            }
        }
        // Ties in BM25 too, and between chunks the two lists rank alike.
        let sparse = [(id(7), 2.0), (id(9), 2.0), (id(8), 2.0)];
        let hits = fuse(&[], &sparse, Fusion::Bm25, 3, chunks.clone());
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, want);
        let hits = fuse(
            &[(id(7), 0.9)],
            &[(id(9), 3.0)],
            Fusion::default(),
            3,
            chunks,
        );
        let order: Vec<_> = hits.iter().map(|h| h.chunk.id).collect();
        assert_eq!(order, vec![id(9), id(7)]);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("docs_v2-en").is_ok());
        for bad in ["", "a b", "../x", "é", &"x".repeat(65)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName(_))),
                "{bad}"
            );
        }
    }

    fn spec() -> CollectionSpec {
        CollectionSpec {
            embedding_model: "m".into(),
            dimension: 2,
        }
    }

    fn new_chunk(ordinal: u32, text: &str, v: [f32; 2]) -> NewChunk {
        NewChunk {
            ordinal,
            page: None,
            start: 0,
            end: text.len() as u64,
            text: text.into(),
            indexed_text: text.into(),
            vector: v.to_vec(),
        }
    }

    fn new_doc(id: &str, hash: &str) -> NewDocument {
        NewDocument {
            id: id.into(),
            content_hash: hash.into(),
            media_type: "text/plain".into(),
            title: None,
            bytes: 1,
            metadata: Default::default(),
        }
    }

    /// Texts of the chunks retrieval returns for `query` in collection `c` (both retrievers).
    async fn visible_texts(index: &Index, query: &str) -> Vec<String> {
        let hits = index
            .retrieve(
                "c",
                query,
                &[0.0, 1.0],
                &RetrieveParams::default(),
                &Filter::default(),
            )
            .await
            .unwrap();
        hits.into_iter().map(|h| h.chunk.text).collect()
    }

    /// Replaces document `d` of collection `c` with v2 (hash h2, one "narwhal horn" chunk)
    /// up to and including the switch, leaving the old version's chunks as garbage in both
    /// stores, as a crash or a failed collection right after the switch would.
    async fn switch_leaving_garbage(index: &Index) {
        let old = index.catalog.document("c", "d").unwrap().unwrap();
        let coll = index.get("c").await.unwrap();
        let ids = vec![chunk_id("c", "d", 0, "h2")];
        index
            .write_chunks(
                &coll,
                &new_doc("d", "h2"),
                &ids,
                vec![new_chunk(0, "narwhal horn", [0.0, 1.0])],
            )
            .await
            .unwrap();
        let switched = DocRecord {
            content_hash: "h2".into(),
            version: 2,
            chunk_ids: ids,
            chunk_count: 1,
            garbage: old.chunk_ids.clone(),
            ..old
        };
        index
            .catalog
            .put_documents("c", &[("d", &switched)])
            .unwrap();
    }

    /// An index in `dir` with collection `c` holding document `id` (v1, hash h1, one chunk).
    async fn with_walrus(dir: &Path, id: &str) -> Index {
        let index = Index::open(dir).await.unwrap();
        index.create_collection("c", spec()).await.unwrap();
        index
            .put_document(
                "c",
                new_doc(id, "h1"),
                vec![new_chunk(0, "walrus tusks", [1.0, 0.0])],
            )
            .await
            .unwrap();
        index
    }

    /// Simulates a crash in the middle of `put_document`: the catalog says `Writing`
    /// and only some of the new chunks reached each store.
    async fn crash_mid_write(index: &Index, id: &str, hash: &str, texts: &[&str]) {
        let coll = index.get("c").await.unwrap();
        let previous = index.catalog.document("c", id).unwrap();
        let ids: Vec<Uuid> = (0..texts.len() as u32)
            .map(|o| chunk_id("c", id, o, hash))
            .collect();
        let writing = DocRecord {
            content_hash: hash.into(),
            media_type: "text/plain".into(),
            title: None,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            chunk_ids: ids.clone(),
            chunk_count: texts.len() as u32,
            state: DocState::Writing,
            bytes: 1,
            updated_at: 0,
            metadata: serde_json::Value::Null,
            previous: previous.map(Box::new),
            garbage: Vec::new(),
        };
        index.catalog.put_documents("c", &[(id, &writing)]).unwrap();
        // First chunk in both stores, second only in the vector store.
        let points = ids
            .iter()
            .map(|cid| VectorPoint {
                id: *cid,
                vector: vec![0.0, 1.0],
                document_id: id.into(),
                payload: Default::default(),
                metadata: Default::default(),
            })
            .collect();
        index.vectors.upsert("c", points).await.unwrap();
        index.vectors.flush("c").await.unwrap();
        coll.lexical
            .add_chunks(&[LexicalChunk {
                chunk: StoredChunk {
                    id: ids[0],
                    document_id: id.into(),
                    ordinal: 0,
                    page: None,
                    start: 0,
                    end: 1,
                    text: texts[0].into(),
                    metadata: Default::default(),
                },
                indexed_text: texts[0].into(),
            }])
            .unwrap();
        coll.lexical.commit().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_the_switch_keeps_the_new_version_and_collects_the_old() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(dir.path()).await.unwrap();
            index.create_collection("c", spec()).await.unwrap();
            let v1 = vec![
                new_chunk(0, "walrus tusks", [1.0, 0.0]),
                new_chunk(1, "walrus diet", [1.0, 0.0]),
            ];
            index
                .put_document("c", new_doc("d", "h1"), v1)
                .await
                .unwrap();
            // Replay put_document for v2 up to the switch, then "crash" before the old
            // chunks are deleted.
            switch_leaving_garbage(&index).await;
            assert!(!index.check("c").await.unwrap().is_consistent());
            // Only the new version is visible, even before recovery.
            assert_eq!(
                visible_texts(&index, "walrus narwhal").await,
                vec!["narwhal horn"]
            );
        }
        let index = Index::open(dir.path()).await.unwrap();
        let check = index.check("c").await.unwrap();
        assert!(check.is_consistent(), "{check:?}");
        assert_eq!(
            (check.documents, check.vector_points, check.lexical_chunks),
            (1, 1, 1)
        );
        let rec = index.catalog.document("c", "d").unwrap().unwrap();
        assert_eq!((rec.version, rec.garbage.len()), (2, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn going_back_to_a_version_whose_chunks_await_collection_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).await.unwrap();
        index.create_collection("c", spec()).await.unwrap();
        let v1 = || {
            vec![
                new_chunk(0, "walrus tusks", [1.0, 0.0]),
                new_chunk(1, "walrus diet", [1.0, 0.0]),
            ]
        };
        index
            .put_document("c", new_doc("d", "h1"), v1())
            .await
            .unwrap();
        // v2 is committed but v1's chunks were not collected (as when the collection
        // failed): they are still in both stores.
        switch_leaving_garbage(&index).await;
        // Back to v1's content: its chunk ids are v1's, still stored.
        index
            .put_document("c", new_doc("d", "h1"), v1())
            .await
            .unwrap();
        let check = index.check("c").await.unwrap();
        assert!(check.is_consistent(), "{check:?}");
        assert_eq!(
            (check.documents, check.vector_points, check.lexical_chunks),
            (1, 2, 2)
        );
        let mut texts = visible_texts(&index, "walrus narwhal").await;
        texts.sort();
        assert_eq!(texts, vec!["walrus diet", "walrus tusks"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hidden_chunks_do_not_crowd_visible_ones_out_of_the_results() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).await.unwrap();
        index.create_collection("c", spec()).await.unwrap();
        let walrus = |a: &str, b: &str| {
            vec![
                new_chunk(0, &format!("walrus {a}"), [1.0, 0.0]),
                new_chunk(1, &format!("walrus {b}"), [1.0, 0.0]),
            ]
        };
        index
            .put_document("c", new_doc("d", "h1"), walrus("tusks", "diet"))
            .await
            .unwrap();
        index
            .put_document("c", new_doc("e", "h1"), walrus("colony", "migration"))
            .await
            .unwrap();
        // d's walrus chunks become hidden garbage; they tie with e's and rank first.
        switch_leaving_garbage(&index).await;
        for fusion in [Fusion::Dense, Fusion::Bm25, Fusion::default()] {
            let params = RetrieveParams {
                top_k: 2,
                candidates: 2,
                fusion,
            };
            let hits = index
                .retrieve("c", "walrus", &[1.0, 0.0], &params, &Filter::default())
                .await
                .unwrap();
            let mut texts: Vec<String> = hits.into_iter().map(|h| h.chunk.text).collect();
            texts.sort();
            assert_eq!(
                texts,
                vec!["walrus colony", "walrus migration"],
                "{fusion:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacing_never_touches_the_old_version_before_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = with_walrus(dir.path(), "d").await;
            // v2 fully written to both stores, but the catalog still says Writing: the old
            // version's chunks must all still be there for the rollback.
            crash_mid_write(&index, "d", "h2", &["narwhal horn"]).await;
        }
        let index = Index::open(dir.path()).await.unwrap();
        let check = index.check("c").await.unwrap();
        assert!(check.is_consistent(), "{check:?}");
        let info = index.document("c", "d").await.unwrap().unwrap();
        assert_eq!((info.version, info.content_hash.as_str()), (1, "h1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_writes_are_rolled_back_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = with_walrus(dir.path(), "old").await;
            crash_mid_write(&index, "old", "h2", &["narwhal horn", "narwhal pods"]).await;
            crash_mid_write(&index, "new", "h1", &["narwhal songs", "narwhal diet"]).await;

            // Half-written versions are never visible, even before recovery.
            assert_eq!(
                visible_texts(&index, "narwhal walrus").await,
                vec!["walrus tusks"]
            );
            assert_eq!(index.chunk_counts("c", "old").await.unwrap(), (3, 2));
        }

        let index = Index::open(dir.path()).await.unwrap();
        // Replaced document: back to its committed version in both stores.
        assert_eq!(index.chunk_counts("c", "old").await.unwrap(), (1, 1));
        let info = index.document("c", "old").await.unwrap().unwrap();
        assert_eq!((info.version, info.content_hash.as_str()), (1, "h1"));
        assert_eq!(
            index.catalog.document("c", "old").unwrap().unwrap().state,
            DocState::Committed
        );
        // New document: removed entirely.
        assert_eq!(index.chunk_counts("c", "new").await.unwrap(), (0, 0));
        assert!(index.catalog.document("c", "new").unwrap().is_none());
        assert_eq!(
            visible_texts(&index, "narwhal walrus").await,
            vec!["walrus tusks"]
        );
        // And the document can be written again.
        let out = index
            .put_document(
                "c",
                new_doc("new", "h1"),
                vec![new_chunk(0, "narwhal", [0.0, 1.0])],
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
    async fn interrupted_deletes_are_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(dir.path()).await.unwrap();
            index.create_collection("c", spec()).await.unwrap();
            index
                .put_document(
                    "c",
                    new_doc("d", "h1"),
                    vec![new_chunk(0, "walrus", [1.0, 0.0])],
                )
                .await
                .unwrap();
            let mut rec = index.catalog.document("c", "d").unwrap().unwrap();
            rec.state = DocState::Deleting;
            index.catalog.put_documents("c", &[("d", &rec)]).unwrap();
            assert!(index.document("c", "d").await.unwrap().is_none());
        }
        let index = Index::open(dir.path()).await.unwrap();
        assert_eq!(index.chunk_counts("c", "d").await.unwrap(), (0, 0));
        assert!(index.catalog.document("c", "d").unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphaned_store_directories_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(dir.path()).await.unwrap();
            index.create_collection("c", spec()).await.unwrap();
            // As if the process died after creating the stores but before the catalog commit.
            index.catalog.delete_collection("c").unwrap();
        }
        let index = Index::open(dir.path()).await.unwrap();
        assert!(index.list_collections().await.unwrap().is_empty());
        assert!(!dir.path().join("vectors/c").exists());
        assert!(!dir.path().join("lexical/c").exists());
    }
}
