//! Metric names and their registration, in one place, so every name, unit and help text
//! is defined once and the exposition stays consistent.

use metrics::{describe_counter, describe_gauge, Unit};

/// Objects (or parts of objects) from the API that were malformed or unusual, by reason.
pub const MALFORMED_OBJECTS: &str = "loco_discovery_malformed_objects_total";
/// Errors of the Kubernetes watch, by reason.
pub const WATCH_ERRORS: &str = "loco_discovery_watch_errors_total";
/// Full re-lists completed by the watch.
pub const WATCH_RELISTS: &str = "loco_discovery_watch_relists_total";
/// Deltas published, by type.
pub const DELTAS: &str = "loco_discovery_deltas_total";
/// 1 once the first complete list is in.
pub const WATCH_READY: &str = "loco_discovery_watch_ready";

/// Stream subscribers connected now, by transport.
pub const SUBSCRIBERS: &str = "loco_discovery_subscribers";
/// Stream subscribers refused, by reason.
pub const SUBSCRIBERS_REJECTED: &str = "loco_discovery_subscribers_rejected_total";
/// `reset` events sent, by reason.
pub const RESETS: &str = "loco_discovery_resets_total";
/// Heartbeats sent on idle streams.
pub const HEARTBEATS: &str = "loco_discovery_heartbeats_total";

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    describe_counter!(
        MALFORMED_OBJECTS,
        Unit::Count,
        "Malformed or unusual parts of EndpointSlices from the API, skipped or handled, by reason."
    );
    describe_counter!(
        WATCH_ERRORS,
        Unit::Count,
        "Errors of the Kubernetes watch, by reason (gone_410, http_4xx, http_5xx, network, decode)."
    );
    describe_counter!(
        WATCH_RELISTS,
        Unit::Count,
        "Complete lists of the watched EndpointSlices applied (the first one and every re-list)."
    );
    describe_counter!(DELTAS, Unit::Count, "Instance deltas published, by type.");
    describe_gauge!(
        SUBSCRIBERS,
        "Stream subscribers connected now, by transport (sse, ws)."
    );
    describe_counter!(
        SUBSCRIBERS_REJECTED,
        Unit::Count,
        "Stream subscribers refused, by reason (capacity)."
    );
    describe_counter!(
        RESETS,
        Unit::Count,
        "reset events sent to subscribers, by reason (unknown_id, slow_subscriber)."
    );
    describe_counter!(HEARTBEATS, Unit::Count, "Heartbeats sent on idle streams.");
    describe_gauge!(
        WATCH_READY,
        "1 once the first complete list of EndpointSlices is applied, else 0."
    );
}
