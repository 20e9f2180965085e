//! Reading BEIR-format datasets: `corpus.jsonl` (or `.jsonl.gz`), `queries.jsonl` and
//! `qrels/<split>.tsv`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::{Error, Qrels};

/// One corpus document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Doc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
}

#[derive(serde::Deserialize)]
struct Query {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

fn lines(path: &Path) -> Result<Box<dyn BufRead>, Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Parses each non-blank JSON line of `path` as a `T`, stopping after `limit`.
fn json_lines<T: serde::de::DeserializeOwned>(path: &Path, limit: usize) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for (n, line) in lines(path)?.lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::Format {
            path: path.display().to_string(),
            line: Some(n + 1),
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

/// Up to `limit` documents of `dir`'s corpus, in file order (`corpus.jsonl`, else
/// `corpus.jsonl.gz`).
pub fn read_corpus(dir: &Path, limit: usize) -> Result<Vec<Doc>, Error> {
    let plain = dir.join("corpus.jsonl");
    let path = if plain.exists() {
        plain
    } else {
        dir.join("corpus.jsonl.gz")
    };
    json_lines(&path, limit)
}

/// Query id → text, from `queries.jsonl`.
pub fn read_queries(dir: &Path) -> Result<HashMap<String, String>, Error> {
    let queries: Vec<Query> = json_lines(&dir.join("queries.jsonl"), usize::MAX)?;
    Ok(queries.into_iter().map(|q| (q.id, q.text)).collect())
}

/// Query id → judgements, from `qrels/<split>.tsv` (`query-id corpus-id score`, tab-separated,
/// with a header line).
pub fn read_qrels(dir: &Path, split: &str) -> Result<HashMap<String, Qrels>, Error> {
    let path = dir.join("qrels").join(format!("{split}.tsv"));
    let mut out: HashMap<String, Qrels> = HashMap::new();
    for (n, line) in lines(&path)?.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if line.trim().is_empty() || (n == 0 && fields.first() == Some(&"query-id")) {
            continue;
        }
        let bad = |message: String| Error::Format {
            path: path.display().to_string(),
            line: Some(n + 1),
            message,
        };
        let [query, doc, score] = fields[..] else {
            return Err(bad(format!(
                "expected 3 tab-separated fields, got {}",
                fields.len()
            )));
        };
        let score: i64 = score
            .parse()
            .map_err(|e| bad(format!("score {score:?}: {e}")))?;
        out.entry(query.to_string())
            .or_default()
            .insert(doc.to_string(), score.max(0) as u32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_dataset_with_header_and_graded_qrels() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("corpus.jsonl"),
            "{\"_id\":\"a\",\"title\":\"T\",\"text\":\"x\"}\n\n{\"_id\":\"b\",\"text\":\"y\"}\n",
        )
        .unwrap();
        std::fs::write(d.join("queries.jsonl"), "{\"_id\":\"1\",\"text\":\"q\"}\n").unwrap();
        std::fs::create_dir(d.join("qrels")).unwrap();
        std::fs::write(
            d.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\n1\ta\t2\n1\tb\t0\n",
        )
        .unwrap();
        let corpus = read_corpus(d, 10).unwrap();
        assert_eq!(corpus.len(), 2);
        assert_eq!((corpus[1].id.as_str(), corpus[1].title.as_str()), ("b", ""));
        assert_eq!(read_corpus(d, 1).unwrap().len(), 1);
        assert_eq!(read_queries(d).unwrap()["1"], "q");
        let qrels = read_qrels(d, "test").unwrap();
        assert_eq!(qrels["1"]["a"], 2);
        assert_eq!(qrels["1"]["b"], 0);
        std::fs::write(d.join("qrels/test.tsv"), "1\ta\n").unwrap();
        assert!(matches!(
            read_qrels(d, "test"),
            Err(Error::Format { line: Some(1), .. })
        ));
    }
}
