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
pub mod slices;
pub mod watch;

use crate::config::DiscoveryMode;
use crate::hub::{Hub, HubInfo};
use crate::index::IndexConfig;
use crate::watch::WatchTarget;
use chrono::Utc;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Validated settings of one gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub namespace: String,
    pub services: Vec<String>,
    pub mode: DiscoveryMode,
    pub index: IndexConfig,
}

/// Runs the gateway: the watch and the HTTP server on `listener`, until `shutdown` is
/// cancelled. Tests bind `127.0.0.1:0` and own the token.
pub async fn run(
    config: GatewayConfig,
    client: kube::Client,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let hub = Arc::new(Hub::new(
        HubInfo {
            mode: config.mode.as_str().to_owned(),
            namespace: config.namespace.clone(),
            services: config.services.clone(),
        },
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
    warp::serve(http::routes(hub))
        .incoming(listener)
        .graceful(shutdown.cancelled_owned())
        .run()
        .await;
    let _ = watch.await;
}
