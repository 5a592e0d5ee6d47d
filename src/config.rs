//! Command line and environment → validated settings.
//!
//! Every flag can also come from the environment, with the names the lego-loco
//! deployment already uses (`KUBERNETES_NAMESPACE`, `EMULATOR_SERVICE_NAME`,
//! `DISCOVERY_MODE`) plus `LISTEN_ADDR`.

use crate::auth_tokens::{AccessArgs, AccessConfig};
use crate::consistency::ConsistencyCheck;
use crate::http::server::ServerLimits;
use crate::http::stream::StreamConfig;
use crate::probe::ProbeConfig;
use crate::watch::WatchBackoff;
use clap::{Args, Parser, Subcommand, ValueEnum};
use loco_discovery_core::dns::DnsNaming;
use loco_discovery_core::hub::HubLimits;
use loco_discovery_core::index::IndexConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "loco-discovery",
    version,
    about = "Kubernetes service-discovery push gateway for lego-loco-cluster",
    long_about = "Watches the EndpointSlices of Kubernetes Services and serves the instances \
                  behind them as JSON. `demo` runs a simulated cluster and the gateway together."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway against a Kubernetes cluster (in-cluster config, else KUBECONFIG).
    Serve(ServeArgs),
    /// Run the simulated Kubernetes API server alone.
    Sim(SimArgs),
    /// Run a simulated emulator cluster and the gateway in one process.
    Demo(DemoArgs),
}

/// How instances are discovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryMode {
    /// Watch the discovery.k8s.io/v1 EndpointSlices of the services.
    #[value(name = "kubernetes-endpointslices")]
    KubernetesEndpointSlices,
    /// Watch the core/v1 Endpoints objects of the services (old clusters, fallback).
    #[value(name = "kubernetes-endpoints")]
    KubernetesEndpoints,
    /// Serve the instances of a JSON or YAML file (--static-file), no cluster needed.
    #[value(name = "static")]
    Static,
}

impl DiscoveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMode::KubernetesEndpointSlices => "kubernetes-endpointslices",
            DiscoveryMode::KubernetesEndpoints => "kubernetes-endpoints",
            DiscoveryMode::Static => "static",
        }
    }
}

/// What to discover; shared by `serve` and `demo`.
#[derive(Clone, Debug, Args)]
pub struct DiscoveryArgs {
    /// Namespace of the watched services.
    #[arg(long, env = "KUBERNETES_NAMESPACE", default_value = "loco", value_parser = dns_label)]
    pub namespace: String,
    /// Service(s) to watch; repeat the flag or separate names with commas.
    #[arg(
        long = "service",
        env = "EMULATOR_SERVICE_NAME",
        default_value = "loco-loco-emulator",
        value_delimiter = ',',
        value_parser = dns_label
    )]
    pub services: Vec<String>,
    /// Discovery mode.
    #[arg(
        long,
        env = "DISCOVERY_MODE",
        default_value = "kubernetes-endpointslices"
    )]
    pub mode: DiscoveryMode,
    /// The cluster's DNS domain, used in each instance's dnsName.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The cluster's CoreDNS runs with `endpoint_pod_names`: name endpoints without a
    /// hostname by their pod instead of their dashed address.
    #[arg(long, env = "DNS_POD_NAMES")]
    pub dns_pod_names: bool,
    /// The instances file of the static mode (JSON or YAML), followed for changes.
    #[arg(long, env = "STATIC_INSTANCES_FILE", value_name = "PATH")]
    pub static_file: Option<PathBuf>,
    /// Display metadata (name, description, tags by ordinal or pod name; JSON or YAML),
    /// followed for changes: a mounted ConfigMap.
    #[arg(long, env = "INSTANCE_METADATA_FILE", value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Probe each instance's health port at this interval (GET /health); off when unset.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", value_parser = duration)]
    pub health_check_interval: Option<Duration>,
    /// Order instances of this zone first in snapshots (a `preferZone` query parameter
    /// overrides it per request).
    #[arg(long, env = "PREFER_ZONE")]
    pub prefer_zone: Option<String>,
    /// Compare the watched objects with a fresh list of the API this often; a difference
    /// that is still there, unchanged, a moment later makes the gateway list again.
    #[arg(long, env = "CONSISTENCY_CHECK_INTERVAL", default_value = "60s", value_parser = duration)]
    pub consistency_check_interval: Duration,
}

impl DiscoveryArgs {
    /// The gateway settings these flags describe, or why they do not fit together.
    pub fn checked_config(&self) -> Result<GatewayConfig, String> {
        match (self.mode, &self.static_file) {
            (DiscoveryMode::Static, None) => {
                return Err("--mode static needs --static-file (STATIC_INSTANCES_FILE)".into())
            }
            (DiscoveryMode::Static, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("--static-file is only used with --mode static".into()),
        }
        Ok(self.gateway_config())
    }

    /// The gateway settings these flags describe.
    pub fn gateway_config(&self) -> GatewayConfig {
        let mut services = self.services.clone();
        services.dedup();
        let mut config = GatewayConfig::new(self.namespace.clone(), services);
        config.mode = self.mode;
        config.static_file = self.static_file.clone();
        config.metadata_file = self.metadata_file.clone();
        config.health_check = self
            .health_check_interval
            .map(crate::probe::ProbeConfig::every);
        config.prefer_zone = self.prefer_zone.clone();
        config.consistency.interval = self.consistency_check_interval;
        config.index = IndexConfig {
            dns: DnsNaming {
                cluster_domain: self.cluster_domain.clone(),
                endpoint_pod_names: self.dns_pod_names,
            },
            ..IndexConfig::default()
        };
        config
    }
}

/// Tuning of the push streams; shared by `serve` and `demo`.
#[derive(Clone, Debug, Args)]
pub struct StreamArgs {
    /// Time between heartbeats on idle streams (keep it below proxies' read timeouts).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "15s", value_parser = duration)]
    pub heartbeat: Duration,
    /// The most concurrent stream subscribers; more get 503 with Retry-After.
    #[arg(long, env = "MAX_SUBSCRIBERS", default_value_t = 10_000)]
    pub max_subscribers: usize,
    /// Events kept for clients that resume with Last-Event-ID.
    #[arg(long, env = "HISTORY_SIZE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub history_size: u32,
    /// Events a stream subscriber may fall behind before it is sent a `reset` snapshot
    /// instead of its backlog (a burst such as a 10,000-pod rollout publishes tens of
    /// thousands of deltas in a second). The ring holds the same frames as the history.
    #[arg(long, env = "SUBSCRIBER_LAG", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub subscriber_lag: u32,
    /// How long open streams get to close at shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Time a client gets to send a complete request head; also the longest a keep-alive
    /// connection may stay idle between requests. Such connections are then closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// The listen backlog (connections queued by the kernel before they are accepted;
    /// also capped by net.core.somaxconn).
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub listen_backlog: u32,
    /// Close a connection (an SSE or WebSocket stream, a response) whose socket has
    /// accepted no bytes for this long while the gateway has bytes for it.
    #[arg(long, env = "STREAM_WRITE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub stream_write_timeout: Duration,
    /// The most open client connections per listener; at it, the oldest idle keep-alive
    /// connection is closed for a new one, or the new one gets 503 when none is idle.
    /// Default: 90% of the open-file limit.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
}

impl StreamArgs {
    /// Applies these settings to a gateway configuration.
    pub fn apply(&self, config: &mut GatewayConfig) {
        config.stream.heartbeat = self.heartbeat;
        config.stream.max_subscribers = self.max_subscribers;
        config.hub.history = self.history_size as usize;
        config.hub.subscriber_lag = self.subscriber_lag as usize;
        config.shutdown_grace = self.shutdown_grace;
        config.server = ServerLimits {
            header_read_timeout: self.header_read_timeout,
            backlog: self.listen_backlog,
            write_timeout: self.stream_write_timeout,
            max_connections: self.max_connections.map(|n| n as usize),
        };
        config.stream.write_timeout = self.stream_write_timeout;
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Serve /metrics, /healthz and /readyz on this separate address (and /metrics no
    /// longer on --listen).
    #[arg(long, env = "ADMIN_LISTEN_ADDR")]
    pub admin_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub access: AccessArgs,
    /// How long to wait for the Kubernetes API at start before giving up.
    #[arg(long, env = "KUBE_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
}

/// The built-in scenario the simulated cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// Start empty; objects come from clients such as kubectl.
    None,
    /// The lego-loco emulator StatefulSet behind its headless Service.
    Emulators,
}

/// Settings of the emulator scenario; shared by `sim` and `demo`.
#[derive(Clone, Debug, Args)]
pub struct ScenarioArgs {
    /// Number of emulator pods.
    #[arg(long, env = "SIM_REPLICAS", default_value_t = 9, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub replicas: u32,
    /// Seed of the scenario's random choices (the same seed replays the same story).
    #[arg(long, env = "SIM_SEED", default_value_t = 1998)]
    pub seed: u64,
    /// Time between two scenario steps, e.g. 500ms, 2s.
    #[arg(long, env = "SIM_PACE", default_value = "1s", value_parser = duration)]
    pub pace: Duration,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to serve the simulated Kubernetes API on.
    #[arg(long, env = "SIM_LISTEN_ADDR", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Write a kubeconfig pointing at the simulated API to this path.
    #[arg(long, env = "SIM_WRITE_KUBECONFIG", value_name = "PATH")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Scenario to run.
    #[arg(long, env = "SIM_SCENARIO", default_value = "none")]
    pub scenario: ScenarioName,
    /// Namespace of the scenario's objects.
    #[arg(long, env = "SIM_NAMESPACE", default_value = "loco", value_parser = dns_label)]
    pub namespace: String,
    /// Service name of the scenario's EndpointSlices.
    #[arg(long, env = "SIM_SERVICE", default_value = "loco-loco-emulator", value_parser = dns_label)]
    pub service: String,
    #[command(flatten)]
    pub scenario_args: ScenarioArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve the gateway on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub scenario_args: ScenarioArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Accepts a Kubernetes object name that must be an RFC 1123 DNS label.
fn dns_label(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', \
             at most 63 characters, starting and ending with a letter or digit)"
        ))
    }
}

fn duration(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value).map_err(|e| format!("{value:?}: {e}"))?;
    if parsed.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(parsed)
}

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
    /// Header timeout and listen backlog of the listeners.
    pub server: ServerLimits,
    /// The instances file of the static mode.
    pub static_file: Option<PathBuf>,
    /// The display metadata file.
    pub metadata_file: Option<PathBuf>,
    /// Active health checks; off when `None`.
    pub health_check: Option<ProbeConfig>,
    /// Zone whose instances come first in snapshots.
    pub prefer_zone: Option<String>,
    /// How often followed files are read again.
    pub file_poll: Duration,
    /// The wait before listing again after a watch error.
    pub watch_backoff: WatchBackoff,
    /// How often the watched view is compared with a fresh list of the API.
    pub consistency: ConsistencyCheck,
    /// Bearer tokens, JWTs and CORS origins; all off by default.
    pub access: AccessConfig,
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
            server: ServerLimits::default(),
            static_file: None,
            metadata_file: None,
            health_check: None,
            prefer_zone: None,
            file_poll: Duration::from_secs(1),
            watch_backoff: WatchBackoff::default(),
            consistency: ConsistencyCheck::default(),
            access: AccessConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loco-discovery").chain(args.iter().copied()))
    }

    #[test]
    fn serve_defaults_match_the_lego_loco_deployment() {
        let Command::Serve(serve) = parse(&["serve"]).unwrap().command else {
            panic!("not serve")
        };
        assert_eq!(serve.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(serve.discovery.namespace, "loco");
        assert_eq!(serve.discovery.services, vec!["loco-loco-emulator"]);
        assert_eq!(
            serve.discovery.mode,
            DiscoveryMode::KubernetesEndpointSlices
        );
        assert_eq!(
            serve.discovery.gateway_config().index.dns,
            DnsNaming::default()
        );
    }

    #[test]
    fn dns_pod_names_and_the_cluster_domain_shape_dns_naming() {
        let Command::Serve(serve) = parse(&[
            "serve",
            "--dns-pod-names",
            "--cluster-domain",
            "corp.example",
        ])
        .unwrap()
        .command
        else {
            panic!("not serve")
        };
        let dns = serve.discovery.gateway_config().index.dns;
        assert!(dns.endpoint_pod_names);
        assert_eq!(dns.cluster_domain, "corp.example");
    }

    #[test]
    fn several_services_by_repetition_or_commas() {
        let Command::Serve(serve) = parse(&["serve", "--service", "a,b", "--service", "c"])
            .unwrap()
            .command
        else {
            panic!("not serve")
        };
        assert_eq!(serve.discovery.services, vec!["a", "b", "c"]);
    }

    #[test]
    fn bad_values_are_rejected_with_a_message() {
        let err = parse(&["serve", "--service", "Bad_Name"]).unwrap_err();
        assert!(err.to_string().contains("not a valid Kubernetes name"));
        let err = parse(&["serve", "--listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--listen"));
        let err = parse(&["sim", "--pace", "0s"]).unwrap_err();
        assert!(err.to_string().contains("longer than zero"));
        let err = parse(&["serve", "--mode", "kubernetes-pods"]).unwrap_err();
        assert!(err.to_string().contains("kubernetes-endpointslices"));
        let Command::Serve(serve) = parse(&["serve", "--mode", "static"]).unwrap().command else {
            panic!("not serve")
        };
        assert!(serve
            .discovery
            .checked_config()
            .unwrap_err()
            .contains("--static-file"));
    }

    #[test]
    fn sim_and_demo_defaults() {
        let Command::Sim(sim) = parse(&["sim"]).unwrap().command else {
            panic!("not sim")
        };
        assert_eq!(sim.listen.to_string(), "127.0.0.1:6443");
        assert_eq!(sim.scenario, ScenarioName::None);
        assert_eq!(sim.scenario_args.replicas, 9);
        let Command::Demo(demo) = parse(&["demo", "--replicas", "3"]).unwrap().command else {
            panic!("not demo")
        };
        assert_eq!(demo.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(demo.scenario_args.replicas, 3);
    }
}
