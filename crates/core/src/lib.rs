//! The pure core of loco-discovery: what the gateway knows, with no Kubernetes client,
//! no HTTP and no network I/O.
//!
//! Data flows one way through it: EndpointSlices → [`index`] (instances and typed
//! deltas) → [`hub`] (event ids, history, subscriptions; snapshots serialized once per
//! view and [`filter`] by [`rendered`]). [`model`] is the wire JSON
//! every stage speaks; [`metadata`] the display names an operator adds; [`slices`]
//! builds EndpointSlices shaped like the controller's (for the simulated cluster and
//! tests); [`metrics`] names every metric once; [`dns`] names endpoints as cluster DNS
//! does.

pub mod dns;
pub mod filter;
pub mod hub;
pub mod index;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod rendered;
pub mod slices;
pub mod text;
