//! The `loco-discovery` command: parse the CLI, set up logging, run a subcommand, and
//! turn any failure into one clear line on stderr with a non-zero exit.

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use loco_discovery::config::{
    Cli, Command, DemoArgs, DiscoveryMode, ScenarioArgs, ScenarioName, ServeArgs, SimArgs,
};
use loco_discovery::GatewayConfig;
use loco_discovery_sim::scenario::{run_scenario, run_scenario_already_up, ScenarioConfig};
use loco_discovery_sim::{write_kubeconfig, Sim, SimOptions};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Prints a line for the user on stdout. Whoever started us may have stopped reading it
/// (a closed pipe): that must never stop the server, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Sim(args) => sim(args).await,
            Command::Demo(args) => demo(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs by default, JSON with `LOG_FORMAT=json`; `RUST_LOG` filters.
///
/// kube's client logs every failed request itself; the gateway logs those failures with
/// its own structured fields, so the default filter leaves the client's copy out.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels the returned token on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutting down");
        trigger.cancel();
    });
    token
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Checks that the API answers and lets us list the slices, so a missing cluster or
/// missing RBAC is one clear error at start instead of an endless retry loop.
async fn check_cluster(
    client: &kube::Client,
    config: &GatewayConfig,
    timeout: Duration,
) -> Result<()> {
    let params = ListParams::default().limit(1);
    let (listed, what) = if config.mode == DiscoveryMode::KubernetesEndpoints {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &config.namespace);
        (
            tokio::time::timeout(timeout, api.list_metadata(&params))
                .await
                .map(|r| r.map(drop)),
            "Endpoints",
        )
    } else {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &config.namespace);
        (
            tokio::time::timeout(timeout, api.list_metadata(&params))
                .await
                .map(|r| r.map(drop)),
            "EndpointSlices",
        )
    };
    match listed {
        Err(_) => Err(anyhow!(
            "the Kubernetes API did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(kube::Error::Api(status))) => Err(anyhow!(
            "the Kubernetes API refused to list {what} in namespace {:?}: {} ({})",
            config.namespace,
            status.message,
            status.code
        )),
        Ok(Err(error)) => Err(anyhow!("cannot reach the Kubernetes API: {error}")),
        Ok(Ok(_)) => Ok(()),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = args.discovery.checked_config().map_err(|e| anyhow!(e))?;
    args.stream.apply(&mut config);
    config.access = args.access.checked().map_err(|e| anyhow!(e))?;
    if config.mode == DiscoveryMode::Static {
        return serve_static(args, config).await;
    }
    let kube_config = kube::Config::infer().await.map_err(|e| {
        anyhow!("no Kubernetes cluster configured (not in a cluster, and no usable KUBECONFIG or ~/.kube/config): {e}")
    })?;
    let cluster_url = kube_config.cluster_url.clone();
    let client =
        loco_discovery::kube_client(kube_config).context("cannot create a Kubernetes client")?;
    check_cluster(&client, &config, args.connect_timeout)
        .await
        .with_context(|| format!("cluster {cluster_url}"))?;
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let admin = match args.admin_listen {
        Some(admin) => Some(bind(admin).await?),
        None => None,
    };
    info!(listen = %addr, cluster = %cluster_url, namespace = %config.namespace,
          services = ?config.services, "gateway serving");
    if let Some(admin) = &admin {
        say!("metrics and probes on http://{}", admin.local_addr()?);
    }
    say!("loco-discovery serving on http://{addr}");
    loco_discovery::run_with_admin(config, client, listener, admin, shutdown_on_signal()).await;
    Ok(())
}

/// The static mode: no cluster, the instances come from the file.
async fn serve_static(args: ServeArgs, config: GatewayConfig) -> Result<()> {
    if let Some(path) = &config.static_file {
        std::fs::metadata(path)
            .with_context(|| format!("cannot read the static instances file {}", path.display()))?;
    }
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let admin = match args.admin_listen {
        Some(admin) => Some(bind(admin).await?),
        None => None,
    };
    say!("loco-discovery serving on http://{addr}");
    loco_discovery::run_gateway(config, None, listener, admin, shutdown_on_signal()).await;
    Ok(())
}

fn scenario_config(namespace: &str, service: &str, args: &ScenarioArgs) -> ScenarioConfig {
    ScenarioConfig {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        replicas: args.replicas,
        seed: args.seed,
        pace: args.pace,
        publish_not_ready_addresses: true,
    }
}

async fn sim(args: SimArgs) -> Result<()> {
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(SimOptions::default());
    if let Some(path) = &args.write_kubeconfig {
        write_kubeconfig(path, addr, &args.namespace)
            .with_context(|| format!("cannot write the kubeconfig to {}", path.display()))?;
        say!("kubeconfig written to {}", path.display());
    }
    let shutdown = shutdown_on_signal();
    if args.scenario == ScenarioName::Emulators {
        let config = scenario_config(&args.namespace, &args.service, &args.scenario_args);
        tokio::spawn(run_scenario(sim.store.clone(), config, shutdown.clone()));
    }
    say!("simulated Kubernetes API listening on http://{addr}");
    sim.serve(listener, shutdown.cancelled_owned())
        .await
        .context("simulated API server failed")
}

async fn demo(args: DemoArgs) -> Result<()> {
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let sim_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let sim_addr = sim_listener.local_addr()?;
    let shutdown = shutdown_on_signal();
    let sim = Sim::new(SimOptions::default());
    let sim_task = {
        let sim = sim.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { sim.serve(sim_listener, stop.cancelled_owned()).await })
    };
    let mut config = GatewayConfig::new("loco", vec!["loco-loco-emulator".into()]);
    args.stream.apply(&mut config);
    config.access = args.access.checked().map_err(|e| anyhow!(e))?;
    tokio::spawn(run_scenario_already_up(
        sim.store.clone(),
        scenario_config(&config.namespace, &config.services[0], &args.scenario_args),
        shutdown.clone(),
    ));
    let url = format!("http://{sim_addr}")
        .parse()
        .context("simulated API URL")?;
    let client = loco_discovery::kube_client(kube::Config::new(url))
        .context("cannot create a client for the simulated API")?;
    say!(
        "simulated cluster: http://{sim_addr} ({} emulator pods)",
        args.scenario_args.replicas
    );
    say!("loco-discovery demo: open http://{addr}/ for the live dashboard");
    say!("  snapshot: http://{addr}/api/instances/live   stream: curl -N http://{addr}/api/instances/stream");
    loco_discovery::run(config, client, listener, shutdown.clone()).await;
    shutdown.cancel();
    let _ = sim_task.await;
    Ok(())
}
