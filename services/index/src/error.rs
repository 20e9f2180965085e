//! The crate's single error type.

use std::path::PathBuf;

/// Result alias used throughout `quire-index`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the index layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named collection does not exist in the catalog.
    #[error("collection `{0}` not found")]
    CollectionNotFound(String),
    /// A collection with this name already exists.
    #[error("collection `{0}` already exists")]
    CollectionExists(String),
    /// The collection name is not 1-64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid collection name `{0}`: use 1-64 characters from [A-Za-z0-9_-]")]
    InvalidName(String),
    /// The collection exists but was created for another embedding model or dimension.
    #[error(
        "collection `{collection}` uses model `{existing_model}` ({existing_dimension}-d), \
         not `{requested_model}` ({requested_dimension}-d)"
    )]
    ModelMismatch {
        collection: String,
        existing_model: String,
        existing_dimension: u32,
        requested_model: String,
        requested_dimension: u32,
    },
    /// A vector's length differs from the collection's dimension.
    #[error("vector has dimension {got}, but the collection expects {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    /// Other bad input (empty document id, duplicate chunk ordinals, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The vector store (qdrant-edge or a Qdrant server) failed.
    #[error("vector store: {0}")]
    Vector(String),
    /// The Tantivy index failed.
    #[error("lexical index: {0}")]
    Lexical(String),
    /// The redb catalog failed or holds a record it cannot read.
    #[error("catalog: {0}")]
    Catalog(String),
    /// A filesystem operation failed.
    #[error("I/O error at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Runs blocking work (fsyncs, Tantivy, qdrant-edge) off the async executor.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
