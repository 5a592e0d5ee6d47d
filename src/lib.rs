//! loco-discovery: a push gateway for Kubernetes service discovery.
//!
//! Data flows one way: [`watch`] (kube-runtime) → [`index`] (pure) → [`hub`] → [`http`].
//! [`run`] wires them; [`sim`] is a simulated Kubernetes API server for tests and the demo.

pub mod config;
pub mod http;
pub mod hub;
pub mod index;
pub mod metrics;
pub mod model;
pub mod sim;
pub mod slices;
pub mod watch;

use crate::config::DiscoveryMode;
use crate::http::stream::StreamConfig;
use crate::http::HttpState;
use crate::hub::{Hub, HubInfo, HubLimits};
use crate::index::IndexConfig;
use crate::watch::WatchTarget;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Validated settings of one gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub namespace: String,
    pub services: Vec<String>,
    pub mode: DiscoveryMode,
    pub index: IndexConfig,
    pub hub: HubLimits,
    /// Heartbeat, subscriber cap and reconnect delay of the stream routes (the shutdown
    /// token in it is replaced by the one given to [`run`]).
    pub stream: StreamConfig,
    /// How long open streams get to close at shutdown before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl GatewayConfig {
    /// Settings for `services` in `namespace`, everything else at its default.
    pub fn new(namespace: impl Into<String>, services: Vec<String>) -> Self {
        Self {
            namespace: namespace.into(),
            services,
            mode: DiscoveryMode::KubernetesEndpointSlices,
            index: IndexConfig::default(),
            hub: HubLimits::default(),
            stream: StreamConfig::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Runs the gateway: the watch and the HTTP server on `listener`, until `shutdown` is
/// cancelled. Tests bind `127.0.0.1:0` and own the token.
pub async fn run(
    config: GatewayConfig,
    client: kube::Client,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    run_with_admin(config, client, listener, None, shutdown).await
}

/// [`run`], with probes and `/metrics` on a separate `admin` listener when given (the
/// main listener then serves no `/metrics`).
pub async fn run_with_admin(
    config: GatewayConfig,
    client: kube::Client,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    let metrics_handle = metrics::install();
    let hub = Arc::new(Hub::with_limits(
        HubInfo {
            mode: config.mode.as_str().to_owned(),
            namespace: config.namespace.clone(),
            services: config.services.clone(),
        },
        config.hub,
        Utc::now(),
    ));
    let target = WatchTarget {
        namespace: config.namespace.clone(),
        services: config.services.clone(),
    };
    let watch = tokio::spawn(watch::run_watch(
        client,
        target,
        config.index.clone(),
        hub.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    let stream = StreamConfig {
        shutdown: shutdown.clone(),
        ..config.stream.clone()
    };
    let state = HttpState::new(hub, stream, metrics_handle);
    let with_metrics = admin.is_none();
    if let Some(admin) = admin {
        let server = warp::serve(http::admin_routes(state.clone()))
            .incoming(admin)
            .graceful(shutdown.clone().cancelled_owned())
            .run();
        tokio::spawn(server);
    }
    let server = warp::serve(http::routes(state, with_metrics))
        .incoming(listener)
        .graceful(shutdown.clone().cancelled_owned())
        .run();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        } => {
            tracing::warn!("connections still open after the shutdown grace period; stopping anyway");
        }
    }
    let _ = watch.await;
}
