//! Conversions between engine values and `quire.v1` messages, and the one error mapping.

use quire_engine::{Answer, CitationOrigin, Error, ErrorKind, IngestOutcome, IngestStatus};
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
    pb::AskResponse {
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
