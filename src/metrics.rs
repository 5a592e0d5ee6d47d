//! The Prometheus exporter: installs the recorder that the core's metric names
//! ([`loco_discovery_core::metrics`]) are recorded into, and serves its handle.

pub use loco_discovery_core::metrics::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Installs the Prometheus recorder for this process (once) and returns its handle.
/// `None` when another recorder was installed first; metrics then go to that one.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}
