//! Command-line forms of metadata (`--meta KEY=VALUE`) and filters (`--where KEY=VALUE`,
//! `--where KEY>=N`, ...), turned into `quire.v1` messages.

use std::collections::HashMap;

use quire_proto::v1 as pb;

/// `true`/`false` is a boolean, anything that parses as a finite number is a number,
/// everything else a string. Quote-free: `lang=en`, `year=2021`, `draft=false`.
fn value(text: &str) -> pb::MetadataValue {
    use pb::metadata_value::Kind;
    let kind = match text {
        "true" => Kind::BoolValue(true),
        "false" => Kind::BoolValue(false),
        _ => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Kind::NumberValue(n),
            _ => Kind::StringValue(text.to_string()),
        },
    };
    pb::MetadataValue { kind: Some(kind) }
}

/// Parses `KEY=VALUE` pairs into a metadata map. A repeated key is an error.
pub fn metadata(pairs: &[String]) -> Result<HashMap<String, pb::MetadataValue>, String> {
    let mut out = HashMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--meta `{pair}`: expected KEY=VALUE"))?;
        if out.insert(k.trim().to_string(), value(v.trim())).is_some() {
            return Err(format!("--meta: key `{k}` given twice"));
        }
    }
    Ok(out)
}

/// Parses one `--where` expression: `KEY=V`, `KEY=V1|V2|...` (any of), or `KEY>=N`,
/// `KEY>N`, `KEY<=N`, `KEY<N` (numeric ranges; give two for both ends).
fn condition(expr: &str) -> Result<pb::MetadataCondition, String> {
    use pb::metadata_condition::Test;
    let op_at = expr
        .find(['=', '<', '>'])
        .ok_or_else(|| format!("--where `{expr}`: expected KEY=VALUE, KEY>=N, KEY<N, ..."))?;
    let key = expr[..op_at].trim().to_string();
    let rest = &expr[op_at..];
    let (op, operand) = ["<=", ">=", "=", "<", ">"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
        .ok_or_else(|| format!("--where `{expr}`: unknown operator"))?;
    let test = if op == "=" {
        let values: Vec<_> = operand.split('|').map(value).collect();
        match <[pb::MetadataValue; 1]>::try_from(values) {
            Ok([one]) => Test::Equals(one),
            Err(values) => Test::AnyOf(pb::MetadataValues { values }),
        }
    } else {
        let n: f64 = operand
            .parse()
            .map_err(|_| format!("--where `{expr}`: `{operand}` is not a number"))?;
        let mut r = pb::NumberRange::default();
        match op {
            ">=" => r.gte = Some(n),
            ">" => r.gt = Some(n),
            "<=" => r.lte = Some(n),
            _ => r.lt = Some(n),
        }
        Test::Range(r)
    };
    Ok(pb::MetadataCondition {
        key,
        test: Some(test),
    })
}

/// The filter for a list of `--where` expressions (all must hold); `None` when empty.
pub fn filter(exprs: &[String]) -> Result<Option<pb::Filter>, String> {
    if exprs.is_empty() {
        return Ok(None);
    }
    let metadata = exprs
        .iter()
        .map(|e| condition(e))
        .collect::<Result<_, _>>()?;
    Ok(Some(pb::Filter {
        document_ids: Vec::new(),
        metadata,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::metadata_condition::Test;
    use pb::metadata_value::Kind;

    fn kind(v: &pb::MetadataValue) -> &Kind {
        v.kind.as_ref().expect("kind")
    }

    #[test]
    fn values_are_typed() {
        let m = metadata(&["lang=en".into(), "year=2021".into(), "draft=false".into()]).unwrap();
        assert_eq!(kind(&m["lang"]), &Kind::StringValue("en".into()));
        assert_eq!(kind(&m["year"]), &Kind::NumberValue(2021.0));
        assert_eq!(kind(&m["draft"]), &Kind::BoolValue(false));
        assert!(metadata(&["novalue".into()]).is_err());
        assert!(metadata(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn where_expressions() {
        let c = condition("year>=2020").unwrap();
        assert_eq!(c.key, "year");
        let Some(Test::Range(r)) = c.test else {
            panic!("range expected")
        };
        assert_eq!((r.gte, r.gt, r.lte, r.lt), (Some(2020.0), None, None, None));
        let c = condition("year<2020").unwrap();
        assert!(matches!(c.test, Some(Test::Range(r)) if r.lt == Some(2020.0)));
        let c = condition("lang=en|de").unwrap();
        assert!(matches!(c.test, Some(Test::AnyOf(v)) if v.values.len() == 2));
        let c = condition("lang=en").unwrap();
        assert!(matches!(c.test, Some(Test::Equals(_))));
        assert!(condition("year>=soon").is_err());
        assert!(condition("nothing").is_err());
        assert!(filter(&[]).unwrap().is_none());
    }
}
