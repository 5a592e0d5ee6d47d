//! loco-discovery: a push gateway for Kubernetes service discovery.
pub mod sim;
