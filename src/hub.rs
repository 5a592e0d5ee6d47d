//! The published view: the instance set rebuilt from the deltas the watcher publishes,
//! the ready flag, and the snapshot every HTTP route starts from.
//!
//! The hub never sees Kubernetes objects: it holds what the deltas say, so what a client
//! rebuilds from the delta stream and what a snapshot shows can never disagree.

use crate::model::{Delta, DeltaKind, Instance, Snapshot, Stats, Status, Summary};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::RwLock;

/// Fixed facts about what this gateway serves, repeated in every snapshot.
#[derive(Clone, Debug)]
pub struct HubInfo {
    /// The discovery mode name, e.g. `kubernetes-endpointslices`.
    pub mode: String,
    pub namespace: String,
    pub services: Vec<String>,
}

/// Which instances a client wants; an empty list means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub services: Vec<String>,
    pub statuses: Vec<Status>,
    pub zones: Vec<String>,
}

impl Filter {
    pub fn matches(&self, instance: &Instance) -> bool {
        fn any_or<T: PartialEq>(wanted: &[T], value: &T) -> bool {
            wanted.is_empty() || wanted.contains(value)
        }
        any_or(&self.namespaces, &instance.namespace)
            && any_or(&self.services, &instance.service)
            && any_or(&self.statuses, &instance.status)
            && (self.zones.is_empty()
                || instance
                    .kubernetes
                    .zone
                    .as_ref()
                    .is_some_and(|z| self.zones.contains(z)))
    }
}

#[derive(Debug)]
struct State {
    /// Number of deltas published so far.
    seq: u64,
    instances: HashMap<String, Instance>,
    /// The first complete list has been applied.
    ready: bool,
    /// The watch is currently healthy, so the view is current as of now.
    synced: bool,
    /// When the view was last known to match the cluster.
    confirmed_at: DateTime<Utc>,
}

/// The published view, shared by the watcher (one writer) and the HTTP routes.
#[derive(Debug)]
pub struct Hub {
    info: HubInfo,
    state: RwLock<State>,
}

impl Hub {
    pub fn new(info: HubInfo, now: DateTime<Utc>) -> Self {
        Self {
            info,
            state: RwLock::new(State {
                seq: 0,
                instances: HashMap::new(),
                ready: false,
                synced: false,
                confirmed_at: now,
            }),
        }
    }

    pub fn info(&self) -> &HubInfo {
        &self.info
    }

    /// Applies deltas to the view. Called by the watcher only.
    pub fn publish(&self, deltas: &[Delta], now: DateTime<Utc>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for delta in deltas {
            let key = delta.instance.key.clone();
            match delta.kind {
                DeltaKind::InstanceRemoved => {
                    state.instances.remove(&key);
                }
                _ => {
                    state.instances.insert(key, delta.instance.clone());
                }
            }
            state.seq += 1;
        }
        state.synced = true;
        state.confirmed_at = now;
    }

    /// Marks the first complete list as applied: from now on `/readyz` answers 200.
    pub fn mark_ready(&self, now: DateTime<Utc>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.ready = true;
        state.synced = true;
        state.confirmed_at = now;
    }

    /// Marks the watch as broken: `lastUpdate` stops advancing until it recovers.
    pub fn mark_unsynced(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.synced = false;
    }

    pub fn is_ready(&self) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// Number of deltas published so far.
    pub fn seq(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).seq
    }

    /// The view as the lego-loco frontend reads it, restricted by `filter`.
    ///
    /// `lastUpdate` is `now` while the watch is healthy (the view is current: that is
    /// what a push-fed cache knows), and the time of the last confirmation otherwise.
    pub fn snapshot(&self, filter: &Filter, now: DateTime<Utc>) -> Snapshot {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut instances: Vec<Instance> = state
            .instances
            .values()
            .filter(|i| filter.matches(i))
            .cloned()
            .collect();
        sort_for_grid(&mut instances);
        let last_update = if state.synced {
            now
        } else {
            state.confirmed_at
        };
        let stats = Stats::count(&instances);
        Snapshot {
            mode: self.info.mode.clone(),
            discovery_mode: self.info.mode.clone(),
            namespace: self.info.namespace.clone(),
            service_name: self.info.services.join(","),
            services: self.info.services.clone(),
            last_update,
            stats,
            summary: Summary {
                total: stats.total,
                ready: stats.ready,
                not_ready: stats.not_ready + stats.degraded,
                last_update,
            },
            instances,
        }
    }
}

/// Orders instances by service, then as the lego-loco grid fills its slots.
fn sort_for_grid(instances: &mut [Instance]) {
    instances.sort_by(|a, b| {
        (a.namespace.as_str(), a.service.as_str(), a.sort_key()).cmp(&(
            b.namespace.as_str(),
            b.service.as_str(),
            b.sort_key(),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{EndpointIndex, IndexConfig};
    use crate::slices::{mk_endpoint, mk_slice};
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn hub() -> Hub {
        Hub::new(
            HubInfo {
                mode: "kubernetes-endpointslices".into(),
                namespace: "loco".into(),
                services: vec!["emu".into()],
            },
            t(0),
        )
    }

    fn fed_hub() -> Hub {
        let hub = hub();
        let mut index = EndpointIndex::new(IndexConfig::default());
        let mut a = mk_endpoint("emu-0", "10.0.0.1", true, false);
        a.zone = Some("z1".into());
        let b = mk_endpoint("emu-1", "10.0.0.2", false, false);
        let c = mk_endpoint("emu-10", "10.0.0.3", false, true);
        let out = index.apply(&mk_slice("loco", "s", "emu", vec![c, b, a]), t(1));
        hub.publish(&out.deltas, t(1));
        hub
    }

    #[test]
    fn snapshot_lists_instances_in_ordinal_order_with_consistent_counts() {
        let hub = fed_hub();
        let snap = hub.snapshot(&Filter::default(), t(2));
        let ids: Vec<&str> = snap.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["instance-0", "instance-1", "instance-10"]);
        assert_eq!(
            snap.stats,
            Stats {
                total: 3,
                ready: 1,
                degraded: 0,
                not_ready: 2
            }
        );
        assert_eq!(
            snap.stats.ready + snap.stats.degraded + snap.stats.not_ready,
            snap.stats.total
        );
        assert_eq!(snap.summary.not_ready, 2);
        assert_eq!(hub.seq(), 3);
    }

    #[test]
    fn snapshot_json_has_both_envelope_spellings() {
        let snap = fed_hub().snapshot(&Filter::default(), t(2));
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["mode"], "kubernetes-endpointslices");
        assert_eq!(json["discoveryMode"], "kubernetes-endpointslices");
        assert_eq!(json["serviceName"], "emu");
        assert_eq!(json["namespace"], "loco");
        assert_eq!(json["stats"]["notReady"], 2);
        assert_eq!(json["summary"]["total"], 3);
        assert_eq!(json["lastUpdate"], "2023-11-14T22:13:22.000Z");
        assert_eq!(json["summary"]["lastUpdate"], json["lastUpdate"]);
    }

    #[test]
    fn filters_restrict_the_snapshot() {
        let hub = fed_hub();
        let by_status = Filter {
            statuses: vec![Status::Booting, Status::Offline],
            ..Filter::default()
        };
        assert_eq!(hub.snapshot(&by_status, t(2)).stats.total, 2);
        let by_zone = Filter {
            zones: vec!["z1".into()],
            ..Filter::default()
        };
        assert_eq!(hub.snapshot(&by_zone, t(2)).instances[0].id, "instance-0");
        let other_service = Filter {
            services: vec!["web".into()],
            ..Filter::default()
        };
        assert!(hub.snapshot(&other_service, t(2)).instances.is_empty());
    }

    #[test]
    fn last_update_stops_advancing_while_the_watch_is_broken() {
        let hub = fed_hub();
        assert!(!hub.is_ready());
        hub.mark_ready(t(5));
        assert!(hub.is_ready());
        assert_eq!(hub.snapshot(&Filter::default(), t(9)).last_update, t(9));
        hub.mark_unsynced();
        assert_eq!(hub.snapshot(&Filter::default(), t(30)).last_update, t(5));
        hub.publish(&[], t(31));
        assert_eq!(hub.snapshot(&Filter::default(), t(40)).last_update, t(40));
    }
}
