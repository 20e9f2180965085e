//! The document catalog: a redb database that records, for every collection and
//! document, what the two stores are supposed to hold.
//!
//! Every method is one redb transaction; a write is durable when the method
//! returns (redb commits with fsync by default).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
const DOCUMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("documents");

/// Catalog record of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    pub embedding_model: String,
    pub dimension: u32,
    pub created_at: i64,
}

/// Lifecycle of a document's chunks in the two stores.
///
/// A replacement goes `Committed(old)` → `Writing(new, previous: old)` → new chunks
/// durable in both stores → `Committed(new, garbage: old chunks)` → old chunks deleted and
/// durable → `Committed(new)`. The old version's chunks are untouched until the switch, so a
/// crash at any point leaves either the old or the new version whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocState {
    /// A new version is being written; `previous` (if any) is the version readers should see.
    Writing,
    /// Both stores hold exactly `chunk_ids` for this document, durably.
    Committed,
    /// The document is being removed from both stores.
    Deleting,
}

/// Catalog record of one document version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    pub content_hash: String,
    pub media_type: String,
    pub title: Option<String>,
    pub version: u64,
    pub chunk_ids: Vec<Uuid>,
    pub chunk_count: u32,
    pub state: DocState,
    pub bytes: u64,
    pub updated_at: i64,
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// While `Writing`: the committed version being replaced, if there was one.
    #[serde(default)]
    pub previous: Option<Box<DocRecord>>,
    /// When `Committed`: chunks of the replaced version that may still be in the stores and
    /// are to be deleted. Never visible; removed right after the switch, or at the next open.
    #[serde(default)]
    pub garbage: Vec<Uuid>,
}

impl DocRecord {
    /// Chunk ids a reader may see for this document right now.
    pub fn visible_chunks(&self) -> &[Uuid] {
        match self.state {
            DocState::Committed => &self.chunk_ids,
            DocState::Writing => self
                .previous
                .as_deref()
                .map(|p| p.chunk_ids.as_slice())
                .unwrap_or(&[]),
            DocState::Deleting => &[],
        }
    }
}

/// Handle to `<data_dir>/catalog.redb`.
pub struct Catalog {
    db: Database,
}

fn cat_err(e: impl std::fmt::Display) -> Error {
    Error::Catalog(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Catalog(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(cat_err)
}

impl Catalog {
    /// Opens (or creates) the catalog file and makes sure both tables exist.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(cat_err)?;
        let txn = db.begin_write().map_err(cat_err)?;
        txn.open_table(COLLECTIONS).map_err(cat_err)?;
        txn.open_table(DOCUMENTS).map_err(cat_err)?;
        txn.commit().map_err(cat_err)?;
        Ok(Self { db })
    }

    pub fn collection(&self, name: &str) -> Result<Option<CollectionRecord>> {
        let txn = self.db.begin_read().map_err(cat_err)?;
        let table = txn.open_table(COLLECTIONS).map_err(cat_err)?;
        match table.get(name).map_err(cat_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn collections(&self) -> Result<Vec<(String, CollectionRecord)>> {
        let txn = self.db.begin_read().map_err(cat_err)?;
        let table = txn.open_table(COLLECTIONS).map_err(cat_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(cat_err)? {
            let (k, v) = entry.map_err(cat_err)?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Inserts the collection record; fails with `CollectionExists` if present.
    pub fn create_collection(&self, name: &str, record: &CollectionRecord) -> Result<()> {
        let bytes = encode(record)?;
        let txn = self.db.begin_write().map_err(cat_err)?;
        {
            let mut table = txn.open_table(COLLECTIONS).map_err(cat_err)?;
            if table.get(name).map_err(cat_err)?.is_some() {
                return Err(Error::CollectionExists(name.to_string()));
            }
            table.insert(name, bytes.as_slice()).map_err(cat_err)?;
        }
        txn.commit().map_err(cat_err)
    }

    /// Removes the collection and all its document records in one transaction.
    pub fn delete_collection(&self, name: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(cat_err)?;
        let existed;
        {
            let mut table = txn.open_table(COLLECTIONS).map_err(cat_err)?;
            existed = table.remove(name).map_err(cat_err)?.is_some();
            let mut docs = txn.open_table(DOCUMENTS).map_err(cat_err)?;
            let keys = doc_keys(&docs, name)?;
            for id in keys {
                docs.remove((name, id.as_str())).map_err(cat_err)?;
            }
        }
        txn.commit().map_err(cat_err)?;
        Ok(existed)
    }

    pub fn document(&self, collection: &str, id: &str) -> Result<Option<DocRecord>> {
        let txn = self.db.begin_read().map_err(cat_err)?;
        let table = txn.open_table(DOCUMENTS).map_err(cat_err)?;
        match table.get((collection, id)).map_err(cat_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Looks up several documents in one read transaction; missing ids are absent from the map.
    pub fn documents_by_id<'a>(
        &self,
        collection: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<std::collections::HashMap<String, DocRecord>> {
        let txn = self.db.begin_read().map_err(cat_err)?;
        let table = txn.open_table(DOCUMENTS).map_err(cat_err)?;
        let mut out = std::collections::HashMap::new();
        for id in ids {
            if let Some(v) = table.get((collection, id)).map_err(cat_err)? {
                out.insert(id.to_string(), decode(v.value())?);
            }
        }
        Ok(out)
    }

    /// All document records of a collection, ordered by id.
    pub fn documents(&self, collection: &str) -> Result<Vec<(String, DocRecord)>> {
        let txn = self.db.begin_read().map_err(cat_err)?;
        let table = txn.open_table(DOCUMENTS).map_err(cat_err)?;
        let mut out = Vec::new();
        for entry in table.range((collection, "")..).map_err(cat_err)? {
            let (k, v) = entry.map_err(cat_err)?;
            let (coll, id) = k.value();
            if coll != collection {
                break;
            }
            out.push((id.to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Writes (inserts or replaces) several document records atomically.
    pub fn put_documents(&self, collection: &str, records: &[(&str, &DocRecord)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(cat_err)?;
        {
            let mut table = txn.open_table(DOCUMENTS).map_err(cat_err)?;
            for (id, record) in records {
                let bytes = encode(*record)?;
                table
                    .insert((collection, *id), bytes.as_slice())
                    .map_err(cat_err)?;
            }
        }
        txn.commit().map_err(cat_err)
    }

    /// Removes several document records atomically.
    pub fn remove_documents(&self, collection: &str, ids: &[&str]) -> Result<()> {
        let txn = self.db.begin_write().map_err(cat_err)?;
        {
            let mut table = txn.open_table(DOCUMENTS).map_err(cat_err)?;
            for id in ids {
                table.remove((collection, *id)).map_err(cat_err)?;
            }
        }
        txn.commit().map_err(cat_err)
    }
}

fn doc_keys(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    collection: &str,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for entry in table.range((collection, "")..).map_err(cat_err)? {
        let (k, _) = entry.map_err(cat_err)?;
        let (coll, id) = k.value();
        if coll != collection {
            break;
        }
        keys.push(id.to_string());
    }
    Ok(keys)
}
