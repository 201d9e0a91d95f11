//! Scenario tests: the built `carousel` binary runs the labs in `ci/labs` in an emulator and the
//! tests check its console lines and exit status. The emulator ones are ignored by default
//! (`ci/test` runs them with `--include-ignored`); the broken-lab test runs everywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `ci/labs` directory.
fn labs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/labs")
}

/// What one `carousel run` printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn carousel(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(args)
        .output()
        .expect("the carousel binary starts");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `ci/labs/<lab>` on `backend` with a fresh run directory.
fn run_lab(lab: &str, backend: &str) -> Run {
    let out = tempfile::tempdir().expect("a temporary directory");
    let lab = labs().join(lab);
    carousel(&[
        "run",
        lab.to_str().expect("a UTF-8 path"),
        "--backend",
        backend,
        "--out",
        out.path().to_str().expect("a UTF-8 path"),
    ])
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_passes() {
    let run = run_lab("hello.toml", "bochs");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("[hello] ") && line.contains("all checks passed")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_fail_fails() {
    let run = run_lab("hello-fail.toml", "bochs");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains("hello-fail") && line.contains("failure")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn hello_triple_fault_fails() {
    let run = run_lab("hello-triple.toml", "bochs");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains("hello-triple") && line.contains("triple fault")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn pair_fails_on_beta_and_alpha_passes() {
    let run = run_lab("hello-pair.toml", "bochs");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line == "vm beta: exited with failure (0x11)"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("alpha ") && line.contains("passed")),
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout.lines().any(|line| line.starts_with("vm alpha:")),
        "{}",
        run.describe()
    );
}

#[test]
#[ignore = "boots an emulator; run by ci/test"]
fn without_vmx_the_hypervisor_refuses() {
    let run = run_lab("hello.toml", "qemu-tcg");
    assert_eq!(run.code, Some(3), "{}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("[carousel] error: ") && line.contains("VMX")),
        "{}",
        run.describe()
    );
}

#[test]
fn broken_lab_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lab = dir.path().join("broken.toml");
    std::fs::write(
        &lab,
        "[run]\ntimeout_s = 10\n\n[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n\
         colour = \"blue\"\n",
    )
    .expect("the lab file is written");
    let out = dir.path().join("run");
    let run = carousel(&[
        "run",
        lab.to_str().expect("a UTF-8 path"),
        "--backend",
        "bochs",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.output().contains("colour"), "{}", run.describe());
    assert!(run.output().contains("broken.toml"), "{}", run.describe());
    assert!(!out.exists(), "the run directory was created");
    assert!(
        !run.stdout.contains("building"),
        "a build started: {}",
        run.describe()
    );
}

#[test]
fn broken_lab_creates_no_default_run_dir() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stem = format!("broken-lab-{}", std::process::id());
    let lab = dir.path().join(format!("{stem}.toml"));
    std::fs::write(
        &lab,
        "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 1\n",
    )
    .expect("the lab file is written");
    let run = carousel(&["run", lab.to_str().expect("a UTF-8 path")]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.output().contains("vm[0].memory_mib"),
        "{}",
        run.describe()
    );
    let default = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/carousel/runs")
        .join(stem);
    assert!(!default.exists(), "{} was created", default.display());
}

#[test]
fn checked_in_labs_are_valid() {
    // `carousel run` on an unknown backend value is a usage error (2) before the lab is read,
    // so validate the labs through the library instead.
    for entry in std::fs::read_dir(labs()).expect("ci/labs exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(error) = carousel::lab::Lab::load(&path) {
                panic!("{error}");
            }
        }
    }
}
