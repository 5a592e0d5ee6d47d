//! loco-discovery: a push gateway for Kubernetes service discovery.
//!
//! Data flows one way: `watch` (kube-runtime) → `index` (pure) → `hub` → `http`.

pub mod index;
pub mod model;
pub mod slices;
