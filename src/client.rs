//! The Kubernetes client the gateway watches with.

/// A client for `config` without kube's own retries of 429, 503 and 504: the watch loop
/// backs off and lists again by itself, and it must see a 504 "Too large resource
/// version" at once (kube would retry it up to 15 times, for minutes, before the watch
/// learned that the API server's history is not the one it was watching).
pub fn kube_client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    kube::Client::try_from(config)
}
