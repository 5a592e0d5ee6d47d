//! Active health checks: every interval, `GET <healthUrl>/health` on each instance that
//! exists and is not terminating, with a timeout and bounded concurrency; results go to
//! the discovery loop, which turns a serving instance whose probe fails `degraded`.

use crate::watch::Input;
use chrono::Utc;
use futures::StreamExt;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loco_discovery_core::hub::{Filter, Hub};
use loco_discovery_core::model::{Probe, Status};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Settings of the active health checks.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub interval: Duration,
    /// Per-request timeout; a probe that takes longer counts as failed.
    pub timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Path requested on the health port.
    pub path: String,
}

impl ProbeConfig {
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            timeout: Duration::from_secs(2).min(interval),
            concurrency: 16,
            path: "/health".into(),
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

/// The URL a probe GETs: built from a parsed socket address (an IP and a port number)
/// and the operator's path, never from a string that came from the cluster.
pub fn probe_url(target: std::net::SocketAddr, path: &str) -> String {
    format!("http://{target}{path}")
}

/// Probes one URL.
async fn probe_once(client: &HttpClient, url: &str, timeout: Duration) -> Probe {
    let started = Instant::now();
    let checked_at = Utc::now();
    let failed = |error: String| Probe {
        reachable: false,
        status_code: None,
        latency_ms: None,
        checked_at,
        error: Some(error),
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return failed(format!("bad health URL {url}: {e}")),
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Err(_) => failed(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => failed(format!("request failed: {e}")),
        Ok(Ok(response)) => {
            let code = response.status().as_u16();
            Probe {
                reachable: response.status().is_success(),
                status_code: Some(code),
                latency_ms: Some(started.elapsed().as_millis() as u64),
                checked_at,
                error: (!response.status().is_success()).then(|| format!("HTTP {code}")),
            }
        }
    }
}

/// Runs the probes until `shutdown`, sending each result to the discovery loop.
pub async fn run_probes(
    hub: Arc<Hub>,
    config: ProbeConfig,
    results: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let targets: Vec<(String, String)> = hub
            .snapshot(&Filter::default(), Utc::now())
            .instances
            .into_iter()
            .filter(|i| i.status != Status::Offline)
            .filter_map(|i| Some((i.key.clone(), probe_url(i.health_target()?, &config.path))))
            .collect();
        let probes = futures::stream::iter(targets)
            .map(|(key, url)| {
                let client = &client;
                let timeout = config.timeout;
                async move { (key, probe_once(client, &url, timeout).await) }
            })
            .buffer_unordered(config.concurrency.max(1));
        let mut probes = std::pin::pin!(probes);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = probes.next() => next,
            };
            let Some((key, probe)) = next else { break };
            if results.send(Input::Probe { key, probe }).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_url_is_an_ip_a_port_and_the_configured_path() {
        assert_eq!(
            probe_url("10.0.0.1:8080".parse().unwrap(), "/health"),
            "http://10.0.0.1:8080/health"
        );
        assert_eq!(
            probe_url("[fd00::1]:8080".parse().unwrap(), "/health"),
            "http://[fd00::1]:8080/health"
        );
    }
}
