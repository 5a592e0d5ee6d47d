//! The gateway's plain data types and their wire JSON.
//!
//! Field names follow what the lego-loco frontend already reads from
//! `GET /api/instances/live` (camelCase, `instance-N` ids, the status words it draws), so
//! the gateway is a drop-in for the backend's discovery API. Nothing here knows about
//! kube, tokio or warp.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Serializes a time as RFC 3339 with millisecond precision and a `Z`, like JavaScript's
/// `Date.toISOString()`, which the frontend's existing code produces and parses.
pub fn iso_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Serializes a time as RFC 3339 with microseconds, for event timestamps that latency
/// measurements read (`Date.parse` accepts it too).
pub fn iso_time_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// A Kubernetes Service the gateway watches, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where an instance is in its life, in the gateway's own words.
///
/// On the wire an instance carries it twice: `state` is this word, and `status` is the
/// word the lego-loco frontend's instance cards draw ([`Status::card_word`]), which has no
/// `offline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving and not terminating.
    Ready,
    /// Serving per Kubernetes, but an active health probe fails.
    Degraded,
    /// Not serving (still starting, or failing its readiness probe).
    Booting,
    /// Terminating.
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Degraded => "degraded",
            Status::Booting => "booting",
            Status::Offline => "offline",
        }
    }

    /// Parses a status word as used in query filters.
    pub fn parse(word: &str) -> Option<Status> {
        match word {
            "ready" => Some(Status::Ready),
            "degraded" => Some(Status::Degraded),
            "booting" => Some(Status::Booting),
            "offline" => Some(Status::Offline),
            _ => None,
        }
    }

    /// The word the lego-loco frontend's instance cards know (`ready`, `running`,
    /// `booting`, `degraded`, `error`): a terminating instance is `degraded`, which the
    /// cards draw with `health.details` (`terminating`) underneath, instead of "Unknown
    /// Status". New clients read `state`.
    pub fn card_word(self) -> &'static str {
        match self {
            Status::Offline => "degraded",
            other => other.as_str(),
        }
    }

    /// The human-readable explanation carried in `health.details`.
    pub fn details(self) -> &'static str {
        match self {
            Status::Ready => "serving",
            Status::Degraded => "serving, health probe failing",
            Status::Booting => "not serving",
            Status::Offline => "terminating",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an instance can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addresses {
    /// The preferred address (IPv4 first on dual-stack pods).
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// Every address of the pod, across the IPv4 and IPv6 slices.
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<String>,
    pub hostname: String,
    /// The name cluster DNS resolves to this endpoint
    /// (`<label>.<service>.<namespace>.svc.<cluster domain>`, see [`crate::dns`]); `None`
    /// where it has none (the endpoints of a Service that is not headless).
    pub dns_name: Option<String>,
}

/// Readiness as Kubernetes reports it, with the time of the last real change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub ready: bool,
    #[serde(serialize_with = "iso_time")]
    pub last_transition: DateTime<Utc>,
    pub details: String,
}

/// The object an endpoint points at (normally the Pod).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
}

/// Kubernetes placement facts about an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesInfo {
    pub namespace: String,
    pub service: String,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// Zones from the EndpointSlice's topology hints (`hints.forZones`).
    pub hint_zones: Vec<String>,
    pub target_ref: Option<TargetRef>,
}

/// The result of the latest active health probe of an instance's health port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// The health endpoint answered with a 2xx status in time.
    pub reachable: bool,
    pub status_code: Option<u16>,
    pub latency_ms: Option<u64>,
    /// When the probe that established this result ran (repeated identical results do
    /// not move it, so they cause no delta).
    #[serde(serialize_with = "iso_time")]
    pub checked_at: DateTime<Utc>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl Probe {
    /// Two results that a client would draw the same way.
    pub fn same_outcome(&self, other: &Probe) -> bool {
        self.reachable == other.reachable && self.status_code == other.status_code
    }
}

/// One emulator instance (one pod behind the watched Service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `instance-N` from the pod's ordinal; the pod name when it has none.
    pub id: String,
    /// Unique across services: `<namespace>/<service>/<pod>`.
    pub key: String,
    pub ordinal: Option<u32>,
    /// Display name: from the instance metadata file when it names one, else
    /// `Windows 98 - Game Server` / `Windows 98 - Client N`.
    pub name: String,
    /// Display hints from the instance metadata file (never addresses).
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Serialized as `status` (the frontend's card word) and `state` (the gateway's word).
    #[serde(flatten, with = "status_words")]
    pub status: Status,
    pub ready: bool,
    /// The instance exists in the cluster (as opposed to a configured-but-absent slot).
    pub provisioned: bool,
    pub pod_name: String,
    pub service: String,
    pub namespace: String,
    pub addresses: Addresses,
    /// Port numbers by port name (`vnc`, `health`, ...).
    pub ports: BTreeMap<String, i32>,
    pub health: Health,
    pub stream_url: String,
    /// `<dnsName>:<vnc port>`, or `<address>:<vnc port>` where there is no DNS name.
    pub vnc_url: String,
    pub health_url: Option<String>,
    pub kubernetes: KubernetesInfo,
    /// The latest active health probe, when probes are on.
    pub probe: Option<Probe>,
}

/// An instance's [`Status`] as two JSON fields: `status`, the word the lego-loco cards
/// draw, and `state`, the gateway's own word. Reading takes `state`, else `status`.
mod status_words {
    use super::Status;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Words {
        status: &'static str,
        state: Status,
    }

    #[derive(Deserialize)]
    struct Read {
        state: Option<Status>,
        status: Option<String>,
    }

    pub fn serialize<S: Serializer>(status: &Status, s: S) -> Result<S::Ok, S::Error> {
        Words {
            status: status.card_word(),
            state: *status,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        let read = Read::deserialize(d)?;
        read.state
            .or_else(|| read.status.as_deref().and_then(Status::parse))
            .ok_or_else(|| serde::de::Error::missing_field("state"))
    }
}

impl Instance {
    /// Where a health probe may go: `healthUrl` only when it is exactly `http://` and a
    /// socket address (an IP and a numeric port), as the index builds it; `None` for
    /// anything else, so no string from the cluster ever shapes a probe's target.
    pub fn health_target(&self) -> Option<std::net::SocketAddr> {
        self.health_url
            .as_deref()?
            .strip_prefix("http://")?
            .parse()
            .ok()
    }

    /// The order the lego-loco grid fills its slots in: by ordinal, then by pod name.
    pub fn sort_key(&self) -> (u32, &str, &str) {
        (
            self.ordinal.unwrap_or(u32::MAX),
            self.pod_name.as_str(),
            self.key.as_str(),
        )
    }
}

/// What changed about one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeltaKind {
    InstanceAdded,
    InstanceReady,
    InstanceNotReady,
    InstanceRemoved,
    /// A change that is not a status transition: a new IP, port, node or zone.
    InstanceUpdated,
}

impl DeltaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaKind::InstanceAdded => "InstanceAdded",
            DeltaKind::InstanceReady => "InstanceReady",
            DeltaKind::InstanceNotReady => "InstanceNotReady",
            DeltaKind::InstanceRemoved => "InstanceRemoved",
            DeltaKind::InstanceUpdated => "InstanceUpdated",
        }
    }
}

impl fmt::Display for DeltaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed change to the instance set, carrying the instance's full new state (its last
/// known state for `InstanceRemoved`), so that a client applies it without a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    #[serde(rename = "type")]
    pub kind: DeltaKind,
    pub namespace: String,
    pub service: String,
    pub instance_id: String,
    /// Why an instance is not ready: `not-serving` or `terminating`.
    pub reason: Option<String>,
    pub instance: Instance,
}

/// Counts in the frontend's spelling: `ready + degraded + notReady == total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total: usize,
    pub ready: usize,
    pub degraded: usize,
    pub not_ready: usize,
}

impl Stats {
    pub fn count<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Stats {
        let mut stats = Stats::default();
        for instance in instances {
            stats.total += 1;
            match instance.status {
                Status::Ready => stats.ready += 1,
                Status::Degraded => stats.degraded += 1,
                Status::Booting | Status::Offline => stats.not_ready += 1,
            }
        }
        stats
    }
}

/// Counts in the seed plan's spelling, served beside [`Stats`] so both clients work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    pub ready: usize,
    pub not_ready: usize,
    #[serde(serialize_with = "iso_time")]
    pub last_update: DateTime<Utc>,
}

/// The body of `GET /api/instances/live`: the whole view, for first paint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The discovery mode, e.g. `kubernetes-endpointslices` (the frontend tests
    /// `mode.includes('kubernetes')`).
    pub mode: String,
    /// The same value under the seed plan's name.
    pub discovery_mode: String,
    pub namespace: String,
    /// The watched service; several are joined with `,`.
    pub service_name: String,
    pub services: Vec<String>,
    /// When the view was last confirmed against the API: now while the watch is healthy,
    /// frozen at the last confirmation while it is not.
    #[serde(serialize_with = "iso_time")]
    pub last_update: DateTime<Utc>,
    /// Whether the view is confirmed against the API now: false from a watch failure
    /// until the next successful list or watch event (the last known state is served).
    pub synced: bool,
    pub stats: Stats,
    pub summary: Summary,
    pub instances: Vec<Instance>,
}

/// Gives a map's memory back once it holds under a quarter of what it has room for: a
/// service scaled from 10,000 pods to 10 must not keep a table sized for 10,000
/// (`HashMap` never shrinks by itself). Amortized O(1): a shrink follows as many removals.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut std::collections::HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}
