//! Metric names and help texts, in one place, so every name, unit and help text is
//! defined once and the exposition stays consistent. The core records through the
//! `metrics` facade only; the gateway installs the Prometheus exporter.
//!
//! Conventions: the `loco_discovery_` prefix, base units (seconds), `_seconds` and
//! `_total` suffixes, and label values from small fixed sets (services are configured,
//! transports, reasons and statuses are enums).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Hop 1: from the EndpointSlice's `last-change-trigger-time` to the watch event's receipt.
pub const CHANGE_TO_GATEWAY: &str = "loco_discovery_change_to_gateway_seconds";
/// Objects whose trigger time was not measured, by reason (missing, unparsable, unchanged,
/// older, relist).
pub const TRIGGER_TIME_SKIPPED: &str = "loco_discovery_trigger_time_skipped_total";
/// Hop 2: from a watch event's receipt to its deltas being published (index and hub).
pub const RECEIPT_TO_PUBLISHED: &str = "loco_discovery_receipt_to_published_seconds";
/// Hop 3: from publication to the write to a subscriber's socket, by transport.
pub const PUBLISHED_TO_SOCKET: &str = "loco_discovery_published_to_socket_seconds";
/// Objects (or parts of objects) from the API that were skipped, dropped or merged, by reason.
pub const MALFORMED_OBJECTS: &str = "loco_discovery_malformed_objects_total";
/// Errors of the Kubernetes watch, by reason.
pub const WATCH_ERRORS: &str = "loco_discovery_watch_errors_total";
/// Complete lists applied by the watch (the first one and every re-list).
pub const WATCH_RELISTS: &str = "loco_discovery_watch_relists_total";
/// Deltas published, by type.
pub const DELTAS: &str = "loco_discovery_deltas_total";
/// 1 once the first complete list is in.
pub const WATCH_READY: &str = "loco_discovery_watch_ready";
/// 1 while the view is confirmed against the API, 0 from a watch failure until the next
/// successful list or watch event.
pub const SYNCED: &str = "loco_discovery_synced";
/// Instances by service and status.
pub const INSTANCES: &str = "loco_discovery_instances";
/// Events kept for resuming.
pub const HISTORY_DEPTH: &str = "loco_discovery_history_depth";
/// Stream subscribers connected now, by transport.
pub const SUBSCRIBERS: &str = "loco_discovery_subscribers";
/// Stream subscribers refused, by reason.
pub const SUBSCRIBERS_REJECTED: &str = "loco_discovery_subscribers_rejected_total";
/// `reset` events sent, by reason.
pub const RESETS: &str = "loco_discovery_resets_total";
/// Heartbeats sent on idle streams.
pub const HEARTBEATS: &str = "loco_discovery_heartbeats_total";
/// Client connections that ended with an error or were closed by the server, by reason
/// (client_closed, header_timeout, protocol_error, io_error, write_stalled, shed_idle,
/// other).
pub const CONNECTIONS_CLOSED: &str = "loco_discovery_connections_closed_total";
/// Connections answered 503 and closed at once because the connection ceiling
/// (`--max-connections`) was reached with no idle connection to close, by reason
/// (capacity).
pub const CONNECTIONS_REJECTED: &str = "loco_discovery_connections_rejected_total";
/// Failed `accept` calls, by reason (file_limit, no_memory, other).
pub const ACCEPT_ERRORS: &str = "loco_discovery_accept_errors_total";

/// Snapshot answers (`/live`, stream snapshots and resets), by how they got their
/// instances: shared (serialized before), rendered (serialized now and kept), uncached.
pub const SNAPSHOT_RENDERS: &str = "loco_discovery_snapshot_renders_total";

/// Metadata or static files that could not be read or parsed, by file.
pub const FILE_ERRORS: &str = "loco_discovery_file_errors_total";

/// Histogram buckets for the latency hops, in seconds: from 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    describe_histogram!(
        CHANGE_TO_GATEWAY,
        Unit::Seconds,
        "Time from the EndpointSlice change (its endpoints.kubernetes.io/last-change-trigger-time annotation, when it moved with the event) to the gateway receiving the watch event, by service."
    );
    describe_counter!(
        TRIGGER_TIME_SKIPPED,
        Unit::Count,
        "Objects from the API not measured from change to gateway, by reason: the trigger-time annotation is missing, unparsable, unchanged from the version seen before (another writer changed the object), older than it, or the object came in a list (relist)."
    );
    describe_histogram!(
        RECEIPT_TO_PUBLISHED,
        Unit::Seconds,
        "Time from receiving a watch event to publishing its deltas (index and hub work), by service."
    );
    describe_histogram!(
        PUBLISHED_TO_SOCKET,
        Unit::Seconds,
        "Time from publishing a delta to writing it to a subscriber's connection, by service and transport (sse, ws)."
    );
    describe_counter!(
        MALFORMED_OBJECTS,
        Unit::Count,
        "Objects or parts of objects from the API that were lost to the view (undecodable, skipped, dropped or merged), by reason."
    );
    describe_counter!(
        WATCH_ERRORS,
        Unit::Count,
        "Errors of the Kubernetes watch, by reason (gone_410, http_4xx, http_5xx, network, decode); each is followed by a retry with backoff."
    );
    describe_counter!(
        WATCH_RELISTS,
        Unit::Count,
        "Complete lists of the watched EndpointSlices applied: the first one and every re-list after a 410 or a failed list."
    );
    describe_counter!(DELTAS, Unit::Count, "Instance deltas published, by type.");
    describe_gauge!(
        WATCH_READY,
        "1 once the first complete list of EndpointSlices is applied, else 0."
    );
    describe_gauge!(
        SYNCED,
        "1 while the served view is confirmed against the API; 0 from a watch failure until the next successful list or watch event (the last known state is still served)."
    );
    describe_gauge!(INSTANCES, "Instances known now, by service and status.");
    describe_gauge!(
        HISTORY_DEPTH,
        "Events kept for clients that resume with Last-Event-ID."
    );
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
    describe_counter!(
        CONNECTIONS_CLOSED,
        Unit::Count,
        "Client connections that ended without a clean close, by reason: client_closed (the client went away mid-request; normal), header_timeout (no complete request head in time, or idle too long between requests), protocol_error (a malformed request head, or a WebSocket frame breaking the protocol), message_too_big (a WebSocket message over the 4 KiB a client may send), io_error, write_stalled (the socket accepted nothing for the write timeout), shed_idle (an idle keep-alive connection closed to make room at the connection ceiling), other."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        Unit::Count,
        "Connections answered 503 and closed at once because the connection ceiling (--max-connections) was reached and no idle connection could make room, by reason (capacity)."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        Unit::Count,
        "Failed accepts of new connections, by reason: file_limit (EMFILE/ENFILE: the server waits 100 ms and retries), no_memory, other."
    );
    describe_counter!(
        SNAPSHOT_RENDERS,
        Unit::Count,
        "Snapshot answers (/live, stream snapshots and resets), by result: shared (the view was serialized once for this position and filter and shared), rendered (serialized now and kept for the next answer), uncached (serialized for this answer only: too many distinct filters)."
    );
    describe_counter!(
        FILE_ERRORS,
        Unit::Count,
        "Metadata or static instance files that could not be read or parsed (the last good state is kept), by file."
    );
}
