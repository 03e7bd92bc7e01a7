//! Virtual environments: what `pyvenv.cfg` says, where the site directory
//! is, and whether the environment fits the Python this build embeds.
//! Pure Rust; the runtime applies a [`Venv`] (see [`RuntimeConfig::venv`](crate::RuntimeConfig)).

use std::fmt;
use std::path::{Path, PathBuf};

/// A virtual environment made for the Python this build embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    root: PathBuf,
    executable: PathBuf,
    version: Option<String>,
    site_dirs: Vec<PathBuf>,
}

impl Venv {
    /// Reads the environment at `dir` (the folder holding `pyvenv.cfg`)
    /// and checks that it was made for this build's Python minor version.
    ///
    /// Fails, naming both versions, when `pyvenv.cfg` says another version
    /// (`version`, or `version_info` as virtualenv and uv write it) or, when
    /// it says none, when the environment holds only another version's
    /// `lib/pythonX.Y`.
    pub fn open(dir: &Path) -> Result<Venv, String> {
        let root = std::fs::canonicalize(dir)
            .map_err(|e| format!("virtual environment {}: {e}", dir.display()))?;
        let cfg_path = root.join("pyvenv.cfg");
        let cfg = std::fs::read_to_string(&cfg_path).map_err(|e| {
            format!(
                "{} is not a virtual environment: cannot read {}: {e}",
                root.display(),
                cfg_path.display()
            )
        })?;
        let version = cfg_version(&cfg);
        let build = crate::BUILD_PYTHON;
        let found_minor = match &version {
            Some(v) => Some(minor_of(v)),
            None => lib_versions(&root)
                .into_iter()
                .find(|v| v != build)
                .filter(|_| !root.join("lib").join(format!("python{build}")).is_dir()),
        };
        if let Some(minor) = found_minor {
            if minor != build {
                return Err(mismatch(&root, version.as_deref().unwrap_or(&minor)));
            }
        }
        let mut site_dirs: Vec<PathBuf> = Vec::new();
        for lib in ["lib", "lib64"] {
            let dir = root
                .join(lib)
                .join(format!("python{build}"))
                .join("site-packages");
            if let Ok(dir) = std::fs::canonicalize(dir) {
                if dir.is_dir() && !site_dirs.contains(&dir) {
                    site_dirs.push(dir);
                }
            }
        }
        if site_dirs.is_empty() {
            return Err(format!(
                "virtual environment {} has no site-packages for Python {build} \
                 (looked for lib/python{build}/site-packages)",
                root.display()
            ));
        }
        let bin = root.join("bin");
        let executable = ["python", "python3", &format!("python{build}")]
            .iter()
            .map(|name| bin.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| bin.join("python"));
        Ok(Venv {
            root,
            executable,
            version,
            site_dirs,
        })
    }

    /// The environment's folder (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its interpreter, `bin/python`: the embedded runtime's
    /// `sys.executable`, from which CPython derives `sys.prefix`.
    pub fn executable(&self) -> &Path {
        &self.executable
    }

    /// The version `pyvenv.cfg` names, if it names one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Its site directories (`lib/pythonX.Y/site-packages`, canonical),
    /// which every interpreter adds with `.pth` processing.
    pub fn site_dirs(&self) -> &[PathBuf] {
        &self.site_dirs
    }
}

impl fmt::Display for Venv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root.display())
    }
}

fn mismatch(root: &Path, venv_version: &str) -> String {
    let build = if crate::BUILD_VERSION_FULL.is_empty() {
        crate::BUILD_PYTHON
    } else {
        crate::BUILD_VERSION_FULL
    };
    format!(
        "virtual environment {} is for Python {venv_version}, but this build of gilpool embeds \
         Python {build} ({exe}): create the environment with that interpreter \
         (`{exe} -m venv DIR`), or build gilpool for Python {minor} (set PYO3_PYTHON to it)",
        root.display(),
        exe = crate::BUILD_EXECUTABLE,
        minor = minor_of(venv_version),
    )
}

/// The `version` (or `version_info`) value of a `pyvenv.cfg`.
fn cfg_version(cfg: &str) -> Option<String> {
    let mut info = None;
    for line in cfg.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "version" if !value.is_empty() => return Some(value.to_string()),
            "version_info" if !value.is_empty() => info = Some(value.to_string()),
            _ => {}
        }
    }
    info
}

/// `3.13` of `3.13.0`, `3.13.0.final.0` or `3.13`.
fn minor_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The `X.Y` of each `lib/pythonX.Y` folder.
fn lib_versions(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("lib")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("python")?.to_string();
            v.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .then_some(v)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_pyvenv_cfg() {
        let stdlib = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.13.0\n";
        assert_eq!(cfg_version(stdlib).as_deref(), Some("3.13.0"));
        let virtualenv =
            "home = /usr/bin\nimplementation = CPython\nversion_info = 3.11.7.final.0\n";
        assert_eq!(cfg_version(virtualenv).as_deref(), Some("3.11.7.final.0"));
        assert_eq!(minor_of("3.11.7.final.0"), "3.11");
        assert_eq!(minor_of("3.9"), "3.9");
        assert_eq!(cfg_version("home = /usr/bin\n"), None);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gilpool-ffi-venv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn open_checks_the_version_and_finds_the_site_dir() {
        let build = crate::BUILD_PYTHON;
        let other = if build == "3.12" { "3.11" } else { "3.12" };

        let good = scratch("good");
        std::fs::write(good.join("pyvenv.cfg"), format!("version = {build}.0\n")).unwrap();
        let site = good.join(format!("lib/python{build}/site-packages"));
        std::fs::create_dir_all(&site).unwrap();
        let venv = Venv::open(&good).unwrap();
        assert_eq!(venv.site_dirs(), &[std::fs::canonicalize(&site).unwrap()]);
        assert!(venv.executable().ends_with("bin/python"));

        let bad = scratch("bad");
        std::fs::write(bad.join("pyvenv.cfg"), format!("version = {other}.4\n")).unwrap();
        std::fs::create_dir_all(bad.join(format!("lib/python{other}/site-packages"))).unwrap();
        let e = Venv::open(&bad).unwrap_err();
        assert!(e.contains(&format!("Python {other}.4")), "{e}");
        assert!(e.contains(&format!("embeds Python {build}")), "{e}");

        // No version in pyvenv.cfg: the lib/pythonX.Y folder decides.
        std::fs::write(bad.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let e = Venv::open(&bad).unwrap_err();
        assert!(e.contains(&format!("is for Python {other}")), "{e}");

        let none = scratch("none");
        let e = Venv::open(&none).unwrap_err();
        assert!(e.contains("not a virtual environment"), "{e}");
        for d in [good, bad, none] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
