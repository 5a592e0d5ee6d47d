//! The published view and its fan-out: sequence numbers and resume ids, a bounded
//! history, and subscriptions that start from a snapshot (or a resume point) and go on
//! with live events.
//!
//! The hub never sees Kubernetes objects: it holds what the deltas say, so what a client
//! rebuilds from the delta stream and what a snapshot shows can never disagree.
//!
//! Fan-out goes through one `tokio::sync::broadcast` ring: publishing is one push of a
//! shared, already-serialized frame, whatever the number of subscribers; a subscriber
//! that falls behind the ring is told `Lagged` and gets a fresh snapshot (`reset`)
//! instead of its backlog, so it can never slow the watch loop or anyone else.

pub use crate::filter::Filter;
use crate::model::{
    iso_time, iso_time_micros, Delta, DeltaKind, Instance, Snapshot, Stats, Status, Summary,
};
use crate::rendered::{RenderedSnapshot, RenderedView, ViewCache, ViewInfo};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::broadcast;

/// Fixed facts about what this gateway serves, repeated in every snapshot.
#[derive(Clone, Debug)]
pub struct HubInfo {
    /// The discovery mode name, e.g. `kubernetes-endpointslices`.
    pub mode: String,
    pub namespace: String,
    pub services: Vec<String>,
    /// Zone whose instances snapshots list first, unless a request names another.
    pub prefer_zone: Option<String>,
}

/// Sizes of the hub's buffers.
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// Published events kept for clients that resume with `Last-Event-ID`.
    pub history: usize,
    /// Events a subscriber may fall behind before it is reset to a snapshot.
    pub subscriber_lag: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            history: 4096,
            subscriber_lag: 4096,
        }
    }
}

/// One published delta, serialized once and shared by every subscriber.
#[derive(Debug)]
pub struct Frame {
    /// Position in this process's publish order.
    pub seq: u64,
    /// The resume token (`Last-Event-ID`); see [`Hub::publish`].
    pub id: String,
    pub kind: DeltaKind,
    pub instance: Instance,
    /// The event's JSON (the SSE `data:` line and the WebSocket text frame).
    pub json: Bytes,
    /// The frame encoded for each transport (the Server-Sent Events event, the WebSocket
    /// text frame), made by the first subscriber of that transport to send it and shared
    /// by the others.
    pub sse: OnceLock<Bytes>,
    pub ws: OnceLock<Bytes>,
    /// The published → socket histogram of the frame's service, per transport (SSE,
    /// WebSocket), looked up by the first delivery instead of by every one.
    pub latency: [OnceLock<metrics::Histogram>; 2],
    /// When it was published, for the published → socket latency.
    pub published_at: std::time::Instant,
    /// The API history it belongs to (see [`Hub::observe_resource_version`]).
    pub epoch: u64,
}

/// The JSON of one delta event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: DeltaKind,
    id: &'a str,
    #[serde(serialize_with = "iso_time_micros")]
    ts: DateTime<Utc>,
    namespace: &'a str,
    service: &'a str,
    instance_id: &'a str,
    key: &'a str,
    reason: Option<&'a str>,
    instance: &'a Instance,
    /// Counts of the delta's service after it.
    stats: Stats,
    #[serde(serialize_with = "iso_time")]
    last_update: DateTime<Utc>,
    /// When the change happened in the cluster (the slice's trigger time), if known.
    #[serde(serialize_with = "iso_time_opt")]
    change_time: Option<DateTime<Utc>>,
    /// `ts − changeTime` in milliseconds: the change → gateway → published latency.
    latency_ms: Option<f64>,
}

fn iso_time_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => iso_time(t, s),
        None => s.serialize_none(),
    }
}

/// The JSON of a `snapshot` or `reset` event: the envelope of `/api/instances/live`
/// plus the event's type, id and (for resets) the reason.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: &'a str,
    pub reason: Option<&'a str>,
    #[serde(flatten)]
    pub snapshot: &'a Snapshot,
}

/// A synthesized `InstanceRemoved` for an instance that left a filtered view.
pub fn left_view_json(instance: &Instance, id: &str, now: DateTime<Utc>) -> String {
    let event = DeltaEvent {
        kind: DeltaKind::InstanceRemoved,
        id,
        ts: now,
        namespace: &instance.namespace,
        service: &instance.service,
        instance_id: &instance.id,
        key: &instance.key,
        reason: Some("filtered-out"),
        instance,
        stats: Stats::default(),
        last_update: now,
        change_time: None,
        latency_ms: None,
    };
    serde_json::to_string(&event).expect("events serialize")
}

#[derive(Debug)]
struct State {
    seq: u64,
    /// The id of the latest position (the last frame, or a list that changed nothing).
    current_id: String,
    instances: HashMap<String, Instance>,
    service_stats: HashMap<(String, String), Stats>,
    history: VecDeque<Arc<Frame>>,
    /// Every resumable id (history ids and anchors) → the seq it stands for.
    positions: HashMap<String, u64>,
    ready: bool,
    synced: bool,
    confirmed_at: DateTime<Utc>,
    /// Counts the API histories seen: a resourceVersion lower than one already
    /// published means the API server behind the address has another history.
    epoch: u64,
    /// The highest resourceVersion published in this epoch.
    last_resource_version: Option<u64>,
}

/// Whether the served view is confirmed against its source, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncState {
    /// The first complete list is in.
    pub ready: bool,
    /// The source is healthy: the view is current, not only the last one confirmed.
    pub synced: bool,
    /// The last time the source confirmed the view (a list, a watch event).
    pub confirmed_at: DateTime<Utc>,
}

/// How a subscription starts.
#[derive(Debug)]
pub enum Start {
    /// A snapshot of the filtered view (a new client).
    Snapshot {
        snapshot: RenderedSnapshot,
        id: String,
    },
    /// The events after the client's last id, then live ones (a resumed client).
    Resume { backlog: Vec<Arc<Frame>> },
    /// The client's id is unknown or older than the history: a fresh snapshot.
    Reset {
        snapshot: RenderedSnapshot,
        id: String,
    },
}

/// A registered subscriber: how it starts, then live frames from `live`.
pub struct Subscription {
    pub start: Start,
    pub live: broadcast::Receiver<Arc<Frame>>,
    /// Live frames with a seq at or below this are already covered by `start`.
    pub after_seq: u64,
    /// The API history `start` belongs to: a live frame of another one means the
    /// subscriber must be reset.
    pub epoch: u64,
}

/// A fresh snapshot for a subscriber that must start over, with its position.
#[derive(Debug)]
pub struct Resync {
    pub snapshot: RenderedSnapshot,
    pub id: String,
    pub seq: u64,
    pub epoch: u64,
}

/// The published view, shared by the watcher (one writer) and the HTTP routes.
#[derive(Debug)]
pub struct Hub {
    info: HubInfo,
    /// The part of every snapshot that [`HubInfo`] fixes.
    view_info: Arc<ViewInfo>,
    /// Snapshots of the current view, serialized once per filter.
    views: ViewCache,
    limits: HubLimits,
    state: RwLock<State>,
    sender: broadcast::Sender<Arc<Frame>>,
}

impl Hub {
    pub fn new(info: HubInfo, now: DateTime<Utc>) -> Self {
        Self::with_limits(info, HubLimits::default(), now)
    }

    pub fn with_limits(info: HubInfo, limits: HubLimits, now: DateTime<Utc>) -> Self {
        let (sender, _) = broadcast::channel(limits.subscriber_lag.max(1));
        let boot: u32 = rand::random();
        let current_id = format!("boot-{boot:08x}.0");
        let positions = HashMap::from([(current_id.clone(), 0)]);
        let view_info = Arc::new(ViewInfo {
            mode: info.mode.clone(),
            discovery_mode: info.mode.clone(),
            namespace: info.namespace.clone(),
            service_name: info.services.join(","),
            services: info.services.clone(),
        });
        Self {
            info,
            view_info,
            views: ViewCache::default(),
            limits,
            state: RwLock::new(State {
                seq: 0,
                current_id,
                instances: HashMap::new(),
                service_stats: HashMap::new(),
                history: VecDeque::new(),
                positions,
                ready: false,
                synced: false,
                confirmed_at: now,
                epoch: 0,
                last_resource_version: None,
            }),
            sender,
        }
    }

    pub fn info(&self) -> &HubInfo {
        &self.info
    }

    /// Applies the deltas caused by one change and fans them out. Called by the watcher.
    ///
    /// `origin` names the change: the resourceVersion of the watch event that caused it
    /// (the same on every replica watching the same API), or a process-local name for a
    /// re-list. The i-th delta (from 1) gets the id `<origin>.<i>`, so two replicas that
    /// saw the same changes give the same ids, and a client can resume on either.
    pub fn publish(&self, deltas: &[Delta], origin: &str, now: DateTime<Utc>) {
        self.publish_change(deltas, origin, None, now)
    }

    /// [`publish`](Self::publish), with the time the change happened in the cluster
    /// (carried in each event as `changeTime` and `latencyMs`).
    pub fn publish_change(
        &self,
        deltas: &[Delta],
        origin: &str,
        change_time: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        let latency_ms = change_time
            .map(|t| (now - t).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1000.0);
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        for (i, delta) in deltas.iter().enumerate() {
            let key = delta.instance.key.clone();
            let service_key = (delta.namespace.clone(), delta.service.clone());
            let previous = match delta.kind {
                DeltaKind::InstanceRemoved => state.instances.remove(&key),
                _ => state.instances.insert(key, delta.instance.clone()),
            };
            let stats = state.service_stats.entry(service_key).or_default();
            if let Some(previous) = &previous {
                adjust(stats, previous.status, -1);
            }
            if delta.kind != DeltaKind::InstanceRemoved {
                adjust(stats, delta.instance.status, 1);
            }
            let stats = *stats;
            state.seq += 1;
            let id = format!("{origin}.{}", i + 1);
            let json = serde_json::to_string(&DeltaEvent {
                kind: delta.kind,
                id: &id,
                ts: now,
                namespace: &delta.namespace,
                service: &delta.service,
                instance_id: &delta.instance_id,
                key: &delta.instance.key,
                reason: delta.reason.as_deref(),
                instance: &delta.instance,
                stats,
                last_update: now,
                change_time,
                latency_ms,
            })
            .expect("events serialize");
            let frame = Arc::new(Frame {
                seq: state.seq,
                id: id.clone(),
                kind: delta.kind,
                instance: delta.instance.clone(),
                json: Bytes::from(json),
                sse: OnceLock::new(),
                ws: OnceLock::new(),
                latency: Default::default(),
                published_at: std::time::Instant::now(),
                epoch: state.epoch,
            });
            state.positions.insert(id.clone(), state.seq);
            state.current_id = id;
            state.history.push_back(frame.clone());
            while state.history.len() > self.limits.history {
                if let Some(old) = state.history.pop_front() {
                    state.positions.remove(&old.id);
                }
            }
            // No receivers is fine: nobody is listening yet.
            let _ = self.sender.send(frame);
        }
        if !deltas.is_empty() {
            self.views.clear();
            crate::model::shrink_if_sparse(&mut state.instances);
            record_gauges(state);
        }
    }

    /// Marks the first complete list as applied: from now on `/readyz` answers 200.
    pub fn mark_ready(&self, now: DateTime<Utc>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.ready = true;
        set_synced(&mut state, true);
        state.confirmed_at = now;
    }

    /// Records the resourceVersion of a watch event about to be published. One lower
    /// than a version already published cannot come from the same API history (an API
    /// server restored from a backup, or another cluster behind the same address): the
    /// ids published so far may mean something else there, so none of them is resumable
    /// any more and every subscriber is reset before the first event of the new history.
    /// Returns whether that happened.
    pub fn observe_resource_version(&self, resource_version: u64) -> bool {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let changed = state
            .last_resource_version
            .is_some_and(|last| resource_version < last);
        if changed {
            state.epoch += 1;
            // Not even the current position stays resumable: a client that resumed
            // from it would see the new history's ids follow the old one's.
            state.history.clear();
            state.positions.clear();
            record_gauges(state);
        }
        state.last_resource_version = Some(resource_version);
        changed
    }

    /// Records that the view was just confirmed against the API (a list completed, or a
    /// watch event arrived): `synced` again, and `lastUpdate` follows the clock.
    pub fn confirm(&self, now: DateTime<Utc>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        set_synced(&mut state, true);
        state.confirmed_at = now;
    }

    /// Whether the view is confirmed against the API now.
    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// When the view was last confirmed against the API.
    pub fn confirmed_at(&self) -> DateTime<Utc> {
        self.read().confirmed_at
    }

    /// Marks the watch as broken: `lastUpdate` stops advancing until it recovers.
    pub fn mark_unsynced(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        set_synced(&mut state, false);
    }

    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// Whether the view is confirmed against the source, and since when.
    pub fn sync_state(&self) -> SyncState {
        let state = self.read();
        SyncState {
            ready: state.ready,
            synced: state.synced,
            confirmed_at: state.confirmed_at,
        }
    }

    /// Number of deltas published so far.
    pub fn seq(&self) -> u64 {
        self.read().seq
    }

    /// Number of events kept for resuming.
    pub fn history_len(&self) -> usize {
        self.read().history.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The view as the lego-loco frontend reads it, restricted by `filter`.
    pub fn snapshot(&self, filter: &Filter, now: DateTime<Utc>) -> Snapshot {
        let state = self.read();
        let instances = self.select(&state, filter);
        let (last_update, synced) = Self::freshness(&state, now);
        let stats = Stats::count(instances.iter().copied());
        let info = &self.view_info;
        Snapshot {
            mode: info.mode.clone(),
            discovery_mode: info.discovery_mode.clone(),
            namespace: info.namespace.clone(),
            service_name: info.service_name.clone(),
            services: info.services.clone(),
            last_update,
            synced,
            stats,
            summary: Summary {
                total: stats.total,
                ready: stats.ready,
                not_ready: stats.not_ready + stats.degraded,
                last_update,
            },
            instances: instances.into_iter().cloned().collect(),
        }
    }

    /// The same view serialized, shared with every other answer for this filter until
    /// the view changes: what `/live` and the streams send.
    pub fn rendered(&self, filter: &Filter, now: DateTime<Utc>) -> RenderedSnapshot {
        self.render(&self.read(), filter, now)
    }

    /// A snapshot with the position it shows (id, seq, epoch), taken atomically.
    pub fn resync(&self, filter: &Filter, now: DateTime<Utc>) -> Resync {
        let state = self.read();
        Resync {
            snapshot: self.render(&state, filter, now),
            id: state.current_id.clone(),
            seq: state.seq,
            epoch: state.epoch,
        }
    }

    /// The instances `filter` selects, in the order snapshots list them.
    fn select<'a>(&self, state: &'a State, filter: &Filter) -> Vec<&'a Instance> {
        let mut instances: Vec<&Instance> = state
            .instances
            .values()
            .filter(|i| filter.matches(i))
            .collect();
        sort_for_grid(&mut instances);
        if let Some(zone) = filter
            .prefer_zone
            .as_ref()
            .or(self.info.prefer_zone.as_ref())
        {
            // Stable: the grid order stays within each group.
            instances.sort_by_key(|i| i.kubernetes.zone.as_ref() != Some(zone));
        }
        instances
    }

    /// `lastUpdate` is `now` while the watch is healthy (a push-fed view is current),
    /// and the time of the last confirmation otherwise.
    fn freshness(state: &State, now: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        let last_update = if state.synced {
            now
        } else {
            state.confirmed_at
        };
        (last_update, state.synced)
    }

    fn render(&self, state: &State, filter: &Filter, now: DateTime<Utc>) -> RenderedSnapshot {
        let view = self
            .views
            .get_or_render(filter, state.seq, state.epoch, || {
                RenderedView::render(&self.select(state, filter), filter, state.seq, state.epoch)
            });
        let (last_update, synced) = Self::freshness(state, now);
        RenderedSnapshot {
            view,
            info: self.view_info.clone(),
            last_update,
            synced,
        }
    }

    /// Registers a subscriber. The live receiver is taken under the same lock as the
    /// snapshot or backlog, so nothing published in between is lost or repeated.
    pub fn subscribe(
        &self,
        filter: &Filter,
        last_event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Subscription {
        let state = self.read();
        let live = self.sender.subscribe();
        let after_seq = state.seq;
        // A position is resumable while every frame after it is still in the history.
        let oldest = state.history.front().map_or(state.seq + 1, |f| f.seq);
        let resumable = last_event_id
            .and_then(|id| state.positions.get(id).copied())
            .filter(|seq| seq + 1 >= oldest);
        let start = match (last_event_id, resumable) {
            (None, _) => Start::Snapshot {
                snapshot: self.render(&state, filter, now),
                id: state.current_id.clone(),
            },
            (Some(_), Some(seq)) => Start::Resume {
                backlog: state
                    .history
                    .iter()
                    .filter(|f| f.seq > seq)
                    .cloned()
                    .collect(),
            },
            (Some(_), None) => Start::Reset {
                snapshot: self.render(&state, filter, now),
                id: state.current_id.clone(),
            },
        };
        Subscription {
            start,
            live,
            after_seq,
            epoch: state.epoch,
        }
    }
}

/// Records whether the served view is confirmed against the API, in the state and the gauge.
fn set_synced(state: &mut State, synced: bool) {
    state.synced = synced;
    metrics::gauge!(crate::metrics::SYNCED).set(if synced { 1.0 } else { 0.0 });
}

/// Instances by service and status, and the history depth, as gauges.
fn record_gauges(state: &State) {
    use crate::metrics as m;
    for ((_, service), stats) in &state.service_stats {
        let by_status = [
            ("ready", stats.ready),
            ("degraded", stats.degraded),
            ("not_ready", stats.not_ready),
        ];
        for (status, count) in by_status {
            metrics::gauge!(m::INSTANCES, "service" => service.clone(), "status" => status)
                .set(count as f64);
        }
    }
    metrics::gauge!(m::HISTORY_DEPTH).set(state.history.len() as f64);
}

fn adjust(stats: &mut Stats, status: Status, by: isize) {
    let apply = |n: &mut usize| *n = n.saturating_add_signed(by);
    apply(&mut stats.total);
    match status {
        Status::Ready => apply(&mut stats.ready),
        Status::Degraded => apply(&mut stats.degraded),
        Status::Booting | Status::Offline => apply(&mut stats.not_ready),
    }
}

/// Orders instances by service, then as the lego-loco grid fills its slots.
fn sort_for_grid(instances: &mut [&Instance]) {
    instances.sort_by(|a, b| {
        (a.namespace.as_str(), a.service.as_str(), a.sort_key()).cmp(&(
            b.namespace.as_str(),
            b.service.as_str(),
            b.sort_key(),
        ))
    });
}

#[cfg(test)]
mod tests;
