//! Builders for EndpointSlice objects shaped like the EndpointSlice controller's.
//!
//! The simulated cluster's emulator scenario writes slices built here, and tests build
//! their inputs with them, so both speak about the same objects.

use crate::dns::HEADLESS_LABEL;
use crate::index::SERVICE_NAME_LABEL;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The label the built-in EndpointSlice controller puts on the slices it manages.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The built-in controller's name, the value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

/// An endpoint for pod `pod` at `ip`, with all three conditions explicit, as the
/// controller writes them: ready = serving && !terminating.
pub fn mk_endpoint(pod: &str, ip: &str, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_owned()],
        conditions: Some(EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: Some(pod.to_owned()),
        node_name: None,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.to_owned()),
            namespace: None,
            uid: Some(format!("uid-{pod}")),
            ..ObjectReference::default()
        }),
        zone: None,
        hints: None,
        deprecated_topology: None,
    }
}

/// A named port entry (TCP).
pub fn mk_port(name: &str, port: i32) -> EndpointPort {
    EndpointPort {
        name: Some(name.to_owned()),
        port: Some(port),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }
}

/// The ports of the lego-loco emulator Service: `vnc` 5901 and `health` 8080.
pub fn emulator_ports() -> Vec<EndpointPort> {
    vec![mk_port("vnc", 5901), mk_port("health", 8080)]
}

/// An IPv4 slice of the headless `service` in `namespace` named `name`, with the emulator
/// ports: the labels the controller writes for a headless Service like lego-loco's.
pub fn mk_slice(
    namespace: &str,
    name: &str,
    service: &str,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_owned(), service.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), CONTROLLER_NAME.to_owned()),
        (HEADLESS_LABEL.to_owned(), String::new()),
    ]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(emulator_ports()),
    }
}
