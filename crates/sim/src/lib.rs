//! A simulated Kubernetes API server for EndpointSlices (`discovery.k8s.io/v1`) and Endpoints (core `v1`), served
//! over plain HTTP for tests, demos and load tests. It speaks the wire protocol kube-rs 5 and kubectl 1.27–1.33 use:
//! legacy discovery, lists with selectors and consistent pagination, chunked watches with bookmarks and in-stream
//! 410s, server-side Tables, writes with the real status codes, and injectable faults ([`Faults`]).
//!
//! The [`Store`] is also usable in-process: objects are plain `serde_json::Value`s, so a caller can store objects
//! that a typed client would refuse. Writes through the store are seen by HTTP clients exactly like writes over
//! HTTP. Faults are controlled in-process through [`Faults`] or over HTTP under `/sim/faults/` (routes listed on
//! [`Faults`]).
//!
//! Only HTTP/1.1 is served (kubectl and kube-rs use it for `http://` URLs).

mod api;
mod apply;
mod clock;
mod discovery;
mod faults;
mod managed_fields;
mod media;
mod merge_patch;
mod openapi;
mod protobuf;
pub mod scenario;
mod selector;
mod status;
mod store;
mod strategic_merge;
mod table;
mod watch;

pub use faults::Faults;
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use status::Cause;
pub use store::{
    EventType, ListFrom, ListPage, Preconditions, ResourceKind, Store, StoreError, StoredEvent,
    WatchFrom, WatchStart, INITIAL_NAMESPACES, MAX_ENDPOINTS_PER_SLICE, TRIGGER_TIME_ANNOTATION,
};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long [`Sim::serve`] waits for open connections to finish after shutdown before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a simulated server.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Number of watch events kept for resuming watches; an older resourceVersion gets 410 Expired.
    pub history_limit: usize,
    /// Interval of BOOKMARK events on watches that asked for them.
    pub bookmark_interval: Duration,
    /// Minor version reported by /version (kubectl's dispatcher picks `kubectl.1.<minor>` from it).
    pub server_minor: String,
    /// How long a get, list or watch at a resourceVersion newer than the store waits for it before answering
    /// 504 "Too large resource version" (the API server's watch cache waits 3 s).
    pub too_new_wait: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(30),
            server_minor: "30".into(),
            too_new_wait: Duration::from_secs(3),
        }
    }
}

/// The simulated API server: a store plus fault controls, served over plain HTTP.
#[derive(Clone)]
pub struct Sim {
    /// The objects; writes through it are seen by every watch, as writes over HTTP are.
    pub store: Store,
    /// Fault controls.
    pub faults: Faults,
    opts: SimOptions,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("store", &self.store)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Sim {
    /// A new server with an empty store.
    pub fn new(opts: SimOptions) -> Sim {
        let store = Store::new(opts.history_limit);
        let faults = Faults::new(store.clone());
        Sim {
            store,
            faults,
            opts,
        }
    }

    /// The options the server was made with.
    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// Serves the Kubernetes API on `listener` until `shutdown` resolves; then closes every watch and returns.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = Arc::new(api::ApiServer {
            store: self.store.clone(),
            faults: self.faults.clone(),
            opts: self.opts.clone(),
            shutdown: stop_rx.clone(),
            local_addr: listener.local_addr()?,
        });
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let server = server.clone();
                        let mut stop = stop_rx.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| server.clone().handle(req));
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                            tokio::pin!(conn);
                            let result = tokio::select! {
                                r = conn.as_mut() => r,
                                _ = async { let _ = stop.wait_for(|v| *v).await; } => {
                                    conn.as_mut().graceful_shutdown();
                                    conn.await
                                }
                            };
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "sim connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sim accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            conns.abort_all();
        }
        Ok(())
    }
}

/// Writes a kubeconfig (cluster, user, context `loco-sim`, current-context set, context namespace = `namespace`)
/// pointing at http://addr, usable by kubectl and by kube-rs `Config::infer()` via KUBECONFIG.
pub fn write_kubeconfig(
    path: &std::path::Path,
    addr: std::net::SocketAddr,
    namespace: &str,
) -> std::io::Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loco-sim", "cluster": {"server": format!("http://{addr}")}}],
        "users": [{"name": "loco-sim", "user": {}}],
        "contexts": [{"name": "loco-sim", "context": {"cluster": "loco-sim", "user": "loco-sim", "namespace": namespace}}],
        "current-context": "loco-sim",
        "preferences": {},
    });
    let text = serde_saphyr::to_string(&doc).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
