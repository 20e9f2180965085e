//! Document metadata and the filters over it.
//!
//! A document carries a flat map from keys to string, number or boolean values. The map is
//! stored in the catalog and with every chunk in both stores, so that one [`MetaCondition`]
//! list restricts the dense and the BM25 retriever alike:
//!
//! - in the vector store under the payload object [`META_KEY`] (`meta.<key>`);
//! - in Tantivy as exact terms of one multi-valued field (see [`index_terms`]), with numbers
//!   encoded so that their byte order is their numeric order and ranges are term ranges.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Payload object under which the vector store keeps a chunk's metadata.
pub const META_KEY: &str = "meta";
/// Most keys one document may carry.
pub const MAX_KEYS: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest string value, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// Most conditions in one filter, and most values in one `AnyOf`.
pub const MAX_CONDITIONS: usize = 64;

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    Number(f64),
    String(String),
}

/// A document's metadata, ordered by key.
pub type Metadata = BTreeMap<String, MetaValue>;

/// One restriction on a metadata key. A chunk passes when its document's value for `key`
/// satisfies it; a document without the key never passes.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaCondition {
    /// The value equals this one (numbers compare numerically, `1` equals `1.0`).
    Equals { key: String, value: MetaValue },
    /// The value equals one of these.
    AnyOf { key: String, values: Vec<MetaValue> },
    /// The value is a number within the bounds.
    Range {
        key: String,
        lower: Bound<f64>,
        upper: Bound<f64>,
    },
}

impl MetaCondition {
    /// The key this condition tests.
    pub fn key(&self) -> &str {
        match self {
            MetaCondition::Equals { key, .. }
            | MetaCondition::AnyOf { key, .. }
            | MetaCondition::Range { key, .. } => key,
        }
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// Keys are 1 to [`MAX_KEYS`] bytes of `[A-Za-z0-9_-]`, so they are valid payload paths
/// and cannot collide with the term encoding.
pub fn validate_key(key: &str) -> Result<()> {
    if crate::is_plain_name(key, MAX_KEY_BYTES) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid metadata key `{key}`: use 1-{MAX_KEY_BYTES} characters from [A-Za-z0-9_-]"
        )))
    }
}

fn validate_value(key: &str, value: &MetaValue) -> Result<()> {
    match value {
        MetaValue::Number(n) if !n.is_finite() => Err(invalid(format!(
            "metadata `{key}`: numbers must be finite, got {n}"
        ))),
        MetaValue::String(s) if s.len() > MAX_STRING_BYTES => Err(invalid(format!(
            "metadata `{key}`: string values are limited to {MAX_STRING_BYTES} bytes, got {}",
            s.len()
        ))),
        _ => Ok(()),
    }
}

/// Checks a document's metadata against the limits above.
pub fn validate_metadata(meta: &Metadata) -> Result<()> {
    if meta.len() > MAX_KEYS {
        return Err(invalid(format!(
            "a document may carry at most {MAX_KEYS} metadata keys, got {}",
            meta.len()
        )));
    }
    for (k, v) in meta {
        validate_key(k)?;
        validate_value(k, v)?;
    }
    Ok(())
}

/// Checks a filter's conditions: valid keys and values, at least one value in `AnyOf`,
/// finite range bounds (stored numbers are finite, and the vector store reads an infinite
/// bound as no bound while the BM25 side would match nothing).
pub fn validate_conditions(conditions: &[MetaCondition]) -> Result<()> {
    if conditions.len() > MAX_CONDITIONS {
        return Err(invalid(format!(
            "a filter may hold at most {MAX_CONDITIONS} metadata conditions"
        )));
    }
    for c in conditions {
        validate_key(c.key())?;
        match c {
            MetaCondition::Equals { key, value } => validate_value(key, value)?,
            MetaCondition::AnyOf { key, values } => {
                if values.is_empty() || values.len() > MAX_CONDITIONS {
                    return Err(invalid(format!(
                        "metadata `{key}`: any_of needs 1 to {MAX_CONDITIONS} values"
                    )));
                }
                for v in values {
                    validate_value(key, v)?;
                }
            }
            MetaCondition::Range { key, lower, upper } => {
                let bad = |b: &Bound<f64>| matches!(b, Bound::Included(x) | Bound::Excluded(x) if !x.is_finite());
                if bad(lower) || bad(upper) {
                    return Err(invalid(format!(
                        "metadata `{key}`: range bounds must be finite numbers (leave a side \
                         unset for no bound)"
                    )));
                }
                if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                    return Err(invalid(format!("metadata `{key}`: range has no bound")));
                }
            }
        }
    }
    Ok(())
}

/// The metadata as a JSON object, as stored in payloads and the catalog.
pub fn to_json(meta: &Metadata) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or(serde_json::Value::Null)
}

/// Reads metadata stored by [`to_json`]; anything else (e.g. `null`) is empty metadata.
pub fn from_json(value: &serde_json::Value) -> Metadata {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

// ---- Tantivy term encoding ----------------------------------------------------------------

/// Separates key, type tag and value in a term. Keys never contain it.
const SEP: char = '\u{1}';

/// Maps a finite f64 to a u64 whose unsigned order is the float's numeric order;
/// `-0.0` and `0.0` map to the same value.
fn sortable_bits(x: f64) -> u64 {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn number_prefix(key: &str) -> String {
    format!("{key}{SEP}n{SEP}")
}

fn value_term(key: &str, value: &MetaValue) -> String {
    match value {
        MetaValue::String(s) => format!("{key}{SEP}s{SEP}{s}"),
        MetaValue::Bool(b) => format!("{key}{SEP}b{SEP}{b}"),
        MetaValue::Number(n) => format!("{}{:016x}", number_prefix(key), sortable_bits(*n)),
    }
}

/// The exact terms under which a chunk with this metadata is indexed, one per key.
pub fn index_terms(meta: &Metadata) -> Vec<String> {
    meta.iter().map(|(k, v)| value_term(k, v)).collect()
}

/// A set of terms, or a range of terms, that a chunk's indexed terms must hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermMatch {
    /// One of these exact terms.
    Any(Vec<String>),
    /// A term within these bounds.
    Range(Bound<String>, Bound<String>),
}

/// The term match equivalent to `condition` over terms made by [`index_terms`].
pub fn term_match(condition: &MetaCondition) -> TermMatch {
    match condition {
        MetaCondition::Equals { key, value } => TermMatch::Any(vec![value_term(key, value)]),
        MetaCondition::AnyOf { key, values } => {
            TermMatch::Any(values.iter().map(|v| value_term(key, v)).collect())
        }
        MetaCondition::Range { key, lower, upper } => {
            let prefix = number_prefix(key);
            let at = |x: &f64| format!("{prefix}{:016x}", sortable_bits(*x));
            let lower = match lower {
                Bound::Included(x) => Bound::Included(at(x)),
                Bound::Excluded(x) => Bound::Excluded(at(x)),
                Bound::Unbounded => Bound::Included(prefix.clone()),
            };
            let upper = match upper {
                Bound::Included(x) => Bound::Included(at(x)),
                Bound::Excluded(x) => Bound::Excluded(at(x)),
                // Hex digits sort below 'g': every number term of the key is below this.
                Bound::Unbounded => Bound::Excluded(format!("{prefix}g")),
            };
            TermMatch::Range(lower, upper)
        }
    }
}

// ---- Vector-store filter --------------------------------------------------------------------

fn payload_match(path: &str, value: &MetaValue) -> serde_json::Value {
    use serde_json::json;
    match value {
        MetaValue::String(s) => json!({ "key": path, "match": { "value": s } }),
        MetaValue::Bool(b) => json!({ "key": path, "match": { "value": b } }),
        // Numbers may be stored as integers or floats: compare as a closed range.
        MetaValue::Number(n) => json!({ "key": path, "range": { "gte": n, "lte": n } }),
    }
}

/// The condition in Qdrant's filter JSON (the REST/edge `Filter` format), keys under
/// [`META_KEY`].
pub fn qdrant_condition(condition: &MetaCondition) -> serde_json::Value {
    use serde_json::json;
    let path = format!("{META_KEY}.{}", condition.key());
    match condition {
        MetaCondition::Equals { value, .. } => payload_match(&path, value),
        MetaCondition::AnyOf { values, .. } => {
            let should: Vec<_> = values.iter().map(|v| payload_match(&path, v)).collect();
            json!({ "should": should })
        }
        MetaCondition::Range { lower, upper, .. } => {
            let mut range = serde_json::Map::new();
            match lower {
                Bound::Included(x) => _ = range.insert("gte".into(), json!(x)),
                Bound::Excluded(x) => _ = range.insert("gt".into(), json!(x)),
                Bound::Unbounded => {}
            }
            match upper {
                Bound::Included(x) => _ = range.insert("lte".into(), json!(x)),
                Bound::Excluded(x) => _ = range.insert("lt".into(), json!(x)),
                Bound::Unbounded => {}
            }
            json!({ "key": path, "range": range })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds_must_be_finite() {
        let range = |lower, upper| MetaCondition::Range {
            key: "year".into(),
            lower,
            upper,
        };
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for c in [
                range(Bound::Included(bad), Bound::Unbounded),
                range(Bound::Unbounded, Bound::Excluded(bad)),
            ] {
                let err = validate_conditions(&[c]).unwrap_err();
                assert!(err.to_string().contains("finite"), "{err}");
            }
        }
        assert!(validate_conditions(&[range(Bound::Included(2020.0), Bound::Unbounded)]).is_ok());
    }

    #[test]
    fn sortable_bits_preserve_numeric_order() {
        let xs = [
            f64::MIN,
            -1e300,
            -2.5,
            -1.0,
            -1e-300,
            0.0,
            1e-300,
            1.0,
            2.0,
            2.5,
            1e300,
            f64::MAX,
        ];
        for w in xs.windows(2) {
            assert!(
                sortable_bits(w[0]) < sortable_bits(w[1]),
                "{} !< {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(sortable_bits(-0.0), sortable_bits(0.0));
    }

    #[test]
    fn range_terms_cover_exactly_the_numbers_inside() {
        let m = MetaCondition::Range {
            key: "year".into(),
            lower: Bound::Included(2000.0),
            upper: Bound::Excluded(2010.0),
        };
        let TermMatch::Range(lo, hi) = term_match(&m) else {
            panic!("range expected");
        };
        let term = |y: f64| value_term("year", &MetaValue::Number(y));
        let inside = |t: &String| {
            (match &lo {
                Bound::Included(l) => t >= l,
                Bound::Excluded(l) => t > l,
                Bound::Unbounded => true,
            }) && (match &hi {
                Bound::Included(h) => t <= h,
                Bound::Excluded(h) => t < h,
                Bound::Unbounded => true,
            })
        };
        assert!(inside(&term(2000.0)));
        assert!(inside(&term(2009.5)));
        assert!(!inside(&term(2010.0)));
        assert!(!inside(&term(1999.0)));
        assert!(!inside(&term(-2005.0)));
        // Other keys and other types of the same key are outside.
        assert!(!inside(&value_term("yeah", &MetaValue::Number(2005.0))));
        assert!(!inside(&value_term(
            "year",
            &MetaValue::String("2005".into())
        )));
    }

    #[test]
    fn open_ranges_cover_every_number_of_the_key_only() {
        let m = MetaCondition::Range {
            key: "n".into(),
            lower: Bound::Unbounded,
            upper: Bound::Included(0.0),
        };
        let TermMatch::Range(lo, hi) = term_match(&m) else {
            panic!("range expected");
        };
        let t = value_term("n", &MetaValue::Number(-1e308));
        assert!(matches!(&lo, Bound::Included(l) if &t >= l));
        assert!(matches!(&hi, Bound::Included(h) if &t <= h));
        let positive = value_term("n", &MetaValue::Number(1.0));
        assert!(matches!(&hi, Bound::Included(h) if &positive > h));
    }

    #[test]
    fn metadata_round_trips_through_json_with_its_types() {
        let meta: Metadata = [
            ("lang".to_string(), MetaValue::String("en".into())),
            ("year".to_string(), MetaValue::Number(2021.0)),
            ("draft".to_string(), MetaValue::Bool(false)),
        ]
        .into();
        let json = to_json(&meta);
        assert_eq!(json["lang"], "en");
        assert_eq!(json["draft"], false);
        assert_eq!(from_json(&json), meta);
        assert!(from_json(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn bad_keys_and_values_are_rejected() {
        let one = |k: &str, v: MetaValue| -> Metadata { [(k.to_string(), v)].into() };
        assert!(validate_metadata(&one("ok_key-1", MetaValue::Bool(true))).is_ok());
        assert!(validate_metadata(&one("a.b", MetaValue::Bool(true))).is_err());
        assert!(validate_metadata(&one("", MetaValue::Bool(true))).is_err());
        assert!(validate_metadata(&one("x", MetaValue::Number(f64::NAN))).is_err());
        assert!(validate_metadata(&one("x", MetaValue::String("y".repeat(2000)))).is_err());
        let empty_any = MetaCondition::AnyOf {
            key: "x".into(),
            values: vec![],
        };
        assert!(validate_conditions(&[empty_any]).is_err());
        let unbounded = MetaCondition::Range {
            key: "x".into(),
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        };
        assert!(validate_conditions(&[unbounded]).is_err());
    }
}
