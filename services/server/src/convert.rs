//! Conversions between engine values and `quire.v1` messages, and the one error mapping.

use std::ops::Bound;

use quire_engine::{
    Answer, CitationOrigin, Error, ErrorKind, Filter, IngestOutcome, IngestStatus, MetaCondition,
    MetaValue, Metadata, RetrievalMode,
};
use quire_index::{CollectionInfo, DocumentInfo, Hit};
use quire_proto::v1 as pb;
use tonic::{Code, Status};

/// Maps an engine error to a gRPC status. This is the only place that does so.
pub fn status(err: &Error) -> Status {
    let code = match err.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %err, "request failed");
    }
    Status::new(code, format!("{}: {err}", err.code()))
}

pub fn collection(c: CollectionInfo) -> pb::Collection {
    pb::Collection {
        name: c.name,
        embedding_model: c.embedding_model,
        dimension: c.dimension,
        document_count: c.document_count,
        chunk_count: c.chunk_count,
        created_at_unix: c.created_at_unix,
    }
}

pub fn document(d: DocumentInfo) -> pb::DocumentInfo {
    pb::DocumentInfo {
        id: d.id,
        content_hash: d.content_hash,
        media_type: d.media_type,
        title: d.title.unwrap_or_default(),
        version: d.version,
        chunk_count: d.chunk_count,
        size_bytes: d.bytes,
        updated_at_unix: d.updated_at_unix,
        metadata: metadata_to_pb(d.metadata),
    }
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn value_from_pb(key: &str, v: pb::MetadataValue) -> Result<MetaValue, Error> {
    use pb::metadata_value::Kind;
    match v.kind {
        Some(Kind::StringValue(s)) => Ok(MetaValue::String(s)),
        Some(Kind::NumberValue(n)) => Ok(MetaValue::Number(n)),
        Some(Kind::BoolValue(b)) => Ok(MetaValue::Bool(b)),
        None => Err(bad(format!("metadata `{key}`: the value has no kind set"))),
    }
}

fn value_to_pb(v: MetaValue) -> pb::MetadataValue {
    use pb::metadata_value::Kind;
    pb::MetadataValue {
        kind: Some(match v {
            MetaValue::String(s) => Kind::StringValue(s),
            MetaValue::Number(n) => Kind::NumberValue(n),
            MetaValue::Bool(b) => Kind::BoolValue(b),
        }),
    }
}

/// A document's metadata from the wire; a value without a kind is an error.
pub fn metadata_from_pb(
    map: std::collections::HashMap<String, pb::MetadataValue>,
) -> Result<Metadata, Error> {
    map.into_iter()
        .map(|(k, v)| value_from_pb(&k, v).map(|v| (k, v)))
        .collect()
}

fn metadata_to_pb(m: Metadata) -> std::collections::HashMap<String, pb::MetadataValue> {
    m.into_iter().map(|(k, v)| (k, value_to_pb(v))).collect()
}

fn bound(key: &str, inclusive: Option<f64>, exclusive: Option<f64>) -> Result<Bound<f64>, Error> {
    match (inclusive, exclusive) {
        (Some(_), Some(_)) => Err(bad(format!(
            "metadata `{key}`: set at most one bound on each side of a range"
        ))),
        (Some(x), None) => Ok(Bound::Included(x)),
        (None, Some(x)) => Ok(Bound::Excluded(x)),
        (None, None) => Ok(Bound::Unbounded),
    }
}

/// A filter from the wire (absent means no restriction). Structural errors (a condition
/// with no test, a value with no kind) are reported here; the engine checks the rest.
pub fn filter(f: Option<pb::Filter>) -> Result<Filter, Error> {
    use pb::metadata_condition::Test;
    let f = f.unwrap_or_default();
    let mut metadata = Vec::with_capacity(f.metadata.len());
    for c in f.metadata {
        let key = c.key;
        metadata.push(match c.test {
            Some(Test::Equals(v)) => MetaCondition::Equals {
                value: value_from_pb(&key, v)?,
                key,
            },
            Some(Test::AnyOf(vs)) => MetaCondition::AnyOf {
                values: vs
                    .values
                    .into_iter()
                    .map(|v| value_from_pb(&key, v))
                    .collect::<Result<_, _>>()?,
                key,
            },
            Some(Test::Range(r)) => MetaCondition::Range {
                lower: bound(&key, r.gte, r.gt)?,
                upper: bound(&key, r.lte, r.lt)?,
                key,
            },
            None => {
                return Err(bad(format!(
                    "metadata condition on `{key}` has no test set"
                )));
            }
        });
    }
    Ok(Filter {
        document_ids: f.document_ids,
        metadata,
    })
}

/// The request's retrieval mode; `None` (the server default) when unspecified.
pub fn retrieval_mode(mode: i32) -> Result<Option<RetrievalMode>, Error> {
    use pb::RetrievalMode as M;
    match M::try_from(mode) {
        Ok(M::Unspecified) => Ok(None),
        Ok(M::HybridRrf) => Ok(Some(RetrievalMode::HybridRrf)),
        Ok(M::HybridWeighted) => Ok(Some(RetrievalMode::HybridWeighted)),
        Ok(M::Dense) => Ok(Some(RetrievalMode::Dense)),
        Ok(M::Bm25) => Ok(Some(RetrievalMode::Bm25)),
        Err(_) => Err(bad(format!("unknown retrieval mode {mode}"))),
    }
}

/// The per-document result of an ingest, success or failure.
pub fn document_result(
    document_id: String,
    sequence: u64,
    took_ms: u64,
    result: Result<IngestOutcome, Error>,
) -> pb::DocumentResult {
    use pb::document_result::Status as S;
    let mut out = pb::DocumentResult {
        document_id,
        sequence,
        took_ms,
        ..Default::default()
    };
    match result {
        Ok(o) => {
            out.status = match o.status {
                IngestStatus::Created => S::Created,
                IngestStatus::Replaced => S::Replaced,
                IngestStatus::Unchanged => S::Unchanged,
            } as i32;
            out.version = o.version;
            out.chunk_count = o.chunks;
            out.content_hash = o.content_hash;
            out.text_encoding = o.text_encoding.unwrap_or_default().to_string();
        }
        Err(e) => {
            out.status = S::Failed as i32;
            out.error = Some(pb::DocumentError {
                code: e.code().to_string(),
                message: e.to_string(),
            });
        }
    }
    out
}

pub fn hit(h: Hit) -> pb::Hit {
    pb::Hit {
        document_id: h.chunk.document_id,
        chunk_id: h.chunk.id.to_string(),
        ordinal: h.chunk.ordinal,
        page: h.chunk.page.unwrap_or(0),
        span: Some(pb::Span {
            start: h.chunk.start,
            end: h.chunk.end,
        }),
        text: h.chunk.text,
        dense_score: h.dense_score,
        dense_rank: h.dense_rank,
        bm25_score: h.bm25_score,
        bm25_rank: h.bm25_rank,
        fused_score: h.fused_score,
        rerank_score: h.rerank_score,
        metadata: metadata_to_pb(h.chunk.metadata),
    }
}

pub fn answer(a: Answer) -> pb::AskResponse {
    let citations = a
        .citations
        .into_iter()
        .map(|c| pb::Citation {
            source: c.source as u32,
            document_id: c.hit.chunk.document_id,
            chunk_id: c.hit.chunk.id.to_string(),
            page: c.hit.chunk.page.unwrap_or(0),
            span: Some(pb::Span {
                start: c.hit.chunk.start,
                end: c.hit.chunk.end,
            }),
            quote: c.hit.chunk.text,
            origin: match c.origin {
                CitationOrigin::Model => pb::CitationOrigin::Model,
                CitationOrigin::Support => pb::CitationOrigin::Support,
            } as i32,
        })
        .collect();
    let sentences = a
        .sentences
        .into_iter()
        .map(|s| pb::SentenceSupport {
            text: a.text.get(s.span.clone()).unwrap_or_default().to_string(),
            span: Some(pb::Span {
                start: s.span.start as u64,
                end: s.span.end as u64,
            }),
            cited: s.cited.into_iter().map(|n| n as u32).collect(),
            written: s.written.into_iter().map(|n| n as u32).collect(),
            support: s.support,
            supported: s.supported,
        })
        .collect();
    pb::AskResponse {
        sentences,
        no_answer_probability: a.no_answer_probability,
        verification_log_odds: a.verification_log_odds,
        answer: a.text,
        citations,
        abstained: a.abstained.is_some(),
        abstain_reason: a.abstained.unwrap_or_default(),
        sources: a.sources.into_iter().map(hit).collect(),
        usage: Some(pb::Usage {
            model: a.model,
            prompt_tokens: a.prompt_tokens as u32,
            completion_tokens: a.completion_tokens as u32,
            retrieve_ms: a.retrieve_time.as_millis() as u64,
            time_to_first_token_ms: a.time_to_first_token.as_millis() as u64,
            generate_ms: a.generate_time.as_millis() as u64,
        }),
    }
}
