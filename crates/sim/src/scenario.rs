//! The lego-loco emulator StatefulSet, simulated: pods boot in order, become ready, now
//! and then fail readiness and recover, the set scales down and up, and rolling updates
//! replace pods one by one (terminating → removed → added → ready).
//!
//! [`EmulatorCluster`] is the pure story, reproducible from a seed; [`run_scenario`]
//! writes it into the simulated API as the EndpointSlice controller would: one slice per
//! 100 endpoints, labelled as the slices of a headless Service, plus the Service's core/v1
//! Endpoints object. Only objects whose endpoints change are written, and only they get a
//! new `last-change-trigger-time` annotation (the time of the pod change): the scenario is
//! the only writer of that annotation, as the controllers are in a cluster.

use super::clock;
use super::store::{ResourceKind, Store, StoreError, TRIGGER_TIME_ANNOTATION};
use chrono::{DateTime, Utc};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use loco_discovery_core::dns::HEADLESS_LABEL;
use loco_discovery_core::slices::{mk_endpoint, mk_slice};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The most endpoints the controller packs into one slice by default.
const ENDPOINTS_PER_SLICE: usize = 100;

/// Steps a StatefulSet [already up](EmulatorCluster::already_up) stays steady before the
/// story starts.
pub const QUIET_STEPS: u32 = 10;

/// What the scenario simulates.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub namespace: String,
    pub service: String,
    pub replicas: u32,
    pub seed: u64,
    pub pace: Duration,
    /// Like the lego-loco chart: `ready` is true for every endpoint, only `serving` tells.
    pub publish_not_ready_addresses: bool,
}

/// Where a pod is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Running, readiness probe not passing yet; ready after `steps` more steps.
    Booting {
        steps: u32,
    },
    Ready,
    /// Failing its readiness probe; recovers after `steps` more steps.
    Unready {
        steps: u32,
    },
    /// Being deleted; gone after `steps` more steps.
    Terminating {
        steps: u32,
    },
}

#[derive(Clone, Debug)]
struct Pod {
    ip: String,
    uid: String,
    revision: u32,
    phase: Phase,
}

/// The emulator StatefulSet's pods, advanced one step at a time.
#[derive(Debug)]
pub struct EmulatorCluster {
    config: ScenarioConfig,
    rng: StdRng,
    pods: BTreeMap<u32, Pod>,
    /// Replicas the StatefulSet currently wants.
    desired: u32,
    /// The template revision pods should run; older pods get replaced one at a time.
    revision: u32,
    next_ip: u32,
    /// Random suffix of the slice names, like the controller's `generateName`.
    slice_suffix: String,
    /// When the pods last changed in a way the endpoints show: the trigger time the
    /// controller writes with the objects that change.
    last_change: Option<DateTime<Utc>>,
    /// Steps left before anything happens to the pods (a StatefulSet already up stays
    /// steady for a moment).
    quiet_steps: u32,
}

impl EmulatorCluster {
    pub fn new(config: ScenarioConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        let slice_suffix = (0..5)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect();
        Self {
            desired: config.replicas,
            config,
            rng,
            pods: BTreeMap::new(),
            revision: 1,
            next_ip: 0,
            slice_suffix,
            last_change: None,
            quiet_steps: 0,
        }
    }

    /// The StatefulSet already up: every replica created in ordinal order and ready, as
    /// after its ordered start-up has run its course. It stays so for the first
    /// [`QUIET_STEPS`] steps, then the story goes on. The pods came up at `now`: the trigger
    /// time of the first objects written.
    pub fn already_up(config: ScenarioConfig, now: DateTime<Utc>) -> Self {
        let mut cluster = Self::new(config);
        cluster.quiet_steps = QUIET_STEPS;
        for ordinal in 0..cluster.desired {
            let mut pod = cluster.new_pod();
            pod.phase = Phase::Ready;
            cluster.pods.insert(ordinal, pod);
        }
        if !cluster.pods.is_empty() {
            cluster.last_change = Some(now);
        }
        cluster
    }

    pub fn config(&self) -> &ScenarioConfig {
        &self.config
    }

    fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.config.service)
    }

    fn new_pod(&mut self) -> Pod {
        self.next_ip += 1;
        let n = self.next_ip;
        let steps = self.rng.random_range(1..=3);
        Pod {
            ip: format!("10.244.{}.{}", n / 250, n % 250 + 2),
            uid: format!("{:08x}-sim-{n}", self.config.seed as u32),
            revision: self.revision,
            phase: Phase::Booting { steps },
        }
    }

    /// Advances the story by one step. Returns whether anything visible changed.
    pub fn step(&mut self, now: DateTime<Utc>) -> bool {
        let mut changed = self.advance_pods();
        changed |= self.random_event();
        changed |= self.reconcile();
        if changed {
            self.last_change = Some(now);
        }
        changed
    }

    /// Counts down every pod's current phase.
    fn advance_pods(&mut self) -> bool {
        let mut changed = false;
        let mut gone = Vec::new();
        for (ordinal, pod) in self.pods.iter_mut() {
            let next = match pod.phase {
                Phase::Booting { steps: 0 } | Phase::Unready { steps: 0 } => Some(Phase::Ready),
                Phase::Booting { steps } => Some(Phase::Booting { steps: steps - 1 }),
                Phase::Unready { steps } => Some(Phase::Unready { steps: steps - 1 }),
                Phase::Terminating { steps: 0 } => None,
                Phase::Terminating { steps } => Some(Phase::Terminating { steps: steps - 1 }),
                Phase::Ready => Some(Phase::Ready),
            };
            match next {
                None => gone.push(*ordinal),
                Some(phase) => {
                    let visible = phase_flags(phase) != phase_flags(pod.phase);
                    pod.phase = phase;
                    changed |= visible;
                }
            }
        }
        for ordinal in gone {
            self.pods.remove(&ordinal);
            changed = true;
        }
        changed
    }

    /// Now and then: a readiness failure, a scale change or a rolling update.
    fn random_event(&mut self) -> bool {
        if self.quiet_steps > 0 {
            self.quiet_steps -= 1;
            return false;
        }
        let roll: f64 = self.rng.random();
        let ready: Vec<u32> = self
            .pods
            .iter()
            .filter(|(_, p)| p.phase == Phase::Ready)
            .map(|(o, _)| *o)
            .collect();
        if roll < 0.12 && !ready.is_empty() {
            let ordinal = ready[self.rng.random_range(0..ready.len())];
            let steps = self.rng.random_range(1..=4);
            if let Some(pod) = self.pods.get_mut(&ordinal) {
                pod.phase = Phase::Unready { steps };
            }
            return true;
        }
        let settled = self.pods.len() as u32 == self.desired
            && self.pods.values().all(|p| p.revision == self.revision);
        if roll < 0.16 && settled && self.config.replicas > 1 {
            let low = self.config.replicas.saturating_sub(3).max(1);
            self.desired = if self.desired < self.config.replicas {
                self.config.replicas
            } else {
                self.rng.random_range(low..self.config.replicas)
            };
            debug!(desired = self.desired, "scenario scales the StatefulSet");
            return false;
        }
        if roll < 0.18 && settled && self.desired == self.config.replicas {
            self.revision += 1;
            debug!(revision = self.revision, "scenario starts a rolling update");
        }
        false
    }

    /// What the StatefulSet controller does (OrderedReady): create the next pod once all
    /// lower ones are ready, delete from the highest ordinal down, replace outdated pods
    /// one at a time from the highest ordinal down.
    fn reconcile(&mut self) -> bool {
        if self
            .pods
            .values()
            .any(|p| matches!(p.phase, Phase::Terminating { .. }))
        {
            return false;
        }
        let count = self.pods.len() as u32;
        if count > self.desired {
            let highest = *self.pods.keys().next_back().expect("count > 0");
            return self.terminate(highest);
        }
        let all_ready = self.pods.values().all(|p| p.phase == Phase::Ready);
        if count < self.desired {
            let missing = (0..self.desired).find(|o| !self.pods.contains_key(o));
            if let Some(ordinal) = missing {
                if all_ready {
                    let pod = self.new_pod();
                    self.pods.insert(ordinal, pod);
                    return true;
                }
            }
            return false;
        }
        if all_ready {
            let outdated = self
                .pods
                .iter()
                .rev()
                .find(|(_, p)| p.revision != self.revision)
                .map(|(o, _)| *o);
            if let Some(ordinal) = outdated {
                return self.terminate(ordinal);
            }
        }
        false
    }

    fn terminate(&mut self, ordinal: u32) -> bool {
        let steps = self.rng.random_range(1..=2);
        match self.pods.get_mut(&ordinal) {
            Some(pod) => {
                pod.phase = Phase::Terminating { steps };
                true
            }
            None => false,
        }
    }

    /// The EndpointSlices the controller would write for the current pods.
    pub fn slices(&self) -> Vec<EndpointSlice> {
        let endpoints: Vec<(&u32, &Pod)> = self.pods.iter().collect();
        let chunks: Vec<&[(&u32, &Pod)]> = if endpoints.is_empty() {
            vec![&[]]
        } else {
            endpoints.chunks(ENDPOINTS_PER_SLICE).collect()
        };
        chunks
            .into_iter()
            .enumerate()
            .map(|(n, chunk)| {
                let name = match n {
                    0 => format!("{}-{}", self.config.service, self.slice_suffix),
                    n => format!("{}-{}{n}", self.config.service, self.slice_suffix),
                };
                let list = chunk
                    .iter()
                    .map(|(ordinal, pod)| {
                        let (serving, terminating) = phase_flags(pod.phase);
                        let pod_name = self.pod_name(**ordinal);
                        let mut e = mk_endpoint(&pod_name, &pod.ip, serving, terminating);
                        if self.config.publish_not_ready_addresses {
                            if let Some(c) = e.conditions.as_mut() {
                                c.ready = Some(true);
                            }
                        }
                        let node = **ordinal % 3;
                        e.node_name = Some(format!("loco-node-{node}"));
                        e.zone = Some(format!("zone-{}", ["a", "b", "c"][node as usize]));
                        if let Some(r) = e.target_ref.as_mut() {
                            r.namespace = Some(self.config.namespace.clone());
                            r.uid = Some(pod.uid.clone());
                        }
                        e
                    })
                    .collect();
                let mut slice = mk_slice(&self.config.namespace, &name, &self.config.service, list);
                slice.metadata.annotations = self
                    .trigger_time()
                    .map(|t| BTreeMap::from([(TRIGGER_TIME_ANNOTATION.to_owned(), t)]));
                slice
            })
            .collect()
    }

    /// The `last-change-trigger-time` annotation's value: the time of the latest pod change,
    /// as Go's RFC 3339 with nanoseconds writes it.
    fn trigger_time(&self) -> Option<String> {
        self.last_change.map(clock::rfc3339_nano)
    }

    /// The Service's core/v1 Endpoints object, as the Endpoints controller would write it.
    pub fn endpoints_object(&self) -> Value {
        let address = |ordinal: &u32, pod: &Pod| {
            json!({
                "ip": pod.ip,
                "hostname": self.pod_name(*ordinal),
                "nodeName": format!("loco-node-{}", ordinal % 3),
                "targetRef": {"kind": "Pod", "name": self.pod_name(*ordinal),
                              "namespace": self.config.namespace, "uid": pod.uid},
            })
        };
        let (ready, not_ready): (Vec<_>, Vec<_>) = self
            .pods
            .iter()
            .partition(|(_, p)| phase_flags(p.phase) == (true, false));
        let mut subset = json!({
            "ports": [{"name": "vnc", "port": 5901, "protocol": "TCP"},
                      {"name": "health", "port": 8080, "protocol": "TCP"}],
        });
        if !ready.is_empty() {
            subset["addresses"] = ready.iter().map(|(o, p)| address(o, p)).collect();
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = not_ready.iter().map(|(o, p)| address(o, p)).collect();
        }
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": self.config.service, "namespace": self.config.namespace,
                         "labels": {"app.kubernetes.io/component": "emulator",
                                    "app.kubernetes.io/part-of": "lego-loco-cluster",
                                    HEADLESS_LABEL: ""}},
        });
        if !self.pods.is_empty() {
            object["subsets"] = json!([subset]);
        }
        if let Some(trigger) = self.trigger_time() {
            object["metadata"]["annotations"] = json!({TRIGGER_TIME_ANNOTATION: trigger});
        }
        object
    }

    /// The pods' (serving, terminating) flags by pod name, for tests and logs.
    pub fn pod_states(&self) -> BTreeMap<String, (bool, bool)> {
        self.pods
            .iter()
            .map(|(o, p)| (self.pod_name(*o), phase_flags(p.phase)))
            .collect()
    }
}

/// What a phase looks like on the endpoint: (serving, terminating).
fn phase_flags(phase: Phase) -> (bool, bool) {
    match phase {
        Phase::Ready => (true, false),
        Phase::Booting { .. } | Phase::Unready { .. } => (false, false),
        Phase::Terminating { .. } => (false, true),
    }
}

/// Writes `desired` into the store as the controller would: create what is missing,
/// replace what differs, delete slices of the service that are no longer wanted. The
/// namespace is created first if it does not exist (the cluster's setup).
pub fn sync_into_store(store: &Store, cluster: &EmulatorCluster) -> Result<(), StoreError> {
    let namespace = cluster.config.namespace.as_str();
    store.ensure_namespace(namespace);
    let mut wanted = BTreeMap::new();
    for slice in cluster.slices() {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(&slice).expect("EndpointSlice serializes");
        wanted.insert(name, value);
    }
    let (existing, _) = store.list(ResourceKind::EndpointSlice, Some(namespace));
    for object in existing {
        let labels = &object["metadata"]["labels"];
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if labels[loco_discovery_core::index::SERVICE_NAME_LABEL] == cluster.config.service.as_str()
            && !wanted.contains_key(name)
        {
            store.delete(ResourceKind::EndpointSlice, namespace, name)?;
        }
    }
    for (name, value) in wanted {
        write_if_changed(store, ResourceKind::EndpointSlice, namespace, &name, value)?;
    }
    let endpoints = cluster.endpoints_object();
    write_if_changed(
        store,
        ResourceKind::Endpoints,
        namespace,
        &cluster.config.service,
        endpoints,
    )
}

/// Creates or replaces one object unless the stored one already says the same.
fn write_if_changed(
    store: &Store,
    kind: ResourceKind,
    namespace: &str,
    name: &str,
    value: Value,
) -> Result<(), StoreError> {
    match store.get(kind, namespace, name) {
        None => store.create(kind, namespace, value).map(drop),
        Some(current) => {
            let same = ["endpoints", "ports", "subsets", "addressType"]
                .iter()
                .all(|k| current.get(*k) == value.get(*k));
            if same {
                Ok(())
            } else {
                store.replace(kind, namespace, name, value).map(drop)
            }
        }
    }
}

/// Runs the scenario against `store` at the configured pace until `cancel` fires, from an
/// empty StatefulSet (pods boot one by one).
pub async fn run_scenario(store: Store, config: ScenarioConfig, cancel: CancellationToken) {
    let ticker = tokio::time::interval(config.pace);
    play(store, EmulatorCluster::new(config), ticker, cancel).await
}

/// Runs the scenario with the StatefulSet [already up](EmulatorCluster::already_up): every
/// pod is written ready at once, and the story starts one pace later.
pub async fn run_scenario_already_up(
    store: Store,
    config: ScenarioConfig,
    cancel: CancellationToken,
) {
    let cluster = EmulatorCluster::already_up(config.clone(), Utc::now());
    if let Err(error) = sync_into_store(&store, &cluster) {
        warn!(%error, "scenario could not write to the simulated API");
    }
    let start = tokio::time::Instant::now() + config.pace;
    let ticker = tokio::time::interval_at(start, config.pace);
    play(store, cluster, ticker, cancel).await
}

async fn play(
    store: Store,
    mut cluster: EmulatorCluster,
    mut ticker: tokio::time::Interval,
    cancel: CancellationToken,
) {
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if cluster.step(Utc::now()) {
            if let Err(error) = sync_into_store(&store, &cluster) {
                warn!(%error, "scenario could not write to the simulated API");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(replicas: u32, seed: u64) -> ScenarioConfig {
        ScenarioConfig {
            namespace: "loco".into(),
            service: "loco-loco-emulator".into(),
            replicas,
            seed,
            pace: Duration::from_millis(10),
            publish_not_ready_addresses: true,
        }
    }

    fn t(step: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + step, 0).unwrap()
    }

    fn story(seed: u64, steps: i64) -> Vec<BTreeMap<String, (bool, bool)>> {
        let mut cluster = EmulatorCluster::new(config(9, seed));
        (0..steps)
            .map(|s| {
                cluster.step(t(s));
                cluster.pod_states()
            })
            .collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_story() {
        assert_eq!(story(7, 300), story(7, 300));
        assert_ne!(story(7, 300), story(8, 300));
    }

    #[test]
    fn pods_boot_in_ordinal_order_until_all_replicas_are_ready() {
        let mut cluster = EmulatorCluster::new(config(9, 1));
        let mut first_seen = Vec::new();
        for s in 0..200 {
            cluster.step(t(s));
            for name in cluster.pod_states().keys() {
                if !first_seen.contains(name) {
                    first_seen.push(name.clone());
                }
            }
            if first_seen.len() == 9 {
                break;
            }
        }
        let expected: Vec<String> = (0..9).map(|n| format!("loco-loco-emulator-{n}")).collect();
        assert_eq!(first_seen, expected);
    }

    #[test]
    fn a_long_story_has_every_kind_of_change() {
        let mut cluster = EmulatorCluster::new(config(9, 3));
        let (mut unready, mut terminating, mut fewer, mut replaced) = (false, false, false, false);
        let mut ips = BTreeMap::new();
        for s in 0..2000 {
            cluster.step(t(s));
            let states = cluster.pod_states();
            let full = states.len() == 9;
            for flags in states.values() {
                unready |= full && *flags == (false, false);
                terminating |= *flags == (false, true);
            }
            fewer |= s > 100 && states.len() < 9 && !states.values().any(|f| f.1);
            for (ordinal, pod) in &cluster.pods {
                if let Some(old) = ips.insert(*ordinal, pod.ip.clone()) {
                    replaced |= old != pod.ip;
                }
            }
        }
        assert!(unready, "no readiness failure");
        assert!(terminating, "no termination");
        assert!(fewer, "no scale down");
        assert!(replaced, "no pod replaced");
    }

    #[test]
    fn a_statefulset_already_up_has_every_replica_ready_then_goes_on_with_the_story() {
        let mut cluster = EmulatorCluster::already_up(config(9, 11), t(0));
        let states = cluster.pod_states();
        let expected: Vec<String> = (0..9).map(|n| format!("loco-loco-emulator-{n}")).collect();
        assert_eq!(states.keys().cloned().collect::<Vec<_>>(), expected);
        assert!(states.values().all(|flags| *flags == (true, false)));
        assert_eq!(cluster.slices()[0].endpoints.len(), 9);
        for s in 1..=i64::from(QUIET_STEPS) {
            assert!(!cluster.step(t(s)), "steady for the first steps");
        }
        let mut changed = false;
        for s in 100..300 {
            changed |= cluster.step(t(s));
        }
        assert!(changed, "the story goes on");
    }

    #[test]
    fn slices_follow_the_controller_shape() {
        let mut cluster = EmulatorCluster::new(config(3, 5));
        for s in 0..50 {
            cluster.step(t(s));
        }
        let slices = cluster.slices();
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "loco-loco-emulator");
        assert!(slice
            .metadata
            .name
            .as_ref()
            .unwrap()
            .starts_with("loco-loco-emulator-"));
        let annotation = &slice.metadata.annotations.as_ref().unwrap()[TRIGGER_TIME_ANNOTATION];
        assert!(
            DateTime::parse_from_rfc3339(annotation).is_ok(),
            "{annotation}"
        );
        for e in &slice.endpoints {
            assert_eq!(e.conditions.as_ref().unwrap().ready, Some(true));
        }
    }

    /// The object's resourceVersion and trigger-time annotation.
    fn version_and_trigger(store: &Store, kind: ResourceKind, name: &str) -> (Value, Value) {
        let object = store.get(kind, "loco", name).unwrap_or_default();
        (
            object["metadata"]["resourceVersion"].clone(),
            object["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION].clone(),
        )
    }

    #[test]
    fn only_objects_whose_endpoints_change_get_a_new_trigger_time() {
        let store = Store::new(1000);
        let mut cluster = EmulatorCluster::new(config(3, 5));
        let objects = [
            (
                ResourceKind::EndpointSlice,
                format!("loco-loco-emulator-{}", cluster.slice_suffix),
            ),
            (ResourceKind::Endpoints, "loco-loco-emulator".to_owned()),
        ];
        let (mut quiet, mut written) = (0, 0);
        for s in 1..300 {
            let before = objects
                .clone()
                .map(|(k, n)| version_and_trigger(&store, k, &n));
            cluster.step(t(s));
            sync_into_store(&store, &cluster).unwrap();
            let after = objects
                .clone()
                .map(|(k, n)| version_and_trigger(&store, k, &n));
            for ((b, a), (kind, _)) in before.iter().zip(&after).zip(&objects) {
                if a.0 == b.0 {
                    quiet += 1;
                    assert_eq!(a.1, b.1, "step {s}: {kind:?} not written");
                } else {
                    written += 1;
                    assert_eq!(a.1, clock::rfc3339_nano(t(s)), "step {s}: {kind:?} written");
                }
            }
        }
        assert!(quiet > 0 && written > 0, "quiet {quiet}, written {written}");
    }

    #[test]
    fn many_replicas_spread_over_slices_of_at_most_100() {
        let mut cluster = EmulatorCluster::new(config(250, 5));
        for s in 0..2000 {
            cluster.step(t(s));
        }
        let slices = cluster.slices();
        assert!(slices.len() >= 2);
        assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
    }
}
