//! `EndpointIndex`: EndpointSlices in, instances and typed deltas out.
//!
//! Pure and synchronous: no I/O, no clock (the caller passes `now`), no logging. Problems
//! found in an object come back as [`Anomaly`] values for the caller to log and count.
//!
//! Instances are merged per pod across every slice of the service, never slice by slice:
//! endpoints move between slices and dual-stack pods sit in two slices, so a per-slice
//! diff would report false remove/add pairs. But a pod's merged state depends only on the
//! slices that hold it (its ordinal comes from its own name), so a slice event recomputes
//! only the pods that slice held before or holds now: O(slice size) per event, not
//! O(service size).

use crate::dns::{host_port, DnsNaming, EndpointName, HEADLESS_LABEL};
use crate::metadata::MetadataMap;
use crate::model::{
    Addresses, Delta, DeltaKind, Health, Instance, KubernetesInfo, Probe, ServiceRef, Status,
    TargetRef,
};
use chrono::{DateTime, Utc};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Settings that shape the instances built from endpoints.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// How cluster DNS names endpoints (`dnsName`).
    pub dns: DnsNaming,
    /// The VNC port used in `vncUrl` when the slice names no `vnc` port.
    pub default_vnc_port: i32,
    /// The health port used in `healthUrl` when the slice names no `health` port.
    pub default_health_port: i32,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            dns: DnsNaming::default(),
            default_vnc_port: 5901,
            default_health_port: 8080,
        }
    }
}

/// Why part of an object was unusable or unusual. Some reasons lose information (part of
/// the object is skipped or merged away, see [`AnomalyReason::loses_information`]); the
/// others are normal shapes the index handles in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnomalyReason {
    /// The slice has no name; it cannot be tracked and is skipped.
    MissingName,
    /// The slice lacks `kubernetes.io/service-name`; it belongs to no service and is skipped.
    MissingServiceLabel,
    /// `addressType` is FQDN (deprecated, ignored by kube-proxy too) or unknown; skipped.
    UnsupportedAddressType,
    /// An endpoint with no address; the endpoint is skipped.
    NoAddresses,
    /// An endpoint with no `targetRef` (the API server's own `kubernetes` slice, slices
    /// written by hand); identified by its hostname or address instead.
    NoTargetRef,
    /// Several ports without a name; the first one is kept as `default`.
    UnnamedPort,
    /// The pod name ends in no ordinal (a Deployment's pod); the instance id is the pod name.
    NoOrdinal,
    /// The same pod twice in one slice; the entries are merged.
    DuplicateEndpoint,
    /// An address that is not an IP of the slice's address type (`999.1.1.1`, a URL, an
    /// IPv6 address in an IPv4 slice); it is dropped, never published nor probed.
    InvalidAddress,
}

impl AnomalyReason {
    /// A stable snake_case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyReason::MissingName => "missing_name",
            AnomalyReason::MissingServiceLabel => "missing_service_label",
            AnomalyReason::UnsupportedAddressType => "unsupported_address_type",
            AnomalyReason::NoAddresses => "no_addresses",
            AnomalyReason::NoTargetRef => "no_target_ref",
            AnomalyReason::UnnamedPort => "unnamed_port",
            AnomalyReason::NoOrdinal => "no_ordinal",
            AnomalyReason::DuplicateEndpoint => "duplicate_endpoint",
            AnomalyReason::InvalidAddress => "invalid_address",
        }
    }

    /// Whether something in the object is lost: a slice or endpoint skipped, ports dropped,
    /// entries merged. Those deserve a warning and a count; the rest (a pod without an
    /// ordinal, an endpoint without a `targetRef`) are normal objects, handled in full.
    pub fn loses_information(self) -> bool {
        match self {
            AnomalyReason::MissingName
            | AnomalyReason::MissingServiceLabel
            | AnomalyReason::UnsupportedAddressType
            | AnomalyReason::NoAddresses
            | AnomalyReason::UnnamedPort
            | AnomalyReason::DuplicateEndpoint
            | AnomalyReason::InvalidAddress => true,
            AnomalyReason::NoTargetRef | AnomalyReason::NoOrdinal => false,
        }
    }
}

/// Something wrong or unusual found in one EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub reason: AnomalyReason,
    pub namespace: String,
    pub slice: String,
    pub detail: String,
}

/// What one index operation produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub deltas: Vec<Delta>,
    pub anomalies: Vec<Anomaly>,
}

/// One endpoint of a slice, reduced to what instances are built from.
#[derive(Clone, Debug, PartialEq)]
struct ParsedEndpoint {
    /// The pod name, else the hostname, else the first address.
    identity: String,
    ordinal: Option<u32>,
    target_ref: Option<TargetRef>,
    addresses: Vec<String>,
    hostname: Option<String>,
    node_name: Option<String>,
    zone: Option<String>,
    hint_zones: Vec<String>,
    status: Status,
}

/// A slice reduced to its service, ports and endpoints.
#[derive(Clone, Debug, PartialEq)]
struct ParsedSlice {
    service: ServiceRef,
    /// The slice carries the headless-Service label.
    headless: bool,
    ports: BTreeMap<String, i32>,
    endpoints: Vec<ParsedEndpoint>,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    /// Slices of the service by slice name, so merging is in a stable order.
    slices: BTreeMap<String, ParsedSlice>,
    /// Instances by key.
    instances: HashMap<String, Instance>,
    /// Each pod (endpoint identity) → the slices holding it → its positions in that slice.
    pods: HashMap<String, BTreeMap<String, Vec<usize>>>,
}

impl ServiceEntry {
    /// Records the pods of `slice` (named `name`) as held by it; notes them in `touched`.
    fn attach(&mut self, name: &str, slice: &ParsedSlice, touched: &mut BTreeSet<String>) {
        for (position, endpoint) in slice.endpoints.iter().enumerate() {
            self.pods
                .entry(endpoint.identity.clone())
                .or_default()
                .entry(name.to_owned())
                .or_default()
                .push(position);
            touched.insert(endpoint.identity.clone());
        }
    }

    /// Forgets that `slice` (named `name`) holds its pods; notes them in `touched`.
    fn detach(&mut self, name: &str, slice: &ParsedSlice, touched: &mut BTreeSet<String>) {
        for endpoint in &slice.endpoints {
            if let Some(holders) = self.pods.get_mut(&endpoint.identity) {
                holders.remove(name);
                if holders.is_empty() {
                    self.pods.remove(&endpoint.identity);
                }
            }
            touched.insert(endpoint.identity.clone());
        }
    }

    /// Every pod held by a slice or published as an instance.
    fn all_pods(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.pods.keys().cloned().collect();
        all.extend(self.instances.values().map(|i| i.pod_name.clone()));
        all
    }
}

/// The materialized view: every watched service's slices and the instances behind them.
#[derive(Debug, Default)]
pub struct EndpointIndex {
    config: IndexConfig,
    services: BTreeMap<ServiceRef, ServiceEntry>,
    /// Which service each slice `(namespace, name)` currently counts for.
    slice_owner: HashMap<(String, String), ServiceRef>,
    /// Slices gathered during a re-list, swapped in at its end.
    relist: Option<Vec<EndpointSlice>>,
    /// Display hints by ordinal or pod name.
    metadata: MetadataMap,
    /// The latest health probe of each instance, by key.
    probes: HashMap<String, Probe>,
    /// [`overlay_digest`](Self::overlay_digest), computed once per change of the overlay.
    overlay: Option<Option<u32>>,
}

impl EndpointIndex {
    pub fn new(config: IndexConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Builds an index holding exactly `slices`, with every instance transitioned at `now`.
    pub fn from_slices<'a>(
        config: IndexConfig,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut index = Self::new(config);
        index.begin_relist();
        for slice in slices {
            index.relist_apply(slice.clone());
        }
        index.finish_relist(now);
        index
    }

    /// Adds or replaces a slice (a watch ADDED or MODIFIED).
    pub fn apply(&mut self, slice: &EndpointSlice, now: DateTime<Utc>) -> Outcome {
        let mut outcome = Outcome::default();
        let Some(name) = slice_name(slice, &mut outcome.anomalies) else {
            return outcome;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let parsed = parse_slice(slice, &namespace, &name, &mut outcome.anomalies);
        let key = (namespace, name.clone());
        let previous_owner = self.slice_owner.remove(&key);
        let mut touched = BTreeSet::new();
        if let Some(owner) = &previous_owner {
            if let Some(entry) = self.services.get_mut(owner) {
                if let Some(old) = entry.slices.remove(&name) {
                    entry.detach(&name, &old, &mut touched);
                }
            }
        }
        let new_owner = parsed.as_ref().map(|p| p.service.clone());
        if let Some(owner) = previous_owner
            .as_ref()
            .filter(|o| new_owner.as_ref() != Some(*o))
        {
            let pods = std::mem::take(&mut touched);
            self.recompute_pods(owner, pods, now, &mut outcome.deltas);
        }
        if let Some(parsed) = parsed {
            let owner = parsed.service.clone();
            self.slice_owner.insert(key, owner.clone());
            let entry = self.services.entry(owner.clone()).or_default();
            entry.attach(&name, &parsed, &mut touched);
            entry.slices.insert(name, parsed);
            self.recompute_pods(&owner, touched, now, &mut outcome.deltas);
        }
        outcome
    }

    /// Removes a slice (a watch DELETED).
    pub fn delete(&mut self, slice: &EndpointSlice, now: DateTime<Utc>) -> Outcome {
        let mut outcome = Outcome::default();
        let Some(name) = slice_name(slice, &mut outcome.anomalies) else {
            return outcome;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        if let Some(owner) = self.slice_owner.remove(&(namespace, name.clone())) {
            let mut touched = BTreeSet::new();
            if let Some(entry) = self.services.get_mut(&owner) {
                if let Some(old) = entry.slices.remove(&name) {
                    entry.detach(&name, &old, &mut touched);
                }
            }
            self.recompute_pods(&owner, touched, now, &mut outcome.deltas);
        }
        outcome
    }

    /// Starts a re-list: slices now gather aside until [`finish_relist`](Self::finish_relist).
    pub fn begin_relist(&mut self) {
        self.relist = Some(Vec::new());
    }

    /// Adds one listed slice to the re-list under way (or applies nothing if none is).
    pub fn relist_apply(&mut self, slice: EndpointSlice) {
        self.relist.get_or_insert_with(Vec::new).push(slice);
    }

    /// Ends a re-list: the listed slices replace the whole state, and only the net change
    /// since the state before the re-list comes out as deltas.
    pub fn finish_relist(&mut self, now: DateTime<Utc>) -> Outcome {
        let mut outcome = Outcome::default();
        let listed = self.relist.take().unwrap_or_default();
        let mut fresh: BTreeMap<ServiceRef, ServiceEntry> = BTreeMap::new();
        let mut owners = HashMap::new();
        for slice in &listed {
            let Some(name) = slice_name(slice, &mut outcome.anomalies) else {
                continue;
            };
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            if let Some(parsed) = parse_slice(slice, &namespace, &name, &mut outcome.anomalies) {
                owners.insert((namespace, name.clone()), parsed.service.clone());
                fresh
                    .entry(parsed.service.clone())
                    .or_default()
                    .slices
                    .insert(name, parsed);
            }
        }
        let mut services: Vec<ServiceRef> = self.services.keys().cloned().collect();
        for service in fresh.keys() {
            if !self.services.contains_key(service) {
                services.push(service.clone());
            }
        }
        services.sort();
        for service in &services {
            let slices = fresh
                .get_mut(service)
                .map(|e| std::mem::take(&mut e.slices))
                .unwrap_or_default();
            let entry = self.services.entry(service.clone()).or_default();
            entry.slices = slices;
            entry.pods.clear();
            let mut ignored = BTreeSet::new();
            let slices = std::mem::take(&mut entry.slices);
            for (name, slice) in &slices {
                entry.attach(name, slice, &mut ignored);
            }
            entry.slices = slices;
        }
        self.slice_owner = owners;
        for service in &services {
            self.recompute(service, now, &mut outcome.deltas);
        }
        outcome
    }

    /// Replaces the display metadata; instances whose name, description or tags change
    /// come out as `InstanceUpdated`.
    pub fn set_metadata(&mut self, metadata: MetadataMap, now: DateTime<Utc>) -> Outcome {
        self.metadata = metadata;
        self.overlay = None;
        let mut outcome = Outcome::default();
        let services: Vec<ServiceRef> = self.services.keys().cloned().collect();
        for service in &services {
            self.recompute(service, now, &mut outcome.deltas);
        }
        outcome
    }

    /// A short digest of this replica's own inputs that shape the published view: the
    /// display metadata and each instance's probe outcome (reachable, status code; not the
    /// measured latency). `None` when there are none. Two replicas that hold the same API
    /// state and the same digest publish the same instances, so the digest is part of the
    /// event id: a client resuming on a replica whose digest differs gets a `reset`.
    pub fn overlay_digest(&mut self) -> Option<u32> {
        if let Some(digest) = self.overlay {
            return digest;
        }
        let digest = if self.probes.is_empty() && self.metadata == MetadataMap::default() {
            None
        } else {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            format!("{:?}", self.metadata).hash(&mut hasher);
            let mut probes: Vec<_> = self
                .probes
                .iter()
                .map(|(key, p)| (key, p.reachable, p.status_code))
                .collect();
            probes.sort_unstable();
            probes.hash(&mut hasher);
            Some(hasher.finish() as u32)
        };
        self.overlay = Some(digest);
        digest
    }

    /// Records a health probe of the instance `key`. Only a different outcome (reachable
    /// or not, another status code) changes the instance: a serving instance whose probe
    /// fails turns `degraded`, and `ready` again when it passes. A probe of an instance
    /// that is gone is dropped.
    pub fn set_probe(&mut self, key: &str, probe: Probe, now: DateTime<Utc>) -> Outcome {
        let mut outcome = Outcome::default();
        let Some(service) = self
            .services
            .iter()
            .find(|(_, e)| e.instances.contains_key(key))
            .map(|(s, _)| s.clone())
        else {
            return outcome;
        };
        if self
            .probes
            .get(key)
            .is_some_and(|old| old.same_outcome(&probe))
        {
            return outcome;
        }
        self.probes.insert(key.to_owned(), probe);
        self.overlay = None;
        let pod = self.services[&service].instances[key].pod_name.clone();
        self.recompute_pods(&service, BTreeSet::from([pod]), now, &mut outcome.deltas);
        outcome
    }

    /// Whether a re-list is under way.
    pub fn relisting(&self) -> bool {
        self.relist.is_some()
    }

    /// Every instance, ordered by service, then ordinal.
    pub fn instances(&self) -> Vec<&Instance> {
        let mut all: Vec<&Instance> = Vec::new();
        for entry in self.services.values() {
            let start = all.len();
            all.extend(entry.instances.values());
            all[start..].sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        }
        all
    }

    /// The instances of one service, in ordinal order.
    pub fn service_instances(&self, service: &ServiceRef) -> Vec<&Instance> {
        let mut list: Vec<&Instance> = self
            .services
            .get(service)
            .map(|e| e.instances.values().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        list
    }

    /// Rebuilds every instance of `service` and appends the deltas.
    fn recompute(&mut self, service: &ServiceRef, now: DateTime<Utc>, deltas: &mut Vec<Delta>) {
        let Some(entry) = self.services.get(service) else {
            return;
        };
        let pods = entry.all_pods();
        self.recompute_pods(service, pods, now, deltas);
    }

    /// Rebuilds the instances of the pods `touched` of `service` from the slices holding
    /// them, and appends the deltas.
    fn recompute_pods(
        &mut self,
        service: &ServiceRef,
        touched: BTreeSet<String>,
        now: DateTime<Utc>,
        deltas: &mut Vec<Delta>,
    ) {
        let Some(entry) = self.services.get_mut(service) else {
            return;
        };
        let mut changes: Vec<Delta> = Vec::new();
        for pod in &touched {
            let key = format!("{}/{}/{}", service.namespace, service.name, pod);
            let old = entry.instances.remove(&key);
            let built = entry.pods.get(pod).map(|holders| {
                build_instance(
                    &self.config,
                    service,
                    &entry.slices,
                    holders,
                    &self.metadata,
                    &self.probes,
                    now,
                )
            });
            match (old, built) {
                (None, None) => {}
                (Some(previous), None) => {
                    if self.probes.remove(&key).is_some() {
                        self.overlay = None;
                    }
                    changes.push(delta(DeltaKind::InstanceRemoved, None, &previous));
                }
                (None, Some(instance)) => {
                    changes.push(delta(DeltaKind::InstanceAdded, None, &instance));
                    entry.instances.insert(key, instance);
                }
                (Some(previous), Some(mut instance)) => {
                    if previous.status == instance.status {
                        instance.health.last_transition = previous.health.last_transition;
                        if previous != instance {
                            changes.push(delta(DeltaKind::InstanceUpdated, None, &instance));
                        }
                    } else {
                        let (kind, reason) = match instance.status {
                            Status::Ready => (DeltaKind::InstanceReady, None),
                            Status::Offline => (DeltaKind::InstanceNotReady, Some("terminating")),
                            Status::Degraded => {
                                (DeltaKind::InstanceNotReady, Some("probe-failing"))
                            }
                            Status::Booting => (DeltaKind::InstanceNotReady, Some("not-serving")),
                        };
                        changes.push(delta(kind, reason, &instance));
                    }
                    entry.instances.insert(key, instance);
                }
            }
        }
        changes.sort_by(|a, b| a.instance.sort_key().cmp(&b.instance.sort_key()));
        deltas.extend(changes);
        if entry.instances.is_empty() && entry.slices.is_empty() {
            self.services.remove(service);
        } else {
            crate::model::shrink_if_sparse(&mut entry.instances);
            crate::model::shrink_if_sparse(&mut entry.pods);
        }
    }
}

fn delta(kind: DeltaKind, reason: Option<&str>, instance: &Instance) -> Delta {
    Delta {
        kind,
        namespace: instance.namespace.clone(),
        service: instance.service.clone(),
        instance_id: instance.id.clone(),
        reason: reason.map(str::to_owned),
        instance: instance.clone(),
    }
}

fn slice_name(slice: &EndpointSlice, anomalies: &mut Vec<Anomaly>) -> Option<String> {
    match slice.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Some(name.to_owned()),
        _ => {
            anomalies.push(Anomaly {
                reason: AnomalyReason::MissingName,
                namespace: slice.metadata.namespace.clone().unwrap_or_default(),
                slice: String::new(),
                detail: "EndpointSlice without metadata.name".into(),
            });
            None
        }
    }
}

/// The largest ordinal a pod can take: a bigger one is no emulator of a grid a browser
/// could draw (`x-4294967295`), and the pod is listed by its name instead.
pub const MAX_ORDINAL: u32 = 9999;

/// The ordinal of a pod of the StatefulSet `statefulset`: the pod is named
/// `<statefulset>-<N>`, N written as the StatefulSet controller writes it (no sign, no
/// leading zero) and at most `max`. Any other pod (`aaa-0` beside `loco-loco-emulator-0`,
/// a Deployment's pod) has none.
pub fn statefulset_ordinal(pod_name: &str, statefulset: &str, max: u32) -> Option<u32> {
    let tail = pod_name.strip_prefix(statefulset)?.strip_prefix('-')?;
    if tail.is_empty()
        || !tail.bytes().all(|b| b.is_ascii_digit())
        || (tail.len() > 1 && tail.starts_with('0'))
    {
        return None;
    }
    tail.parse().ok().filter(|n| *n <= max)
}

/// The instance status from an endpoint's conditions.
///
/// `serving` decides readiness, not `ready`: with `publishNotReadyAddresses: true` the
/// API reports `ready=true` for every endpoint. A nil `serving` means true and a nil
/// `terminating` means false, as the API defines them; a nil `serving` next to an
/// explicit `ready=false` comes from a controller that predates `serving`, and then
/// `ready` is the only readiness signal there is.
pub fn status_of(endpoint: &Endpoint) -> Status {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    if conditions.terminating == Some(true) {
        return Status::Offline;
    }
    let serving = match conditions.serving {
        Some(serving) => serving,
        None => conditions.ready != Some(false),
    };
    if serving {
        Status::Ready
    } else {
        Status::Booting
    }
}

fn parse_slice(
    slice: &EndpointSlice,
    namespace: &str,
    name: &str,
    anomalies: &mut Vec<Anomaly>,
) -> Option<ParsedSlice> {
    let mut report = |reason: AnomalyReason, detail: String| {
        anomalies.push(Anomaly {
            reason,
            namespace: namespace.to_owned(),
            slice: name.to_owned(),
            detail,
        })
    };
    let service_name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty());
    let Some(service_name) = service_name else {
        report(
            AnomalyReason::MissingServiceLabel,
            format!("no {SERVICE_NAME_LABEL} label"),
        );
        return None;
    };
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        report(
            AnomalyReason::UnsupportedAddressType,
            format!("addressType {:?}", slice.address_type),
        );
        return None;
    }
    let mut ports = BTreeMap::new();
    let mut unnamed = 0;
    for port in slice.ports.iter().flatten() {
        let Some(number) = port.port else { continue };
        let port_name = match port.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                unnamed += 1;
                "default".to_owned()
            }
        };
        ports.entry(port_name).or_insert(number);
    }
    if unnamed > 1 {
        report(
            AnomalyReason::UnnamedPort,
            format!("{unnamed} ports without a name"),
        );
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    let mut seen = HashSet::new();
    for (position, endpoint) in slice.endpoints.iter().enumerate() {
        let given = endpoint.addresses.iter().filter(|a| !a.is_empty());
        let mut addresses: Vec<String> = Vec::with_capacity(endpoint.addresses.len());
        let mut invalid = 0;
        for address in given {
            let valid = match address.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => slice.address_type == "IPv4",
                Ok(IpAddr::V6(_)) => slice.address_type == "IPv6",
                Err(_) => false,
            };
            if valid {
                addresses.push(address.clone());
            } else {
                invalid += 1;
                report(
                    AnomalyReason::InvalidAddress,
                    format!(
                        "endpoint {position}: {address:?} is not an {} address",
                        slice.address_type
                    ),
                );
            }
        }
        if addresses.is_empty() {
            if invalid == 0 {
                report(
                    AnomalyReason::NoAddresses,
                    format!("endpoint {position} has no address"),
                );
            }
            continue;
        }
        let target_ref = endpoint
            .target_ref
            .as_ref()
            .and_then(|r| r.name.as_ref().map(|n| (r, n)))
            .filter(|(_, n)| !n.is_empty())
            .map(|(r, n)| TargetRef {
                kind: r.kind.clone().unwrap_or_else(|| "Pod".into()),
                name: n.clone(),
                namespace: r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
                uid: r.uid.clone(),
            });
        let hostname = endpoint.hostname.clone().filter(|h| !h.is_empty());
        let identity = match (&target_ref, &hostname) {
            (Some(r), _) => r.name.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => addresses[0].clone(),
        };
        if target_ref.is_none() {
            report(
                AnomalyReason::NoTargetRef,
                format!("endpoint {identity} has no targetRef"),
            );
        }
        // The StatefulSet behind a lego-loco headless Service is named like the Service.
        let ordinal = statefulset_ordinal(&identity, service_name, MAX_ORDINAL);
        if ordinal.is_none() {
            report(
                AnomalyReason::NoOrdinal,
                format!("endpoint {identity} has no ordinal"),
            );
        }
        if !seen.insert(identity.clone()) {
            report(
                AnomalyReason::DuplicateEndpoint,
                format!("endpoint {identity} listed twice"),
            );
        }
        let hint_zones = endpoint
            .hints
            .as_ref()
            .and_then(|h| h.for_zones.as_ref())
            .map(|zones| zones.iter().map(|z| z.name.clone()).collect())
            .unwrap_or_default();
        endpoints.push(ParsedEndpoint {
            identity,
            ordinal,
            target_ref,
            addresses,
            hostname,
            node_name: endpoint.node_name.clone().filter(|n| !n.is_empty()),
            zone: endpoint.zone.clone().filter(|z| !z.is_empty()),
            hint_zones,
            status: status_of(endpoint),
        });
    }
    let headless = slice
        .metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(HEADLESS_LABEL));
    Some(ParsedSlice {
        service: ServiceRef::new(namespace, service_name.clone()),
        headless,
        ports,
        endpoints,
    })
}

/// Sorts addresses IPv4 first, then IPv6, then anything unparsable, each group in order.
fn sort_addresses(addresses: &mut Vec<String>) {
    addresses.sort_by_key(|a| {
        let rank = match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 0,
            Ok(IpAddr::V6(_)) => 1,
            Err(_) => 2,
        };
        (rank, a.clone())
    });
    addresses.dedup();
}

/// Builds the instance of one pod from the slices holding it (`holders`: slice name →
/// the pod's positions in it), merged in slice-name order so the result never depends on
/// the order events arrived in.
fn build_instance(
    config: &IndexConfig,
    service: &ServiceRef,
    slices: &BTreeMap<String, ParsedSlice>,
    holders: &BTreeMap<String, Vec<usize>>,
    metadata: &MetadataMap,
    probes: &HashMap<String, Probe>,
    now: DateTime<Utc>,
) -> Instance {
    struct Merged<'a> {
        first: &'a ParsedEndpoint,
        addresses: Vec<String>,
        status: Status,
        ports: BTreeMap<String, i32>,
        node_name: Option<String>,
        zone: Option<String>,
        hint_zones: Vec<String>,
        headless: bool,
    }
    let mut merged: Option<Merged> = None;
    for (slice_name, positions) in holders {
        let slice = &slices[slice_name];
        for &position in positions {
            let endpoint = &slice.endpoints[position];
            let entry = merged.get_or_insert_with(|| Merged {
                first: endpoint,
                addresses: Vec::new(),
                status: endpoint.status,
                ports: BTreeMap::new(),
                node_name: None,
                zone: None,
                hint_zones: Vec::new(),
                headless: false,
            });
            entry.headless |= slice.headless;
            entry.addresses.extend(endpoint.addresses.iter().cloned());
            // The most available condition wins, so the result is order-independent.
            entry.status = entry.status.min(endpoint.status);
            for (name, port) in &slice.ports {
                entry.ports.entry(name.clone()).or_insert(*port);
            }
            if entry.node_name.is_none() {
                entry.node_name = endpoint.node_name.clone();
            }
            if entry.zone.is_none() {
                entry.zone = endpoint.zone.clone();
            }
            entry.hint_zones.extend(endpoint.hint_zones.iter().cloned());
        }
    }
    let mut m = merged.expect("a pod is held by at least one endpoint");
    {
        sort_addresses(&mut m.addresses);
        m.hint_zones.sort();
        m.hint_zones.dedup();
        let ordinal = m.first.ordinal;
        let pod_name = m.first.identity.clone();
        let hostname = m.first.hostname.clone().unwrap_or_else(|| pod_name.clone());
        let pod_ip = m.addresses.first().cloned();
        let address = pod_ip.as_deref().unwrap_or(&pod_name);
        let dns_name = config.dns.name_of(
            EndpointName {
                headless: m.headless,
                hostname: m.first.hostname.as_deref(),
                pod: m.first.target_ref.as_ref().map(|r| r.name.as_str()),
                address,
            },
            &service.name,
            &service.namespace,
        );
        let id = match ordinal {
            Some(n) => format!("instance-{n}"),
            None => pod_name.clone(),
        };
        let hints = metadata.lookup(&pod_name, m.first.ordinal);
        let name = match (hints.and_then(|h| h.name.clone()), ordinal) {
            (Some(name), _) => name,
            (None, Some(0)) => "Windows 98 - Game Server".to_owned(),
            (None, Some(n)) => format!("Windows 98 - Client {n}"),
            (None, None) => pod_name.clone(),
        };
        let key = format!("{}/{}/{}", service.namespace, service.name, pod_name);
        let probe = probes.get(&key).cloned();
        let vnc_port = m
            .ports
            .get("vnc")
            .copied()
            .unwrap_or(config.default_vnc_port);
        let health_port = m
            .ports
            .get("health")
            .copied()
            .unwrap_or(config.default_health_port);
        let vnc_url = host_port(dns_name.as_deref().unwrap_or(address), vnc_port);
        // Only from a parsed IP and a port number: nothing else from the cluster shapes
        // a probe's target.
        let health_url = pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .zip(u16::try_from(health_port).ok().filter(|p| *p != 0))
            .map(|(ip, port)| format!("http://{}", std::net::SocketAddr::new(ip, port)));
        let status = match (&probe, m.status) {
            (Some(p), Status::Ready) if !p.reachable => Status::Degraded,
            (_, status) => status,
        };
        Instance {
            key,
            description: hints.and_then(|h| h.description.clone()),
            tags: hints.map(|h| h.tags.clone()).unwrap_or_default(),
            probe,
            stream_url: format!("/proxy/vnc/{id}"),
            vnc_url,
            id,
            ordinal,
            name,
            status,
            ready: status == Status::Ready,
            provisioned: true,
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            addresses: Addresses {
                pod_ip,
                pod_ips: m.addresses,
                hostname,
                dns_name,
            },
            ports: m.ports,
            health: Health {
                ready: status == Status::Ready || status == Status::Degraded,
                last_transition: now,
                details: status.details().to_owned(),
            },
            health_url,
            kubernetes: KubernetesInfo {
                namespace: service.namespace.clone(),
                service: service.name.clone(),
                node_name: m.node_name,
                zone: m.zone,
                hint_zones: m.hint_zones,
                target_ref: m.first.target_ref.clone(),
            },
            pod_name,
        }
    }
}

#[cfg(test)]
mod tests;
