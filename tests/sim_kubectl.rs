//! The real kubectl binaries (1.27, 1.30, 1.33) against the simulated API server: create, get (table, -A, json),
//! patch, replace, watch, delete, and Endpoints. Skips with a message when kubectl is not installed.

mod support;

use loco_discovery_sim::{write_kubeconfig, ResourceKind, Sim, SimOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::SimCluster;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const NS: &str = "loco";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder of the versioned kubectl binaries: where the `kubectl` on the PATH really lives.
fn kubectl_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn kubectl_binary(minor: &str) -> Option<PathBuf> {
    let Some(dir) = kubectl_dir() else {
        eprintln!(
            "SKIP: no kubectl on the PATH; the kubectl compatibility test needs kubectl.1.{minor}"
        );
        return None;
    };
    let bin = dir.join(format!("kubectl.1.{minor}"));
    if bin.is_file() {
        Some(bin)
    } else {
        eprintln!("SKIP: {} not found next to kubectl", bin.display());
        None
    }
}

struct Env {
    sim: Sim,
    bin: PathBuf,
    dir: tempfile::TempDir,
    cluster: SimCluster,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    async fn start(bin: PathBuf, minor: &str) -> Env {
        let cluster = SimCluster::start_with(SimOptions {
            server_minor: minor.into(),
            ..SimOptions::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(&dir.path().join("kubeconfig"), cluster.addr, NS).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        Env {
            sim: cluster.sim.clone(),
            bin,
            dir,
            cluster,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().expect("kubectl starts");
        let out = timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in time"))
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl and requires exit code 0.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(
            out.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    fn write(&self, name: &str, v: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_saphyr::to_string(v).unwrap()).unwrap();
        path.to_string_lossy().into_owned()
    }

    async fn stop(self) {
        self.cluster.stop().await
    }
}

fn slice_doc(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn row_with<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
}

async fn exercise(minor: &str) {
    let Some(bin) = kubectl_binary(minor) else {
        return;
    };
    let env = Env::start(bin, minor).await;
    let name = "web-abc12";

    // create
    let file = env.write("slice.yaml", &slice_doc(name, "10.0.0.1"));
    let out = env.ok(&["create", "-f", &file, "--validate=false"]).await;
    assert!(
        out.contains(&format!("endpointslice.discovery.k8s.io/{name} created")),
        "{out}"
    );
    let out = env.run(&["create", "-f", &file, "--validate=false"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("(AlreadyExists)"), "{}", out.stderr);

    // get: server-side table
    let out = env.ok(&["get", "endpointslices"]).await;
    let header = out.lines().next().unwrap_or("");
    for col in ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"] {
        assert!(header.contains(col), "header {header:?}");
    }
    let row = row_with(&out, name).unwrap_or_else(|| panic!("no row in {out}"));
    for cell in ["IPv4", "8080", "10.0.0.1"] {
        assert!(row.contains(cell), "row {row:?}");
    }

    // get -A: the namespace column comes from rows[].object
    let mut other = slice_doc("elsewhere", "10.9.9.9");
    other["metadata"]["namespace"] = json!("default");
    env.sim
        .store
        .create(ResourceKind::EndpointSlice, "default", other)
        .unwrap();
    let out = env.ok(&["get", "endpointslices", "-A"]).await;
    assert!(
        out.lines().next().unwrap_or("").starts_with("NAMESPACE"),
        "{out}"
    );
    let row = row_with(&out, name).unwrap_or_else(|| panic!("no row in {out}"));
    assert!(row.starts_with("loco "), "{row:?}");
    let row = row_with(&out, "elsewhere").unwrap_or_else(|| panic!("no row in {out}"));
    assert!(row.starts_with("default "), "{row:?}");

    // get NAME -o json
    let out = env.ok(&["get", "endpointslice", name, "-o", "json"]).await;
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["kind"], "EndpointSlice");
    assert_eq!(obj["metadata"]["name"], name);
    assert_eq!(obj["metadata"]["generation"], 1);

    // get of a missing name
    let out = env.run(&["get", "endpointslice", "nope"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("endpointslices.discovery.k8s.io \"nope\" not found"),
        "{}",
        out.stderr
    );

    // patch --type=merge
    let patch = r#"{"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":false,"serving":false,"terminating":false}}]}"#;
    let out = env
        .ok(&["patch", "endpointslice", name, "--type=merge", "-p", patch])
        .await;
    assert!(out.contains("patched"), "{out}");
    let stored = env
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, name)
        .unwrap();
    assert_eq!(stored["endpoints"][0]["conditions"]["serving"], false);
    assert_eq!(stored["metadata"]["generation"], 2);

    // strategic merge (patch without --type) fails visibly
    let out = env
        .run(&[
            "patch",
            "endpointslice",
            name,
            "-p",
            r#"{"metadata":{"labels":{"a":"b"}}}"#,
        ])
        .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("unknown format"), "{}", out.stderr);

    // replace -f
    let file2 = env.write("slice2.yaml", &slice_doc(name, "10.0.0.2"));
    let out = env.ok(&["replace", "-f", &file2, "--validate=false"]).await;
    assert!(out.contains("replaced"), "{out}");
    let stored = env
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, name)
        .unwrap();
    assert_eq!(stored["endpoints"][0]["addresses"][0], "10.0.0.2");

    // get -w: the initial row, then a row for a write; the child is ended by its own PID.
    let mut child = env
        .command(&["get", "endpointslices", "-w"])
        .spawn()
        .expect("kubectl get -w starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut read_until = async |needle: &str| -> String {
        timeout(COMMAND_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("kubectl get -w ended before printing {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("kubectl get -w did not print {needle:?} in time"))
    };
    read_until("10.0.0.2").await;
    let sim = env.sim.clone();
    let writer = tokio::spawn(async move {
        // The watch request follows the list; write until the watch row shows up.
        for i in 0..50 {
            let _ = sim.store.merge_patch(
                ResourceKind::EndpointSlice,
                NS,
                "web-abc12",
                &json!({"endpoints": [{"addresses": [format!("10.0.1.{i}")]}]}),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let row = read_until("10.0.1.").await;
    assert!(row.contains(name), "{row}");
    writer.abort();
    // Ends exactly this child (its own PID).
    child.kill().await.unwrap();

    // Endpoints
    env.sim
        .store
        .create(
            ResourceKind::Endpoints,
            NS,
            json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        )
        .unwrap();
    let out = env.ok(&["get", "endpoints"]).await;
    let row = row_with(&out, "web").unwrap_or_else(|| panic!("no row in {out}"));
    assert!(row.contains("10.0.0.1:80"), "{row:?}");

    // delete: prints deleted, exits 0 quickly (the object is gone at once, so kubectl's wait ends at once)
    let started = std::time::Instant::now();
    let out = env.ok(&["delete", "endpointslice", name]).await;
    assert!(
        out.contains(&format!(
            "endpointslice.discovery.k8s.io \"{name}\" deleted"
        )),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = env.run(&["delete", "endpointslice", name]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("(NotFound)"), "{}", out.stderr);
    let out = env.run(&["get", "endpointslices"]).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stderr.contains("No resources found in loco namespace."),
        "{} {}",
        out.stdout,
        out.stderr
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_works_against_the_sim() {
    exercise("27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_works_against_the_sim() {
    exercise("30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_works_against_the_sim() {
    exercise("33").await;
}

/// The `kubectl` dispatcher on the PATH reads `/version` and runs the kubectl of the server's minor version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_picks_the_kubectl_of_the_reported_minor() {
    let Some(dir) = kubectl_dir() else {
        eprintln!("SKIP: no kubectl on the PATH");
        return;
    };
    if !dir.join("kubectl.1.33").is_file() {
        eprintln!("SKIP: the kubectl on the PATH is not the versioned dispatcher");
        return;
    }
    let env = Env::start(dir.join("kubectl"), "33").await;
    let out = env.ok(&["version", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "33");
    assert!(
        v["clientVersion"]["gitVersion"]
            .as_str()
            .unwrap_or("")
            .starts_with("v1.33."),
        "{out}"
    );
    env.stop().await;
}

/// What the simulated API refuses, as kubectl prints it: every refusal is the API server's
/// Status, worded as the real one words it.
async fn refusals(minor: &str) {
    let Some(bin) = kubectl_binary(minor) else {
        return;
    };
    let env = Env::start(bin, minor).await;
    let refused = |out: &Output, expected: &str| {
        assert_eq!(out.code, 1, "{} {}", out.stdout, out.stderr);
        assert_eq!(out.stderr.trim(), expected, "kubectl 1.{minor}");
    };
    let create_refused = async |file: &str, doc: &Value, expected: &str| {
        env.write(file, doc);
        refused(
            &env.run(&["create", "-f", file, "--validate=false"]).await,
            expected,
        );
    };

    // Namespaces: created and listed like on a cluster; writes elsewhere are refused.
    let out = env.ok(&["create", "namespace", "net-test"]).await;
    assert_eq!(out.trim(), "namespace/net-test created");
    let out = env.ok(&["get", "namespaces"]).await;
    let row = row_with(&out, "net-test").unwrap_or_else(|| panic!("no row in {out}"));
    assert!(row.contains("Active"), "{row}");
    let mut elsewhere = slice_doc("web-a", "10.0.0.1");
    elsewhere["metadata"]["namespace"] = json!("nowhere");
    create_refused("elsewhere.yaml", &elsewhere, r#"Error from server (NotFound): error when creating "elsewhere.yaml": namespaces "nowhere" not found"#).await;

    // Unknown fields: refused under kubectl's default validation (fieldValidation=Strict, when
    // the server documents it in OpenAPI v3: kubectl 1.30+), pruned with --validate=false.
    let mut unknown = slice_doc("web-b", "10.0.0.2");
    unknown["topology"] = json!({"kubernetes.io/hostname": "node-1"});
    unknown["endpoints"][0]["ready"] = json!(true);
    env.write("unknown.yaml", &unknown);
    let file = "unknown.yaml";
    if minor != "27" {
        let out = env.run(&["create", "-f", file]).await;
        refused(
            &out,
            r#"Error from server (BadRequest): error when creating "unknown.yaml": EndpointSlice in version "v1" cannot be handled as a EndpointSlice: strict decoding error: unknown field "endpoints[0].ready", unknown field "topology""#,
        );
        let out = env.run(&["create", "-f", file, "--validate=warn"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            "Warning: unknown field \"endpoints[0].ready\"\nWarning: unknown field \"topology\""
        );
    } else {
        env.ok(&["create", "-f", file, "--validate=false"]).await;
    }
    let stored = env
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, "web-b")
        .unwrap();
    assert_eq!(stored.get("topology"), None);
    assert_eq!(stored["endpoints"][0].get("ready"), None);

    // A value of the wrong type, and content that fails validation.
    let mut wrong = slice_doc("web-c", "10.0.0.3");
    wrong["endpoints"][0]["addresses"] = json!("10.0.0.3");
    create_refused("wrong.yaml", &wrong, r#"Error from server (BadRequest): error when creating "wrong.yaml": EndpointSlice in version "v1" cannot be handled as a EndpointSlice: json: cannot unmarshal string into Go struct field Endpoint.endpoints.addresses of type []string"#).await;
    let mut empty = slice_doc("web-c", "10.0.0.3");
    empty["endpoints"][0]["addresses"] = json!([]);
    create_refused("empty.yaml", &empty, r#"The EndpointSlice "web-c" is invalid: endpoints[0].addresses: Required value: must contain at least 1 address"#).await;

    // A replace naming another object's uid.
    let mut other = slice_doc("web-b", "10.0.0.4");
    other["metadata"]["uid"] = json!("0b7c5a52-0000-4000-8000-000000000000");
    env.write("other.yaml", &other);
    let file = "other.yaml";
    let out = env.run(&["replace", "-f", file, "--validate=false"]).await;
    let uid = stored["metadata"]["uid"].as_str().unwrap();
    refused(
        &out,
        &format!(
            r#"Error from server (Conflict): error when replacing "other.yaml": Operation cannot be fulfilled on endpointslices.discovery.k8s.io "web-b": Precondition failed: UID in precondition: 0b7c5a52-0000-4000-8000-000000000000, UID in object meta: {uid}"#
        ),
    );

    // Deleting a namespace deletes what it holds; the API server's own namespaces stay.
    let out = env.ok(&["delete", "namespace", "net-test"]).await;
    assert_eq!(out.trim(), "namespace \"net-test\" deleted");
    let out = env.run(&["delete", "namespace", "default"]).await;
    refused(
        &out,
        r#"Error from server (Forbidden): namespaces "default" is forbidden: this namespace may not be deleted"#,
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_prints_what_the_sim_refuses() {
    refusals("27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_prints_what_the_sim_refuses() {
    refusals("30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_prints_what_the_sim_refuses() {
    refusals("33").await;
}
