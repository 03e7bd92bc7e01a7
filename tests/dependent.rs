//! A crate that depends on gilpool the way README's "Use gilpool in your
//! crate" says — its `[dependencies]` and its whole `build.rs` are exactly
//! that section's two blocks, parsed out of README.md — builds in a temp dir
//! against this checkout, pulls in none of the command line's dependencies
//! (`cargo tree`), and its binary builds an engine and calls Python from
//! another directory with no `LD_LIBRARY_PATH`.
//!
//! Slow (a fresh `cargo build` of gilpool and its dependencies, about 1–2
//! minutes), so it is one test.

use std::path::{Path, PathBuf};
use std::process::Command;

const SECTION: &str = "## Use gilpool in your crate";

/// The one ```toml and the one ```rust block of README's section.
fn readme_blocks() -> (String, String) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("README has no section {SECTION:?}"));
    let body = &readme[start + SECTION.len() + 2..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let blocks = |lang: &str| -> Vec<String> {
        let fence = format!("```{lang}\n");
        let mut out = Vec::new();
        let mut rest = body;
        while let Some(i) = rest.find(&fence) {
            let after = &rest[i + fence.len()..];
            let end = after.find("```").expect("an unclosed code block");
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
        out
    };
    let (toml, rust) = (blocks("toml"), blocks("rust"));
    assert_eq!(toml.len(), 1, "one ```toml block in {SECTION:?}");
    assert_eq!(rust.len(), 1, "one ```rust block in {SECTION:?}");
    (toml[0].clone(), rust[0].clone())
}

const MAIN: &str = r#"fn main() {
    let engine = gilpool::Engine::builder().workers(1).pin(false).build().expect("an engine");
    let add = engine.load("operator", "add").expect("operator.add");
    let sum: i64 = add.invoke((40i64, 2i64)).expect("a call");
    println!("sum={sum} mode={} python={}", engine.mode(), engine.python_version());
    engine.shutdown();
}
"#;

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "LD_LIBRARY_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PYO3_PYTHON", gilpool::BUILD_PYTHON_EXECUTABLE);
    cmd
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_dependent_crate_builds_from_the_readme_and_runs_anywhere() {
    let (deps, build_rs) = readme_blocks();
    let tmp =
        TempDir(std::env::temp_dir().join(format!("gilpool-dependent-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    let app = tmp.0.join("app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    // The README's path, `../gilpool`, is this checkout.
    std::os::unix::fs::symlink(env!("CARGO_MANIFEST_DIR"), tmp.0.join("gilpool")).unwrap();
    std::fs::write(
        app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"gilpool-dependent\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[workspace]\n\n{deps}"
        ),
    )
    .unwrap();
    std::fs::write(app.join("build.rs"), build_rs).unwrap();
    std::fs::write(app.join("src/main.rs"), MAIN).unwrap();
    // This checkout's lock file pins the same dependency versions (and
    // needs nothing new from the network).
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
        app.join("Cargo.lock"),
    )
    .unwrap();
    let target = tmp.0.join("target");

    let tree = cargo()
        .current_dir(&app)
        .args(["tree", "-e", "normal", "--prefix", "none"])
        .output()
        .unwrap();
    let tree_text = String::from_utf8_lossy(&tree.stdout);
    assert!(
        tree.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&tree.stderr)
    );
    assert!(
        tree_text.lines().any(|l| l.starts_with("gilpool v")),
        "{tree_text}"
    );
    for cli_only in ["clap", "indicatif", "console", "serde_json", "plotters"] {
        assert!(
            !tree_text
                .lines()
                .any(|l| l.starts_with(&format!("{cli_only} v"))),
            "{cli_only} in a dependent with default-features = false:\n{tree_text}"
        );
    }

    let build = cargo()
        .current_dir(&app)
        .env("CARGO_TARGET_DIR", &target)
        .arg("build")
        .output()
        .unwrap();
    let build_err = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "cargo build: {build_err}");
    // A build for a Python without own-GIL subinterpreters says so.
    if !gilpool::Mode::SubInterpreters.is_supported() {
        assert!(
            build_err.contains("no own-GIL subinterpreters") && build_err.contains("PYO3_PYTHON"),
            "{build_err}"
        );
    }

    let elsewhere = tmp.0.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = Command::new(target.join("debug/gilpool-dependent"))
        .current_dir(&elsewhere)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the dependent's binary: {:?}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("sum=42"), "{stdout}");
    assert!(
        stdout.contains(&format!("python={}.", gilpool::BUILD_PYTHON)),
        "{stdout}"
    );
}
