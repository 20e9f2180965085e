//! The one error type of this crate.

/// Why a document could not be loaded or a chunker could not be built.
///
/// Every message is written for the person who submitted the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The document has no text once whitespace is removed.
    #[error("the document is empty (it contains no text)")]
    Empty,
    /// The media type is not one this crate can read.
    #[error(
        "unsupported media type {0:?}; supported are text/plain, text/markdown, text/html and application/pdf"
    )]
    UnsupportedMediaType(String),
    /// A text document (plain, Markdown, HTML) announced an encoding (by its byte-order mark,
    /// a charset given with its media type, or an HTML `<meta charset>`) but is not valid in
    /// it, or named a charset quire does not know. `offset` is where, in the submitted bytes,
    /// it breaks.
    #[error("the document is not valid {encoding} text at byte {offset}: {reason}")]
    InvalidEncoding {
        encoding: &'static str,
        offset: usize,
        reason: String,
    },
    /// The submitted bytes exceed [`crate::Limits::max_bytes`].
    #[error("the document is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    /// The PDF has more pages than [`crate::Limits::max_pages`].
    #[error("the PDF has {pages} pages, over the limit of {limit} pages")]
    TooManyPages { pages: usize, limit: usize },
    /// Decompressing the PDF's streams would exceed [`crate::Limits::max_decompressed_bytes`].
    #[error("the PDF's compressed streams expand to more than the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    /// The extracted text exceeds [`crate::Limits::max_extracted_chars`].
    #[error("the document's text is longer than the limit of {limit} characters")]
    TextTooLarge { limit: usize },
    /// The PDF is corrupt or truncated; the string says what was wrong.
    #[error("the PDF is corrupt or truncated: {0}")]
    Pdf(String),
    /// The PDF is encrypted and cannot be opened without a password.
    #[error("the PDF is encrypted and needs a password to open")]
    Encrypted,
    /// Extracting the PDF's text ran past [`crate::Limits::max_parse_time`].
    #[error("reading the PDF took longer than the limit of {limit_ms} ms")]
    TimeLimit { limit_ms: u128 },
    /// Reading the PDF in a separate process needed more memory than that process may use
    /// (`limit` bytes of address space); only callers that read PDFs that way report it.
    #[error("reading the PDF needed more than the limit of {limit} bytes of memory")]
    MemoryLimit { limit: u64 },
    /// The PDF has pages but no text layer (for example a scan).
    #[error("the PDF has no extractable text (it may be scanned images without a text layer)")]
    NoExtractableText,
    /// The HTML nests elements so deeply that parsing it would take too long.
    #[error("the HTML nests elements too deeply to be read in reasonable time")]
    HtmlTooComplex,
    /// The chunker configuration is unusable.
    #[error("invalid chunker configuration: {0}")]
    InvalidConfig(String),
}
