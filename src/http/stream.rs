//! One subscriber's event sequence, independent of the transport: the start (snapshot,
//! resume backlog or reset), then live frames through the subscriber's filter, resets
//! after falling behind, heartbeats, and a final `reconnect` at shutdown.
//!
//! SSE and WebSocket only frame what this yields.

use crate::metrics as m;
use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use loco_discovery_core::hub::{left_view_json, Filter, Frame, Hub, Start, Subscription};
use loco_discovery_core::rendered::{EventHead, RenderedSnapshot};
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Settings shared by the stream routes.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Time between heartbeats (SSE comments, WebSocket pings).
    pub heartbeat: Duration,
    /// The most concurrent stream subscribers; more get 503.
    pub max_subscribers: usize,
    /// Base reconnect delay advertised to clients; each client gets it plus jitter.
    pub retry: Duration,
    /// Cancelled when the gateway shuts down: every stream then says `reconnect` and ends.
    pub shutdown: CancellationToken,
    /// A WebSocket whose socket accepts nothing this long is closed (SSE and other
    /// responses: [`crate::http::server::ServerLimits::write_timeout`]).
    pub write_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_subscribers: 10_000,
            retry: Duration::from_secs(2),
            shutdown: CancellationToken::new(),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// A reconnect delay between `base` and `3 × base`, different for every client, so a
/// gateway restart does not bring every browser back in the same second.
pub fn jittered(base: Duration) -> Duration {
    let ms = base.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(ms..=ms * 3))
}

/// Something to send to one subscriber. Everything large in it is shared: published
/// frames with every subscriber, snapshots with every subscriber of the same view.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A published delta, as published.
    Frame(Arc<Frame>),
    /// The frame's instance left this subscriber's filtered view: an `InstanceRemoved`
    /// with reason `filtered-out`, made for this subscriber.
    Left { frame: Arc<Frame>, data: Bytes },
    /// The whole view: a `snapshot` event, or a `reset` with its reason.
    Snapshot {
        kind: &'static str,
        reason: Option<&'static str>,
        id: String,
        snapshot: RenderedSnapshot,
    },
    /// Nothing happened for a heartbeat interval.
    Heartbeat,
    /// The gateway is shutting down: reconnect after `retry`. The stream ends after it.
    Reconnect { retry: Duration, data: Bytes },
}

impl Outgoing {
    /// A snapshot event's JSON up to its instances (`{"type":…,"instances":`), made for
    /// this subscriber; empty for anything else.
    pub fn snapshot_head(&self) -> Vec<u8> {
        match self {
            Self::Snapshot {
                kind,
                reason,
                id,
                snapshot,
            } => snapshot.head(Some(EventHead {
                kind,
                id,
                reason: *reason,
            })),
            _ => Vec::new(),
        }
    }

    /// The published frame behind it, for the published → socket latency.
    pub fn frame(&self) -> Option<&Arc<Frame>> {
        match self {
            Self::Frame(frame) | Self::Left { frame, .. } => Some(frame),
            _ => None,
        }
    }
}

/// The bytes of one outgoing item as a transport encoded it, in pieces sent as they are.
/// A published delta is one shared piece: no allocation per subscriber for it.
pub enum Pieces {
    One(Option<Bytes>),
    Many(std::vec::IntoIter<Bytes>),
}

impl From<Bytes> for Pieces {
    fn from(piece: Bytes) -> Self {
        Self::One(Some(piece))
    }
}

impl From<Vec<Bytes>> for Pieces {
    fn from(pieces: Vec<Bytes>) -> Self {
        Self::Many(pieces.into_iter())
    }
}

impl Iterator for Pieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self {
            Self::One(piece) => piece.take(),
            Self::Many(pieces) => pieces.next(),
        }
    }
}

/// Counts live subscribers per transport, and refuses them past the cap.
#[derive(Debug, Default)]
pub struct SubscriberCount {
    count: AtomicUsize,
}

/// Holds one subscriber slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SubscriberSlot {
    counts: Arc<SubscriberCount>,
    transport: &'static str,
}

impl SubscriberCount {
    /// Takes a slot, or `None` when `max` subscribers are already connected.
    pub fn acquire(
        self: &Arc<Self>,
        max: usize,
        transport: &'static str,
    ) -> Option<SubscriberSlot> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            tracing::debug!(transport, "subscriber connected");
            metrics::gauge!(m::SUBSCRIBERS, "transport" => transport).increment(1.0);
            SubscriberSlot {
                counts: self.clone(),
                transport,
            }
        })
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.counts.count.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(transport = self.transport, "subscriber disconnected");
        metrics::gauge!(m::SUBSCRIBERS, "transport" => self.transport).decrement(1.0);
    }
}

/// Records the published → socket latency of a delivered frame.
pub fn record_delivery(out: &Outgoing, transport: &'static str) {
    if let Some(frame) = out.frame() {
        let slot = usize::from(transport == "ws");
        frame.latency[slot]
            .get_or_init(|| {
                metrics::histogram!(m::PUBLISHED_TO_SOCKET,
                    "service" => frame.instance.service.clone(), "transport" => transport)
            })
            .record(frame.published_at.elapsed().as_secs_f64());
    }
}

/// Decides, per frame, what a filtered subscriber sees; tracks which instances are in its
/// view when the filter depends on an instance's state.
struct View {
    filter: Filter,
    /// Keys in view; `None` when unknown (a resumed subscriber), then every instance
    /// that does not match is removed, which is harmless for one that was never shown.
    shown: Option<HashSet<String>>,
}

impl View {
    fn reset(&mut self, snapshot: &RenderedSnapshot) {
        if let Some(keys) = &snapshot.view.keys {
            self.shown = Some(keys.iter().cloned().collect());
        }
    }

    fn pass(&mut self, frame: &Arc<Frame>) -> Option<Outgoing> {
        if !self.filter.matches_place(&frame.instance) {
            return None;
        }
        if !self.filter.is_by_state() {
            return Some(Outgoing::Frame(frame.clone()));
        }
        let key = &frame.instance.key;
        let removed = frame.kind == loco_discovery_core::model::DeltaKind::InstanceRemoved;
        let matches = !removed && self.filter.matches(&frame.instance);
        let was_shown = self.shown.as_ref().is_none_or(|s| s.contains(key));
        if let Some(shown) = self.shown.as_mut() {
            if matches {
                shown.insert(key.clone());
            } else {
                shown.remove(key);
            }
        }
        match (matches, was_shown, removed) {
            (true, _, _) | (false, true, true) => Some(Outgoing::Frame(frame.clone())),
            (false, true, false) => Some(Outgoing::Left {
                frame: frame.clone(),
                data: left_view_json(&frame.instance, &frame.id, Utc::now()).into(),
            }),
            (false, false, _) => None,
        }
    }
}

/// The event sequence of one subscriber. It ends after `Reconnect` at shutdown, or when
/// the hub is gone.
pub fn subscriber_stream(
    hub: Arc<Hub>,
    filter: Filter,
    last_event_id: Option<String>,
    config: StreamConfig,
    slot: SubscriberSlot,
) -> impl Stream<Item = Outgoing> + Send + 'static {
    async_stream::stream! {
        let _slot = slot;
        let Subscription { start, mut live, mut after_seq, mut epoch } =
            hub.subscribe(&filter, last_event_id.as_deref(), Utc::now());
        let mut view = View { filter, shown: None };
        match start {
            Start::Snapshot { snapshot, id } => {
                view.reset(&snapshot);
                yield Outgoing::Snapshot { kind: "snapshot", reason: None, id, snapshot };
            }
            Start::Reset { snapshot, id } => {
                view.reset(&snapshot);
                metrics::counter!(m::RESETS, "reason" => "unknown_id").increment(1);
                yield Outgoing::Snapshot { kind: "reset", reason: Some("unknown_id"), id, snapshot };
            }
            Start::Resume { backlog } => {
                for frame in &backlog {
                    if let Some(out) = view.pass(frame) {
                        yield out;
                    }
                }
            }
        }
        // Timers and waiters are set up once, not per event: an event only records when
        // it was sent, and the heartbeat timer moves when it fires (once per interval).
        let heartbeat = tokio::time::sleep(config.heartbeat);
        let mut heartbeat = std::pin::pin!(heartbeat);
        let mut last_sent = tokio::time::Instant::now();
        let shutdown = config.shutdown.clone();
        let mut shutdown = std::pin::pin!(shutdown.cancelled_owned());
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    let retry = jittered(config.retry);
                    let data = json!({"type": "reconnect", "retryMs": retry.as_millis() as u64})
                        .to_string();
                    yield Outgoing::Reconnect { retry, data: data.into() };
                    break;
                }
                received = live.recv() => {
                    // A subscriber that fell behind the ring, or whose position belongs
                    // to an API history that is gone, starts over from a snapshot.
                    let reason = match received {
                        Ok(frame) if frame.seq <= after_seq => continue,
                        Ok(frame) if frame.epoch == epoch => {
                            if let Some(out) = view.pass(&frame) {
                                last_sent = tokio::time::Instant::now();
                                yield out;
                            }
                            continue;
                        }
                        Ok(_) => "api_history_changed",
                        Err(RecvError::Lagged(_)) => "slow_subscriber",
                        Err(RecvError::Closed) => break,
                    };
                    let resync = hub.resync(&view.filter, Utc::now());
                    (after_seq, epoch) = (resync.seq, resync.epoch);
                    view.reset(&resync.snapshot);
                    last_sent = tokio::time::Instant::now();
                    metrics::counter!(m::RESETS, "reason" => reason).increment(1);
                    yield Outgoing::Snapshot {
                        kind: "reset",
                        reason: Some(reason),
                        id: resync.id,
                        snapshot: resync.snapshot,
                    };
                },
                _ = heartbeat.as_mut() => {
                    let due = last_sent + config.heartbeat;
                    if due > tokio::time::Instant::now() {
                        heartbeat.as_mut().reset(due);
                        continue;
                    }
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + config.heartbeat);
                    last_sent = tokio::time::Instant::now();
                    metrics::counter!(m::HEARTBEATS).increment(1);
                    yield Outgoing::Heartbeat;
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use futures::StreamExt;
    use loco_discovery_core::hub::HubInfo;
    use loco_discovery_core::index::{EndpointIndex, IndexConfig};
    use loco_discovery_core::slices::{mk_endpoint, mk_slice};
    use tokio::time::Instant;

    pub(in crate::http) fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(
            HubInfo {
                mode: "kubernetes-endpointslices".into(),
                namespace: "loco".into(),
                services: vec!["emu".into()],
                prefer_zone: None,
            },
            Utc::now(),
        ))
    }

    fn stream_for(hub: &Arc<Hub>, config: StreamConfig) -> impl Stream<Item = Outgoing> {
        let slot = Arc::new(SubscriberCount::default())
            .acquire(1, "test")
            .unwrap();
        subscriber_stream(hub.clone(), Filter::default(), None, config, slot)
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_on_time_and_only_when_idle() {
        let hub = hub();
        let config = StreamConfig::default();
        let mut stream = std::pin::pin!(stream_for(&hub, config));
        let start = Instant::now();
        assert!(
            matches!(stream.next().await, Some(Outgoing::Snapshot { kind, .. }) if kind == "snapshot")
        );
        assert!(matches!(stream.next().await, Some(Outgoing::Heartbeat)));
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert!(matches!(stream.next().await, Some(Outgoing::Heartbeat)));
        assert_eq!(start.elapsed(), Duration::from_secs(30));

        // An event at 40 s pushes the next heartbeat to 55 s.
        let publisher = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let mut index = EndpointIndex::new(IndexConfig::default());
            let out = index.apply(
                &mk_slice(
                    "loco",
                    "s",
                    "emu",
                    vec![mk_endpoint("emu-0", "10.0.0.1", true, false)],
                ),
                Utc::now(),
            );
            publisher.publish(&out.deltas, "7", Utc::now());
        });
        assert!(matches!(stream.next().await, Some(Outgoing::Frame(frame)) if frame.id == "7.1"));
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        assert!(matches!(stream.next().await, Some(Outgoing::Heartbeat)));
        assert_eq!(start.elapsed(), Duration::from_secs(55));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_stream_with_a_jittered_reconnect() {
        let hub = hub();
        let config = StreamConfig::default();
        let shutdown = config.shutdown.clone();
        let mut stream = std::pin::pin!(stream_for(&hub, config));
        stream.next().await;
        shutdown.cancel();
        match stream.next().await {
            Some(Outgoing::Reconnect { retry, data }) => {
                assert!((2000..=6000).contains(&(retry.as_millis() as u64)));
                assert!(String::from_utf8_lossy(&data).contains("reconnect"));
            }
            other => panic!("{other:?}"),
        }
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn slots_are_capped_and_freed_on_drop() {
        let counts = Arc::new(SubscriberCount::default());
        let a = counts.acquire(2, "sse").unwrap();
        let _b = counts.acquire(2, "sse").unwrap();
        assert!(counts.acquire(2, "sse").is_none());
        drop(a);
        assert_eq!(counts.current(), 1);
        assert!(counts.acquire(2, "sse").is_some());
    }

    #[test]
    fn jitter_stays_between_one_and_three_times_the_base() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(6));
        }
    }
}
