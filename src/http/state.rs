//! What every route handler shares: the hub, the stream settings, the subscriber count
//! and the metrics handle.

use super::stream::{StreamConfig, SubscriberCount, SubscriberSlot};
use crate::auth_tokens::Authenticator;
use loco_discovery_core::hub::Hub;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every route handler shares.
#[derive(Clone)]
pub struct HttpState {
    pub hub: Arc<Hub>,
    pub stream: StreamConfig,
    pub subscribers: Arc<SubscriberCount>,
    /// The Prometheus recorder's handle, rendered at `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// The token check of the instance routes (off by default).
    pub auth: Authenticator,
    /// Origins allowed by CORS; empty: same-origin only.
    pub cors_origins: Arc<Vec<String>>,
}

impl HttpState {
    pub fn new(hub: Arc<Hub>, stream: StreamConfig, metrics: Option<PrometheusHandle>) -> Self {
        Self {
            hub,
            stream,
            subscribers: Arc::new(SubscriberCount::default()),
            metrics,
            auth: Authenticator::default(),
            cors_origins: Arc::default(),
        }
    }

    /// This state with the access check and the CORS origins set.
    pub fn with_access(mut self, auth: Authenticator, cors_origins: Vec<String>) -> Self {
        self.auth = auth;
        self.cors_origins = Arc::new(cors_origins);
        self
    }

    /// A subscriber slot, or `None` past the configured cap.
    pub(super) fn admit(&self, transport: &'static str) -> Option<SubscriberSlot> {
        let slot = self
            .subscribers
            .acquire(self.stream.max_subscribers, transport);
        if slot.is_none() {
            metrics::counter!(crate::metrics::SUBSCRIBERS_REJECTED, "reason" => "capacity")
                .increment(1);
        }
        slot
    }
}
