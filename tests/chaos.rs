//! The seeded chaos suite: random churn and random faults against two gateway replicas
//! on one simulated API, with SSE and WebSocket subscribers (some filtered) that drop and
//! resume on the other replica. After every schedule (a few random actions) it waits for
//! quiescence and checks, for every replica and every subscriber, that the subscriber's
//! state rebuilt from its events equals its replica's `/live`, which equals the API's
//! truth; every event is also checked as it arrives for impossible sequences.
//!
//! `CHAOS_SEED=<n>` replays a run (the seed is printed, and named on failure);
//! `CHAOS_SCHEDULES=<n>` sets its length (default 100); `CHAOS_LONG_STALLS=1` adds 30 s API
//! stalls; `CHAOS_REPORT=<file>` writes the counts as JSON; `CHAOS_LOG=<filter>` (e.g.
//! `loco_discovery=debug`) prints the gateways' logs. RELIABILITY.md records a long run.

mod support;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use loco_discovery::consistency::ConsistencyCheck;
use loco_discovery::probe::ProbeConfig;
use loco_discovery::watch::WatchBackoff;
use loco_discovery::GatewayConfig;
use loco_discovery_core::slices::{mk_endpoint, mk_port, mk_slice};
use loco_discovery_sim::{ResourceKind, SimOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ORDINALS: u32 = 10;
const SLICES: [&str; 3] = ["emu-a", "emu-b", "emu-c"];
const REPLICAS: usize = 2;
/// How long a schedule may take to settle before it counts as a divergence.
const SETTLE: Duration = Duration::from_secs(25);

// ---- the plan ----------------------------------------------------------------------

struct Plan {
    seed: u64,
    schedules: usize,
    long_stalls: bool,
    report: Option<std::path::PathBuf>,
}

fn plan() -> Plan {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Plan {
        seed: var("CHAOS_SEED")
            .map(|s| s.parse().expect("CHAOS_SEED is a number"))
            .unwrap_or_else(rand::random),
        schedules: var("CHAOS_SCHEDULES")
            .map(|s| s.parse().expect("CHAOS_SCHEDULES is a number"))
            .unwrap_or(100),
        long_stalls: var("CHAOS_LONG_STALLS").is_some_and(|v| v != "0"),
        report: var("CHAOS_REPORT").map(Into::into),
    }
}

// ---- the cluster as the driver writes it ---------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Condition {
    Ready,
    Booting,
    Terminating,
}

/// What the driver last wrote: slice → ordinal → condition. An ordinal is in at most
/// one slice once a schedule's writes are done.
type Model = BTreeMap<&'static str, BTreeMap<u32, Condition>>;

fn ip(ordinal: u32) -> String {
    format!("127.0.0.{}", 20 + ordinal)
}

fn slice_json(name: &str, pods: &BTreeMap<u32, Condition>, health_port: u16) -> Value {
    let endpoints = pods
        .iter()
        .map(|(n, c)| {
            mk_endpoint(
                &format!("{SVC}-{n}"),
                &ip(*n),
                *c == Condition::Ready,
                *c == Condition::Terminating,
            )
        })
        .collect();
    let mut slice = mk_slice(NS, name, SVC, endpoints);
    slice.ports = Some(vec![
        mk_port("vnc", 5901),
        mk_port("health", i32::from(health_port)),
    ]);
    serde_json::to_value(slice).unwrap()
}

fn write_slice(cluster: &SimCluster, name: &str, pods: &BTreeMap<u32, Condition>, port: u16) {
    let store = cluster.store();
    let value = slice_json(name, pods, port);
    if store.get(ResourceKind::EndpointSlice, NS, name).is_some() {
        store
            .replace(ResourceKind::EndpointSlice, NS, name, value)
            .unwrap();
    } else {
        store
            .create(ResourceKind::EndpointSlice, NS, value)
            .unwrap();
    }
}

fn delete_slice(cluster: &SimCluster, name: &str) {
    let store = cluster.store();
    if store.get(ResourceKind::EndpointSlice, NS, name).is_some() {
        store.delete(ResourceKind::EndpointSlice, NS, name).unwrap();
    }
}

// ---- health servers: one per pod address, answers flipped by the driver --------------

struct HealthServers {
    port: u16,
    status: Arc<Vec<AtomicU16>>,
}

impl HealthServers {
    async fn start() -> Self {
        let status: Arc<Vec<AtomicU16>> =
            Arc::new((0..ORDINALS).map(|_| AtomicU16::new(200)).collect());
        'attempt: for _ in 0..20 {
            let first = TcpListener::bind(format!("{}:0", ip(0))).await.unwrap();
            let port = first.local_addr().unwrap().port();
            let mut listeners = vec![first];
            for n in 1..ORDINALS {
                match TcpListener::bind(format!("{}:{port}", ip(n))).await {
                    Ok(l) => listeners.push(l),
                    Err(_) => continue 'attempt,
                }
            }
            for (n, listener) in listeners.into_iter().enumerate() {
                use warp::Filter;
                let status = status.clone();
                let route = warp::path("health").map(move || {
                    warp::http::StatusCode::from_u16(status[n].load(Ordering::SeqCst)).unwrap()
                });
                tokio::spawn(warp::serve(route).incoming(listener).run());
            }
            return Self { port, status };
        }
        panic!("no common free port for the health servers");
    }

    fn failing(&self, ordinal: u32) -> bool {
        self.status[ordinal as usize].load(Ordering::SeqCst) != 200
    }

    fn flip(&self, ordinal: u32) {
        let s = &self.status[ordinal as usize];
        let next = if s.load(Ordering::SeqCst) == 200 {
            500
        } else {
            200
        };
        s.store(next, Ordering::SeqCst);
    }
}

// ---- gateway replicas ------------------------------------------------------------------

/// The replicas' current URLs; `None` while one is restarting.
type Registry = Arc<Mutex<Vec<Option<String>>>>;

fn replica_config(metadata: &std::path::Path) -> GatewayConfig {
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.watch_backoff = WatchBackoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    config.metadata_file = Some(metadata.to_owned());
    config.file_poll = Duration::from_millis(50);
    config.health_check = Some(ProbeConfig {
        timeout: Duration::from_secs(1),
        ..ProbeConfig::every(Duration::from_millis(150))
    });
    config.shutdown_grace = Duration::from_millis(500);
    config.consistency = ConsistencyCheck {
        interval: Duration::from_millis(300),
        recheck: Duration::from_millis(200),
    };
    config
}

async fn start_replica(api: SocketAddr, metadata: &std::path::Path, name: String) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let client =
        loco_discovery::kube_client(kube::Config::new(format!("http://{api}").parse().unwrap()))
            .unwrap();
    let task = tokio::spawn(tracing::Instrument::instrument(
        loco_discovery::run(replica_config(metadata), client, listener, stop.clone()),
        tracing::info_span!("replica", name),
    ));
    Gateway { addr, stop, task }
}

// ---- subscribers -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Transport {
    Sse,
    Ws,
}

/// One event as a subscriber sees it: type, id, data.
type Received = (String, String, Value);
type Events = Pin<Box<dyn Stream<Item = Received> + Send>>;

async fn open(
    transport: Transport,
    base: &str,
    query: &str,
    last_id: Option<&str>,
) -> Option<Events> {
    let mut query = query.to_owned();
    match transport {
        Transport::Sse => {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut request = client.get(format!("{base}/api/instances/stream?{query}"));
            if let Some(id) = last_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            let events = response
                .bytes_stream()
                .eventsource()
                .filter_map(|e| async move {
                    let e = e.ok()?;
                    let data = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                    Some((e.event, e.id, data))
                });
            Some(Box::pin(events))
        }
        Transport::Ws => {
            if let Some(id) = last_id {
                query = format!("{query}&lastEventId={id}");
            }
            let url = format!(
                "{}/api/instances/ws?{query}",
                base.replacen("http", "ws", 1)
            );
            let (socket, _) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_tungstenite::connect_async(url),
            )
            .await
            .ok()?
            .ok()?;
            let events = socket.filter_map(|m| async move {
                let text = match m.ok()? {
                    tokio_tungstenite::tungstenite::Message::Text(t) => t,
                    _ => return None,
                };
                let data: Value = serde_json::from_str(&text).ok()?;
                let kind = data["type"].as_str().unwrap_or_default().to_owned();
                let id = data["id"].as_str().unwrap_or_default().to_owned();
                Some((kind, id, data))
            });
            Some(Box::pin(events))
        }
    }
}

#[derive(Default)]
struct View {
    instances: BTreeMap<String, Value>,
    last_id: Option<String>,
    last_rv: Option<u64>,
    replica: usize,
    /// Connected (the response head arrived).
    live: bool,
    events: u64,
    resumes: u64,
    resets_on_resume: u64,
    violations: Vec<String>,
    /// The latest events as `replica:type:id`, to explain a violation.
    recent: std::collections::VecDeque<String>,
}

struct Subscriber {
    transport: Transport,
    query: &'static str,
    view: Arc<Mutex<View>>,
    control: mpsc::UnboundedSender<usize>,
}

/// The resourceVersion in an event id `<rv>[_<digest>].<n>`, when it is a watch event's.
fn resource_version_of(id: &str) -> Option<u64> {
    let (origin, _) = id.rsplit_once('.')?;
    origin.split('_').next()?.parse().ok()
}

fn counts(instances: &BTreeMap<String, Value>) -> Value {
    let mut c = BTreeMap::from([("total", 0), ("ready", 0), ("degraded", 0), ("notReady", 0)]);
    for i in instances.values() {
        *c.get_mut("total").unwrap() += 1;
        let key = match i["state"].as_str() {
            Some("ready") => "ready",
            Some("degraded") => "degraded",
            _ => "notReady",
        };
        *c.get_mut(key).unwrap() += 1;
    }
    json!(c)
}

fn apply(view: &mut View, strict: bool, (kind, id, data): Received, resumed_first: bool) {
    view.events += 1;
    view.recent.push_back(format!(
        "{}:{kind}:{id}{}",
        view.replica,
        if resumed_first { " (resumed)" } else { "" }
    ));
    if view.recent.len() > 12 {
        view.recent.pop_front();
    }
    let recent = view.recent.iter().cloned().collect::<Vec<_>>().join(" ");
    let key = data["key"].as_str().unwrap_or_default().to_owned();
    let mut violation = |what: String| {
        view.violations
            .push(format!("{kind} {id}: {what}; after {recent}"))
    };
    match kind.as_str() {
        "snapshot" | "reset" => {
            if !data["synced"].is_boolean() {
                violation("no synced flag".into());
            }
            if kind == "reset" && resumed_first {
                view.resets_on_resume += 1;
            }
            view.instances = data["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| (i["key"].as_str().unwrap_or_default().to_owned(), i.clone()))
                .collect();
            view.last_rv = None;
        }
        "reconnect" => return,
        "InstanceAdded" | "InstanceReady" | "InstanceNotReady" | "InstanceUpdated" => {
            let present = view.instances.contains_key(&key);
            if strict && kind == "InstanceAdded" && present {
                violation("added twice".into());
            }
            if strict && kind != "InstanceAdded" && !present {
                violation("for an instance never added".into());
            }
            view.instances.insert(key, data["instance"].clone());
        }
        "InstanceRemoved" => {
            if view.instances.remove(&key).is_none() && strict {
                violation("for an instance not there".into());
            }
        }
        other => violation(format!("unknown event type {other:?}")),
    }
    if let Some(rv) = resource_version_of(&id) {
        if view.last_rv.is_some_and(|last| rv < last) {
            view.violations.push(format!(
                "{kind} {id}: ids went back from {:?} without a reset; after {recent}",
                view.last_rv
            ));
        }
        view.last_rv = Some(rv);
    }
    if strict && kind.starts_with("Instance") && counts(&view.instances) != data["stats"] {
        view.violations.push(format!(
            "{kind} {id}: rebuilt counts {} but the event says {} (a gap)",
            counts(&view.instances),
            data["stats"]
        ));
    }
    if !id.is_empty() {
        view.last_id = Some(id);
    }
}

/// Runs one subscriber until the test ends: connects to its replica (resuming with its
/// last id), applies events, and moves to another replica when told or when its replica
/// goes away. A `strict` (unfiltered) subscriber requires every event to make sense on
/// its own; a filtered one sees instances enter its view by any delta.
fn spawn_subscriber(
    transport: Transport,
    query: &'static str,
    strict: bool,
    replica: usize,
    registry: Registry,
) -> Subscriber {
    let view = Arc::new(Mutex::new(View {
        replica,
        ..View::default()
    }));
    let (control, mut moves) = mpsc::unbounded_channel::<usize>();
    let shared = view.clone();
    tokio::spawn(async move {
        loop {
            let (replica, last_id) = {
                let v = shared.lock().unwrap();
                (v.replica, v.last_id.clone())
            };
            let url = registry.lock().unwrap()[replica].clone();
            let events = match url {
                Some(url) => open(transport, &url, query, last_id.as_deref()).await,
                None => None,
            };
            let Some(mut events) = events else {
                // That replica is restarting: try the other one.
                shared.lock().unwrap().replica = (replica + 1) % REPLICAS;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            {
                let mut v = shared.lock().unwrap();
                v.live = true;
                if last_id.is_some() {
                    v.resumes += 1;
                }
            }
            let mut first = true;
            loop {
                tokio::select! {
                    moved = moves.recv() => match moved {
                        Some(to) => {
                            let mut v = shared.lock().unwrap();
                            v.replica = to;
                            v.live = false;
                            break;
                        }
                        None => return,
                    },
                    event = events.next() => match event {
                        Some(event) => {
                            let mut v = shared.lock().unwrap();
                            apply(&mut v, strict, event, first && last_id.is_some());
                            first = false;
                        }
                        None => {
                            let mut v = shared.lock().unwrap();
                            v.live = false;
                            v.replica = (v.replica + 1) % REPLICAS;
                            break;
                        }
                    },
                }
            }
        }
    });
    Subscriber {
        transport,
        query,
        view,
        control,
    }
}

// ---- truth and checks ------------------------------------------------------------------

/// An instance without what each replica measures at its own time (when it saw a
/// transition, when and how fast its own probe answered): replicas that saw the same
/// changes agree on everything else, and a client that resumed on another replica keeps
/// the first replica's measurements.
fn comparable(instance: &Value) -> Value {
    let mut i = instance.clone();
    if let Some(health) = i["health"].as_object_mut() {
        health.remove("lastTransition");
    }
    if let Some(probe) = i["probe"].as_object_mut() {
        probe.remove("checkedAt");
        probe.remove("latencyMs");
        probe.remove("error");
    }
    i
}

/// The API's truth as a gateway must show it: id → (state, ip, name), read from the
/// stored objects, with the probe outcomes and the metadata file applied.
fn truth(
    cluster: &SimCluster,
    health: &HealthServers,
    names: &BTreeMap<u32, String>,
) -> BTreeMap<String, (String, String, String)> {
    let (slices, _) = cluster.store().list(ResourceKind::EndpointSlice, Some(NS));
    let mut truth = BTreeMap::new();
    for slice in slices {
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let pod = e["targetRef"]["name"].as_str().unwrap();
            let ordinal: u32 = pod.rsplit('-').next().unwrap().parse().unwrap();
            let c = &e["conditions"];
            let status = if c["terminating"] == true {
                "offline"
            } else if c["serving"] == false {
                "booting"
            } else if health.failing(ordinal) {
                "degraded"
            } else {
                "ready"
            };
            let name = names.get(&ordinal).cloned().unwrap_or_else(|| {
                if ordinal == 0 {
                    "Windows 98 - Game Server".into()
                } else {
                    format!("Windows 98 - Client {ordinal}")
                }
            });
            truth.insert(
                format!("instance-{ordinal}"),
                (status.to_owned(), ip(ordinal), name),
            );
        }
    }
    truth
}

fn shown(live: &Value) -> BTreeMap<String, (String, String, String)> {
    live["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&i["id"]),
                (s(&i["state"]), s(&i["addresses"]["podIP"]), s(&i["name"])),
            )
        })
        .collect()
}

async fn get_live(base: &str, query: &str) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("{base}/api/instances/live?{query}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// What is still wrong, or `None` when every replica and subscriber agrees with the API.
async fn disagreement(
    cluster: &SimCluster,
    health: &HealthServers,
    names: &BTreeMap<u32, String>,
    registry: &Registry,
    subscribers: &[Subscriber],
) -> Option<String> {
    let truth = truth(cluster, health, names);
    let urls = registry.lock().unwrap().clone();
    for (r, url) in urls.iter().enumerate() {
        let Some(url) = url else {
            return Some(format!("replica {r} is restarting"));
        };
        let Some(live) = get_live(url, "").await else {
            return Some(format!("replica {r} does not answer"));
        };
        if live["synced"] != true {
            return Some(format!("replica {r} is not synced"));
        }
        if shown(&live) != truth {
            return Some(format!(
                "replica {r} shows {:?}, the API says {truth:?}",
                shown(&live)
            ));
        }
    }
    for (n, sub) in subscribers.iter().enumerate() {
        let (replica, live, instances) = {
            let v = sub.view.lock().unwrap();
            (v.replica, v.live, v.instances.clone())
        };
        if !live {
            return Some(format!("subscriber {n} is not connected"));
        }
        let Some(url) = urls[replica].as_ref() else {
            return Some(format!("subscriber {n}'s replica is restarting"));
        };
        let expected: BTreeMap<String, Value> = get_live(url, sub.query)
            .await?
            .get("instances")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["key"].as_str().unwrap_or_default().to_owned(),
                    comparable(i),
                )
            })
            .collect();
        let instances: BTreeMap<String, Value> = instances
            .iter()
            .map(|(k, v)| (k.clone(), comparable(v)))
            .collect();
        if instances != expected {
            let differing = instances
                .iter()
                .find(|(k, v)| expected.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: rebuilt {v}, shown {:?}", expected.get(k)));
            return Some(format!(
                "subscriber {n} ({:?} {:?} on replica {replica}) rebuilt {:?}, its replica shows {:?}; {differing:?}",
                sub.transport,
                sub.query,
                instances.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>()
            ));
        }
    }
    None
}

// ---- the run ---------------------------------------------------------------------------

#[derive(Default, serde::Serialize)]
struct Report {
    seed: u64,
    schedules: usize,
    actions: usize,
    faults: BTreeMap<&'static str, usize>,
    churn: BTreeMap<&'static str, usize>,
    subscribers: usize,
    resumes: u64,
    resets_on_resume: u64,
    events: u64,
    divergences: usize,
    violations: usize,
    seconds: f64,
    slowest_settle_ms: u128,
    replicas_started: usize,
}

struct Chaos {
    rng: StdRng,
    cluster: SimCluster,
    api: SocketAddr,
    model: Model,
    backup: Option<Model>,
    health: HealthServers,
    names: BTreeMap<u32, String>,
    metadata: std::path::PathBuf,
    replicas: Vec<Option<Gateway>>,
    registry: Registry,
    subscribers: Vec<Subscriber>,
    report: Report,
    long_stalls: bool,
    /// What the current schedule did, for the failure message.
    log: Vec<String>,
}

fn sim_options() -> SimOptions {
    SimOptions {
        too_new_wait: Duration::from_millis(200),
        ..SimOptions::default()
    }
}

impl Chaos {
    fn write(&self, name: &'static str) {
        match self.model.get(name) {
            Some(pods) => write_slice(&self.cluster, name, pods, self.health.port),
            None => delete_slice(&self.cluster, name),
        }
    }

    fn holder(&self, ordinal: u32) -> Option<&'static str> {
        self.model
            .iter()
            .find(|(_, pods)| pods.contains_key(&ordinal))
            .map(|(name, _)| *name)
    }

    fn condition(&mut self) -> Condition {
        match self.rng.random_range(0..4) {
            0 => Condition::Booting,
            1 => Condition::Terminating,
            _ => Condition::Ready,
        }
    }

    fn churn(&mut self) {
        let ordinal = self.rng.random_range(0..ORDINALS);
        let kind = match self.rng.random_range(0..10) {
            0..=3 => {
                // A pod appears or changes condition, in the slice that holds it.
                let name = self
                    .holder(ordinal)
                    .unwrap_or(SLICES[self.rng.random_range(0..SLICES.len())]);
                let c = self.condition();
                self.model.entry(name).or_default().insert(ordinal, c);
                self.write(name);
                "condition"
            }
            4 | 5 => {
                // A pod moves to another slice: added there first, then removed here.
                let Some(from) = self.holder(ordinal) else {
                    return self.churn();
                };
                let to = SLICES[self.rng.random_range(0..SLICES.len())];
                if to == from {
                    return self.churn();
                }
                let c = self.model[from][&ordinal];
                self.model.entry(to).or_default().insert(ordinal, c);
                self.write(to);
                self.model.get_mut(from).unwrap().remove(&ordinal);
                self.write(from);
                "move"
            }
            6 => {
                let Some(name) = self.holder(ordinal) else {
                    return self.churn();
                };
                if self.rng.random_bool(0.5) {
                    self.model.remove(name);
                } else {
                    self.model.get_mut(name).unwrap().remove(&ordinal);
                }
                self.write(name);
                "delete"
            }
            7 | 8 => {
                let rng = &mut self.rng;
                self.names = (0..ORDINALS)
                    .filter(|_| rng.random_bool(0.3))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|n| (n, format!("Station {n}-{}", rng.random_range(0..100))))
                    .collect();
                let text: String = self
                    .names
                    .iter()
                    .map(|(n, name)| format!("\"{n}\": {{name: \"{name}\"}}\n"))
                    .collect();
                std::fs::write(
                    &self.metadata,
                    if text.is_empty() { "{}\n".into() } else { text },
                )
                .unwrap();
                "metadata"
            }
            _ => {
                self.health.flip(ordinal);
                "probe"
            }
        };
        *self.report.churn.entry(kind).or_default() += 1;
        tracing::info!(kind, ordinal, "chaos churn");
        self.log.push(format!("{kind} {ordinal}"));
    }

    async fn fault(&mut self) {
        let kind = match self.rng.random_range(0..16) {
            0..=2 => {
                self.cluster.sim.faults.cut_watches();
                "watch_cut"
            }
            3 | 4 => {
                self.cluster.sim.faults.forget_history();
                self.cluster.sim.faults.cut_watches();
                "forced_410"
            }
            5..=7 => {
                let code = [500, 503][self.rng.random_range(0..2)];
                let ms = self.rng.random_range(100..800);
                self.cluster
                    .sim
                    .faults
                    .fail_requests(code, Duration::from_millis(ms));
                self.cluster.sim.faults.cut_watches();
                "5xx_burst"
            }
            8 => {
                let stall = if self.long_stalls && self.rng.random_bool(0.2) {
                    Duration::from_secs(30)
                } else {
                    Duration::from_millis(self.rng.random_range(200..1500))
                };
                self.cluster.sim.faults.stall(stall);
                "api_stall"
            }
            9 | 10 => {
                // kill -9, and a new API server on the same address with a restored
                // backup (an older resourceVersion) or nothing at all (reset).
                let older = self.backup.is_some() && self.rng.random_bool(0.5);
                let stand_in = SimCluster::start().await;
                std::mem::replace(&mut self.cluster, stand_in).kill().await;
                let fresh = SimCluster::start_at(self.api, sim_options()).await;
                std::mem::replace(&mut self.cluster, fresh).kill().await;
                self.model = if older {
                    self.backup.clone().unwrap()
                } else {
                    Model::new()
                };
                for name in SLICES {
                    if self.model.contains_key(name) {
                        self.write(name);
                    }
                }
                if older {
                    "api_restart_older"
                } else {
                    "api_restart_reset"
                }
            }
            11 | 12 => {
                let r = self.rng.random_range(0..REPLICAS);
                self.registry.lock().unwrap()[r] = None;
                if let Some(gateway) = self.replicas[r].take() {
                    drop(gateway);
                }
                self.report.replicas_started += 1;
                let name = format!("{r}.{}", self.report.replicas_started);
                let gateway = start_replica(self.api, &self.metadata, name).await;
                self.registry.lock().unwrap()[r] = Some(gateway.url(""));
                self.replicas[r] = Some(gateway);
                "replica_restart"
            }
            _ => {
                let n = self.rng.random_range(0..self.subscribers.len());
                let to = self.rng.random_range(0..REPLICAS);
                let _ = self.subscribers[n].control.send(to);
                "subscriber_resume"
            }
        };
        *self.report.faults.entry(kind).or_default() += 1;
        tracing::info!(kind, "chaos fault");
        self.log.push(kind.to_owned());
    }

    /// Waits until faults are over and everything agrees, or records a divergence.
    async fn settle(&mut self, schedule: usize) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let faults = self.cluster.sim.faults.state();
            let quiet = faults.failing().is_none() && faults.stalled_until().is_none();
            let wrong = if quiet {
                disagreement(
                    &self.cluster,
                    &self.health,
                    &self.names,
                    &self.registry,
                    &self.subscribers,
                )
                .await
            } else {
                Some("a fault is still on".into())
            };
            let Some(wrong) = wrong else {
                let took = started.elapsed().as_millis();
                self.report.slowest_settle_ms = self.report.slowest_settle_ms.max(took);
                return Ok(());
            };
            let limit = SETTLE
                + if self.long_stalls {
                    Duration::from_secs(31)
                } else {
                    Duration::ZERO
                };
            if started.elapsed() > limit {
                self.report.divergences += 1;
                let (slices, rv) = self
                    .cluster
                    .store()
                    .list(ResourceKind::EndpointSlice, Some(NS));
                let stored: Vec<String> = slices
                    .iter()
                    .map(|s| {
                        format!(
                            "{}@{}:{:?}",
                            s["metadata"]["name"].as_str().unwrap_or_default(),
                            s["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default(),
                            s["endpoints"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|e| e["targetRef"]["name"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned())
                                .collect::<Vec<_>>()
                        )
                    })
                    .collect();
                return Err(format!(
                    "schedule {schedule}: {wrong}; the API holds (at {rv}) {stored:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_subscribers_always_converge_to_the_api_truth() {
    let plan = plan();
    if std::env::var_os("CHAOS_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("CHAOS_LOG").unwrap(),
            ))
            .with_test_writer()
            .try_init();
    }
    println!(
        "chaos: seed {} ({} schedules); replay with CHAOS_SEED={} cargo test --test chaos -- --nocapture",
        plan.seed, plan.schedules, plan.seed
    );
    let started = Instant::now();
    let cluster = SimCluster::start_with(sim_options()).await;
    let api = cluster.addr;
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yaml");
    std::fs::write(&metadata, "{}\n").unwrap();
    let health = HealthServers::start().await;
    let registry: Registry = Arc::new(Mutex::new(vec![None; REPLICAS]));
    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        let gateway = start_replica(api, &metadata, format!("{r}.0")).await;
        registry.lock().unwrap()[r] = Some(gateway.url(""));
        replicas.push(Some(gateway));
    }
    let kinds = [
        (Transport::Sse, "", true),
        (Transport::Ws, "", true),
        (Transport::Sse, "status=ready", false),
        (Transport::Ws, "status=booting,offline", false),
        (Transport::Sse, "service=loco-loco-emulator", true),
        (Transport::Ws, "namespace=loco", true),
    ];
    let subscribers = kinds
        .iter()
        .enumerate()
        .map(|(n, (t, q, strict))| spawn_subscriber(*t, q, *strict, n % REPLICAS, registry.clone()))
        .collect::<Vec<_>>();
    let mut chaos = Chaos {
        rng: StdRng::seed_from_u64(plan.seed),
        cluster,
        api,
        model: Model::new(),
        backup: None,
        health,
        names: BTreeMap::new(),
        metadata,
        replicas,
        registry,
        report: Report {
            seed: plan.seed,
            subscribers: subscribers.len(),
            ..Report::default()
        },
        subscribers,
        long_stalls: plan.long_stalls,
        log: Vec::new(),
    };
    let mut failure = None;
    for schedule in 0..plan.schedules {
        let actions = chaos.rng.random_range(1..=4);
        chaos.log.clear();
        tracing::info!(schedule, actions, "chaos schedule");
        for _ in 0..actions {
            if chaos.rng.random_bool(0.6) {
                chaos.churn();
            } else {
                chaos.fault().await;
            }
        }
        chaos.report.actions += actions;
        if chaos.rng.random_bool(0.1) {
            chaos.backup = Some(chaos.model.clone());
        }
        let settled = chaos.settle(schedule).await;
        chaos.report.schedules += 1;
        let violations: Vec<String> = chaos
            .subscribers
            .iter()
            .flat_map(|s| s.view.lock().unwrap().violations.clone())
            .collect();
        if let Err(wrong) = settled {
            failure = Some(format!("{wrong} (after {:?})", chaos.log));
            break;
        }
        if !violations.is_empty() {
            failure = Some(format!("schedule {schedule}: {violations:?}"));
            break;
        }
    }
    for s in &chaos.subscribers {
        let v = s.view.lock().unwrap();
        chaos.report.resumes += v.resumes;
        chaos.report.resets_on_resume += v.resets_on_resume;
        chaos.report.events += v.events;
        chaos.report.violations += v.violations.len();
    }
    chaos.report.seconds = started.elapsed().as_secs_f64();
    let report = serde_json::to_string_pretty(&chaos.report).unwrap();
    println!("chaos report:\n{report}");
    if let Some(path) = &plan.report {
        std::fs::write(path, &report).unwrap();
    }
    if let Some(failure) = failure {
        panic!(
            "chaos divergence with seed {} (replay: CHAOS_SEED={} cargo test --test chaos -- --nocapture): {failure}",
            plan.seed, plan.seed
        );
    }
    assert_eq!(chaos.report.divergences, 0);
    assert_eq!(chaos.report.violations, 0);
    assert!(chaos.report.schedules >= plan.schedules);
}
