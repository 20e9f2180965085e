//! Decoding text input into a `str`.

use std::borrow::Cow;

use crate::Error;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes a text document: UTF-8 with an optional BOM, which is removed.
///
/// Returns `Cow` so that transcoding other encodings (UTF-16, Latin-1) can slot
/// in here without changing callers. Invalid UTF-8 gives
/// [`Error::InvalidUtf8`] with the offset in `bytes` of the first bad byte.
pub(crate) fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, Error> {
    let (body, skipped) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, UTF8_BOM.len()),
        None => (bytes, 0),
    };
    match std::str::from_utf8(body) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(e) => Err(Error::InvalidUtf8 {
            valid_up_to: e.valid_up_to() + skipped,
        }),
    }
}
