//! loco-discovery: a push gateway for Kubernetes service discovery.
//!
//! Data flows one way: [`watch`] (kube-runtime) → the core's index and hub
//! ([`loco_discovery_core`], pure) → [`http`]. [`run`] wires them. The simulated
//! Kubernetes API server for tests and the demo is its own crate, `loco-discovery-sim`.

pub mod auth_tokens;
pub mod client;
pub mod config;
pub mod consistency;
pub mod files;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod sources;
pub mod trigger_time;
pub mod watch;

pub use crate::client::kube_client;
use crate::config::DiscoveryMode;
pub use crate::config::GatewayConfig;
use crate::http::stream::StreamConfig;
use crate::http::HttpState;
use crate::watch::WatchTarget;
use crate::watch::{Input, Source, WatchKind};
use chrono::Utc;
use loco_discovery_core::hub::{Hub, HubInfo};
use loco_discovery_core::metadata::MetadataMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
    run_gateway(config, Some(client), listener, admin, shutdown).await
}

/// The gateway in any mode; `client` is needed by the Kubernetes modes only.
pub async fn run_gateway(
    config: GatewayConfig,
    client: Option<kube::Client>,
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
            prefer_zone: config.prefer_zone.clone(),
        },
        config.hub,
        Utc::now(),
    ));
    let target = WatchTarget {
        namespace: config.namespace.clone(),
        services: config.services.clone(),
    };
    let (inputs, input_rx) = tokio::sync::mpsc::channel::<Input>(256);
    let source = match (config.mode, client) {
        (DiscoveryMode::Static, _) | (_, None) => Source::Static,
        (DiscoveryMode::KubernetesEndpointSlices, Some(client)) => Source::Kubernetes {
            client,
            kind: WatchKind::EndpointSlices,
        },
        (DiscoveryMode::KubernetesEndpoints, Some(client)) => Source::Kubernetes {
            client,
            kind: WatchKind::Endpoints,
        },
    };
    follow_files(&config, &inputs, &shutdown);
    if let Some(probes) = config.health_check.clone() {
        tokio::spawn(probe::run_probes(
            hub.clone(),
            probes,
            inputs.clone(),
            shutdown.clone(),
        ));
    }
    drop(inputs);
    // The caller's span (a replica's name in tests) follows the watch into its task.
    let watch = tokio::spawn(
        watch::run_discovery(
            source,
            target,
            watch::DiscoverySettings {
                index: config.index.clone(),
                backoff: config.watch_backoff,
                consistency: config.consistency,
            },
            hub.clone(),
            input_rx,
            shutdown.clone().cancelled_owned(),
        )
        .in_current_span(),
    );
    let stream = StreamConfig {
        shutdown: shutdown.clone(),
        ..config.stream.clone()
    };
    let auth = auth_tokens::Authenticator::new(&config.access);
    if let Some(path) = config.access.tokens_file.clone() {
        auth_tokens::follow_tokens(path, config.file_poll, auth.clone(), shutdown.clone());
    }
    let state = HttpState::new(hub, stream, metrics_handle)
        .with_access(auth, config.access.cors_allow_origins.clone());
    let with_metrics = admin.is_none();
    if let Some(admin) = admin {
        tokio::spawn(http::server::serve(
            admin,
            http::admin_routes(state.clone()),
            config.server.clone(),
            shutdown.clone(),
        ));
    }
    let server = http::server::serve(
        listener,
        http::routes(state, with_metrics),
        config.server.clone(),
        shutdown.clone(),
    );
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

/// Starts following the metadata file and the static instances file, when configured.
fn follow_files(
    config: &GatewayConfig,
    inputs: &tokio::sync::mpsc::Sender<Input>,
    shutdown: &CancellationToken,
) {
    if let Some(path) = config.metadata_file.clone() {
        tokio::spawn(files::follow_file(
            path,
            "metadata",
            config.file_poll,
            shutdown.clone(),
            inputs.clone(),
            |text| {
                MetadataMap::parse(text)
                    .map(Input::Metadata)
                    .map_err(|e| e.to_string())
            },
        ));
    }
    if let (DiscoveryMode::Static, Some(path)) = (config.mode, config.static_file.clone()) {
        let namespace = config.namespace.clone();
        let service = config.services.first().cloned().unwrap_or_default();
        tokio::spawn(files::follow_file(
            path,
            "static",
            config.file_poll,
            shutdown.clone(),
            inputs.clone(),
            move |text| {
                sources::parse_static(text, &namespace, &service)
                    .map(|i| Input::Static(Box::new(i)))
                    .map_err(|e| e.to_string())
            },
        ));
    }
}
