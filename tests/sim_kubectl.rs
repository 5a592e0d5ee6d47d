//! The real kubectl binaries (1.27, 1.30, 1.33) against the simulated API server: create, get (table, -A, json),
//! patch, replace, watch, delete, Endpoints; `apply` (client-side, twice with a change), `apply --server-side` (with
//! a conflict and `--force-conflicts`), `patch` without `--type`, `diff` and `--dry-run=server` on every write, with
//! a gateway following each change.
//!
//! kubectl is found by [`support::kubectl`]; without any kubectl these tests fail (they never pass without
//! running it), unless `LOCO_DISCOVERY_SKIP_KUBECTL=1` says to skip them.

mod support;

use loco_discovery::config::DiscoveryMode;
use loco_discovery::GatewayConfig;
use loco_discovery_sim::{write_kubeconfig, ResourceKind, Sim, SimOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use support::{eventually, Gateway, SimCluster};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const NS: &str = "loco";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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
    let Some(bin) = support::kubectl::versioned(minor) else {
        return;
    };
    let env = Env::start(bin, minor).await;
    let name = "web-abc12";

    // create
    let file = env.write("slice.yaml", &slice_doc(name, "10.0.0.1"));
    let out = env.ok(&["create", "-f", &file]).await;
    assert!(
        out.contains(&format!("endpointslice.discovery.k8s.io/{name} created")),
        "{out}"
    );
    let out = env.run(&["create", "-f", &file]).await;
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
    env.says(
        &["patch", "endpointslice", name, "--type=merge", "-p", patch],
        "patched",
    )
    .await;
    let stored = env.stored(ResourceKind::EndpointSlice, name).unwrap();
    assert_eq!(stored["endpoints"][0]["conditions"]["serving"], false);
    assert_eq!(stored["metadata"]["generation"], 2);

    // strategic merge (patch without --type)
    let labels = r#"{"metadata":{"labels":{"a":"b"}}}"#;
    env.says(&["patch", "endpointslice", name, "-p", labels], "patched")
        .await;
    let stored = env.stored(ResourceKind::EndpointSlice, name).unwrap();
    assert_eq!(stored["metadata"]["labels"]["a"], "b");
    assert_eq!(stored["endpoints"][0]["conditions"]["serving"], false);

    // replace -f
    let file2 = env.write("slice2.yaml", &slice_doc(name, "10.0.0.2"));
    let out = env.ok(&["replace", "-f", &file2]).await;
    assert!(out.contains("replaced"), "{out}");
    let stored = env.stored(ResourceKind::EndpointSlice, name).unwrap();
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
    let Some(dispatcher) = support::kubectl::dispatcher() else {
        eprintln!("SKIP: no kubectl dispatcher with versioned binaries beside it on the PATH");
        return;
    };
    let env = Env::start(dispatcher, "33").await;
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
/// Status, worded as the real one words it. kubectl runs with its default validation
/// (`--validate=strict`): every version, 1.27 included (it reads the `/openapi/v2` served),
/// leaves unknown fields to the server and sends `fieldValidation=Strict`.
async fn refusals(minor: &str) {
    let Some(bin) = support::kubectl::versioned(minor) else {
        return;
    };
    let env = Env::start(bin, minor).await;
    let refused = |out: &Output, expected: &str| {
        assert_eq!(out.code, 1, "{} {}", out.stdout, out.stderr);
        assert_eq!(out.stderr.trim(), expected, "kubectl 1.{minor}");
    };
    let create_refused = async |file: &str, doc: &Value, expected: &str| {
        env.write(file, doc);
        refused(&env.run(&["create", "-f", file]).await, expected);
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

    // Unknown fields: refused under kubectl's default validation (fieldValidation=Strict),
    // warned about with --validate=warn, pruned silently with --validate=false.
    let mut unknown = slice_doc("web-b", "10.0.0.2");
    unknown["topology"] = json!({"kubernetes.io/hostname": "node-1"});
    unknown["endpoints"][0]["ready"] = json!(true);
    env.write("unknown.yaml", &unknown);
    let file = "unknown.yaml";
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
    let stored = env
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, "web-b")
        .unwrap();
    assert_eq!(stored.get("topology"), None);
    assert_eq!(stored["endpoints"][0].get("ready"), None);
    let mut quiet = unknown.clone();
    quiet["metadata"]["name"] = json!("web-q");
    env.write("quiet.yaml", &quiet);
    let out = env
        .run(&["create", "-f", "quiet.yaml", "--validate=false"])
        .await;
    assert_eq!((out.code, out.stderr.trim()), (0, ""), "{}", out.stdout);

    // The same unknown fields applied onto an object: client-side apply's strategic merge
    // patch is decoded (the 422 of field `patch`), server-side apply types the configuration
    // against the schema (a 500, as the API server answers it). Nothing is stored.
    env.write("applied.yaml", &slice_doc("web-d", "10.0.0.5"));
    env.ok(&["apply", "-f", "applied.yaml"]).await;
    let mut applied_unknown = slice_doc("web-d", "10.0.0.5");
    applied_unknown["topology"] = json!({"zone": "a"});
    env.write("applied-unknown.yaml", &applied_unknown);
    let before = env.resource_version();
    let out = env.run(&["apply", "-f", "applied-unknown.yaml"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    // The value is the patch kubectl sent, as Go prints a map: the new last-applied
    // annotation and the new field.
    let printed = out.stderr.trim();
    assert!(
        printed.starts_with(
            r#"The request is invalid: patch: Invalid value: "map[metadata:map[annotations:map[kubectl.kubernetes.io/last-applied-configuration:{\"addressType\":"#
        ) && printed.ends_with(
            r#"}\n]] topology:map[zone:a]]": strict decoding error: unknown field "topology""#
        ),
        "kubectl 1.{minor}: {printed}"
    );
    let out = env
        .run(&["apply", "--server-side", "-f", "applied-unknown.yaml"])
        .await;
    refused(
        &out,
        r#"Error from server: failed to create typed patch object (loco/web-d; discovery.k8s.io/v1, Kind=EndpointSlice): .topology: field not declared in schema"#,
    );
    assert_eq!(env.resource_version(), before, "nothing refused was stored");

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
    let out = env.run(&["replace", "-f", file]).await;
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

const SVC: &str = "loco-loco-emulator";
const EMU: &str = "loco-loco-emulator-kctl";

/// The EndpointSlice of emulator pod 4, as a user writes it in a file.
fn emu_slice(ip: &str, serving: bool, terminating: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": EMU, "namespace": NS, "labels": {"kubernetes.io/service-name": SVC}},
        "addressType": "IPv4",
        "ports": [{"name": "vnc", "port": 5901}, {"name": "health", "port": 8080}],
        "endpoints": [{
            "addresses": [ip],
            "conditions": {"ready": true, "serving": serving, "terminating": terminating},
            "targetRef": {"kind": "Pod", "name": "loco-loco-emulator-4", "namespace": NS},
        }],
    })
}

/// The Endpoints object of service `web`, its pod `web-0` ready or not.
fn web_endpoints(ip: &str, ready: bool) -> Value {
    let address =
        json!([{"ip": ip, "targetRef": {"kind": "Pod", "name": "web-0", "namespace": NS}}]);
    let field = if ready {
        "addresses"
    } else {
        "notReadyAddresses"
    };
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": NS},
        "subsets": [{field: address, "ports": [{"name": "http", "port": 8080}]}],
    })
}

/// Waits until `gateway` shows `id` in `state` at `ip`.
async fn follows(gateway: &Gateway, id: &str, state: &str, ip: &str) {
    let wanted = (state.to_owned(), ip.to_owned());
    let shown = eventually(Duration::from_secs(10), || async {
        gateway.view().await.get(id) == Some(&wanted)
    })
    .await;
    assert!(
        shown.is_ok(),
        "the gateway never showed {id} {state} at {ip}: {:?}",
        gateway.view().await
    );
}

impl Env {
    fn resource_version(&self) -> u64 {
        self.sim.store.current_resource_version()
    }

    fn stored(&self, kind: ResourceKind, name: &str) -> Option<Value> {
        self.sim.store.get(kind, NS, name)
    }

    /// Runs kubectl, requires exit code 0 and `expected` in its output.
    async fn says(&self, args: &[&str], expected: &str) {
        let out = self.ok(args).await;
        assert!(
            out.contains(expected),
            "kubectl {args:?} printed {out:?}, not {expected:?}"
        );
    }
}

/// `kubectl apply` as people use it (no `--validate=false`), with two gateways following:
/// one on the EndpointSlices of the emulator service, one on the Endpoints of `web`.
async fn apply_workflow(minor: &str) {
    let Some(bin) = support::kubectl::versioned(minor) else {
        return;
    };
    let env = Env::start(bin, minor).await;
    let slices = Gateway::start(&env.cluster).await;
    let mut config = GatewayConfig::new(NS, vec!["web".into()]);
    config.mode = DiscoveryMode::KubernetesEndpoints;
    let endpoints = Gateway::start_with(&env.cluster, config).await;
    let slice = ResourceKind::EndpointSlice;

    // Client-side apply: create, then a changed file (a strategic merge patch).
    let file = env.write("emu.yaml", &emu_slice("10.244.0.30", true, false));
    env.says(&["apply", "-f", &file], "created").await;
    follows(&slices, "instance-4", "ready", "10.244.0.30").await;
    let file = env.write("emu.yaml", &emu_slice("10.244.0.30", false, false));
    env.says(&["apply", "-f", &file], "configured").await;
    follows(&slices, "instance-4", "booting", "10.244.0.30").await;
    let stored = env.stored(slice, EMU).unwrap();
    let last: Value = serde_json::from_str(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["endpoints"][0]["conditions"]["serving"], false);

    // diff: shows what an apply would change, and changes nothing.
    let next = env.write("emu-next.yaml", &emu_slice("10.244.0.31", false, false));
    let before = env.resource_version();
    let out = env.run(&["diff", "-f", &next]).await;
    assert_eq!(out.code, 1, "diff exits 1 on differences: {}", out.stderr);
    assert!(out.stdout.contains("+  - 10.244.0.31"), "{}", out.stdout);
    assert!(out.stdout.contains("-  - 10.244.0.30"), "{}", out.stdout);
    // The server stamps no trigger time (only the controllers write it), so a dry run
    // changes no annotation and diff shows only what the file changes.
    let changed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert!(
        changed
            .iter()
            .all(|l| l.contains("10.244.0.3") || l.contains("generation:")),
        "diff shows more than the file changes: {changed:?}"
    );
    assert_eq!(env.resource_version(), before, "diff wrote nothing");

    // Server-side apply takes over from client-side apply, then owns the fields.
    env.says(
        &["apply", "--server-side", "-f", &next],
        "serverside-applied",
    )
    .await;
    follows(&slices, "instance-4", "booting", "10.244.0.31").await;
    let managers: Vec<(String, String)> = env.stored(slice, EMU).unwrap()["metadata"]
        ["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_owned(),
                m["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("kubectl".into(), "Apply".into())),
        "{managers:?}"
    );

    // Another manager with another value: a conflict, until it forces.
    let theirs = env.write("emu-theirs.yaml", &emu_slice("10.244.0.32", true, false));
    let before = env.resource_version();
    let out = env
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            &theirs,
        ])
        .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .endpoints"),
        "{}",
        out.stderr
    );
    assert_eq!(env.resource_version(), before, "a conflict writes nothing");
    env.says(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            &theirs,
        ],
        "serverside-applied",
    )
    .await;
    follows(&slices, "instance-4", "ready", "10.244.0.32").await;

    // patch without --type: a strategic merge patch.
    let terminating =
        json!({"endpoints": emu_slice("10.244.0.32", false, true)["endpoints"]}).to_string();
    env.says(
        &["patch", "endpointslice", EMU, "-p", &terminating],
        "patched",
    )
    .await;
    follows(&slices, "instance-4", "offline", "10.244.0.32").await;

    // --dry-run=server on every write: answered, nothing stored, nothing seen.
    let other = env.write("emu-other.yaml", &{
        let mut s = emu_slice("10.244.0.40", true, false);
        s["metadata"]["name"] = json!("loco-loco-emulator-other");
        s
    });
    let ready = env.write("emu-ready.yaml", &emu_slice("10.244.0.33", true, false));
    let before = (env.resource_version(), env.stored(slice, EMU));
    let ready_patch =
        json!({"endpoints": emu_slice("10.244.0.33", true, false)["endpoints"]}).to_string();
    // (kubectl's patch prints no "(server dry run)" of its own.)
    let dry_runs: [(&[&str], &str); 7] = [
        (
            &["create", "-f", &other, "--dry-run=server"],
            "(server dry run)",
        ),
        (
            &["apply", "-f", &other, "--dry-run=server"],
            "(server dry run)",
        ),
        (
            &["apply", "-f", &ready, "--dry-run=server"],
            "(server dry run)",
        ),
        (
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &ready,
                "--dry-run=server",
            ],
            "(server dry run)",
        ),
        (
            &["replace", "-f", &ready, "--dry-run=server"],
            "(server dry run)",
        ),
        (
            &[
                "patch",
                "endpointslice",
                EMU,
                "-p",
                &ready_patch,
                "--dry-run=server",
            ],
            "patched",
        ),
        (
            &["delete", "endpointslice", EMU, "--dry-run=server"],
            "(server dry run)",
        ),
    ];
    for (args, expected) in dry_runs {
        env.says(args, expected).await;
    }
    assert_eq!((env.resource_version(), env.stored(slice, EMU)), before);
    assert!(env.stored(slice, "loco-loco-emulator-other").is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    follows(&slices, "instance-4", "offline", "10.244.0.32").await;

    // Endpoints: the same workflow.
    let file = env.write("web.yaml", &web_endpoints("10.1.0.1", true));
    env.says(&["apply", "-f", &file], "created").await;
    follows(&endpoints, "instance-0", "ready", "10.1.0.1").await;
    let file = env.write("web.yaml", &web_endpoints("10.1.0.1", false));
    env.says(&["apply", "-f", &file], "configured").await;
    follows(&endpoints, "instance-0", "booting", "10.1.0.1").await;
    let next = env.write("web-next.yaml", &web_endpoints("10.1.0.2", true));
    let before = env.resource_version();
    let out = env.run(&["diff", "-f", &next]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("10.1.0.2"), "{}", out.stdout);
    assert_eq!(env.resource_version(), before);
    env.says(
        &["apply", "--server-side", "-f", &next],
        "serverside-applied",
    )
    .await;
    follows(&endpoints, "instance-0", "ready", "10.1.0.2").await;
    let patch = json!({"subsets": web_endpoints("10.1.0.3", true)["subsets"]}).to_string();
    env.says(&["patch", "endpoints", "web", "-p", &patch], "patched")
        .await;
    follows(&endpoints, "instance-0", "ready", "10.1.0.3").await;
    env.says(
        &["delete", "endpoints", "web", "--dry-run=server"],
        "(server dry run)",
    )
    .await;
    assert!(env.stored(ResourceKind::Endpoints, "web").is_some());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_apply_diff_and_dry_run_with_the_gateway_following() {
    apply_workflow("27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_apply_diff_and_dry_run_with_the_gateway_following() {
    apply_workflow("30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_apply_diff_and_dry_run_with_the_gateway_following() {
    apply_workflow("33").await;
}
