//! Fault injection: cut watches, forget the history, fail or stall requests.
//!
//! The same controls are reachable over HTTP on the server's port (answered even while faults are active):
//!
//! | route | effect |
//! |---|---|
//! | `POST /sim/faults/cut-watches` | [`Faults::cut_watches`] |
//! | `POST /sim/faults/forget-history` | [`Faults::forget_history`] |
//! | `POST /sim/faults/errors?status=503&seconds=5` | [`Faults::fail_requests`] |
//! | `POST /sim/faults/stall?seconds=5` | [`Faults::stall`] |
//! | `POST /sim/faults/clear` | [`Faults::clear`] |
//! | `GET /sim/faults` | the current faults and the number of open watches, as JSON |
//!
//! `seconds` may be fractional. Each route answers `200` with the state as JSON, or `400` with a Status.
//!
//! Injected 429 and 503 answers carry `Retry-After: 1`, as the real server's do. kube-rs 5 clients retry 429, 503
//! and 504 by themselves (up to 15 times, honouring `Retry-After`), so a short window of those codes is absorbed
//! by the client; a 500, or a client built with `Config::default_retry = false`, makes the failure visible.

use super::store::Store;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The active faults, published to every request and watch through a `watch` channel.
#[derive(Clone, Debug, Default)]
pub struct FaultState {
    /// Answer every API request with this status until the instant.
    pub fail: Option<(u16, Instant)>,
    /// Hold requests and watch output until the instant.
    pub stall_until: Option<Instant>,
    /// Bumped by every cut; a watch ends when it sees a new value.
    pub cut_generation: u64,
}

impl FaultState {
    /// The status requests must fail with now, if any.
    pub fn failing(&self) -> Option<u16> {
        self.fail
            .filter(|(_, until)| *until > Instant::now())
            .map(|(code, _)| code)
    }

    /// The instant the current stall ends, if a stall is active.
    pub fn stalled_until(&self) -> Option<Instant> {
        self.stall_until.filter(|u| *u > Instant::now())
    }
}

struct Inner {
    tx: watch::Sender<FaultState>,
    store: Store,
    watches_open: AtomicUsize,
}

/// Handle to the fault controls of one simulated server; cheap to clone.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("state", &*self.inner.tx.borrow())
            .field("watches_open", &self.watches_open())
            .finish()
    }
}

/// Counts one open watch for as long as it lives.
pub struct WatchGuard {
    faults: Faults,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.faults
            .inner
            .watches_open
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faults {
    /// Fault controls acting on `store` (for [`Faults::forget_history`]).
    pub fn new(store: Store) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                tx: watch::Sender::new(FaultState::default()),
                store,
                watches_open: AtomicUsize::new(0),
            }),
        }
    }

    /// Ends every open watch stream now with a normal end of the chunked body, as a server restart would.
    pub fn cut_watches(&self) {
        self.inner.tx.send_modify(|s| s.cut_generation += 1);
    }

    /// Drops the event history: a watch from an older resourceVersion gets the in-stream 410 Expired event, and
    /// continue tokens issued before get HTTP 410.
    pub fn forget_history(&self) {
        self.inner.store.forget_history();
    }

    /// Every Kubernetes API request (not the `/sim/` admin routes) answers `status` with a Status body for
    /// `duration`. A status outside 400–599 is answered as 500.
    pub fn fail_requests(&self, status: u16, duration: Duration) {
        let code = if (400..=599).contains(&status) {
            status
        } else {
            500
        };
        let until = Instant::now() + duration;
        self.inner.tx.send_modify(|s| s.fail = Some((code, until)));
    }

    /// Requests are accepted but get no answer, and open watches send nothing, for `duration`.
    pub fn stall(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.inner.tx.send_modify(|s| s.stall_until = Some(until));
    }

    /// Ends failing and stalling at once.
    pub fn clear(&self) {
        self.inner.tx.send_modify(|s| {
            s.fail = None;
            s.stall_until = None;
        });
    }

    /// The number of watch streams open now.
    pub fn watches_open(&self) -> usize {
        self.inner.watches_open.load(Ordering::SeqCst)
    }

    /// The current faults.
    pub fn state(&self) -> FaultState {
        self.inner.tx.borrow().clone()
    }

    /// A receiver that sees every change of the faults.
    pub fn subscribe(&self) -> watch::Receiver<FaultState> {
        self.inner.tx.subscribe()
    }

    /// Registers an open watch until the guard drops.
    pub fn watch_guard(&self) -> WatchGuard {
        self.inner.watches_open.fetch_add(1, Ordering::SeqCst);
        WatchGuard {
            faults: self.clone(),
        }
    }

    /// The faults and open watches as JSON (the body of the admin routes).
    pub fn describe(&self) -> Value {
        let st = self.state();
        let now = Instant::now();
        json!({
            "failing": st.failing().map(|code| json!({
                "status": code,
                "secondsLeft": st.fail.map(|(_, u)| (u - now).as_secs_f64()),
            })),
            "stalledSecondsLeft": st.stalled_until().map(|u| (u - now).as_secs_f64()),
            "cutGeneration": st.cut_generation,
            "watchesOpen": self.watches_open(),
            "oldestResourceVersion": self.inner.store.oldest_resource_version(),
            "resourceVersion": self.inner.store.current_resource_version(),
        })
    }
}

/// Waits until no stall is active (a stall extended or cleared meanwhile is taken into account).
pub async fn wait_unstalled(rx: &mut watch::Receiver<FaultState>) {
    loop {
        let until = rx.borrow_and_update().stalled_until();
        let Some(until) = until else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_window_ends_by_itself() {
        let f = Faults::new(Store::new(10));
        f.fail_requests(503, Duration::from_millis(50));
        assert_eq!(f.state().failing(), Some(503));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(f.state().failing(), None);
        f.fail_requests(200, Duration::from_secs(5));
        assert_eq!(f.state().failing(), Some(500));
        f.clear();
        assert_eq!(f.state().failing(), None);
    }

    #[tokio::test]
    async fn clear_releases_a_stall_early() {
        let f = Faults::new(Store::new(10));
        f.stall(Duration::from_secs(100));
        let mut rx = f.subscribe();
        let start = Instant::now();
        let f2 = f.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            f2.clear();
        });
        tokio::time::timeout(Duration::from_secs(5), wait_unstalled(&mut rx))
            .await
            .expect("clear ends the stall");
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn watch_guards_count_open_watches() {
        let f = Faults::new(Store::new(10));
        let g1 = f.watch_guard();
        let g2 = f.watch_guard();
        assert_eq!(f.watches_open(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(f.watches_open(), 0);
    }
}
