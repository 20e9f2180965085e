//! PDF: text extracted page by page with lopdf and a small content-stream
//! interpreter that places every glyph.
//!
//! The interpreter follows the graphics and text state (transformation and
//! text matrices, font and size, character and word spacing, horizontal
//! scaling, leading) into form XObjects, decodes each glyph through the font's
//! ToUnicode map or its encoding, and measures it with the font's widths.
//! Spaces and line breaks come from where glyphs land, not from which operator
//! moved them: a space where the gap between two glyphs on a line is wider than
//! about half the font's space, a line break where the baseline moves, a blank
//! line where it moves by much more than a line. The pages' texts are then
//! cleaned: running headers and footers repeated on most pages are dropped and
//! words hyphenated across lines are joined.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Instant;

use lopdf::content::Content;
use lopdf::{DecompressError, Dictionary, LoadOptions, Object, ObjectId, Stream};

use crate::{Document, Error, Limits, PageSpan};

/// Loads a PDF from memory and extracts its text page by page.
///
/// Pages are joined with `"\n\n"` and each gets a [`PageSpan`] over its text.
/// A PDF that needs a password gives [`Error::Encrypted`]; one that opens with
/// the empty password (as user or owner) is decrypted. Pages without any text
/// give [`Error::NoExtractableText`]. A panic inside lopdf on hostile input is
/// caught and reported as [`Error::Pdf`]. Extraction past `deadline` stops with
/// [`Error::TimeLimit`] (checked after parsing, between pages, at every form
/// XObject and every [`OPS_PER_CHECK`] content operators). Decompressed page
/// contents, form XObjects and font maps together are bounded by
/// [`Limits::max_decompressed_bytes`].
pub(crate) fn load(bytes: &[u8], limits: &Limits, deadline: Instant) -> Result<Document, Error> {
    let clock = Deadline {
        at: deadline,
        limit_ms: limits.max_parse_time.as_millis(),
    };
    match catch_unwind(AssertUnwindSafe(|| extract(bytes, limits, clock))) {
        Ok(result) => result,
        Err(_) => Err(Error::Pdf(
            "the PDF parser failed on malformed data".to_owned(),
        )),
    }
}

/// How many content-stream operators run between two deadline checks.
const OPS_PER_CHECK: usize = 4096;

/// How deeply form XObjects may nest (a form drawing a form drawing …).
const MAX_FORM_DEPTH: usize = 12;

/// How deeply `q` may nest; deeper saves are ignored (and so are their `Q`s).
const MAX_SAVE_DEPTH: usize = 256;

/// Most code-space ranges kept from one CMap; real CMaps have a handful.
const MAX_CODE_RANGES: usize = 64;

/// A line at the top or bottom of a page is a running header or footer when it
/// repeats on at least this share of the pages (numerator, denominator).
const MARGIN_SHARE: (usize, usize) = (3, 5);

/// Documents with fewer pages keep their first and last lines.
const MARGIN_MIN_PAGES: usize = 3;

#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    limit_ms: u128,
}

impl Deadline {
    fn check(self) -> Result<(), Error> {
        if Instant::now() > self.at {
            Err(Error::TimeLimit {
                limit_ms: self.limit_ms,
            })
        } else {
            Ok(())
        }
    }
}

fn extract(bytes: &[u8], limits: &Limits, clock: Deadline) -> Result<Document, Error> {
    if !bytes.starts_with(b"%PDF") && !bytes.get(..1024).is_some_and(has_pdf_header) {
        return Err(Error::Pdf("no %PDF header".to_owned()));
    }
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_decompressed_bytes),
        ..LoadOptions::default()
    };
    let pdf =
        lopdf::Document::load_mem_with_options(bytes, options).map_err(|e| map_err(e, limits))?;
    clock.check()?;
    // lopdf authenticates the empty password (as user or owner password)
    // against the /U or /O hash and decrypts with it; a remaining /Encrypt
    // means a real password is needed, and nothing is extracted.
    if pdf.trailer.has(b"Encrypt") {
        return Err(Error::Encrypted);
    }
    pdf.catalog()
        .map_err(|e| Error::Pdf(format!("no document catalog ({e})")))?;
    let pages = pdf.get_pages();
    if pages.len() > limits.max_pages {
        return Err(Error::TooManyPages {
            pages: pages.len(),
            limit: limits.max_pages,
        });
    }
    if pages.is_empty() {
        return Err(Error::Pdf("the document has no pages".to_owned()));
    }

    let mut ex = Extractor::new(&pdf, limits, clock);
    let mut texts = Vec::with_capacity(pages.len());
    let mut chars = 0usize;
    for (&number, &page_id) in &pages {
        clock.check()?;
        let page_text = ex.page_text(number, page_id)?;
        chars = chars.saturating_add(page_text.chars().count());
        if chars > limits.max_extracted_chars {
            return Err(Error::TextTooLarge {
                limit: limits.max_extracted_chars,
            });
        }
        texts.push(page_text);
    }
    drop_repeated_margins(&mut texts);

    let mut text = String::new();
    let mut spans = Vec::with_capacity(pages.len());
    for (&number, page_text) in pages.keys().zip(&texts) {
        let page_text = join_hyphenated(page_text);
        if !spans.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.len();
        text.push_str(&page_text);
        spans.push(PageSpan {
            page: number,
            start,
            end: text.len(),
        });
    }
    if text.trim().is_empty() {
        return Err(Error::NoExtractableText);
    }
    Ok(Document {
        text,
        pages: spans,
        title: info_title(&pdf),
        headings: Vec::new(),
        encoding: None,
    })
}

fn has_pdf_header(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"%PDF")
}

fn map_err(e: lopdf::Error, limits: &Limits) -> Error {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => {
            Error::DecompressedTooLarge {
                limit: limits.max_decompressed_bytes,
            }
        }
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => Error::Encrypted,
        other => Error::Pdf(other.to_string()),
    }
}

fn info_title(pdf: &lopdf::Document) -> Option<String> {
    let info = pdf.trailer.get_deref(b"Info", pdf).ok()?.as_dict().ok()?;
    let raw = info.get_deref(b"Title", pdf).ok()?;
    let title = lopdf::decode_text_string(raw).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

// ---------------------------------------------------------------------------
// Small helpers over lopdf objects.

/// A finite number from an integer or real object.
fn number_of(o: &Object) -> Option<f32> {
    let n = match o {
        Object::Integer(i) => *i as f32,
        Object::Real(r) => *r,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// `o` with references followed; `None` for a dangling or cyclic reference.
fn deref<'a>(pdf: &'a lopdf::Document, o: &'a Object) -> Option<(Option<ObjectId>, &'a Object)> {
    pdf.dereference(o).ok()
}

/// The value of `key` in `dict`, references followed.
fn get<'a>(pdf: &'a lopdf::Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    deref(pdf, dict.get(key).ok()?).map(|(_, o)| o)
}

fn get_dict<'a>(
    pdf: &'a lopdf::Document,
    dict: &'a Dictionary,
    key: &[u8],
) -> Option<&'a Dictionary> {
    get(pdf, dict, key)?.as_dict().ok()
}

fn get_name<'a>(pdf: &'a lopdf::Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a [u8]> {
    get(pdf, dict, key)?.as_name().ok()
}

fn get_number(pdf: &lopdf::Document, dict: &Dictionary, key: &[u8]) -> Option<f32> {
    number_of(get(pdf, dict, key)?)
}

fn get_array<'a>(
    pdf: &'a lopdf::Document,
    dict: &'a Dictionary,
    key: &[u8],
) -> Option<&'a [Object]> {
    get(pdf, dict, key)?.as_array().ok().map(Vec::as_slice)
}

/// The numbers of `items`, each dereferenced; a non-number counts as 0.
fn numbers(pdf: &lopdf::Document, items: &[Object]) -> Vec<f32> {
    items
        .iter()
        .map(|o| deref(pdf, o).and_then(|(_, o)| number_of(o)).unwrap_or(0.0))
        .collect()
}

fn too_large(limits: &Limits) -> Error {
    Error::DecompressedTooLarge {
        limit: limits.max_decompressed_bytes,
    }
}

/// Decodes `stream` within `budget` bytes and charges what it used.
/// `Ok(None)` when the stream cannot be decoded for another reason.
fn decode_stream(
    stream: &Stream,
    budget: &mut usize,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, Error> {
    match stream.get_plain_content_with_limit(*budget) {
        Ok(data) => {
            *budget = budget.saturating_sub(data.len());
            Ok(Some(data))
        }
        Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
            Err(too_large(limits))
        }
        Err(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Geometry.

/// An affine transformation `[a b c d e f]`, mapping `(x, y)` to
/// `(a·x + c·y + e, b·x + d·y + f)`, as PDF writes them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Matrix([f32; 6]);

impl Matrix {
    const IDENTITY: Matrix = Matrix([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);

    /// Six finite numbers, or `None`.
    fn from_objects(items: &[Object]) -> Option<Matrix> {
        let mut m = [0.0f32; 6];
        if items.len() != 6 {
            return None;
        }
        for (slot, item) in m.iter_mut().zip(items) {
            *slot = number_of(item)?;
        }
        Some(Matrix(m))
    }

    fn translate(tx: f32, ty: f32) -> Matrix {
        Matrix([1.0, 0.0, 0.0, 1.0, tx, ty])
    }

    /// `self` applied first, then `next` (PDF's `self × next`).
    fn then(self, next: Matrix) -> Matrix {
        let [a, b, c, d, e, f] = self.0;
        let [na, nb, nc, nd, ne, nf] = next.0;
        Matrix([
            a * na + b * nc,
            a * nb + b * nd,
            c * na + d * nc,
            c * nb + d * nd,
            e * na + f * nc + ne,
            e * nb + f * nd + nf,
        ])
    }

    fn apply(self, x: f32, y: f32) -> (f32, f32) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + c * y + e, b * x + d * y + f)
    }

    /// The image of the unit vector along x (`along_x`) or y, without translation.
    fn axis(self, along_x: bool) -> (f32, f32) {
        let [a, b, c, d, _, _] = self.0;
        if along_x { (a, b) } else { (c, d) }
    }
}

fn length((x, y): (f32, f32)) -> f32 {
    x.hypot(y)
}

/// `v` scaled to length 1, or `None` when it has no direction.
fn unit(v: (f32, f32)) -> Option<(f32, f32)> {
    let len = length(v);
    (len.is_finite() && len > 1e-6).then(|| (v.0 / len, v.1 / len))
}

// ---------------------------------------------------------------------------
// CMaps (ToUnicode maps and the code-space ranges of encoding CMaps), parsed
// here rather than by lopdf so that a range like <00000000> <FFFFFFFF> costs
// one entry, not four billion.

/// One `begincodespacerange` entry: codes of `len` bytes whose every byte lies
/// between the corresponding bytes of `low` and `high`.
#[derive(Clone, Debug)]
struct CodeRange {
    len: usize,
    low: [u8; 4],
    high: [u8; 4],
}

impl CodeRange {
    fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() >= self.len
            && (0..self.len).all(|i| self.low[i] <= bytes[i] && bytes[i] <= self.high[i])
    }
}

/// What a `bfrange` maps its codes to.
#[derive(Debug)]
enum RangeTarget {
    /// The first code's text; each next code adds one to its last UTF-16 unit.
    Offset(Vec<u16>),
    /// One text per code.
    List(Vec<Vec<u16>>),
}

/// A parsed ToUnicode CMap: character codes to text.
#[derive(Debug, Default)]
struct UnicodeMap {
    /// `(code length, code)` to text (UTF-16), from `bfchar`.
    chars: HashMap<(usize, u32), Vec<u16>>,
    /// `(code length, first, last, target)`, sorted by `(length, first)`.
    ranges: Vec<(usize, u32, u32, RangeTarget)>,
    codespace: Vec<CodeRange>,
}

impl UnicodeMap {
    /// Appends the text for `code` of `len` bytes to `out`; `false` (and
    /// nothing appended) when the map has none, or only NULs and U+FFFD.
    fn write(&self, code: u32, len: usize, out: &mut String) -> bool {
        let mark = out.len();
        let push = |units: &[u16], last_offset: u16, out: &mut String| {
            let count = units.len();
            let units = units.iter().enumerate().map(|(i, &u)| {
                if i + 1 == count {
                    u.wrapping_add(last_offset)
                } else {
                    u
                }
            });
            out.extend(char::decode_utf16(units).map(|c| c.unwrap_or('\u{fffd}')));
        };
        if let Some(units) = self.chars.get(&(len, code)) {
            push(units, 0, out);
        } else {
            let after = self.ranges.partition_point(|r| (r.0, r.1) <= (len, code));
            // Ranges rarely overlap; look back over a few in case they do.
            let found = self.ranges[..after]
                .iter()
                .rev()
                .take(8)
                .find(|(l, first, last, _)| *l == len && *first <= code && code <= *last);
            let Some((_, first, _, target)) = found else {
                return false;
            };
            let offset = code - first;
            match target {
                RangeTarget::Offset(units) => push(units, offset as u16, out),
                RangeTarget::List(texts) => match texts.get(offset as usize) {
                    Some(units) => push(units, 0, out),
                    None => return false,
                },
            }
        }
        if out[mark..].chars().all(|c| c == '\0' || c == '\u{fffd}') {
            out.truncate(mark);
            return false;
        }
        true
    }

    #[cfg(test)]
    fn get(&self, code: u32, len: usize) -> Option<String> {
        let mut out = String::new();
        self.write(code, len, &mut out).then_some(out)
    }

    /// The shortest code (length, code) whose text is a single space, if any.
    fn space_code(&self) -> Option<(usize, u32)> {
        self.chars
            .iter()
            .filter(|(_, units)| units.as_slice() == [0x20])
            .map(|(key, _)| *key)
            .min()
    }
}

/// A token of a CMap's PostScript-like syntax, as far as CMaps need.
enum Token<'a> {
    Hex(Vec<u8>),
    ArrayStart,
    ArrayEnd,
    Word(&'a [u8]),
    /// Strings, dictionaries' delimiters, names: skipped.
    Other,
}

struct Tokens<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let data = self.data;
        loop {
            let &b = data.get(self.pos)?;
            match b {
                b'%' => {
                    while data
                        .get(self.pos)
                        .is_some_and(|&c| c != b'\n' && c != b'\r')
                    {
                        self.pos += 1;
                    }
                }
                _ if b.is_ascii_whitespace() || b == 0 => self.pos += 1,
                _ => break,
            }
        }
        let start = self.pos;
        let b = data[start];
        self.pos += 1;
        Some(match b {
            b'<' if data.get(self.pos) == Some(&b'<') => {
                self.pos += 1;
                Token::Other
            }
            b'>' => {
                if data.get(self.pos) == Some(&b'>') {
                    self.pos += 1;
                }
                Token::Other
            }
            b'<' => {
                let mut digits = Vec::new();
                while let Some(&c) = data.get(self.pos) {
                    self.pos += 1;
                    if c == b'>' {
                        break;
                    }
                    if let Some(d) = (c as char).to_digit(16) {
                        digits.push(d as u8);
                    }
                }
                if digits.len() % 2 == 1 {
                    digits.push(0);
                }
                Token::Hex(digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
            }
            b'[' => Token::ArrayStart,
            b']' => Token::ArrayEnd,
            b'(' => {
                let mut depth = 1usize;
                while let Some(&c) = data.get(self.pos) {
                    self.pos += 1;
                    match c {
                        b'\\' => self.pos += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                Token::Other
            }
            b'{' | b'}' | b'/' | b')' => Token::Other,
            _ => {
                while data.get(self.pos).is_some_and(|&c| {
                    !c.is_ascii_whitespace() && !b"<>[](){}/%".contains(&c) && c != 0
                }) {
                    self.pos += 1;
                }
                Token::Word(&data[start..self.pos])
            }
        })
    }
}

/// A code of 1 to 4 bytes as a number.
fn code_of(bytes: &[u8]) -> Option<(usize, u32)> {
    if bytes.is_empty() || bytes.len() > 4 {
        return None;
    }
    Some((
        bytes.len(),
        bytes.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)),
    ))
}

/// Parses a CMap: its code-space ranges and any `bfchar`/`bfrange` mappings.
/// Malformed entries are skipped; the work is linear in `data`.
fn parse_cmap(data: &[u8]) -> UnicodeMap {
    let mut map = UnicodeMap::default();
    let mut tokens = Tokens { data, pos: 0 };
    while let Some(token) = tokens.next() {
        let Token::Word(word) = token else { continue };
        match word {
            b"begincodespacerange" => {
                let mut pending: Option<Vec<u8>> = None;
                for token in tokens.by_ref() {
                    match token {
                        Token::Hex(bytes) => match pending.take() {
                            None => pending = Some(bytes),
                            Some(low) => {
                                if low.len() == bytes.len()
                                    && (1..=4).contains(&low.len())
                                    && map.codespace.len() < MAX_CODE_RANGES
                                {
                                    let mut range = CodeRange {
                                        len: low.len(),
                                        low: [0; 4],
                                        high: [0; 4],
                                    };
                                    range.low[..low.len()].copy_from_slice(&low);
                                    range.high[..bytes.len()].copy_from_slice(&bytes);
                                    map.codespace.push(range);
                                }
                            }
                        },
                        Token::Word(b"endcodespacerange") => break,
                        _ => {}
                    }
                }
            }
            b"beginbfchar" => {
                let mut pending: Option<Vec<u8>> = None;
                for token in tokens.by_ref() {
                    match token {
                        Token::Hex(bytes) => match pending.take() {
                            None => pending = Some(bytes),
                            Some(src) => {
                                if let Some(key) = code_of(&src) {
                                    map.chars.insert(key, utf16_units(&bytes));
                                }
                            }
                        },
                        Token::Word(b"endbfchar") => break,
                        // A glyph-name target: the code stays unmapped.
                        _ => pending = None,
                    }
                }
            }
            b"beginbfrange" => {
                let mut codes: Vec<Vec<u8>> = Vec::new();
                let mut list: Option<Vec<Vec<u16>>> = None;
                for token in tokens.by_ref() {
                    match token {
                        Token::Word(b"endbfrange") => break,
                        Token::ArrayStart if codes.len() == 2 => list = Some(Vec::new()),
                        Token::Hex(bytes) => match list.as_mut() {
                            Some(items) => items.push(utf16_units(&bytes)),
                            None if codes.len() < 2 => codes.push(bytes),
                            None => {
                                push_range(
                                    &mut map,
                                    &codes,
                                    RangeTarget::Offset(utf16_units(&bytes)),
                                );
                                codes.clear();
                            }
                        },
                        Token::ArrayEnd => {
                            if let Some(items) = list.take() {
                                push_range(&mut map, &codes, RangeTarget::List(items));
                            }
                            codes.clear();
                        }
                        _ => {
                            codes.clear();
                            list = None;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    map.ranges.sort_by_key(|r| (r.0, r.1));
    unswap_bytes(&mut map);
    map
}

/// Repairs maps some writers emit with every UTF-16 unit byte-swapped
/// (`<4D00>` for `M`): when all of at least two targets are single units with
/// a zero low byte, which no real text map has, their bytes are swapped back.
fn unswap_bytes(map: &mut UnicodeMap) {
    let mut targets = map
        .chars
        .values()
        .chain(map.ranges.iter().flat_map(|r| match &r.3 {
            RangeTarget::Offset(units) => std::slice::from_ref(units).iter(),
            RangeTarget::List(list) => list.iter(),
        }));
    let mut count = 0usize;
    let swapped = targets.all(|units| {
        count += 1;
        matches!(units.as_slice(), [u] if u & 0xff == 0 && *u != 0)
    });
    if !swapped || count < 2 {
        return;
    }
    let swap = |units: &mut Vec<u16>| units.iter_mut().for_each(|u| *u = u.swap_bytes());
    map.chars.values_mut().for_each(swap);
    for range in &mut map.ranges {
        match &mut range.3 {
            RangeTarget::Offset(units) => swap(units),
            RangeTarget::List(list) => list.iter_mut().for_each(swap),
        }
    }
}

fn utf16_units(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]))
        .collect()
}

fn push_range(map: &mut UnicodeMap, codes: &[Vec<u8>], target: RangeTarget) {
    let (Some(first), Some(last)) = (codes.first(), codes.get(1)) else {
        return;
    };
    let (Some((len, first)), Some((last_len, last))) = (code_of(first), code_of(last)) else {
        return;
    };
    if len == last_len && first <= last {
        map.ranges.push((len, first, last, target));
    }
}

// ---------------------------------------------------------------------------
// Fonts.

/// How a font's strings split into character codes.
#[derive(Debug)]
enum Codes {
    /// Every code is this many bytes.
    Fixed(usize),
    /// Codes as the CMap's code-space ranges say.
    Ranges(Vec<CodeRange>),
}

/// Glyph widths, in glyph units (thousandths of an em for all but Type 3 fonts).
#[derive(Debug)]
enum Widths {
    /// No widths given: estimated from the text.
    Unknown,
    /// A simple font's `/Widths` from `/FirstChar`, and `/MissingWidth`.
    Simple {
        first: u32,
        widths: Vec<f32>,
        missing: f32,
    },
    /// A CID font's `/W` as `(first, last, width)` sorted by `first`, and `/DW`.
    Cid {
        ranges: Vec<(u32, u32, f32)>,
        default: f32,
    },
}

/// What extraction needs of a font: how to cut strings into codes, what text
/// each code stands for, and how wide its glyph is.
#[derive(Debug)]
struct Font {
    codes: Codes,
    to_unicode: Option<UnicodeMap>,
    /// A simple font's encoding: text per single-byte code.
    table: Option<Vec<Option<char>>>,
    /// Codes are UTF-16 (a composite font with a `Uni…-UCS2`/`UTF16` CMap).
    ucs2: bool,
    widths: Widths,
    /// Glyph units to text space units (per unit of font size).
    scale: f32,
    /// The width of a space, in ems.
    space: f32,
    /// Glyphs advance downwards (vertical writing).
    vertical: bool,
    /// Fixed pitch, for estimating widths.
    mono: bool,
    /// A simple font's text and advance (ems) for every code, worked out once.
    single_byte: Option<Vec<(Box<str>, f32)>>,
}

impl Font {
    /// The next code at the start of `bytes` (non-empty) and its length in bytes (at least 1).
    fn next_code(&self, bytes: &[u8]) -> (u32, usize) {
        let len = match &self.codes {
            Codes::Fixed(n) => *n,
            Codes::Ranges(ranges) => ranges
                .iter()
                .filter(|r| r.matches(bytes))
                .map(|r| r.len)
                .min()
                .or_else(|| ranges.iter().map(|r| r.len).min())
                .unwrap_or(1),
        };
        let len = len.clamp(1, 4).min(bytes.len()).max(1);
        let code = bytes[..len]
            .iter()
            .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        (code, len)
    }

    /// Appends the text `code` stands for to `out` (nothing when the font
    /// does not say) and returns the glyph's advance in ems.
    fn glyph(&self, code: u32, len: usize, out: &mut String) -> f32 {
        if len == 1
            && let Some((text, width)) =
                self.single_byte.as_ref().and_then(|g| g.get(code as usize))
        {
            out.push_str(text);
            return *width;
        }
        let mark = out.len();
        self.decode(code, len, out);
        self.width(code, &out[mark..])
    }

    /// Appends the text `code` stands for; nothing when the font does not say.
    fn decode(&self, code: u32, len: usize, out: &mut String) {
        if let Some(map) = &self.to_unicode
            && (map.write(code, len, out) || (len == 1 && map.write(code, 2, out)))
        {
            return;
        }
        if let Some(table) = &self.table {
            if let Some(Some(c)) = table.get(code as usize) {
                out.push(*c);
            }
            return;
        }
        if self.ucs2
            && let Some(c) = char::from_u32(code)
        {
            out.push(c);
        }
    }

    /// The advance of `code`'s glyph in ems; estimated from `text` when the font has no widths.
    fn width(&self, code: u32, text: &str) -> f32 {
        let units = match &self.widths {
            Widths::Unknown => None,
            Widths::Simple {
                first,
                widths,
                missing,
            } => code
                .checked_sub(*first)
                .and_then(|i| widths.get(i as usize))
                .copied()
                .or((*missing > 0.0).then_some(*missing)),
            Widths::Cid { ranges, default } => {
                let after = ranges.partition_point(|r| r.0 <= code);
                Some(
                    ranges[..after]
                        .iter()
                        .rev()
                        .take(8)
                        .find(|r| code <= r.1)
                        .map_or(*default, |r| r.2),
                )
            }
        };
        match units {
            Some(w) => w * self.scale,
            None => estimate_width(text, self.mono),
        }
    }
}

/// A rough advance in ems for text set in a font without widths: about what
/// common proportional faces give (narrow and wide letters told apart), 0.6 for
/// fixed pitch, a full em for CJK.
fn estimate_width(text: &str, mono: bool) -> f32 {
    if text.is_empty() {
        return if mono { 0.6 } else { 0.5 };
    }
    text.chars()
        .map(|c| match c {
            _ if is_wide(c) => 1.0,
            _ if mono => 0.6,
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' | ' ' => 0.27,
            'f' | 't' | 'r' | 'I' | '(' | ')' | '[' | ']' | '-' | '/' | '"' => 0.33,
            'm' | 'w' => 0.78,
            'M' | 'W' => 0.88,
            'A'..='Z' => 0.68,
            '0'..='9' => 0.556,
            _ => 0.52,
        })
        .sum()
}

/// East Asian wide characters (CJK, kana, hangul, full-width forms).
fn is_wide(c: char) -> bool {
    matches!(u32::from(c),
        0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFF00..=0xFF60)
}

/// Text for glyph names, per document: lopdf's glyph list, `uniXXXX`,
/// `uXXXX[XX]`, suffixes (`a.sc`) and ligatures (`f_i`).
#[derive(Default)]
struct GlyphNames {
    known: HashMap<Vec<u8>, Option<String>>,
}

impl GlyphNames {
    /// Resolves every name of `names` into the cache, asking lopdf about
    /// those it has not seen in as few calls as it can.
    fn learn(&mut self, pdf: &lopdf::Document, names: &[&[u8]]) {
        let mut ask: Vec<&[u8]> = Vec::new();
        for &name in names {
            if self.known.contains_key(name) || ask.contains(&name) {
                continue;
            }
            match parse_glyph_name(name) {
                Some(found) => {
                    self.known.insert(name.to_vec(), found);
                }
                None => ask.push(name),
            }
        }
        for batch in ask.chunks(256) {
            match lopdf_glyphs(pdf, batch) {
                Some(texts) => {
                    for (name, text) in batch.iter().zip(texts) {
                        self.known.insert(name.to_vec(), text);
                    }
                }
                // One name lopdf does not know fails the batch: ask one by one.
                None => {
                    for &name in batch {
                        let text =
                            lopdf_glyphs(pdf, &[name]).and_then(|t| t.into_iter().next().flatten());
                        self.known.insert(name.to_vec(), text);
                    }
                }
            }
        }
        // Suffixed names and ligatures resolve through their parts.
        for &name in names {
            if self.known.get(name).is_some_and(Option::is_some) {
                continue;
            }
            let base = name.split(|&b| b == b'.').next().unwrap_or_default();
            if base.is_empty() {
                continue;
            }
            let parts: Vec<&[u8]> = base
                .split(|&b| b == b'_')
                .filter(|p| !p.is_empty())
                .collect();
            if parts.len() == 1 && parts[0] == name {
                continue;
            }
            let mut unknown: Vec<&[u8]> = parts
                .iter()
                .copied()
                .filter(|p| !self.known.contains_key(*p))
                .collect();
            unknown.dedup();
            self.learn_plain(pdf, &unknown);
            let text: Option<String> = parts
                .iter()
                .map(|p| self.known.get(*p).cloned().flatten())
                .collect();
            self.known.insert(name.to_vec(), text);
        }
    }

    /// Like [`GlyphNames::learn`] without the suffix and ligature step.
    fn learn_plain(&mut self, pdf: &lopdf::Document, names: &[&[u8]]) {
        for &name in names {
            let text = match parse_glyph_name(name) {
                Some(found) => found,
                None => lopdf_glyphs(pdf, &[name]).and_then(|t| t.into_iter().next().flatten()),
            };
            self.known.insert(name.to_vec(), text);
        }
    }

    fn get(&self, name: &[u8]) -> Option<char> {
        let text = self.known.get(name)?.as_deref()?;
        let mut chars = text.chars();
        let first = chars.next()?;
        // Multi-character names (ligatures) keep their first character in a
        // one-character table; ligature code points are expanded later.
        Some(match (first, chars.next(), text) {
            (_, None, _) => first,
            (_, _, "ff") => '\u{fb00}',
            (_, _, "fi") => '\u{fb01}',
            (_, _, "fl") => '\u{fb02}',
            (_, _, "ffi") => '\u{fb03}',
            (_, _, "ffl") => '\u{fb04}',
            _ => first,
        })
    }
}

/// Names this crate reads itself: `Some(Some(text))` for `uniXXXX…` and
/// `uXXXX[XX]`, `Some(None)` for names that are certainly not in the glyph
/// list (`.notdef`, `g12`, `cid00042`: names with digits), `None` for names to
/// ask lopdf about.
fn parse_glyph_name(name: &[u8]) -> Option<Option<String>> {
    let s = std::str::from_utf8(name).ok()?;
    if let Some(hex) = s.strip_prefix("uni")
        && !hex.is_empty()
        && hex.len() % 4 == 0
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let units: Vec<u16> = (0..hex.len() / 4)
            .filter_map(|i| u16::from_str_radix(&hex[i * 4..i * 4 + 4], 16).ok())
            .collect();
        return Some(Some(String::from_utf16_lossy(&units)));
    }
    if let Some(hex) = s.strip_prefix('u')
        && (4..=6).contains(&hex.len())
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(
            u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .map(String::from),
        );
    }
    if s.starts_with('.') || s.contains('.') || s.contains('_') {
        // Handled through their parts.
        return Some(None);
    }
    if s.bytes().any(|b| b.is_ascii_digit()) && !s.starts_with("afii") {
        return Some(None);
    }
    None
}

/// Asks lopdf's glyph list for `names` (at most 256), through a one-off
/// encoding with those names as differences. `None` when lopdf rejects one.
fn lopdf_glyphs(pdf: &lopdf::Document, names: &[&[u8]]) -> Option<Vec<Option<String>>> {
    let mut differences = vec![Object::Integer(0)];
    differences.extend(names.iter().map(|n| Object::Name(n.to_vec())));
    let mut encoding = Dictionary::new();
    encoding.set("Differences", Object::Array(differences));
    let mut probe = Dictionary::new();
    probe.set("Type", Object::Name(b"Font".to_vec()));
    probe.set("Encoding", Object::Dictionary(encoding));
    let enc = probe.get_font_encoding(pdf).ok()?;
    if !matches!(enc, lopdf::Encoding::Differences(_)) {
        return None;
    }
    Some(
        (0..names.len())
            .map(|code| {
                let mut text = String::new();
                let byte = u8::try_from(code).ok()?;
                enc.write_to_string(&[byte], &mut text).ok()?;
                (!text.is_empty()).then_some(text)
            })
            .collect(),
    )
}

/// One of the standard single-byte encodings, as a table from lopdf.
fn base_table(pdf: &lopdf::Document, name: &[u8]) -> Vec<Option<char>> {
    let mut probe = Dictionary::new();
    probe.set("Type", Object::Name(b"Font".to_vec()));
    probe.set("Encoding", Object::Name(name.to_vec()));
    let mut table = vec![None; 256];
    if let Ok(enc) = probe.get_font_encoding(pdf) {
        for (byte, slot) in (0..=255u8).zip(table.iter_mut()) {
            let mut text = String::new();
            if enc.write_to_string(&[byte], &mut text).is_ok() {
                *slot = text.chars().next();
            }
        }
    }
    table
}

/// Most text runs on a page for two-column detection: far above a real page of columns
/// (a few hundred lines), low enough that the quadratic gutter search stays under 0.1 s.
const MAX_COLUMN_RUNS: usize = 4096;

/// Reads the fonts a document's pages use, each once, and the tables they share.
struct FontLoader {
    names: GlyphNames,
    bases: HashMap<&'static [u8], Rc<Vec<Option<char>>>>,
}

impl FontLoader {
    fn base(&mut self, pdf: &lopdf::Document, name: &'static [u8]) -> Rc<Vec<Option<char>>> {
        self.bases
            .entry(name)
            .or_insert_with(|| Rc::new(base_table(pdf, name)))
            .clone()
    }

    /// Builds a font from its dictionary, charging decoded CMaps to `budget`.
    /// Fails only when the budget runs out; a font it cannot make sense of
    /// decodes to nothing.
    fn load(
        &mut self,
        pdf: &lopdf::Document,
        dict: &Dictionary,
        budget: &mut usize,
        limits: &Limits,
    ) -> Result<Font, Error> {
        let subtype = get_name(pdf, dict, b"Subtype").unwrap_or_default();
        let base_font = get_name(pdf, dict, b"BaseFont").unwrap_or_default();
        let to_unicode = match get(pdf, dict, b"ToUnicode").and_then(|o| o.as_stream().ok()) {
            Some(stream) => decode_stream(stream, budget, limits)?.map(|data| parse_cmap(&data)),
            None => None,
        };
        let descriptor = get_dict(pdf, dict, b"FontDescriptor");
        let flags = descriptor
            .and_then(|d| get_number(pdf, d, b"Flags"))
            .unwrap_or(0.0) as i64;
        let mono =
            flags & 1 != 0 || contains(base_font, b"Courier") || contains(base_font, b"Mono");
        if subtype == b"Type0" {
            self.composite(pdf, dict, to_unicode, mono, budget, limits)
        } else {
            Ok(self.simple(pdf, dict, subtype, base_font, to_unicode, mono))
        }
    }

    fn simple(
        &mut self,
        pdf: &lopdf::Document,
        dict: &Dictionary,
        subtype: &[u8],
        base_font: &[u8],
        to_unicode: Option<UnicodeMap>,
        mono: bool,
    ) -> Font {
        let encoding = get(pdf, dict, b"Encoding");
        let (base_name, differences) = match encoding {
            Some(Object::Name(name)) => (Some(name.as_slice()), None),
            Some(Object::Dictionary(enc)) => (
                get_name(pdf, enc, b"BaseEncoding"),
                get_array(pdf, enc, b"Differences"),
            ),
            _ => (None, None),
        };
        let symbolic_font = contains(base_font, b"Symbol") || contains(base_font, b"Dingbats");
        let base: Option<&'static [u8]> = match base_name {
            Some(b"WinAnsiEncoding") | Some(b"PDFDocEncoding") => Some(b"WinAnsiEncoding"),
            Some(b"MacRomanEncoding") => Some(b"MacRomanEncoding"),
            Some(b"MacExpertEncoding") => Some(b"MacExpertEncoding"),
            Some(b"StandardEncoding") => Some(b"StandardEncoding"),
            // Type 3 fonts and the symbol fonts have no standard encoding to fall back on.
            _ if subtype == b"Type3" || symbolic_font => None,
            _ if subtype == b"TrueType" => Some(b"WinAnsiEncoding"),
            _ => Some(b"StandardEncoding"),
        };
        let mut table = match base {
            Some(name) => self.base(pdf, name).as_ref().clone(),
            None => vec![None; 256],
        };
        if let Some(items) = differences {
            // The last name given to each code wins: at most 256 names to resolve, however
            // long the array (an integer restarts the codes, so it can be any length).
            let mut by_code: Vec<Option<&[u8]>> = vec![None; 256];
            let mut code = 0usize;
            for item in items {
                match deref(pdf, item).map(|(_, o)| o) {
                    Some(Object::Integer(i)) => code = usize::try_from(*i).unwrap_or(usize::MAX),
                    Some(Object::Name(name)) => {
                        if let Some(slot) = by_code.get_mut(code) {
                            *slot = Some(name.as_slice());
                        }
                        code = code.saturating_add(1);
                    }
                    _ => {}
                }
            }
            let names: Vec<&[u8]> = by_code.iter().flatten().copied().collect();
            self.names.learn(pdf, &names);
            for (code, name) in by_code.into_iter().enumerate() {
                if let Some(name) = name {
                    table[code] = self.names.get(name);
                }
            }
        }

        let scale = if subtype == b"Type3" {
            get_array(pdf, dict, b"FontMatrix")
                .and_then(|m| m.first())
                .and_then(number_of)
                .map_or(0.001, f32::abs)
        } else {
            0.001
        };
        let widths = match get_array(pdf, dict, b"Widths") {
            Some(items) if !items.is_empty() => Widths::Simple {
                first: get_number(pdf, dict, b"FirstChar").map_or(0, |n| n.max(0.0) as u32),
                widths: numbers(pdf, &items[..items.len().min(65_536)]),
                missing: get_dict(pdf, dict, b"FontDescriptor")
                    .and_then(|d| get_number(pdf, d, b"MissingWidth"))
                    .unwrap_or(0.0),
            },
            _ => Widths::Unknown,
        };
        let mut font = Font {
            codes: Codes::Fixed(1),
            to_unicode,
            table: Some(table),
            ucs2: false,
            widths,
            scale,
            space: 0.0,
            vertical: false,
            mono,
            single_byte: None,
        };
        font.space = font.width(32, " ");
        let glyphs = (0..=255u32)
            .map(|code| {
                let mut text = String::new();
                let width = font.glyph(code, 1, &mut text);
                (text.into_boxed_str(), width)
            })
            .collect();
        font.single_byte = Some(glyphs);
        font
    }

    fn composite(
        &mut self,
        pdf: &lopdf::Document,
        dict: &Dictionary,
        to_unicode: Option<UnicodeMap>,
        mono: bool,
        budget: &mut usize,
        limits: &Limits,
    ) -> Result<Font, Error> {
        let mut codes = None;
        let mut ucs2 = false;
        let mut vertical = false;
        match get(pdf, dict, b"Encoding") {
            Some(Object::Name(name)) => {
                vertical = name.ends_with(b"-V");
                ucs2 = contains(name, b"UCS2") || contains(name, b"UTF16");
                if name.starts_with(b"Identity") || ucs2 {
                    codes = Some(Codes::Fixed(2));
                }
            }
            Some(Object::Stream(stream)) => {
                vertical = get_number(pdf, &stream.dict, b"WMode") == Some(1.0);
                if let Some(data) = decode_stream(stream, budget, limits)? {
                    let cmap = parse_cmap(&data);
                    if !cmap.codespace.is_empty() {
                        codes = Some(Codes::Ranges(cmap.codespace));
                    }
                }
            }
            _ => {}
        }
        let codes = codes.unwrap_or_else(|| match &to_unicode {
            Some(map) if !map.codespace.is_empty() => Codes::Ranges(map.codespace.clone()),
            _ => Codes::Fixed(2),
        });

        let descendant = get_array(pdf, dict, b"DescendantFonts")
            .and_then(|a| a.first())
            .and_then(|o| deref(pdf, o))
            .and_then(|(_, o)| o.as_dict().ok());
        let default = descendant
            .and_then(|d| get_number(pdf, d, b"DW"))
            .unwrap_or(1000.0);
        let mut ranges = Vec::new();
        if let Some(items) = descendant.and_then(|d| get_array(pdf, d, b"W")) {
            let items: Vec<&Object> = items
                .iter()
                .filter_map(|o| deref(pdf, o).map(|(_, o)| o))
                .collect();
            let mut i = 0;
            while i < items.len() {
                let Some(first) = number_of(items[i]).filter(|n| *n >= 0.0) else {
                    i += 1;
                    continue;
                };
                let first = first as u32;
                match (items.get(i + 1), items.get(i + 2)) {
                    (Some(Object::Array(ws)), _) => {
                        for (k, w) in numbers(pdf, ws).into_iter().enumerate() {
                            let code = first.saturating_add(k as u32);
                            ranges.push((code, code, w));
                        }
                        i += 2;
                    }
                    (Some(last), Some(w)) => {
                        if let (Some(last), Some(w)) = (number_of(last), number_of(w))
                            && last >= 0.0
                        {
                            ranges.push((first, last as u32, w));
                        }
                        i += 3;
                    }
                    _ => break,
                }
            }
        }
        ranges.sort_by_key(|r| r.0);
        let space_code = to_unicode.as_ref().and_then(UnicodeMap::space_code);
        let mut font = Font {
            codes,
            to_unicode,
            table: None,
            ucs2,
            widths: Widths::Cid { ranges, default },
            scale: 0.001,
            space: 0.25,
            vertical,
            mono,
            single_byte: None,
        };
        if let Some((_, code)) = space_code {
            font.space = font.width(code, " ");
        }
        Ok(font)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// The interpreter.

/// Where a cached font came from: its object, or (for a font written directly
/// into a resource dictionary) that dictionary's address, stable while the
/// document is borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum FontKey {
    Object(ObjectId),
    Inline(usize),
}

/// A form XObject to draw: its id, decoded content and dictionary.
type FormXObject<'a> = (ObjectId, Rc<Vec<u8>>, &'a Dictionary);

/// Per-document extraction state shared by all pages.
struct Extractor<'a> {
    pdf: &'a lopdf::Document,
    limits: &'a Limits,
    clock: Deadline,
    /// Decompressed bytes left for page contents, forms and font maps.
    budget: usize,
    /// Non-whitespace characters left before the text is too large.
    chars_left: usize,
    fonts: HashMap<FontKey, Rc<Font>>,
    loader: FontLoader,
    /// Decoded form XObject contents (decoded and charged once).
    forms: HashMap<ObjectId, Rc<Vec<u8>>>,
    /// Content operators run so far, for deadline checks.
    ops: usize,
}

/// The part of the graphics state extraction needs.
#[derive(Clone)]
struct GState {
    ctm: Matrix,
    font: Option<Rc<Font>>,
    size: f32,
    char_spacing: f32,
    word_spacing: f32,
    h_scale: f32,
    leading: f32,
}

impl Default for GState {
    fn default() -> Self {
        GState {
            ctm: Matrix::IDENTITY,
            font: None,
            size: 0.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            h_scale: 1.0,
            leading: 0.0,
        }
    }
}

impl<'a> Extractor<'a> {
    fn new(pdf: &'a lopdf::Document, limits: &'a Limits, clock: Deadline) -> Self {
        Extractor {
            pdf,
            limits,
            clock,
            budget: limits.max_decompressed_bytes,
            chars_left: limits.max_extracted_chars,
            fonts: HashMap::new(),
            loader: FontLoader {
                names: GlyphNames::default(),
                bases: HashMap::new(),
            },
            forms: HashMap::new(),
            ops: 0,
        }
    }

    /// Extracts one page's text, tidied (see [`tidy`]).
    fn page_text(&mut self, number: u32, page_id: ObjectId) -> Result<String, Error> {
        let pdf = self.pdf;
        for id in pdf.get_page_contents(page_id) {
            if pdf.get_object(id).is_err() {
                return Err(Error::Pdf(format!(
                    "page {number}: content stream {} {} R is missing",
                    id.0, id.1
                )));
            }
        }
        let content = pdf
            .get_page_content_with_limit(page_id, self.budget)
            .map_err(|e| match e {
                lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => {
                    too_large(self.limits)
                }
                other => Error::Pdf(format!("page {number}: {other}")),
            })?;
        self.budget = self.budget.saturating_sub(content.len());

        let mut resources: Vec<&'a Dictionary> = Vec::new();
        if let Ok((direct, ids)) = pdf.get_page_resources(page_id) {
            resources.extend(direct);
            resources.extend(ids.into_iter().filter_map(|id| pdf.get_dictionary(id).ok()));
        }
        let mut page = PageRun {
            ex: self,
            gs: GState::default(),
            saved: Vec::new(),
            tm: Matrix::IDENTITY,
            tlm: Matrix::IDENTITY,
            active_forms: Vec::new(),
            out: PageWriter::default(),
        };
        page.run(&content, &resources, 0)?;
        let ordered = page.out.columns();
        Ok(tidy(ordered.as_deref().unwrap_or(&page.out.text)))
    }

    /// The font `name` in `resources`, loaded once per document.
    fn font(
        &mut self,
        resources: &[&'a Dictionary],
        name: &[u8],
    ) -> Result<Option<Rc<Font>>, Error> {
        let pdf = self.pdf;
        for res in resources {
            let Some(fonts) = get_dict(pdf, res, b"Font") else {
                continue;
            };
            let Some((id, obj)) = fonts.get(name).ok().and_then(|o| deref(pdf, o)) else {
                continue;
            };
            let Ok(dict) = obj.as_dict() else { continue };
            let key = match id {
                Some(id) => FontKey::Object(id),
                None => FontKey::Inline(std::ptr::from_ref(dict) as usize),
            };
            if let Some(font) = self.fonts.get(&key) {
                return Ok(Some(font.clone()));
            }
            let font = Rc::new(self.loader.load(pdf, dict, &mut self.budget, self.limits)?);
            self.fonts.insert(key, font.clone());
            return Ok(Some(font));
        }
        Ok(None)
    }

    /// The form XObject `name` in `resources`: its id, content and dictionary.
    fn form(
        &mut self,
        resources: &[&'a Dictionary],
        name: &[u8],
    ) -> Result<Option<FormXObject<'a>>, Error> {
        let pdf = self.pdf;
        for res in resources {
            let Some(xobjects) = get_dict(pdf, res, b"XObject") else {
                continue;
            };
            let Some((Some(id), obj)) = xobjects.get(name).ok().and_then(|o| deref(pdf, o)) else {
                continue;
            };
            let Ok(stream) = obj.as_stream() else {
                return Ok(None);
            };
            if get_name(pdf, &stream.dict, b"Subtype") != Some(b"Form") {
                return Ok(None);
            }
            if let Some(content) = self.forms.get(&id) {
                return Ok(Some((id, content.clone(), &stream.dict)));
            }
            let Some(content) = decode_stream(stream, &mut self.budget, self.limits)? else {
                return Ok(None);
            };
            let content = Rc::new(content);
            self.forms.insert(id, content.clone());
            return Ok(Some((id, content, &stream.dict)));
        }
        Ok(None)
    }
}

/// One page being interpreted.
struct PageRun<'e, 'a> {
    ex: &'e mut Extractor<'a>,
    gs: GState,
    saved: Vec<GState>,
    tm: Matrix,
    tlm: Matrix,
    /// Form XObjects being drawn, outermost first (cycle protection).
    active_forms: Vec<ObjectId>,
    out: PageWriter,
}

impl<'a> PageRun<'_, 'a> {
    /// Interprets `content` with `resources`. Content that fails to parse
    /// part-way keeps the text read up to there.
    fn run(
        &mut self,
        content: &[u8],
        resources: &[&'a Dictionary],
        depth: usize,
    ) -> Result<(), Error> {
        for op in Content::decode_iter(content) {
            self.ex.ops += 1;
            if self.ex.ops.is_multiple_of(OPS_PER_CHECK) {
                self.ex.clock.check()?;
            }
            let Ok(op) = op else { break };
            let args = &op.operands;
            let num = |i: usize| args.get(i).and_then(number_of);
            match op.operator.as_str() {
                // Saves past MAX_SAVE_DEPTH are ignored, and so are their restores.
                "q" if self.saved.len() < MAX_SAVE_DEPTH => self.saved.push(self.gs.clone()),
                "Q" => {
                    if let Some(gs) = self.saved.pop() {
                        self.gs = gs;
                    }
                }
                "cm" => {
                    if let Some(m) = Matrix::from_objects(args) {
                        self.gs.ctm = m.then(self.gs.ctm);
                    }
                }
                "BT" => {
                    self.tm = Matrix::IDENTITY;
                    self.tlm = Matrix::IDENTITY;
                }
                "Tf" => {
                    if let Some(name) = args.first().and_then(|o| o.as_name().ok()) {
                        self.gs.font = self.ex.font(resources, name)?;
                    }
                    if let Some(size) = num(1) {
                        self.gs.size = size;
                    }
                }
                "Tc" => self.gs.char_spacing = num(0).unwrap_or(0.0),
                "Tw" => self.gs.word_spacing = num(0).unwrap_or(0.0),
                "Tz" => self.gs.h_scale = num(0).unwrap_or(100.0) / 100.0,
                "TL" => self.gs.leading = num(0).unwrap_or(0.0),
                "Td" => self.next_line(num(0).unwrap_or(0.0), num(1).unwrap_or(0.0)),
                "TD" => {
                    let ty = num(1).unwrap_or(0.0);
                    self.gs.leading = -ty;
                    self.next_line(num(0).unwrap_or(0.0), ty);
                }
                "Tm" => {
                    if let Some(m) = Matrix::from_objects(args) {
                        self.tm = m;
                        self.tlm = m;
                    }
                }
                "T*" => self.next_line(0.0, -self.gs.leading),
                "Tj" => self.show(args.first())?,
                "'" => {
                    self.next_line(0.0, -self.gs.leading);
                    self.show(args.first())?;
                }
                "\"" => {
                    self.gs.word_spacing = num(0).unwrap_or(0.0);
                    self.gs.char_spacing = num(1).unwrap_or(0.0);
                    self.next_line(0.0, -self.gs.leading);
                    self.show(args.get(2))?;
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = args.first() {
                        self.show_array(items)?;
                    }
                }
                "Do" => {
                    if let Some(name) = args.first().and_then(|o| o.as_name().ok()) {
                        self.draw_form(resources, name, depth)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn next_line(&mut self, tx: f32, ty: f32) {
        self.tlm = Matrix::translate(tx, ty).then(self.tlm);
        self.tm = self.tlm;
    }

    /// Draws form XObject `name`: its content with its own resources (or the
    /// caller's when it has none) under its matrix, skipped past
    /// [`MAX_FORM_DEPTH`] or when it would draw itself.
    fn draw_form(
        &mut self,
        resources: &[&'a Dictionary],
        name: &[u8],
        depth: usize,
    ) -> Result<(), Error> {
        self.ex.clock.check()?;
        if depth >= MAX_FORM_DEPTH {
            return Ok(());
        }
        let Some((id, content, dict)) = self.ex.form(resources, name)? else {
            return Ok(());
        };
        if self.active_forms.contains(&id) {
            return Ok(());
        }
        let pdf = self.ex.pdf;
        let own: Vec<&'a Dictionary>;
        let form_resources = match get_dict(pdf, dict, b"Resources") {
            Some(res) => {
                own = vec![res];
                own.as_slice()
            }
            None => resources,
        };
        let matrix = get_array(pdf, dict, b"Matrix")
            .and_then(Matrix::from_objects)
            .unwrap_or(Matrix::IDENTITY);
        let (gs, saved_depth, tm, tlm) = (self.gs.clone(), self.saved.len(), self.tm, self.tlm);
        self.gs.ctm = matrix.then(self.gs.ctm);
        self.active_forms.push(id);
        let result = self.run(&content, form_resources, depth + 1);
        self.active_forms.pop();
        self.gs = gs;
        self.saved.truncate(saved_depth);
        self.tm = tm;
        self.tlm = tlm;
        result
    }

    fn show(&mut self, operand: Option<&Object>) -> Result<(), Error> {
        match operand {
            Some(string @ Object::String(..)) => self.show_array(std::slice::from_ref(string)),
            _ => Ok(()),
        }
    }

    /// Shows the strings of a `TJ` array (numbers move the pen back by
    /// thousandths of an em), glyph by glyph, and moves the text matrix past them.
    fn show_array(&mut self, items: &[Object]) -> Result<(), Error> {
        let Some(font) = self.gs.font.clone() else {
            return Ok(());
        };
        let gs = &self.gs;
        let m = self.tm.then(gs.ctm);
        let size = gs.size;
        let (along, across) = if font.vertical {
            let (x, y) = m.axis(false);
            ((-x, -y), m.axis(true))
        } else {
            (m.axis(true), m.axis(false))
        };
        let dir = unit(along).unwrap_or((1.0, 0.0));
        let size_dev = size.abs() * length(across);
        let space_dev = 0.5 * font.space.clamp(0.15, 0.5) * size_dev;
        let (char_spacing, word_spacing, h_scale) = (gs.char_spacing, gs.word_spacing, gs.h_scale);
        // Displacement from the text matrix's origin, in text space.
        let mut pos = 0.0f32;
        let step = |pos: f32| -> (f32, f32) {
            if font.vertical {
                m.apply(0.0, -pos)
            } else {
                m.apply(pos, 0.0)
            }
        };
        let mut piece = String::new();
        for item in items {
            let bytes = match item {
                Object::String(bytes, _) => bytes,
                other => {
                    if let Some(n) = number_of(other) {
                        let d = -n / 1000.0 * size;
                        pos += if font.vertical { -d } else { d * h_scale };
                    }
                    continue;
                }
            };
            let mut i = 0;
            while i < bytes.len() {
                let (code, len) = font.next_code(&bytes[i..]);
                i += len;
                piece.clear();
                let width = font.glyph(code, len, &mut piece);
                let spacing = char_spacing
                    + if len == 1 && code == 32 {
                        word_spacing
                    } else {
                        0.0
                    };
                let advance = if font.vertical {
                    size - spacing
                } else {
                    (width * size + spacing) * h_scale
                };
                let start = step(pos);
                pos += advance;
                let glyph = Glyph {
                    start,
                    end: step(pos),
                    dir,
                    size: size_dev,
                    space: space_dev,
                };
                self.out
                    .glyph(&glyph, &piece, &mut self.ex.chars_left, self.ex.limits)?;
            }
        }
        let shift = if font.vertical {
            Matrix::translate(0.0, -pos)
        } else {
            Matrix::translate(pos, 0.0)
        };
        self.tm = shift.then(self.tm);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// From placed glyphs to text.

/// A glyph as placed on the page (device space).
struct Glyph {
    start: (f32, f32),
    end: (f32, f32),
    /// Unit vector of the writing direction.
    dir: (f32, f32),
    /// Font size on the page.
    size: f32,
    /// A gap wider than this along the line is a space.
    space: f32,
}

/// Where the previous glyph ended.
#[derive(Clone, Copy)]
struct Pen {
    end: (f32, f32),
    dir: (f32, f32),
    size: f32,
}

/// Builds one page's raw text from glyphs in drawing order.
#[derive(Default)]
struct PageWriter {
    text: String,
    pen: Option<Pen>,
    /// How far down the last line break moved, to tell paragraph gaps from line spacing.
    last_step: Option<f32>,
    /// The same text cut into positioned runs, for finding columns ([`PageWriter::columns`]).
    segments: Vec<Segment>,
    /// Some text was not upright left-to-right: the page is left in drawing order.
    skewed: bool,
}

/// Glyphs on one baseline with no gap wider than 1.5 em between them.
struct Segment {
    text: String,
    x0: f32,
    x1: f32,
    y: f32,
    size: f32,
}

impl PageWriter {
    /// Adds `text` drawn as `g`: first a space, line break or blank line as
    /// its distance from the previous glyph says. Counts non-whitespace
    /// characters against `chars_left`, failing with [`Error::TextTooLarge`]
    /// when they run out.
    fn glyph(
        &mut self,
        g: &Glyph,
        text: &str,
        chars_left: &mut usize,
        limits: &Limits,
    ) -> Result<(), Error> {
        if text.is_empty() {
            self.pen = Some(Pen {
                end: g.end,
                dir: g.dir,
                size: g.size,
            });
            return Ok(());
        }
        if let Some(pen) = self.pen {
            self.separate(pen, g);
        }
        self.pen = Some(Pen {
            end: g.end,
            dir: g.dir,
            size: g.size,
        });
        let before = self.text.len();
        for c in text.chars() {
            match c {
                '\u{fb00}' => self.push_str("ff", chars_left, limits)?,
                '\u{fb01}' => self.push_str("fi", chars_left, limits)?,
                '\u{fb02}' => self.push_str("fl", chars_left, limits)?,
                '\u{fb03}' => self.push_str("ffi", chars_left, limits)?,
                '\u{fb04}' => self.push_str("ffl", chars_left, limits)?,
                '\u{fb05}' | '\u{fb06}' => self.push_str("st", chars_left, limits)?,
                '\u{fffd}' => {}
                _ if c.is_whitespace() => self.space(),
                _ if c.is_control() => {}
                _ => {
                    *chars_left = chars_left.checked_sub(1).ok_or(Error::TextTooLarge {
                        limit: limits.max_extracted_chars,
                    })?;
                    self.text.push(c);
                }
            }
        }
        self.track_segment(g, before);
        Ok(())
    }

    /// Records the text added since byte `before` as part of a [`Segment`].
    fn track_segment(&mut self, g: &Glyph, before: usize) {
        let upright = (g.dir.0 - 1.0).abs() < 0.01 && g.dir.1.abs() < 0.01;
        if !upright {
            self.skewed = true;
            return;
        }
        let added = self.text.get(before..).unwrap_or_default();
        let spaced = self.text.get(..before).is_some_and(|t| t.ends_with(' '));
        let (x0, x1, y) = (g.start.0.min(g.end.0), g.start.0.max(g.end.0), g.start.1);
        if let Some(seg) = self.segments.last_mut() {
            let em = seg.size.max(g.size);
            let same_line = (y - seg.y).abs() <= 0.5 * em;
            let near = x0 >= seg.x1 - em && x0 - seg.x1 <= 1.5 * em;
            if same_line && near {
                if spaced && !seg.text.ends_with(' ') {
                    seg.text.push(' ');
                }
                seg.text.push_str(added);
                seg.x1 = seg.x1.max(x1);
                return;
            }
        }
        self.segments.push(Segment {
            text: added.to_string(),
            x0,
            x1,
            y,
            size: g.size,
        });
    }

    /// The page's text in column order when it is laid out in two columns whose lines were
    /// drawn interleaved (left, right, left…); `None` keeps the drawing order.
    ///
    /// Two columns: a vertical gutter that at most one line in twenty crosses, at least four
    /// runs on each side, and runs that mostly fill their column's width (a table's short
    /// cells do not, so tables keep their rows). Runs crossing the gutter must all lie above
    /// the columns (a title) or below them; they are read first or last.
    fn columns(&self) -> Option<String> {
        if self.skewed {
            return None;
        }
        let segs: Vec<&Segment> = self
            .segments
            .iter()
            .filter(|s| !s.text.trim().is_empty() && s.x1.is_finite() && s.y.is_finite())
            .collect();
        // The gutter search costs candidates × runs; a page of more runs than any real
        // column layout has (one per glyph, when each is placed alone) keeps its order.
        if segs.len() < 8 || segs.len() > MAX_COLUMN_RUNS {
            return None;
        }
        let lo = segs.iter().map(|s| s.x0).fold(f32::INFINITY, f32::min);
        let hi = segs.iter().map(|s| s.x1).fold(f32::NEG_INFINITY, f32::max);
        let width = hi - lo;
        if width <= 0.0 {
            return None;
        }
        let crossing = |g: f32| {
            segs.iter()
                .filter(|s| s.x0 < g - 0.5 && s.x1 > g + 0.5)
                .count()
        };
        let gutter = segs
            .iter()
            .map(|s| s.x0)
            .filter(|&x| x > lo + 0.3 * width && x < lo + 0.7 * width)
            .min_by_key(|&g| (crossing(g), (g - (lo + 0.5 * width)).abs() as i64))?;
        let crossed = crossing(gutter);
        if crossed > segs.len() / 20 {
            return None;
        }
        let side = |s: &Segment| {
            if s.x1 <= gutter + 0.5 {
                Some(false)
            } else if s.x0 >= gutter - 0.5 {
                Some(true)
            } else {
                None
            }
        };
        let (mut left, mut right, mut across) = (Vec::new(), Vec::new(), Vec::new());
        for &s in &segs {
            match side(s) {
                Some(false) => left.push(s),
                Some(true) => right.push(s),
                None => across.push(s),
            }
        }
        if left.len() < 4 || right.len() < 4 || !fills_column(&left) || !fills_column(&right) {
            return None;
        }
        // Already in reading order when no left run is drawn after a right one.
        let first_right = segs.iter().position(|s| side(s) == Some(true))?;
        if !segs[first_right..].iter().any(|s| side(s) == Some(false)) {
            return None;
        }
        let top = left
            .iter()
            .chain(&right)
            .map(|s| s.y)
            .fold(f32::NEG_INFINITY, f32::max);
        let bottom = left
            .iter()
            .chain(&right)
            .map(|s| s.y)
            .fold(f32::INFINITY, f32::min);
        let (head, foot): (Vec<&Segment>, Vec<&Segment>) =
            across.into_iter().partition(|s| s.y > top);
        if foot.iter().any(|s| s.y >= bottom) {
            return None;
        }
        let mut out = String::new();
        for block in [head, left, right, foot] {
            write_block(block, &mut out);
        }
        Some(out)
    }

    fn push_str(&mut self, s: &str, chars_left: &mut usize, limits: &Limits) -> Result<(), Error> {
        *chars_left = chars_left.checked_sub(s.len()).ok_or(Error::TextTooLarge {
            limit: limits.max_extracted_chars,
        })?;
        self.text.push_str(s);
        Ok(())
    }

    /// Separates `g` from the glyph before it, which ended at `pen`.
    fn separate(&mut self, pen: Pen, g: &Glyph) {
        let (dx, dy) = (g.start.0 - pen.end.0, g.start.1 - pen.end.1);
        let dot = pen.dir.0 * g.dir.0 + pen.dir.1 * g.dir.1;
        if !(dx.is_finite() && dy.is_finite()) || dot < 0.95 {
            // Nowhere, or turned: a new line.
            self.newline();
            return;
        }
        let along = dx * g.dir.0 + dy * g.dir.1;
        // Positive to the left of the writing direction: up, for ordinary text.
        let across = g.dir.0 * dy - g.dir.1 * dx;
        let line = pen.size.max(g.size);
        if across.abs() > 0.5 * line {
            let down = -across;
            let paragraph = if down > 0.0 {
                down > 1.8 * line && self.last_step.is_none_or(|s| down > 1.3 * s)
            } else {
                -down > 1.8 * line
            };
            if down > 0.0 {
                self.last_step = Some(down);
            }
            if paragraph {
                self.paragraph();
            } else {
                self.newline();
            }
        } else if along > g.space || along < -line {
            self.space();
        }
    }

    fn space(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with(char::is_whitespace) {
            self.text.push(' ');
        }
    }

    fn newline(&mut self) {
        if self.text.ends_with(' ') {
            self.text.pop();
        }
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    fn paragraph(&mut self) {
        self.newline();
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }
}

/// Whether most runs span at least 60% of the width their column's runs cover.
fn fills_column(segs: &[&Segment]) -> bool {
    let lo = segs.iter().map(|s| s.x0).fold(f32::INFINITY, f32::min);
    let hi = segs.iter().map(|s| s.x1).fold(f32::NEG_INFINITY, f32::max);
    let wide = segs
        .iter()
        .filter(|s| s.x1 - s.x0 >= 0.6 * (hi - lo))
        .count();
    2 * wide >= segs.len()
}

/// Appends `block`'s runs top to bottom, left to right: runs on one baseline joined by a
/// space, lines by a newline, a blank line where the gap is wider than 1.8 lines.
fn write_block(mut block: Vec<&Segment>, out: &mut String) {
    block.sort_by(|a, b| b.y.total_cmp(&a.y).then(a.x0.total_cmp(&b.x0)));
    let mut prev: Option<&Segment> = None;
    for s in block {
        match prev {
            Some(p) if (p.y - s.y).abs() <= 0.5 * p.size.max(s.size) => out.push(' '),
            Some(p) if p.y - s.y > 1.8 * p.size.max(s.size) => out.push_str("\n\n"),
            Some(_) => out.push('\n'),
            None if !out.is_empty() => out.push_str("\n\n"),
            None => {}
        }
        out.push_str(s.text.trim());
        prev = Some(s);
    }
}

/// Normalises extracted text: control characters dropped, runs of spaces
/// collapsed, lines trimmed, at most one blank line in a row, no outer whitespace.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0usize;
    for line in raw.lines() {
        let cleaned: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&line);
    }
    out
}

/// Joins words hyphenated across lines: a line ending in a letter and a hyphen
/// (`-`, `‐` or a soft hyphen), followed on the next line by a lowercase
/// letter, loses the hyphen and takes the next line's first word; the rest of
/// that line stays where it was. Lines across a blank line are not joined.
/// Remaining soft hyphens are removed. `text` is tidied (see [`tidy`]) and so
/// is the result.
fn join_hyphenated(text: &str) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut emptied = vec![false; lines.len()];
    for i in 0..lines.len().saturating_sub(1) {
        if !ends_hyphenated(&lines[i]) || !lines[i + 1].starts_with(char::is_lowercase) {
            continue;
        }
        let next = std::mem::take(&mut lines[i + 1]);
        let (word, rest) = next.split_once(' ').unwrap_or((&next, ""));
        lines[i].pop();
        lines[i].push_str(word);
        lines[i + 1] = rest.to_owned();
        emptied[i + 1] = rest.is_empty();
    }
    let kept: Vec<&str> = lines
        .iter()
        .zip(&emptied)
        .filter(|(_, gone)| !**gone)
        .map(|(l, _)| l.as_str())
        .collect();
    tidy(&kept.join("\n").replace('\u{ad}', ""))
}

fn ends_hyphenated(line: &str) -> bool {
    let mut rev = line.chars().rev();
    matches!(rev.next(), Some('-' | '\u{2010}' | '\u{ad}'))
        && rev.next().is_some_and(char::is_alphabetic)
}

/// Drops running headers and footers: in documents of at least
/// [`MARGIN_MIN_PAGES`] pages, a first or last line of a page that is also
/// the first or last line on at least [`MARGIN_SHARE`] of the pages, compared
/// with digit runs replaced (so "Page 3 of 10" matches "Page 4 of 10"), is
/// removed from every page where it is first or last. Two rounds, for
/// two-line headers. Only pages with two lines or more count towards the
/// share, and nothing is dropped if it would leave the document without text.
/// Texts are tidied (see [`tidy`]) and stay so.
fn drop_repeated_margins(pages: &mut [String]) {
    let n = pages.len();
    if n < MARGIN_MIN_PAGES {
        return;
    }
    let need = (n * MARGIN_SHARE.0).div_ceil(MARGIN_SHARE.1);
    let mut result: Vec<String> = pages.to_vec();
    for _round in 0..2 {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for page in &result {
            let lines: Vec<&str> = page.lines().filter(|l| !l.is_empty()).collect();
            if lines.len() < 2 {
                continue;
            }
            let first = margin_key(lines[0]);
            let last = margin_key(lines[lines.len() - 1]);
            if first != last {
                *counts.entry(last).or_default() += 1;
            }
            *counts.entry(first).or_default() += 1;
        }
        let repeated: HashSet<String> = counts
            .into_iter()
            .filter(|(_, c)| *c >= need)
            .map(|(k, _)| k)
            .collect();
        if repeated.is_empty() {
            break;
        }
        for page in &mut result {
            let lines: Vec<&str> = page.split('\n').collect();
            let Some(first) = lines.iter().position(|l| !l.is_empty()) else {
                continue;
            };
            let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(first);
            let drop_first = repeated.contains(&margin_key(lines[first]));
            let drop_last = repeated.contains(&margin_key(lines[last]));
            if !drop_first && !drop_last {
                continue;
            }
            let kept: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| !((*i == first && drop_first) || (*i == last && drop_last)))
                .map(|(_, l)| *l)
                .collect();
            *page = tidy(&kept.join("\n"));
        }
    }
    if result.iter().any(|p| !p.trim().is_empty()) {
        pages.clone_from_slice(&result);
    }
}

/// A line as compared for running headers: lowercase, runs of digits as `#`.
fn margin_key(line: &str) -> String {
    let mut key = String::with_capacity(line.len());
    for c in line.trim().chars() {
        if c.is_ascii_digit() {
            if !key.ends_with('#') {
                key.push('#');
            }
        } else {
            key.extend(c.to_lowercase());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmaps_map_chars_ranges_and_arrays_without_expanding_ranges() {
        let map = parse_cmap(
            b"%!PS comment <0041>\n/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) >> def\n\
              2 begincodespacerange <00> <80> <8140> <9FFC> endcodespacerange\n\
              2 beginbfchar <01> <0041> <8140> <00660069> endbfchar\n\
              3 beginbfrange <10> <12> <0061>\n<20> <21> [<0078> <D835DC00>]\n\
              <00000000> <FFFFFFFF> <00410041> endbfrange",
        );
        assert_eq!(map.codespace.len(), 2);
        assert_eq!(map.get(0x01, 1).as_deref(), Some("A"));
        assert_eq!(map.get(0x8140, 2).as_deref(), Some("fi"));
        assert_eq!(map.get(0x12, 1).as_deref(), Some("c"));
        assert_eq!(map.get(0x21, 1).as_deref(), Some("\u{1d400}"));
        assert_eq!(map.get(0x13, 1), None);
        assert_eq!(map.get(0x01, 2), None, "codes of another length differ");
        // The whole 4-byte range is one entry; codes add to its last unit.
        assert_eq!(map.ranges.len(), 3);
        assert_eq!(map.get(2, 4).as_deref(), Some("AC"));

        let font = Font {
            codes: Codes::Ranges(map.codespace.clone()),
            to_unicode: Some(map),
            table: None,
            ucs2: false,
            widths: Widths::Unknown,
            scale: 0.001,
            space: 0.25,
            vertical: false,
            mono: false,
            single_byte: None,
        };
        assert_eq!(font.next_code(&[0x01, 0x81, 0x40]), (0x01, 1));
        assert_eq!(font.next_code(&[0x81, 0x40]), (0x8140, 2));
        assert_eq!(font.next_code(&[0xff]), (0xff, 1), "no range matches");
    }

    #[test]
    fn byte_swapped_maps_are_repaired_and_real_ones_left_alone() {
        let swapped = parse_cmap(b"beginbfchar <01> <4800> <02> <6900> endbfchar");
        assert_eq!(swapped.get(1, 1).as_deref(), Some("H"));
        assert_eq!(swapped.get(2, 1).as_deref(), Some("i"));
        // U+4E00 is a real CJK ideograph; with a normal target beside it nothing is swapped.
        let real = parse_cmap(b"beginbfchar <01> <4E00> <02> <0041> endbfchar");
        assert_eq!(real.get(1, 1).as_deref(), Some("\u{4e00}"));
        let single = parse_cmap(b"beginbfchar <01> <4E00> endbfchar");
        assert_eq!(single.get(1, 1).as_deref(), Some("\u{4e00}"));
    }

    #[test]
    fn malformed_cmaps_give_what_they_can() {
        for data in [
            &b"beginbfchar <01"[..],
            b"beginbfrange <01> <02> [<0041> endbfrange",
            b"beginbfrange <05> <01> <0041> endbfrange",
            b"begincodespacerange <00> <FFFF> <0000000000> <FF> endcodespacerange",
            b"(unterminated \\",
            b"<<<<>>>>[[]]{}%",
        ] {
            let map = parse_cmap(data);
            assert!(
                map.get(1, 1).is_none() && map.codespace.is_empty(),
                "{data:?}"
            );
        }
        let map = parse_cmap(b"beginbfchar <01> /glyphname <02> <0042> endbfchar");
        assert_eq!(map.get(1, 1), None);
        assert_eq!(map.get(2, 1).as_deref(), Some("B"));
    }

    #[test]
    fn glyph_names_resolve_from_lopdf_and_their_own_syntax() {
        let pdf = lopdf::Document::with_version("1.5");
        let mut names = GlyphNames::default();
        let list: [&[u8]; 8] = [
            b"A",
            b"uni00E9",
            b"u1F600",
            b"f_i",
            b"a.sc",
            b"g42",
            b"notaname",
            b".notdef",
        ];
        names.learn(&pdf, &list);
        assert_eq!(names.get(b"A"), Some('A'));
        assert_eq!(names.get(b"uni00E9"), Some('é'));
        assert_eq!(names.get(b"u1F600"), Some('\u{1f600}'));
        assert_eq!(names.get(b"f_i"), Some('\u{fb01}'));
        assert_eq!(names.get(b"a.sc"), Some('a'));
        assert_eq!(names.get(b"g42"), None);
        assert_eq!(names.get(b"notaname"), None);
        assert_eq!(names.get(b".notdef"), None);
    }

    #[test]
    fn differences_give_each_code_its_last_name_and_any_length_is_cheap() {
        let pdf = lopdf::Document::with_version("1.5");
        let mut items = vec![
            Object::Integer(65),
            Object::Name(b"B".to_vec()),
            Object::Integer(65),
            Object::Name(b"C".to_vec()),
            Object::Name(b"eacute".to_vec()),
        ];
        // An integer restarts the codes, so the array can be any length: 300,000 distinct
        // names on code 0 once took minutes to resolve, one list scan per name.
        for i in 0..300_000u32 {
            items.push(Object::Integer(0));
            items.push(Object::Name(format!("g{i:x}x").into_bytes()));
        }
        let mut enc = Dictionary::new();
        enc.set("Differences", Object::Array(items));
        let mut dict = Dictionary::new();
        dict.set("Subtype", Object::Name(b"Type1".to_vec()));
        dict.set("Encoding", Object::Dictionary(enc));
        let mut loader = FontLoader {
            names: GlyphNames::default(),
            bases: HashMap::new(),
        };
        let started = std::time::Instant::now();
        let font = loader.simple(&pdf, &dict, b"Type1", b"Test", None, false);
        let took = started.elapsed();
        let table = font.table.expect("a simple font has a table");
        assert_eq!(table[65], Some('C'));
        assert_eq!(table[66], Some('é'));
        assert_eq!(table[67], Some('C'), "the base encoding's");
        assert!(took.as_secs() < 5, "{took:?}");
    }

    #[test]
    fn margin_keys_ignore_numbers_and_case() {
        assert_eq!(margin_key("Page 3 of 10"), margin_key("page 14 of 10"));
        assert_ne!(margin_key("Chapter One"), margin_key("Chapter Two"));
    }
}
