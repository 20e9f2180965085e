//! The engine's error type and the coarse kind that transports map to status codes.

use quire_index::Error as IndexError;
use quire_ingest::Error as IngestError;
use quire_models::Error as ModelError;

/// How a caller should treat an [`Error`]; transports map this to their status codes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or document is malformed; retrying it unchanged fails again.
    InvalidArgument,
    /// A named collection or document does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The server is not ready for this request (a model is missing, a collection uses another model).
    FailedPrecondition,
    /// The server is overloaded; retry later.
    ResourceExhausted,
    /// A fault inside quire or its stores.
    Internal,
}

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The document could not be parsed or chunked.
    #[error("{0}")]
    Document(#[from] IngestError),
    /// A store or catalog operation failed.
    #[error("{0}")]
    Index(#[from] IndexError),
    /// A model could not be loaded or run.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// Processing one document (parse, chunk, embed) ran past `max_document_ms`.
    #[error("processing the document took longer than the limit of {limit_ms} ms")]
    DocumentTimeLimit { limit_ms: u64 },
    /// Too much work is in progress to take this request; retrying later can succeed.
    #[error("{0}")]
    Busy(String),
    /// A worker task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) | Error::Document(_) | Error::DocumentTimeLimit { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Index(e) => match e {
                IndexError::CollectionNotFound(..) => ErrorKind::NotFound,
                IndexError::CollectionExists(..) => ErrorKind::AlreadyExists,
                IndexError::InvalidName(..) | IndexError::InvalidArgument(..) => {
                    ErrorKind::InvalidArgument
                }
                IndexError::ModelMismatch { .. } | IndexError::DimensionMismatch { .. } => {
                    ErrorKind::FailedPrecondition
                }
                _ => ErrorKind::Internal,
            },
            Error::Model(ModelError::ModelMissing { .. }) => ErrorKind::FailedPrecondition,
            // The request's text (question, query) does not fit the model's context.
            Error::Model(ModelError::ContextOverflow { .. }) => ErrorKind::InvalidArgument,
            Error::Busy(_) => ErrorKind::ResourceExhausted,
            Error::Model(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A stable, machine-readable reason, reported per document in ingest streams.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Document(e) => match e {
                IngestError::Empty => "empty_document",
                IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
                IngestError::InvalidEncoding { .. } => "invalid_encoding",
                IngestError::TimeLimit { .. } => "time_limit",
                IngestError::TooLarge { .. } => "too_large",
                IngestError::TooManyPages { .. } => "too_many_pages",
                IngestError::DecompressedTooLarge { .. } => "decompressed_too_large",
                IngestError::MemoryLimit { .. } => "memory_limit",
                IngestError::Pdf(_) => "corrupt_pdf",
                IngestError::Encrypted => "encrypted",
                IngestError::NoExtractableText => "no_extractable_text",
                IngestError::TextTooLarge { .. } => "text_too_large",
                IngestError::HtmlTooComplex => "html_too_complex",
                IngestError::InvalidConfig(_) => "invalid_config",
            },
            Error::Index(e) => match e {
                IndexError::CollectionNotFound(..) => "collection_not_found",
                IndexError::CollectionExists(..) => "collection_exists",
                IndexError::InvalidName(..) => "invalid_collection_name",
                IndexError::ModelMismatch { .. } => "model_mismatch",
                IndexError::DimensionMismatch { .. } => "dimension_mismatch",
                IndexError::InvalidArgument(..) => "invalid_argument",
                _ => "store_error",
            },
            Error::DocumentTimeLimit { .. } => "time_limit",
            Error::Model(ModelError::ModelMissing { .. }) => "model_missing",
            Error::Model(ModelError::ContextOverflow { .. }) => "context_overflow",
            Error::Model(_) => "model_error",
            Error::Busy(_) => "busy",
            Error::Internal(_) => "internal",
        }
    }
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
