//! Where the kubectl binaries of the tests are, in this order:
//! 1. the folder named by `LOCO_KUBECTL_DIR`;
//! 2. `.ci/.tools/kubectl/` in this repository, where `.ci/install-kubectl.sh` puts
//!    `kubectl.1.27`, `kubectl.1.30` and `kubectl.1.33` on a machine that has none;
//! 3. the folder the `kubectl` on the PATH really lives in (the gcloud SDK's dispatcher
//!    keeps `kubectl.1.XX` beside it);
//! 4. a plain `kubectl` on the PATH, for the version it reports.
//!
//! A version that is not there is skipped with a message; no kubectl at all fails the
//! test, so a kubectl test never passes without running kubectl. `LOCO_DISCOVERY_SKIP_KUBECTL=1`
//! skips them instead, on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

const SKIP_VAR: &str = "LOCO_DISCOVERY_SKIP_KUBECTL";

fn path_kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

fn folders() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("LOCO_KUBECTL_DIR") {
        out.push(PathBuf::from(dir));
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.tools/kubectl"));
    if let Some(real) = path_kubectl().and_then(|p| std::fs::canonicalize(p).ok()) {
        if let Some(dir) = real.parent() {
            out.push(dir.to_path_buf());
        }
    }
    out
}

/// The client minor version a kubectl binary reports.
fn client_minor(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    Some(minor.chars().take_while(char::is_ascii_digit).collect())
}

fn find(minor: &str) -> Option<PathBuf> {
    let name = format!("kubectl.1.{minor}");
    folders()
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .or_else(|| path_kubectl().filter(|p| client_minor(p).as_deref() == Some(minor)))
}

fn skipping() -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIP: {SKIP_VAR}=1");
    }
    skip
}

fn none_at_all() -> ! {
    panic!(
        "no kubectl on this machine: run `bash .ci/install-kubectl.sh` (or set {SKIP_VAR}=1 to skip the kubectl tests)"
    )
}

/// kubectl 1.`minor`, or `None` (with a message) when this machine has another version
/// only. Panics when it has no kubectl at all, unless skipping is asked for.
pub fn versioned(minor: &str) -> Option<PathBuf> {
    if skipping() {
        return None;
    }
    if let Some(bin) = find(minor) {
        return Some(bin);
    }
    if any().is_none() {
        none_at_all();
    }
    eprintln!("SKIP: kubectl 1.{minor} is not on this machine (other versions are tested)");
    None
}

/// Some kubectl: 1.30, 1.33, 1.27 or the one on the PATH. Panics when there is none,
/// unless skipping is asked for (then `None`).
pub fn any() -> Option<PathBuf> {
    if skipping() {
        return None;
    }
    let found = ["30", "33", "27"]
        .iter()
        .find_map(|m| find(m))
        .or_else(path_kubectl);
    Some(found.unwrap_or_else(|| none_at_all()))
}

/// The gcloud `kubectl` dispatcher on the PATH, when it has its versioned binaries beside it.
pub fn dispatcher() -> Option<PathBuf> {
    let bin = path_kubectl()?;
    let dir = std::fs::canonicalize(&bin).ok()?.parent()?.to_path_buf();
    dir.join("kubectl.1.33")
        .is_file()
        .then(|| dir.join("kubectl"))
}
