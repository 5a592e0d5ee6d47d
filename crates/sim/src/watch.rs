//! One watch stream: the events before the live broadcast (synthetic ADDED or history replay), then live events
//! filtered for this watcher, bookmarks, and the end of the stream (timeout, cut, shutdown, 410).

use super::faults::{FaultState, Faults, WatchGuard};
use super::media::Representation;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{self, EventType, ResourceKind, Store, StoredEvent, WatchFrom};
use super::table;
use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// What a watch asked for.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub kind: ResourceKind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub repr: Representation,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    /// How long the stream stays open before it ends normally.
    pub timeout: Duration,
    /// `sendInitialEvents=true`: after the initial ADDED events, a bookmark marks their end.
    pub initial_events_end: bool,
    pub from: WatchFrom,
}

enum Outgoing {
    Event(Arc<StoredEvent>),
    Synthetic(Arc<Value>),
    Bookmark { rv: u64, initial_end: bool },
    Error(Value),
    End,
}

/// The state of one open watch.
pub struct WatchSession {
    spec: WatchSpec,
    store: Store,
    pending: VecDeque<Outgoing>,
    rx: Option<broadcast::Receiver<Arc<StoredEvent>>>,
    /// The highest resourceVersion this watch has processed (sent or filtered out).
    last_rv: u64,
    /// Events at or below this resourceVersion are not sent (a watch from a resourceVersion newer than the store).
    skip_until: u64,
    faults_rx: watch::Receiver<FaultState>,
    cut_generation: u64,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    bookmark_timer: Option<Interval>,
    columns_sent: bool,
    done: bool,
    _guard: WatchGuard,
}

impl WatchSession {
    /// Opens a watch. A resourceVersion older than the history gives a stream of one ERROR 410 event.
    pub fn start(
        store: Store,
        faults: &Faults,
        shutdown: watch::Receiver<bool>,
        spec: WatchSpec,
    ) -> WatchSession {
        let faults_rx = faults.subscribe();
        let cut_generation = faults_rx.borrow().cut_generation;
        let now = Instant::now();
        let bookmark_timer = spec.bookmarks.then(|| {
            let period = spec.bookmark_interval.max(Duration::from_millis(10));
            let mut t = tokio::time::interval_at(now + period, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut session = WatchSession {
            deadline: now + spec.timeout,
            store: store.clone(),
            pending: VecDeque::new(),
            rx: None,
            last_rv: 0,
            skip_until: 0,
            faults_rx,
            cut_generation,
            shutdown,
            bookmark_timer,
            columns_sent: false,
            done: false,
            _guard: faults.watch_guard(),
            spec,
        };
        match store.start_watch(session.spec.kind, session.spec.from) {
            Ok(start) => {
                session.last_rv = start.rv;
                session.rx = Some(start.rx);
                for obj in start.initial_objects {
                    session.pending.push_back(Outgoing::Synthetic(obj));
                }
                if session.spec.initial_events_end {
                    session.pending.push_back(Outgoing::Bookmark {
                        rv: start.rv,
                        initial_end: true,
                    });
                }
                for ev in start.replay {
                    session.pending.push_back(Outgoing::Event(ev));
                }
                if let WatchFrom::After(rv) = session.spec.from {
                    session.skip_until = rv;
                }
            }
            Err(e) => {
                session.pending.push_back(Outgoing::Error(e.status()));
                session.pending.push_back(Outgoing::End);
            }
        }
        session
    }

    /// The stream of chunks (one event line each) for the response body.
    pub fn into_stream(self) -> impl Stream<Item = Bytes> + Send {
        futures::stream::unfold(
            self,
            |mut s| async move { s.next_chunk().await.map(|b| (b, s)) },
        )
    }

    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.spec.namespace.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        ns_ok && self.spec.labels.matches(obj) && self.spec.fields.matches(obj)
    }

    /// The event as this watcher sees it: an update that leaves the selection is a DELETED of the previous state,
    /// one that enters it is an ADDED.
    fn classify(&self, ev: &StoredEvent) -> Option<(EventType, Option<Value>)> {
        if ev.kind != self.spec.kind {
            return None;
        }
        let cur = self.matches(&ev.object);
        match ev.ty {
            EventType::Added | EventType::Deleted => cur.then_some((ev.ty, None)),
            EventType::Modified => {
                let old = ev.prev.as_deref().is_some_and(|p| self.matches(p));
                match (old, cur) {
                    (true, true) => Some((EventType::Modified, None)),
                    (false, true) => Some((EventType::Added, None)),
                    (true, false) => Some((
                        EventType::Deleted,
                        ev.prev.as_deref().map(|p| store::with_rv(p, ev.rv)),
                    )),
                    (false, false) => None,
                }
            }
        }
    }

    fn render_object(&mut self, ty: &str, obj: &Value) -> Bytes {
        match self.spec.repr {
            Representation::Json => store::watch_line(ty, obj),
            Representation::Table(opts) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                let t = table::table(
                    self.spec.kind,
                    [obj],
                    opts,
                    json!({"resourceVersion": rv}),
                    !self.columns_sent,
                );
                self.columns_sent = true;
                store::watch_line(ty, &t)
            }
            Representation::Metadata(api_version) => {
                store::watch_line(ty, &table::partial_metadata(obj, api_version))
            }
        }
    }

    fn render_bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = match self.spec.repr {
            Representation::Json => json!({
                "kind": self.spec.kind.kind(),
                "apiVersion": self.spec.kind.api_version(),
                "metadata": metadata,
            }),
            Representation::Table(opts) => json!({
                "kind": "Table",
                "apiVersion": opts.api_version,
                "metadata": metadata,
                "columnDefinitions": [],
                "rows": [],
            }),
            Representation::Metadata(api_version) => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": api_version,
                "metadata": metadata,
            }),
        };
        store::watch_line("BOOKMARK", &obj)
    }

    /// Turns a queued item into bytes, `None` when this watcher does not get it.
    fn render(&mut self, out: Outgoing) -> Option<Bytes> {
        match out {
            Outgoing::Synthetic(obj) => self
                .matches(&obj)
                .then(|| self.render_object("ADDED", &obj)),
            Outgoing::Event(ev) => {
                let (ty, replaced) = self.classify(&ev)?;
                match (&self.spec.repr, ty == ev.ty, replaced) {
                    (Representation::Json, true, None) => Some(ev.json_line()),
                    (_, _, Some(obj)) => Some(self.render_object(ty.as_str(), &obj)),
                    (_, _, None) => Some(self.render_object(ty.as_str(), &ev.object.clone())),
                }
            }
            Outgoing::Bookmark { rv, initial_end } => Some(self.render_bookmark(rv, initial_end)),
            Outgoing::Error(status) => Some(store::watch_line("ERROR", &status)),
            Outgoing::End => {
                self.done = true;
                None
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.faults_rx.borrow().cut_generation != self.cut_generation
    }

    /// Waits out a stall; false when the watch must end meanwhile (cut or shutdown).
    async fn wait_sendable(&mut self) -> bool {
        loop {
            let st = self.faults_rx.borrow_and_update().clone();
            if st.cut_generation != self.cut_generation || *self.shutdown.borrow() {
                return false;
            }
            let Some(until) = st.stalled_until() else {
                return true;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                r = self.faults_rx.changed() => if r.is_err() { return true },
                _ = self.shutdown.changed() => return false,
            }
        }
    }

    fn accept_event(&mut self, ev: Arc<StoredEvent>) {
        if ev.rv <= self.last_rv {
            return;
        }
        self.last_rv = ev.rv;
        if ev.rv > self.skip_until {
            self.pending.push_back(Outgoing::Event(ev));
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done || self.stopping() {
                self.done = true;
                return None;
            }
            if let Some(out) = self.pending.pop_front() {
                if let Some(bytes) = self.render(out) {
                    if !self.wait_sendable().await {
                        self.done = true;
                        return None;
                    }
                    return Some(bytes);
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else {
                self.done = true;
                return None;
            };
            let timer = &mut self.bookmark_timer;
            let tick = async {
                match timer {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            enum Wake {
                Stop,
                Faults,
                Deadline,
                Tick,
                Event(Result<Arc<StoredEvent>, broadcast::error::RecvError>),
            }
            let wake = tokio::select! {
                r = self.shutdown.changed() => if r.is_err() { Wake::Stop } else { Wake::Faults },
                r = self.faults_rx.changed() => if r.is_err() { Wake::Stop } else { Wake::Faults },
                _ = tokio::time::sleep_until(self.deadline) => Wake::Deadline,
                _ = tick => Wake::Tick,
                r = rx.recv() => Wake::Event(r),
            };
            match wake {
                Wake::Stop => {
                    self.done = true;
                    return None;
                }
                Wake::Faults => {}
                Wake::Deadline => {
                    self.done = true;
                    if self.spec.bookmarks {
                        let rv = self.last_rv.max(self.skip_until);
                        return Some(self.render_bookmark(rv, false));
                    }
                    return None;
                }
                Wake::Tick => {
                    if self.faults_rx.borrow().stalled_until().is_none() {
                        let rv = self.last_rv.max(self.skip_until);
                        self.pending.push_back(Outgoing::Bookmark {
                            rv,
                            initial_end: false,
                        });
                    }
                }
                Wake::Event(Ok(ev)) => self.accept_event(ev),
                Wake::Event(Err(broadcast::error::RecvError::Lagged(_))) => {
                    match self.store.events_after(self.last_rv) {
                        Ok(events) => {
                            for ev in events {
                                self.accept_event(ev);
                            }
                        }
                        Err(e) => {
                            self.pending.push_back(Outgoing::Error(e.status()));
                            self.pending.push_back(Outgoing::End);
                        }
                    }
                }
                Wake::Event(Err(broadcast::error::RecvError::Closed)) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}
