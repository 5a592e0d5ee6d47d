//! Snapshots serialized once per view position and filter, and shared by every client
//! that asks for the same view while it holds: a 10,000-instance view is ~10 MB of JSON,
//! and neither a connect storm of subscribers nor many `/live` polls may each build and
//! hold their own copy.
//!
//! A snapshot body is three pieces: a small head made per answer (the time of the answer,
//! and for stream events their type, id and reason), the shared instances array, and `}`.
//! Transports send the pieces as they are, so the shared bytes are never copied.

use crate::filter::Filter;
use crate::model::{iso_time, Instance, Snapshot, Stats, Summary};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use std::sync::Arc;

/// The most views cached at once. Clients choose filters, so the cache must not grow
/// with them: past this, a view of another filter is rendered for its one answer.
pub const MAX_CACHED_VIEWS: usize = 8;

/// The instances of one filtered view at one position, serialized.
#[derive(Debug)]
pub struct RenderedView {
    /// The hub position (publish sequence and API history) the view shows.
    pub seq: u64,
    pub epoch: u64,
    /// The instances as a JSON array, in grid order.
    pub instances: Bytes,
    pub stats: Stats,
    /// The instances' keys, for subscribers whose filter depends on state (they track
    /// what they were shown); `None` for other filters.
    pub keys: Option<Vec<String>>,
}

impl RenderedView {
    /// Serializes `instances` (already filtered and ordered).
    pub fn render(instances: &[&Instance], filter: &Filter, seq: u64, epoch: u64) -> Self {
        let json = serde_json::to_vec(instances).expect("instances serialize");
        let keys = filter
            .is_by_state()
            .then(|| instances.iter().map(|i| i.key.clone()).collect());
        Self {
            seq,
            epoch,
            instances: Bytes::from(json),
            stats: Stats::count(instances.iter().copied()),
            keys,
        }
    }
}

/// Rendered views by filter, all of the hub's current position (the hub clears it
/// whenever the view changes, so an old view's bytes are not kept).
#[derive(Debug, Default)]
pub struct ViewCache {
    views: DashMap<Filter, Arc<RenderedView>>,
}

/// How a snapshot answer got its instances, for `loco_discovery_snapshot_renders_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Rendered before, shared.
    Shared,
    /// Rendered now and kept for the next answer.
    Rendered,
    /// Rendered now for this answer only (the cache holds [`MAX_CACHED_VIEWS`]).
    Uncached,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Rendered => "rendered",
            Self::Uncached => "uncached",
        }
    }
}

impl ViewCache {
    /// The view of `filter` at `(seq, epoch)`, rendered by `render` unless cached.
    pub fn get_or_render(
        &self,
        filter: &Filter,
        seq: u64,
        epoch: u64,
        render: impl FnOnce() -> RenderedView,
    ) -> Arc<RenderedView> {
        if let Some(view) = self.views.get(filter) {
            if view.seq == seq && view.epoch == epoch {
                record(CacheOutcome::Shared);
                return view.clone();
            }
        }
        let view = Arc::new(render());
        let outcome = if self.views.len() < MAX_CACHED_VIEWS || self.views.contains_key(filter) {
            self.views.insert(filter.clone(), view.clone());
            CacheOutcome::Rendered
        } else {
            CacheOutcome::Uncached
        };
        record(outcome);
        view
    }

    /// Forgets every view (the hub's view changed).
    pub fn clear(&self) {
        self.views.clear();
    }

    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

fn record(outcome: CacheOutcome) {
    metrics::counter!(crate::metrics::SNAPSHOT_RENDERS, "result" => outcome.as_str()).increment(1);
}

/// What every snapshot says about the gateway, the same in every answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewInfo {
    pub mode: String,
    pub discovery_mode: String,
    pub namespace: String,
    pub service_name: String,
    pub services: Vec<String>,
}

/// The type, id and reason a `snapshot` or `reset` event puts before the snapshot.
#[derive(Clone, Copy, Debug)]
pub struct EventHead<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub reason: Option<&'a str>,
}

/// A snapshot ready to send: a shared rendered view and what is particular to the answer.
#[derive(Clone, Debug)]
pub struct RenderedSnapshot {
    pub view: Arc<RenderedView>,
    pub info: Arc<ViewInfo>,
    /// `lastUpdate`: the time of the answer while the view is confirmed, else the last
    /// confirmation.
    pub last_update: DateTime<Utc>,
    pub synced: bool,
}

/// The fields of a snapshot before `instances`, in the order of [`Snapshot`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<&'a str>>,
    #[serde(flatten)]
    info: &'a ViewInfo,
    #[serde(serialize_with = "iso_time")]
    last_update: DateTime<Utc>,
    synced: bool,
    stats: Stats,
    summary: Summary,
}

impl RenderedSnapshot {
    /// The JSON before the instances array: `{…,"instances":`.
    pub fn head(&self, event: Option<EventHead<'_>>) -> Vec<u8> {
        let stats = self.view.stats;
        let head = Head {
            kind: event.map(|e| e.kind),
            id: event.map(|e| e.id),
            reason: event.map(|e| e.reason),
            info: &self.info,
            last_update: self.last_update,
            synced: self.synced,
            stats,
            summary: Summary {
                total: stats.total,
                ready: stats.ready,
                not_ready: stats.not_ready + stats.degraded,
                last_update: self.last_update,
            },
        };
        let mut out = serde_json::to_vec(&head).expect("snapshot heads serialize");
        out.pop(); // the closing brace
        out.extend_from_slice(b",\"instances\":");
        out
    }

    /// The whole JSON document as three pieces: head, shared instances, `}`.
    pub fn pieces(&self, event: Option<EventHead<'_>>) -> [Bytes; 3] {
        [
            Bytes::from(self.head(event)),
            self.view.instances.clone(),
            Bytes::from_static(b"}"),
        ]
    }

    /// The whole JSON document in one buffer (a copy: for tests and small answers).
    pub fn to_json(&self, event: Option<EventHead<'_>>) -> Vec<u8> {
        self.pieces(event).concat()
    }

    /// The snapshot as a value (parses the JSON: for tests and diagnostics).
    pub fn to_snapshot(&self) -> Snapshot {
        serde_json::from_slice(&self.to_json(None)).expect("a rendered snapshot parses")
    }

    /// The number of instances in it.
    pub fn len(&self) -> usize {
        self.view.stats.total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
