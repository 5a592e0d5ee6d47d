//! loco-discovery: a push gateway for Kubernetes service discovery.
