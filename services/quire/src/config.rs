//! The layered configuration: defaults, then a TOML file, then `QUIRE_*` variables and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quire_engine::EngineConfig;
use serde::{Deserialize, Serialize};

/// Everything the binary can be configured with; `quire config` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address `quire serve` listens on. Default: `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Server the client commands (`ingest`, `ask`, `search`) talk to.
    /// Default: `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// API key: `quire serve` requires it on `quire.v1` calls (as `authorization: Bearer
    /// <key>`), and the client commands send it. Default: none (no check). Not printed by
    /// `quire config`.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Where `quire serve` publishes Prometheus metrics (`GET /metrics` on this address).
    /// Default: none (not published).
    pub metrics_listen: Option<SocketAddr>,
    /// Engine settings (stores, models, chunking, retrieval, answers).
    pub engine: EngineConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            endpoint: "http://127.0.0.1:50051".into(),
            api_key: None,
            metrics_listen: None,
            engine: EngineConfig::default(),
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Config {
    /// Reads `path` over the defaults; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quire.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:6000\"\n[engine]\nchunk_tokens = 128\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.listen.port(), 6000);
        assert_eq!(cfg.engine.chunk_tokens, 128);
        assert_eq!(cfg.engine.rrf_k, EngineConfig::default().rrf_k);

        std::fs::write(&path, "[engine]\nchunk_tokenz = 1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("chunk_tokenz"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let cfg = Config::default();
        let text = toml::to_string(&cfg).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&back).unwrap(), text);
    }
}
