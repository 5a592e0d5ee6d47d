use super::*;
use crate::index::{EndpointIndex, IndexConfig};
use crate::slices::{mk_endpoint, mk_slice};
use chrono::TimeZone;
use tokio::sync::broadcast::error::TryRecvError;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn info() -> HubInfo {
    HubInfo {
        mode: "kubernetes-endpointslices".into(),
        namespace: "loco".into(),
        services: vec!["emu".into()],
        prefer_zone: None,
    }
}

/// A hub fed by a real index, with a helper to publish slice states.
struct Fixture {
    hub: Hub,
    index: EndpointIndex,
    rv: u64,
}

impl Fixture {
    fn new(limits: HubLimits) -> Self {
        Self {
            hub: Hub::with_limits(info(), limits, t(0)),
            index: EndpointIndex::new(IndexConfig::default()),
            rv: 100,
        }
    }

    /// Publishes slice `s` with the given (ordinal, serving) pods, returns the deltas' count.
    fn set(&mut self, pods: &[(u32, bool)]) -> usize {
        let endpoints = pods
            .iter()
            .map(|(n, serving)| {
                let mut e =
                    mk_endpoint(&format!("emu-{n}"), &format!("10.0.0.{n}"), *serving, false);
                if *n == 0 {
                    e.zone = Some("z1".into());
                }
                e
            })
            .collect();
        let out = self
            .index
            .apply(&mk_slice("loco", "s", "emu", endpoints), t(self.rv as i64));
        self.rv += 1;
        self.hub
            .publish(&out.deltas, &self.rv.to_string(), t(self.rv as i64));
        out.deltas.len()
    }
}

fn fed() -> Fixture {
    let mut f = Fixture::new(HubLimits::default());
    f.set(&[(10, false), (1, false), (0, true)]);
    f
}

fn recv_ids(sub: &mut Subscription) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        match sub.live.try_recv() {
            Ok(frame) if frame.seq > sub.after_seq => ids.push(frame.id.clone()),
            Ok(_) => {}
            Err(TryRecvError::Empty) => return ids,
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn snapshot_lists_instances_in_ordinal_order_with_consistent_counts() {
    let f = fed();
    let snap = f.hub.snapshot(&Filter::default(), t(2));
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
    assert_eq!(snap.summary.not_ready, 2);
    assert_eq!(f.hub.seq(), 3);
}

#[test]
fn snapshot_json_has_both_envelope_spellings() {
    let f = fed();
    f.hub.confirm(t(1));
    let snap = f.hub.snapshot(&Filter::default(), t(2));
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["mode"], "kubernetes-endpointslices");
    assert_eq!(json["discoveryMode"], "kubernetes-endpointslices");
    assert_eq!(json["serviceName"], "emu");
    assert_eq!(json["namespace"], "loco");
    assert_eq!(json["stats"]["notReady"], 2);
    assert_eq!(json["summary"]["total"], 3);
    assert_eq!(json["lastUpdate"], "2023-11-14T22:13:22.000Z");
    assert_eq!(json["summary"]["lastUpdate"], json["lastUpdate"]);
    assert_eq!(json["synced"], true);
}

#[test]
fn filters_restrict_the_snapshot() {
    let f = fed();
    let by_status = Filter {
        statuses: vec![Status::Booting, Status::Offline],
        ..Filter::default()
    };
    assert_eq!(f.hub.snapshot(&by_status, t(2)).stats.total, 2);
    let by_zone = Filter {
        zones: vec!["z1".into()],
        ..Filter::default()
    };
    assert_eq!(f.hub.snapshot(&by_zone, t(2)).instances[0].id, "instance-0");
    let other_service = Filter {
        services: vec!["web".into()],
        ..Filter::default()
    };
    assert!(f.hub.snapshot(&other_service, t(2)).instances.is_empty());
}

#[test]
fn last_update_stops_advancing_while_the_watch_is_broken() {
    let f = fed();
    assert!(!f.hub.is_ready());
    f.hub.mark_ready(t(5));
    assert!(f.hub.is_ready());
    assert_eq!(f.hub.snapshot(&Filter::default(), t(9)).last_update, t(9));
    f.hub.mark_unsynced();
    assert_eq!(f.hub.snapshot(&Filter::default(), t(30)).last_update, t(5));
    assert!(!f.hub.snapshot(&Filter::default(), t(30)).synced);
    // A replica-local change (a probe, a metadata edit) confirms nothing.
    f.hub.publish(&[], "probe-1", t(31));
    assert_eq!(f.hub.snapshot(&Filter::default(), t(32)).last_update, t(5));
    f.hub.confirm(t(33));
    let snap = f.hub.snapshot(&Filter::default(), t(40));
    assert_eq!((snap.last_update, snap.synced), (t(40), true));
}

#[test]
fn frame_ids_name_the_change_and_the_position_within_it() {
    let f = fed();
    let history: Vec<String> = f
        .hub
        .read()
        .history
        .iter()
        .map(|fr| fr.id.clone())
        .collect();
    assert_eq!(history, vec!["101.1", "101.2", "101.3"]);
    let json: serde_json::Value = serde_json::from_slice(&f.hub.read().history[0].json).unwrap();
    assert_eq!(json["type"], "InstanceAdded");
    assert_eq!(json["id"], "101.1");
    assert_eq!(json["instanceId"], "instance-0");
    assert_eq!(json["service"], "emu");
    assert_eq!(
        json["stats"]["total"], 1,
        "stats of the service after this delta"
    );
    assert!(json["instance"]["addresses"]["podIP"].is_string());
    let last: serde_json::Value = serde_json::from_slice(&f.hub.read().history[2].json).unwrap();
    assert_eq!(last["stats"]["total"], 3);
}

#[test]
fn a_new_subscriber_gets_the_snapshot_then_only_later_frames() {
    let mut f = fed();
    let mut sub = f.hub.subscribe(&Filter::default(), None, t(3));
    match &sub.start {
        Start::Snapshot { snapshot, id } => {
            assert_eq!(snapshot.len(), 3);
            assert_eq!(id, "101.3");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.set(&[(0, true), (1, true), (10, false)]), 1);
    assert_eq!(recv_ids(&mut sub), vec!["102.1"]);
}

#[test]
fn resuming_from_a_known_id_replays_exactly_what_was_missed() {
    let mut f = fed();
    f.set(&[(0, true), (1, true), (10, false)]);
    f.set(&[(0, true), (1, true)]);
    f.set(&[(0, true), (1, true), (2, false)]);
    let mut sub = f.hub.subscribe(&Filter::default(), Some("102.1"), t(9));
    match &sub.start {
        Start::Resume { backlog } => {
            let ids: Vec<&str> = backlog.iter().map(|fr| fr.id.as_str()).collect();
            assert_eq!(ids, vec!["103.1", "104.1"]);
        }
        other => panic!("{other:?}"),
    }
    f.set(&[(0, true), (1, true), (2, true)]);
    assert_eq!(recv_ids(&mut sub), vec!["105.1"]);
}

#[test]
fn an_unknown_or_expired_id_gets_a_reset_snapshot() {
    let mut f = Fixture::new(HubLimits {
        history: 2,
        subscriber_lag: 16,
    });
    for n in 0..4 {
        f.set(&(0..=n).map(|o| (o, true)).collect::<Vec<_>>());
    }
    assert_eq!(f.hub.history_len(), 2);
    for id in ["nonsense", "101.1"] {
        match f.hub.subscribe(&Filter::default(), Some(id), t(9)).start {
            Start::Reset { snapshot, id } => {
                assert_eq!(snapshot.len(), 4);
                assert_eq!(id, "104.1");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        f.hub
            .subscribe(&Filter::default(), Some("103.1"), t(9))
            .start,
        Start::Resume { .. }
    ));
}

#[test]
fn the_initial_position_is_resumable_before_anything_is_published() {
    let hub = Hub::new(info(), t(0));
    let Start::Snapshot { id, .. } = hub.subscribe(&Filter::default(), None, t(0)).start else {
        panic!("not a snapshot")
    };
    assert!(matches!(
        hub.subscribe(&Filter::default(), Some(&id), t(0)).start,
        Start::Resume { backlog } if backlog.is_empty()
    ));
}

#[test]
fn a_subscriber_that_falls_behind_is_told_it_lagged() {
    let mut f = Fixture::new(HubLimits {
        history: 100,
        subscriber_lag: 4,
    });
    let mut slow = f.hub.subscribe(&Filter::default(), None, t(0));
    for n in 0..10 {
        f.set(&[(n, true)]);
    }
    assert!(matches!(slow.live.try_recv(), Err(TryRecvError::Lagged(_))));
}

#[test]
fn prefer_zone_lists_that_zone_first_and_keeps_the_grid_order_within() {
    let hub = Hub::new(info(), t(0));
    let mut index = EndpointIndex::new(IndexConfig::default());
    let endpoints = [(0, "z2"), (1, "z1"), (2, "z2"), (3, "z1")]
        .iter()
        .map(|(n, zone)| {
            let mut e = mk_endpoint(&format!("emu-{n}"), &format!("10.0.0.{n}"), true, false);
            e.zone = Some((*zone).into());
            e
        })
        .collect();
    let out = index.apply(&mk_slice("loco", "s", "emu", endpoints), t(1));
    hub.publish(&out.deltas, "5", t(1));
    let ids = |filter: &Filter| -> Vec<String> {
        hub.snapshot(filter, t(9))
            .instances
            .iter()
            .map(|i| i.id.clone())
            .collect()
    };
    let prefer = |zone: &str| Filter {
        prefer_zone: Some(zone.into()),
        ..Filter::default()
    };
    assert_eq!(
        ids(&Filter::default()),
        vec!["instance-0", "instance-1", "instance-2", "instance-3"]
    );
    assert_eq!(
        ids(&prefer("z1")),
        vec!["instance-1", "instance-3", "instance-0", "instance-2"]
    );
    assert_eq!(ids(&prefer("nowhere")), ids(&Filter::default()));
}

#[test]
fn a_position_whose_following_frames_were_pruned_gets_a_reset() {
    let mut f = Fixture::new(HubLimits {
        history: 2,
        subscriber_lag: 16,
    });
    let Start::Snapshot { id: anchor, .. } = f.hub.subscribe(&Filter::default(), None, t(0)).start
    else {
        panic!("not a snapshot")
    };
    f.set(&[(0, true)]);
    assert!(
        matches!(f.hub.subscribe(&Filter::default(), Some(&anchor), t(1)).start, Start::Resume { ref backlog } if backlog.len() == 1),
        "still resumable while its next frame is kept"
    );
    for n in 1..4 {
        f.set(&(0..=n).map(|o| (o, true)).collect::<Vec<_>>());
    }
    assert!(matches!(
        f.hub
            .subscribe(&Filter::default(), Some(&anchor), t(9))
            .start,
        Start::Reset { .. }
    ));
}

#[test]
fn a_resource_version_going_back_starts_a_new_epoch_that_no_old_id_resumes_into() {
    let mut f = Fixture::new(HubLimits::default());
    assert!(!f.hub.observe_resource_version(101));
    f.set(&[(0, true)]);
    assert!(!f.hub.observe_resource_version(102));
    f.set(&[(0, true), (1, true)]);
    let old_id = "101.1";
    let before = f.hub.subscribe(&Filter::default(), Some(old_id), t(5));
    assert!(matches!(before.start, Start::Resume { .. }));
    assert_eq!(before.epoch, 0);
    let mut live = before.live;

    assert!(
        f.hub.observe_resource_version(3),
        "3 after 102: another history"
    );
    f.rv = 2;
    f.set(&[(1, true)]);
    let frame = live.try_recv().unwrap();
    assert_eq!(
        frame.epoch, 1,
        "live frames say which history they belong to"
    );
    let after = f.hub.subscribe(&Filter::default(), Some(old_id), t(6));
    assert!(
        matches!(after.start, Start::Reset { .. }),
        "an id of the old history is not resumable"
    );
    assert_eq!(after.epoch, 1);
    assert!(!f.hub.observe_resource_version(4));
}

#[test]
fn a_terminating_instance_says_degraded_to_the_cards_and_offline_as_its_state() {
    let mut index = EndpointIndex::new(IndexConfig::default());
    let endpoints = vec![
        mk_endpoint("emu-0", "10.0.0.1", true, false),
        mk_endpoint("emu-1", "10.0.0.2", false, false),
        mk_endpoint("emu-2", "10.0.0.3", false, true),
    ];
    let out = index.apply(&mk_slice("loco", "s", "emu", endpoints), t(1));
    let hub = Hub::new(info(), t(0));
    hub.publish(&out.deltas, "5", t(2));
    let json = serde_json::to_value(hub.snapshot(&Filter::default(), t(3))).unwrap();
    let words: Vec<(String, String, String)> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let word = |f: &str| i[f].as_str().unwrap().to_owned();
            (
                word("status"),
                word("state"),
                i["health"]["details"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("ready", "ready", "serving"),
        ("booting", "booting", "not serving"),
        ("degraded", "offline", "terminating"),
    ];
    assert_eq!(
        words,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert_eq!(
        json["stats"]["notReady"], 2,
        "counted by state, not by the card word"
    );
    let back: Instance = serde_json::from_value(json["instances"][2].clone()).unwrap();
    assert_eq!(back.status, Status::Offline);
}

#[test]
fn a_rendered_snapshot_is_the_snapshot_and_its_event_byte_for_byte() {
    let f = fed();
    let filters = [
        Filter::default(),
        Filter {
            statuses: vec![Status::Booting],
            ..Filter::default()
        },
        Filter {
            prefer_zone: Some("z1".into()),
            ..Filter::default()
        },
    ];
    for filter in filters {
        let rendered = f.hub.rendered(&filter, t(4));
        let snapshot = f.hub.snapshot(&filter, t(4));
        assert_eq!(
            rendered.to_json(None),
            serde_json::to_vec(&snapshot).unwrap()
        );
        let event = crate::rendered::EventHead {
            kind: "reset",
            id: "101.3",
            reason: Some("unknown_id"),
        };
        let expected = SnapshotEvent {
            kind: "reset",
            id: "101.3",
            reason: Some("unknown_id"),
            snapshot: &snapshot,
        };
        assert_eq!(
            rendered.to_json(Some(event)),
            serde_json::to_vec(&expected).unwrap()
        );
        assert_eq!(rendered.to_snapshot(), snapshot);
    }
}

#[test]
fn a_view_is_serialized_once_per_position_and_filter_and_forgotten_when_it_changes() {
    let mut f = fed();
    f.hub.mark_ready(t(3));
    f.hub.confirm(t(3));
    let all = Filter::default();
    let first = f.hub.rendered(&all, t(4));
    let again = f.hub.rendered(&all, t(5));
    assert!(Arc::ptr_eq(&first.view, &again.view), "shared bytes");
    assert_ne!(
        first.head(None),
        again.head(None),
        "each answer has its own time"
    );
    let Start::Snapshot { snapshot, .. } = f.hub.subscribe(&all, None, t(6)).start else {
        panic!("a new subscriber starts from a snapshot");
    };
    assert!(Arc::ptr_eq(&first.view, &snapshot.view));
    f.set(&[(0, true)]);
    assert!(f.hub.views.is_empty(), "a publish forgets the old view");
    let after = f.hub.rendered(&all, t(7));
    assert!(!Arc::ptr_eq(&first.view, &after.view));
    assert_eq!(after.len(), 1);
}

#[test]
fn the_view_cache_is_bounded_whatever_filters_clients_choose() {
    let f = fed();
    for n in 0..3 * crate::rendered::MAX_CACHED_VIEWS {
        let filter = Filter {
            zones: vec![format!("zone-{n}")],
            ..Filter::default()
        };
        assert!(f.hub.rendered(&filter, t(4)).is_empty());
    }
    assert_eq!(f.hub.views.len(), crate::rendered::MAX_CACHED_VIEWS);
}

#[test]
fn the_view_gives_its_table_back_when_a_large_service_shrinks() {
    let mut f = Fixture::new(HubLimits::default());
    f.set(&(0..250).map(|o| (o, true)).collect::<Vec<_>>());
    let large = f.hub.read().instances.capacity();
    assert!(large >= 250);
    f.set(&[(0, true)]);
    let state = f.hub.read();
    assert_eq!(state.instances.len(), 1);
    assert!(
        state.instances.capacity() < large / 4,
        "{}",
        state.instances.capacity()
    );
}
