//! Decoding text input into a `str`, detecting the encoding.

use std::borrow::Cow;

use crate::Error;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

/// The encoding a text document was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8, with or without a BOM.
    Utf8,
    /// UTF-16, little-endian, announced by a BOM.
    Utf16Le,
    /// UTF-16, big-endian, announced by a BOM.
    Utf16Be,
    /// Not UTF-8 and no BOM: every byte is one character. Bytes 0x80–0x9F are read as
    /// Windows-1252 does (curly quotes, dashes, €), as the WHATWG Encoding Standard
    /// reads the `latin1` label; the rest is ISO-8859-1.
    Latin1,
    /// Another encoding, as declared with the media type (`charset=`) or by an HTML
    /// `<meta charset>`, decoded as the WHATWG Encoding Standard specifies.
    Declared(&'static encoding_rs::Encoding),
}

impl TextEncoding {
    /// The label reported to callers: `utf-8`, `utf-16le`, `utf-16be`, `latin-1`, or a
    /// declared encoding's WHATWG name (`windows-1251`, `Shift_JIS`, ...).
    pub fn label(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf16Le => "utf-16le",
            TextEncoding::Utf16Be => "utf-16be",
            TextEncoding::Latin1 => "latin-1",
            TextEncoding::Declared(e) => e.name(),
        }
    }
}

/// The `charset` parameter of a media type (`text/html; charset=windows-1251`), if any.
pub fn charset_param(media_type: &str) -> Option<&str> {
    media_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
            .filter(|v| !v.is_empty())
    })
}

/// The charset an HTML document declares in a `<meta>` tag within its first 1,024 bytes
/// (`<meta charset="...">` or `<meta http-equiv="Content-Type" content="...; charset=...">`),
/// as browsers look for it before parsing.
pub(crate) fn html_meta_charset(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(1024)];
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = find(&lower[from..], b"<meta") {
        let tag_start = from + at;
        let tag_end = lower[tag_start..]
            .iter()
            .position(|&b| b == b'>')
            .map_or(lower.len(), |e| tag_start + e);
        let tag = &lower[tag_start..tag_end];
        if let Some(c) = find(tag, b"charset") {
            let rest = tag[c + b"charset".len()..].trim_ascii_start();
            if let Some(value) = rest.strip_prefix(b"=") {
                let value = value.trim_ascii_start();
                let value = value
                    .strip_prefix(b"\"")
                    .or(value.strip_prefix(b"'"))
                    .unwrap_or(value);
                let label: Vec<u8> = value
                    .iter()
                    .take_while(|&&b| {
                        !matches!(b, b'"' | b'\'' | b';' | b'/' | b'>') && !b.is_ascii_whitespace()
                    })
                    .copied()
                    .collect();
                if !label.is_empty() {
                    return String::from_utf8(label).ok();
                }
            }
        }
        from = tag_end;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes `bytes` as the encoding `label` names; errors when quire does not know the
/// label or the bytes are not valid in it.
fn decode_as(bytes: &[u8], label: &str) -> Result<(Cow<'static, str>, TextEncoding), Error> {
    let Some(encoding) = encoding_rs::Encoding::for_label(label.trim().as_bytes()) else {
        return Err(Error::InvalidEncoding {
            encoding: "declared",
            offset: 0,
            reason: format!("unknown charset `{label}`"),
        });
    };
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len().saturating_mul(3));
    let mut out = String::with_capacity(capacity);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => {
            let reported = if encoding == encoding_rs::UTF_8 {
                TextEncoding::Utf8
            } else {
                TextEncoding::Declared(encoding)
            };
            Ok((Cow::Owned(out), reported))
        }
        encoding_rs::DecoderResult::Malformed(bad, after) => Err(Error::InvalidEncoding {
            encoding: encoding.name(),
            offset: read - usize::from(bad) - usize::from(after),
            reason: format!("bytes that are not valid {} text", encoding.name()),
        }),
        encoding_rs::DecoderResult::OutputFull => Err(Error::InvalidEncoding {
            encoding: encoding.name(),
            offset: read,
            reason: "the decoded text outgrew its buffer".into(),
        }),
    }
}

/// [`decode`], honouring a declared charset: a byte-order mark still decides first; then
/// `declared` (the media type's `charset`), which is followed even for bytes that are valid
/// UTF-8, and whose violation is an error; then, for HTML whose bytes are not valid UTF-8, a
/// `<meta charset>`, followed when the bytes are valid in it.
pub(crate) fn decode_declared<'a>(
    bytes: &'a [u8],
    declared: Option<&str>,
    html: bool,
) -> Result<(Cow<'a, str>, TextEncoding), Error> {
    let has_bom = [UTF8_BOM, UTF16LE_BOM, UTF16BE_BOM]
        .iter()
        .any(|bom| bytes.starts_with(bom));
    if !has_bom {
        if let Some(label) = declared {
            return decode_as(bytes, label);
        }
        // As browsers read a <meta> label: UTF-16 ones mean UTF-8 (a page that can be read
        // as ASCII to find the tag is not UTF-16), x-user-defined means windows-1252, and an
        // unknown one is ignored.
        if html
            && std::str::from_utf8(bytes).is_err()
            && let Some(label) = html_meta_charset(bytes)
            && let Some(encoding) = encoding_rs::Encoding::for_label(label.as_bytes())
        {
            let encoding = if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE
            {
                encoding_rs::UTF_8
            } else if encoding == encoding_rs::X_USER_DEFINED {
                encoding_rs::WINDOWS_1252
            } else {
                encoding
            };
            // The page's own claim: when its bytes are not valid in it, read them as if it
            // made none, rather than refuse the page.
            if let Ok(decoded) = decode_as(bytes, encoding.name()) {
                return Ok(decoded);
            }
        }
    }
    decode(bytes)
}

/// Windows-1252's characters for bytes 0x80..=0x9F; the five bytes it leaves undefined
/// keep their C1 control characters, as WHATWG specifies.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

fn latin1(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

fn utf16(body: &[u8], big_endian: bool, encoding: TextEncoding) -> Result<String, Error> {
    let bom = UTF16LE_BOM.len();
    if !body.len().is_multiple_of(2) {
        return Err(Error::InvalidEncoding {
            encoding: encoding.label(),
            offset: bom + body.len() - 1,
            reason: "odd number of bytes".into(),
        });
    }
    let units = body.chunks_exact(2).map(|p| {
        let pair = [p[0], p[1]];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    });
    let mut out = String::with_capacity(body.len() / 2);
    let mut offset = bom;
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                out.push(c);
                offset += c.len_utf16() * 2;
            }
            Err(_) => {
                return Err(Error::InvalidEncoding {
                    encoding: encoding.label(),
                    offset,
                    reason: "unpaired surrogate".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Decodes a text document and says how it was read: a UTF-8 or UTF-16 BOM decides
/// (and is removed); otherwise valid UTF-8 is UTF-8, and anything else is Latin-1.
///
/// Only UTF-16 can fail ([`Error::InvalidEncoding`], with the byte offset of the problem):
/// every byte sequence is valid Latin-1.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Cow<'_, str>, TextEncoding), Error> {
    if let Some(body) = bytes.strip_prefix(UTF8_BOM) {
        return match std::str::from_utf8(body) {
            Ok(s) => Ok((Cow::Borrowed(s), TextEncoding::Utf8)),
            Err(e) => Err(Error::InvalidEncoding {
                encoding: TextEncoding::Utf8.label(),
                offset: e.valid_up_to() + UTF8_BOM.len(),
                reason: "invalid UTF-8 after a UTF-8 byte-order mark".into(),
            }),
        };
    }
    if let Some(body) = bytes.strip_prefix(UTF16LE_BOM) {
        let enc = TextEncoding::Utf16Le;
        return utf16(body, false, enc).map(|s| (Cow::Owned(s), enc));
    }
    if let Some(body) = bytes.strip_prefix(UTF16BE_BOM) {
        let enc = TextEncoding::Utf16Be;
        return utf16(body, true, enc).map(|s| (Cow::Owned(s), enc));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((Cow::Borrowed(s), TextEncoding::Utf8)),
        Err(e) => {
            let (multibyte, broken) = utf8_census(bytes);
            // Legacy single-byte text rarely forms valid multi-byte UTF-8 sequences, and then
            // only one here and there (Windows-1252 "ß“" is one); text with at least four
            // of them for each broken one is UTF-8 with damage, and reading it all as
            // Latin-1 would garble every one of its non-ASCII characters.
            if multibyte >= 4 && broken * 4 <= multibyte {
                return Err(Error::InvalidEncoding {
                    encoding: TextEncoding::Utf8.label(),
                    offset: e.valid_up_to(),
                    reason: format!(
                        "the text is UTF-8 ({multibyte} multi-byte characters) but has \
                         {broken} invalid byte sequence(s), the first here; if it is in \
                         another encoding, send its charset with the media type \
                         (`text/plain; charset=windows-1252`)"
                    ),
                });
            }
            Ok((Cow::Owned(latin1(bytes)), TextEncoding::Latin1))
        }
    }
}

/// In `bytes` read as UTF-8: how many characters take more than one byte, and how many
/// runs of bytes are not valid.
fn utf8_census(bytes: &[u8]) -> (usize, usize) {
    bytes
        .utf8_chunks()
        .fold((0, 0), |(multibyte, broken), chunk| {
            (
                multibyte + chunk.valid().chars().filter(|c| c.len_utf8() > 1).count(),
                broken + usize::from(!chunk.invalid().is_empty()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16_bytes(s: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian {
            UTF16BE_BOM.to_vec()
        } else {
            UTF16LE_BOM.to_vec()
        };
        for u in s.encode_utf16() {
            out.extend(if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            });
        }
        out
    }

    #[test]
    fn detects_each_encoding() {
        let text = "Grüße, naïve café — 𝄞";
        let (s, e) = decode(text.as_bytes()).unwrap();
        assert_eq!((s.as_ref(), e), (text, TextEncoding::Utf8));

        let mut bom = UTF8_BOM.to_vec();
        bom.extend(text.as_bytes());
        let (s, e) = decode(&bom).unwrap();
        assert_eq!((s.as_ref(), e), (text, TextEncoding::Utf8));

        for be in [false, true] {
            let bytes = utf16_bytes(text, be);
            let (s, e) = decode(&bytes).unwrap();
            assert_eq!(s, text);
            let want = if be {
                TextEncoding::Utf16Be
            } else {
                TextEncoding::Utf16Le
            };
            assert_eq!(e, want);
        }

        // "café “quoted” – 5€" in Windows-1252 / Latin-1 bytes.
        let latin = b"caf\xE9 \x93quoted\x94 \x96 5\x80";
        let (s, e) = decode(latin).unwrap();
        assert_eq!(e, TextEncoding::Latin1);
        assert_eq!(s, "café “quoted” – 5€");
    }

    #[test]
    fn broken_utf16_is_an_error_with_its_offset() {
        let mut odd = utf16_bytes("ab", false);
        odd.push(b'c');
        assert!(matches!(
            decode(&odd),
            Err(Error::InvalidEncoding { offset: 6, .. })
        ));
        // A lone high surrogate after "a".
        let mut lone = UTF16LE_BOM.to_vec();
        lone.extend([b'a', 0, 0x00, 0xD8, b'b', 0]);
        assert!(matches!(
            decode(&lone),
            Err(Error::InvalidEncoding { offset: 4, .. })
        ));
        let mut bad_after_bom = UTF8_BOM.to_vec();
        bad_after_bom.extend(b"ok\xFF");
        assert!(matches!(
            decode(&bad_after_bom),
            Err(Error::InvalidEncoding { offset: 5, .. })
        ));
    }
}
