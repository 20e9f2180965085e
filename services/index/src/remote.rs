//! [`VectorStore`] on a Qdrant server or cluster (`qdrant-client`, gRPC), for deployments that
//! outgrow the embedded store. The catalog and the Tantivy indexes stay in the data directory.

use async_trait::async_trait;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance,
    Filter as QFilter, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, Range,
    UpsertPointsBuilder, VectorParamsBuilder, condition::ConditionOneOf, r#match::MatchValue,
    point_id::PointIdOptions, points_selector::PointsSelectorOneOf,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metadata;
use crate::vector::{DOCUMENT_ID_KEY, VectorPoint, VectorStore, filter_json};
use crate::{Filter, is_plain_name};

fn remote_err(e: impl std::fmt::Display) -> Error {
    Error::Vector(format!("qdrant server: {e}"))
}

/// How quire reaches a Qdrant server or cluster, and how it lays out the collections it creates.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// API key the server requires; `None` sends none.
    pub api_key: Option<String>,
    /// Prefix of the collection names (letters, digits, `_`, `-`; may be empty), which keeps
    /// several quire deployments apart on one cluster.
    pub prefix: String,
    /// Shards of a new collection; `None` leaves it to the server (one per node at creation).
    pub shards: Option<u32>,
    /// Copies of each shard, on different nodes; `None` leaves it to the server (1).
    pub replication_factor: Option<u32>,
    /// Replicas that must have applied a write before it is acknowledged; `None` leaves it to
    /// the server (1). Equal to `replication_factor`, an acknowledged write is on every copy.
    pub write_consistency_factor: Option<u32>,
}

/// Collections on a Qdrant server, named `<prefix><collection>`.
///
/// Every write is sent with `wait = true`: the server has applied it and written it to its
/// write-ahead log (on `write_consistency_factor` replicas) before the call returns, so
/// [`VectorStore::flush`] has nothing left to do. The server builds its HNSW indexes itself, so
/// [`VectorStore::optimize`] does nothing.
pub struct RemoteVectorStore {
    client: Qdrant,
    options: RemoteOptions,
}

impl RemoteVectorStore {
    /// Connects to the server's gRPC endpoint (`http://host:6334`) and checks that it answers.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad prefix or a zero shard, replica or
    /// consistency count (or a consistency factor above the replication factor),
    /// [`Error::Vector`] when the server cannot be reached.
    pub async fn connect(url: &str, options: RemoteOptions) -> Result<Self> {
        let prefix = &options.prefix;
        if !prefix.is_empty() && !is_plain_name(prefix, 64) {
            return Err(Error::InvalidArgument(format!(
                "invalid Qdrant collection prefix `{prefix}`: use up to 64 characters from \
                 [A-Za-z0-9_-]"
            )));
        }
        for (name, value) in [
            ("shards", options.shards),
            ("replication factor", options.replication_factor),
            ("write consistency factor", options.write_consistency_factor),
        ] {
            if value == Some(0) {
                return Err(Error::InvalidArgument(format!(
                    "the Qdrant {name} must be at least 1"
                )));
            }
        }
        // The server's default replication factor is 1.
        if let Some(w) = options.write_consistency_factor
            && let r = options.replication_factor.unwrap_or(1)
            && w > r
        {
            return Err(Error::InvalidArgument(format!(
                "the Qdrant write consistency factor ({w}) cannot exceed the replication \
                 factor ({r})"
            )));
        }
        let client = Qdrant::from_url(url)
            .api_key(options.api_key.clone())
            .skip_compatibility_check()
            .build()
            .map_err(remote_err)?;
        client
            .health_check()
            .await
            .map_err(|e| Error::Vector(format!("qdrant server at {url} does not answer: {e}")))?;
        Ok(RemoteVectorStore { client, options })
    }

    fn name(&self, collection: &str) -> String {
        format!("{}{collection}", self.options.prefix)
    }

    /// True when the server has a collection of this (prefixed) name.
    async fn exists(&self, name: &str) -> Result<bool> {
        self.client
            .collection_exists(name)
            .await
            .map_err(remote_err)
    }

    /// Deletes the selected points (ids or a filter), waiting until the server applied it.
    async fn delete(
        &self,
        collection: &str,
        selector: impl Into<PointsSelectorOneOf>,
    ) -> Result<()> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.name(collection))
                    .points(selector)
                    .wait(true),
            )
            .await
            .map_err(remote_err)?;
        Ok(())
    }
}

/// The server's filter for the Qdrant filter JSON that [`filter_json`] builds (the same one
/// the embedded store reads): `must` / `should` lists of `match` (`value` or `any`) and
/// `range` conditions.
fn to_filter(json: &Value) -> Result<QFilter> {
    let list = |key: &str| -> Result<Vec<Condition>> {
        match json.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(to_condition).collect(),
            Some(other) => Err(Error::Vector(format!(
                "filter `{key}` is not a list: {other}"
            ))),
        }
    };
    Ok(QFilter {
        must: list("must")?,
        should: list("should")?,
        ..Default::default()
    })
}

fn to_condition(json: &Value) -> Result<Condition> {
    let bad = || Error::Vector(format!("unsupported filter condition: {json}"));
    if json.get("must").is_some() || json.get("should").is_some() {
        return Ok(Condition {
            condition_one_of: Some(ConditionOneOf::Filter(to_filter(json)?)),
        });
    }
    let key = json.get("key").and_then(Value::as_str).ok_or_else(bad)?;
    if let Some(range) = json.get("range") {
        let bound = |name: &str| range.get(name).and_then(Value::as_f64);
        return Ok(Condition::range(
            key,
            Range {
                gt: bound("gt"),
                gte: bound("gte"),
                lt: bound("lt"),
                lte: bound("lte"),
            },
        ));
    }
    let matched = json.get("match").ok_or_else(bad)?;
    // Exact keyword matches: the client turns a string with spaces into a full-text match.
    let value = match (matched.get("value"), matched.get("any")) {
        (Some(Value::String(s)), _) => MatchValue::Keyword(s.clone()),
        (Some(Value::Bool(b)), _) => MatchValue::Boolean(*b),
        (_, Some(Value::Array(items))) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            MatchValue::from(strings.ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    };
    Ok(Condition::matches(key, value))
}

fn server_filter(
    document_ids: &[String],
    meta: &[metadata::MetaCondition],
) -> Result<Option<QFilter>> {
    filter_json(document_ids, meta)
        .map(|json| to_filter(&json))
        .transpose()
}

fn point_uuid(id: Option<PointId>) -> Option<Uuid> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok(),
        PointIdOptions::Num(_) => None,
    }
}

#[async_trait]
impl VectorStore for RemoteVectorStore {
    async fn ensure_collection(&self, name: &str, dimension: u32) -> Result<()> {
        let name = self.name(name);
        if self.exists(&name).await? {
            return Ok(());
        }
        let mut create = CreateCollectionBuilder::new(&name).vectors_config(
            VectorParamsBuilder::new(u64::from(dimension), Distance::Cosine),
        );
        if let Some(n) = self.options.shards {
            create = create.shard_number(n);
        }
        if let Some(n) = self.options.replication_factor {
            create = create.replication_factor(n);
        }
        if let Some(n) = self.options.write_consistency_factor {
            create = create.write_consistency_factor(n);
        }
        match self.client.create_collection(create).await {
            Ok(_) => Ok(()),
            // Another writer created it between the check and the call.
            Err(_) if self.exists(&name).await? => Ok(()),
            Err(e) => Err(remote_err(e)),
        }
    }

    async fn drop_collection(&self, name: &str) -> Result<()> {
        let name = self.name(name);
        if self.exists(&name).await? {
            self.client
                .delete_collection(&name)
                .await
                .map_err(remote_err)?;
        }
        Ok(())
    }

    async fn upsert(&self, collection: &str, points: Vec<VectorPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let mut payload = p.payload;
                payload.insert(DOCUMENT_ID_KEY.into(), Value::String(p.document_id));
                if !p.metadata.is_empty() {
                    payload.insert(metadata::META_KEY.into(), metadata::to_json(&p.metadata));
                }
                PointStruct::new(p.id.to_string(), p.vector, Payload::from(payload))
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(self.name(collection), points).wait(true))
            .await
            .map_err(remote_err)?;
        Ok(())
    }

    async fn delete_points(&self, collection: &str, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = PointsIdsList {
            ids: ids.iter().map(|u| PointId::from(u.to_string())).collect(),
        };
        self.delete(collection, ids).await
    }

    async fn delete_document(&self, collection: &str, document_id: &str) -> Result<()> {
        let Some(filter) = server_filter(&[document_id.to_string()], &[])? else {
            return Ok(());
        };
        self.delete(collection, filter).await
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
        let mut query = QueryPointsBuilder::new(self.name(collection))
            .query(vector.to_vec())
            .limit(limit as u64);
        if let Some(f) = server_filter(&filter.document_ids, &filter.metadata)? {
            query = query.filter(f);
        }
        let response = self.client.query(query).await.map_err(remote_err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| point_uuid(p.id).map(|id| (id, p.score)))
            .collect())
    }

    async fn count(&self, collection: &str, document_id: Option<&str>) -> Result<u64> {
        let mut request = CountPointsBuilder::new(self.name(collection)).exact(true);
        if let Some(d) = document_id
            && let Some(f) = server_filter(&[d.to_string()], &[])?
        {
            request = request.filter(f);
        }
        let response = self.client.count(request).await.map_err(remote_err)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn flush(&self, _collection: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{MetaCondition, MetaValue};
    use std::ops::Bound;

    /// Layouts the server could never satisfy are refused before any connection is made.
    #[tokio::test]
    async fn impossible_cluster_layouts_are_refused() {
        for options in [
            RemoteOptions {
                shards: Some(0),
                ..Default::default()
            },
            RemoteOptions {
                replication_factor: Some(2),
                write_consistency_factor: Some(3),
                ..Default::default()
            },
            // The server's default replication factor is 1.
            RemoteOptions {
                write_consistency_factor: Some(2),
                ..Default::default()
            },
        ] {
            let result = RemoteVectorStore::connect("http://127.0.0.1:1", options.clone()).await;
            assert!(
                matches!(result, Err(Error::InvalidArgument(_))),
                "{options:?}: {:?}",
                result.err()
            );
        }
    }

    /// The embedded store's filter JSON becomes the same conditions for the server, with
    /// strings matched exactly (not as full text) even when they hold spaces.
    #[test]
    fn filters_translate_to_server_conditions() {
        let meta = vec![
            MetaCondition::Equals {
                key: "team".into(),
                value: MetaValue::String("red fox".into()),
            },
            MetaCondition::AnyOf {
                key: "lang".into(),
                values: vec![MetaValue::String("en".into()), MetaValue::Bool(true)],
            },
            MetaCondition::Range {
                key: "year".into(),
                lower: Bound::Included(2020.0),
                upper: Bound::Excluded(2024.0),
            },
        ];
        let filter = server_filter(&["a.txt".into(), "b.txt".into()], &meta)
            .unwrap()
            .unwrap();
        assert_eq!(filter.must.len(), 4);
        let text = format!("{filter:?}");
        assert!(text.contains("Keyword(\"red fox\")"), "{text}");
        assert!(!text.contains("Text("), "{text}");
        assert!(text.contains("Boolean(true)"), "{text}");
        assert!(
            text.contains("gte: Some(2020.0)") && text.contains("lt: Some(2024.0)"),
            "{text}"
        );
        assert!(
            text.contains("\"a.txt\"") && text.contains("\"b.txt\""),
            "{text}"
        );
        assert!(server_filter(&[], &[]).unwrap().is_none());
    }
}
