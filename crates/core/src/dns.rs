//! The DNS names cluster DNS gives an endpoint, built the way CoreDNS's `kubernetes`
//! plugin builds them, so that a `dnsName` always resolves.
//!
//! - Only the endpoints of a **headless** Service have names of their own. The EndpointSlice
//!   and Endpoints controllers mark the objects of a headless Service with the label
//!   [`HEADLESS_LABEL`]; any other Service's endpoints have no per-endpoint name.
//! - The name is `<label>.<service>.<namespace>.svc.<cluster domain>`, where the label is the
//!   endpoint's `hostname` (StatefulSet pods whose `subdomain` is the Service); without one,
//!   the pod name when CoreDNS runs with `endpoint_pod_names`, else the address with `.`
//!   (IPv4) or `:` (IPv6) replaced by `-`, exactly as written in the object
//!   (`10.100.58.221` → `10-100-58-221`, `fd00:10:244::5` → `fd00-10-244--5`).
//! - A label that is not a DNS label (a leading `-` from `::1`, a pod name with a dot)
//!   cannot be looked up, so it gives no name.

/// The label the EndpointSlice and Endpoints controllers put on the objects of a headless
/// Service (value `""`).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// How the cluster's DNS names endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsNaming {
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// CoreDNS's `endpoint_pod_names` option: an endpoint without a hostname is named by its
    /// pod rather than by its address.
    pub endpoint_pod_names: bool,
}

impl Default for DnsNaming {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            endpoint_pod_names: false,
        }
    }
}

/// What DNS naming needs to know about one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct EndpointName<'a> {
    /// The Service's objects carry [`HEADLESS_LABEL`].
    pub headless: bool,
    pub hostname: Option<&'a str>,
    /// The pod the endpoint's `targetRef` names.
    pub pod: Option<&'a str>,
    /// The address the name should resolve to.
    pub address: &'a str,
}

impl DnsNaming {
    /// The endpoint's fully qualified name, or `None` when cluster DNS gives it none.
    pub fn name_of(
        &self,
        endpoint: EndpointName<'_>,
        service: &str,
        namespace: &str,
    ) -> Option<String> {
        if !endpoint.headless {
            return None;
        }
        let label = match (endpoint.hostname, endpoint.pod) {
            (Some(hostname), _) => hostname.to_owned(),
            (None, Some(pod)) if self.endpoint_pod_names => pod.to_owned(),
            (None, _) => dashed(endpoint.address)?,
        }
        .to_ascii_lowercase();
        is_dns_label(&label)
            .then(|| format!("{label}.{service}.{namespace}.svc.{}", self.cluster_domain))
    }
}

/// CoreDNS's name for an endpoint without a hostname: the address with `.` or `:`
/// replaced by `-`.
fn dashed(address: &str) -> Option<String> {
    if address.contains('.') {
        Some(address.replace('.', "-"))
    } else if address.contains(':') {
        Some(address.replace(':', "-"))
    } else {
        None
    }
}

/// An RFC 1123 label: 1 to 63 lowercase letters, digits and `-`, starting and ending with
/// a letter or digit.
pub fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint<'a>(
        headless: bool,
        hostname: Option<&'a str>,
        pod: Option<&'a str>,
        address: &'a str,
    ) -> EndpointName<'a> {
        EndpointName {
            headless,
            hostname,
            pod,
            address,
        }
    }

    fn name(naming: &DnsNaming, e: EndpointName<'_>) -> Option<String> {
        naming.name_of(e, "svc", "ns")
    }

    #[test]
    fn a_hostname_names_the_endpoint_of_a_headless_service() {
        let n = DnsNaming::default();
        assert_eq!(
            name(&n, endpoint(true, Some("web-0"), Some("web-0"), "10.0.0.1")).as_deref(),
            Some("web-0.svc.ns.svc.cluster.local")
        );
    }

    #[test]
    fn without_a_hostname_coredns_uses_the_dashed_address() {
        let n = DnsNaming::default();
        let pod = Some("python-server-65b886d59c-nnktx");
        assert_eq!(
            name(&n, endpoint(true, None, pod, "10.100.58.221")).as_deref(),
            Some("10-100-58-221.svc.ns.svc.cluster.local")
        );
        assert_eq!(
            name(&n, endpoint(true, None, pod, "fd00:10:244::5")).as_deref(),
            Some("fd00-10-244--5.svc.ns.svc.cluster.local")
        );
        assert_eq!(
            name(&n, endpoint(true, None, None, "2001:DB8::A")).as_deref(),
            Some("2001-db8--a.svc.ns.svc.cluster.local")
        );
    }

    #[test]
    fn endpoint_pod_names_uses_the_pod_name_and_else_the_address() {
        let n = DnsNaming {
            endpoint_pod_names: true,
            ..DnsNaming::default()
        };
        let pod = Some("python-server-65b886d59c-nnktx");
        assert_eq!(
            name(&n, endpoint(true, None, pod, "10.100.58.221")).as_deref(),
            Some("python-server-65b886d59c-nnktx.svc.ns.svc.cluster.local")
        );
        assert_eq!(
            name(&n, endpoint(true, Some("web-0"), pod, "10.0.0.1")).as_deref(),
            Some("web-0.svc.ns.svc.cluster.local")
        );
        assert_eq!(
            name(&n, endpoint(true, None, None, "10.0.0.1")).as_deref(),
            Some("10-0-0-1.svc.ns.svc.cluster.local")
        );
    }

    #[test]
    fn a_service_that_is_not_headless_has_no_endpoint_names() {
        let n = DnsNaming::default();
        assert_eq!(
            name(&n, endpoint(false, Some("web-0"), None, "10.0.0.1")),
            None
        );
        assert_eq!(name(&n, endpoint(false, None, None, "10.0.0.1")), None);
    }

    #[test]
    fn labels_that_cannot_be_looked_up_give_no_name() {
        let n = DnsNaming {
            endpoint_pod_names: true,
            ..DnsNaming::default()
        };
        assert_eq!(name(&n, endpoint(true, None, None, "::1")), None);
        assert_eq!(
            name(&n, endpoint(true, None, Some("a.b"), "10.0.0.1")),
            None
        );
        assert_eq!(name(&n, endpoint(true, None, None, "not-an-ip")), None);
        let long = "a".repeat(64);
        assert_eq!(
            name(&n, endpoint(true, Some(&long), None, "10.0.0.1")),
            None
        );
    }

    #[test]
    fn the_cluster_domain_is_configurable() {
        let n = DnsNaming {
            cluster_domain: "corp.example".into(),
            ..DnsNaming::default()
        };
        assert_eq!(
            name(&n, endpoint(true, Some("a"), None, "10.0.0.1")).as_deref(),
            Some("a.svc.ns.svc.corp.example")
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed_next_to_a_port() {
        assert_eq!(host_port("10.0.0.1", 5901), "10.0.0.1:5901");
        assert_eq!(host_port("fd00::5", 5901), "[fd00::5]:5901");
        assert_eq!(
            host_port("a.b.svc.cluster.local", 1),
            "a.b.svc.cluster.local:1"
        );
    }
}
