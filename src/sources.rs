//! The other discovery sources, turned into EndpointSlices so one index, one diff and one
//! delta vocabulary serve every mode.
//!
//! - `kubernetes-endpoints`: a core/v1 Endpoints object becomes one slice per subset and
//!   address family (`addresses` serving, `notReadyAddresses` not serving).
//! - `static`: a JSON or YAML file of instances becomes one slice.
//!
//! Pure: no I/O; the callers read objects and files.

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use loco_discovery_core::dns::HEADLESS_LABEL;
use loco_discovery_core::index::SERVICE_NAME_LABEL;
use loco_discovery_core::metadata::{InstanceMetadata, MetadataMap};
use loco_discovery_core::slices::{mk_endpoint, mk_port};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

fn slice_named(namespace: &str, name: String, service: &str, ipv6: bool) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: if ipv6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: Vec::new(),
        ports: Some(Vec::new()),
    }
}

fn endpoint_of(address: &EndpointAddress, serving: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(serving),
            serving: Some(serving),
            terminating: None,
        }),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Endpoint::default()
    }
}

/// The EndpointSlices equivalent to an Endpoints object (named `<name>.ep-<subset>-<v4|v6>`),
/// headless when the Endpoints object carries the headless-Service label.
pub fn slices_from_endpoints(endpoints: &Endpoints) -> Vec<EndpointSlice> {
    let name = endpoints.metadata.name.clone().unwrap_or_default();
    let namespace = endpoints.metadata.namespace.clone().unwrap_or_default();
    let headless = endpoints
        .metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(HEADLESS_LABEL));
    let mut out = Vec::new();
    for (n, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let mut families: BTreeMap<bool, EndpointSlice> = BTreeMap::new();
        let all = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        for (address, serving) in all {
            let ipv6 = matches!(address.ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)));
            let slice = families.entry(ipv6).or_insert_with(|| {
                let family = if ipv6 { "v6" } else { "v4" };
                let mut slice =
                    slice_named(&namespace, format!("{name}.ep-{n}-{family}"), &name, ipv6);
                if headless {
                    if let Some(labels) = slice.metadata.labels.as_mut() {
                        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
                    }
                }
                slice.ports = Some(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| k8s_openapi::api::discovery::v1::EndpointPort {
                            name: p.name.clone(),
                            port: Some(p.port),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                );
                slice
            });
            slice.endpoints.push(endpoint_of(address, serving));
        }
        out.extend(families.into_values());
    }
    out
}

/// Follows Endpoints objects and says which derived slices to apply and which to delete.
#[derive(Debug, Default)]
pub struct EndpointsAdapter {
    /// Derived slice names per `(namespace, Endpoints name)`.
    derived: HashMap<(String, String), Vec<String>>,
}

impl EndpointsAdapter {
    /// Slices to apply for an added or changed Endpoints object, and stale ones to delete.
    pub fn apply(&mut self, endpoints: &Endpoints) -> (Vec<EndpointSlice>, Vec<EndpointSlice>) {
        let key = key_of(endpoints);
        let slices = slices_from_endpoints(endpoints);
        let names: Vec<String> = slices
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let stale = self
            .derived
            .insert(key.clone(), names.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|old| !names.contains(old))
            .map(|old| slice_named(&key.0, old, &key.1, false))
            .collect();
        (slices, stale)
    }

    /// Slices to delete for a deleted Endpoints object.
    pub fn delete(&mut self, endpoints: &Endpoints) -> Vec<EndpointSlice> {
        let key = key_of(endpoints);
        self.derived
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(|name| slice_named(&key.0, name, &key.1, false))
            .collect()
    }

    /// Forgets everything (a re-list rebuilds it through [`apply`](Self::apply)).
    pub fn reset(&mut self) {
        self.derived.clear();
    }
}

fn key_of(endpoints: &Endpoints) -> (String, String) {
    (
        endpoints.metadata.namespace.clone().unwrap_or_default(),
        endpoints.metadata.name.clone().unwrap_or_default(),
    )
}

/// One instance in a static file. Accepts the gateway's own shape and the lego-loco
/// instance config (`id: instance-N`, `name`, `address`/`podIP`, `ports`, `vncUrl`, ...).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaticEntry {
    id: Option<String>,
    ordinal: Option<u32>,
    #[serde(alias = "pod")]
    pod_name: Option<String>,
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(alias = "ip", alias = "podIP", alias = "podIp")]
    address: Option<String>,
    addresses: Option<StaticAddresses>,
    vnc_url: Option<String>,
    #[serde(default)]
    ports: BTreeMap<String, i32>,
    status: Option<String>,
    ready: Option<bool>,
    #[serde(alias = "node")]
    node_name: Option<String>,
    zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaticAddresses {
    #[serde(alias = "podIp", rename = "podIP")]
    pod_ip: Option<String>,
}

/// Why a static instances file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StaticError {
    #[error("not a list of instances (or {{\"instances\": [...]}}): {0}")]
    Shape(String),
    #[error("instance {0}: {1}")]
    Entry(usize, String),
}

/// A static file turned into one slice of `service` plus the display names it gives.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticInstances {
    pub slice: EndpointSlice,
    pub names: MetadataMap,
}

/// The IPv4 address of a static entry's host: the host itself when it is one, else the
/// first IPv4 address a DNS name resolves to (lego-loco's static files name emulators by
/// host, e.g. `vncUrl: emu-0.emu.loco.svc.cluster.local:5901`). The file is the
/// operator's own and parsed only when it changes, so a lookup here is acceptable;
/// addresses are published and probed as IPs only.
fn ip_of(host: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host.to_owned());
    }
    let dns_name = !host.is_empty()
        && host.len() <= 253
        && host.chars().any(|c| c.is_ascii_alphabetic())
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !dns_name {
        return None;
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4())
        .map(|ip| ip.to_string())
}

/// Parses a static instances file (JSON or YAML).
pub fn parse_static(
    text: &str,
    namespace: &str,
    service: &str,
) -> Result<StaticInstances, StaticError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Document {
        Wrapped { instances: Vec<StaticEntry> },
        Plain(Vec<StaticEntry>),
    }
    let document: Option<Document> =
        serde_saphyr::from_str(text).map_err(|e| StaticError::Shape(e.to_string()))?;
    let entries = match document {
        None => Vec::new(),
        Some(Document::Wrapped { instances }) => instances,
        Some(Document::Plain(list)) => list,
    };
    let mut slice = slice_named(namespace, format!("{service}.static"), service, false);
    let mut names = MetadataMap::default();
    let mut ports = BTreeMap::new();
    for (n, entry) in entries.into_iter().enumerate() {
        let ordinal = entry.ordinal.or_else(|| {
            entry
                .id
                .as_deref()
                .and_then(|id| id.strip_prefix("instance-"))
                .and_then(|o| o.parse().ok())
        });
        let pod = match (&entry.pod_name, ordinal) {
            (Some(pod), _) => pod.clone(),
            (None, Some(o)) => format!("{service}-{o}"),
            (None, None) => {
                return Err(StaticError::Entry(
                    n,
                    "needs an id (instance-N), an ordinal or a podName".into(),
                ))
            }
        };
        let address = entry
            .address
            .or_else(|| entry.addresses.and_then(|a| a.pod_ip))
            .or_else(|| {
                entry
                    .vnc_url
                    .as_deref()
                    .and_then(|u| u.rsplit_once(':').map(|(host, _)| host.to_owned()))
            })
            .ok_or_else(|| {
                StaticError::Entry(n, format!("{pod} has no address, podIP or vncUrl"))
            })?;
        // A name that does not resolve stays as written: the index drops it as an
        // invalid address, counted, like any other bad address.
        let address = ip_of(&address).unwrap_or(address);
        let (serving, terminating) = match (entry.status.as_deref(), entry.ready) {
            (Some("ready" | "running"), _) | (None, Some(true)) | (None, None) => (true, false),
            (Some("offline" | "terminating"), _) => (false, true),
            (Some(_), _) | (None, Some(false)) => (false, false),
        };
        let mut endpoint = mk_endpoint(&pod, &address, serving, terminating);
        endpoint.node_name = entry.node_name;
        endpoint.zone = entry.zone;
        if let Some(r) = endpoint.target_ref.as_mut() {
            r.namespace = Some(namespace.to_owned());
            r.uid = None;
        }
        slice.endpoints.push(endpoint);
        for (name, port) in entry.ports {
            ports.entry(name).or_insert(port);
        }
        if entry.name.is_some() || entry.description.is_some() || !entry.tags.is_empty() {
            names.by_pod.insert(
                pod,
                InstanceMetadata {
                    name: entry.name,
                    description: entry.description,
                    tags: entry.tags,
                },
            );
        }
    }
    if ports.is_empty() {
        ports = BTreeMap::from([("vnc".into(), 5901), ("health".into(), 8080)]);
    }
    slice.ports = Some(ports.iter().map(|(n, p)| mk_port(n, *p)).collect());
    Ok(StaticInstances { slice, names })
}

/// Metadata from the file layered over the names a static file gives (the file wins).
pub fn merge_metadata(base: &MetadataMap, over: &MetadataMap) -> MetadataMap {
    let mut merged = base.clone();
    merged.by_ordinal.extend(over.by_ordinal.clone());
    merged.by_pod.extend(over.by_pod.clone());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use loco_discovery_core::index::{EndpointIndex, IndexConfig};
    use loco_discovery_core::model::Status;

    fn endpoints(json: serde_json::Value) -> Endpoints {
        serde_json::from_value(json).unwrap()
    }

    fn address(n: u32) -> serde_json::Value {
        serde_json::json!({"ip": format!("10.0.0.{n}"), "hostname": format!("emu-{n}"),
                           "targetRef": {"kind": "Pod", "name": format!("emu-{n}")}})
    }

    #[test]
    fn ready_and_not_ready_addresses_become_serving_and_not_serving() {
        let ep = endpoints(serde_json::json!({
            "metadata": {"name": "emu", "namespace": "loco"},
            "subsets": [{"addresses": [address(0)], "notReadyAddresses": [address(1)],
                         "ports": [{"name": "vnc", "port": 5901}]}]
        }));
        let slices = slices_from_endpoints(&ep);
        assert_eq!(slices.len(), 1);
        let index = EndpointIndex::from_slices(IndexConfig::default(), &slices, Utc::now());
        let all = index.instances();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].id.as_str(), all[0].status),
            ("instance-0", Status::Ready)
        );
        assert_eq!(
            (all[1].id.as_str(), all[1].status),
            ("instance-1", Status::Booting)
        );
        assert_eq!(all[0].service, "emu");
        assert_eq!(all[0].ports.get("vnc"), Some(&5901));
    }

    #[test]
    fn endpoints_of_a_headless_service_give_dns_names_and_others_do_not() {
        let mut object = serde_json::json!({
            "metadata": {"name": "emu", "namespace": "loco"},
            "subsets": [{"addresses": [address(0), {"ip": "10.0.0.9"}]}]
        });
        let names = |object: &serde_json::Value| {
            let slices = slices_from_endpoints(&endpoints(object.clone()));
            let index = EndpointIndex::from_slices(IndexConfig::default(), &slices, Utc::now());
            index
                .instances()
                .iter()
                .map(|i| (i.addresses.dns_name.clone(), i.vnc_url.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&object),
            vec![
                (None, "10.0.0.0:5901".to_owned()),
                (None, "10.0.0.9:5901".to_owned())
            ]
        );
        object["metadata"]["labels"] = serde_json::json!({HEADLESS_LABEL: ""});
        assert_eq!(
            names(&object),
            vec![
                (
                    Some("emu-0.emu.loco.svc.cluster.local".to_owned()),
                    "emu-0.emu.loco.svc.cluster.local:5901".to_owned()
                ),
                (
                    Some("10-0-0-9.emu.loco.svc.cluster.local".to_owned()),
                    "10-0-0-9.emu.loco.svc.cluster.local:5901".to_owned()
                )
            ]
        );
    }

    #[test]
    fn an_endpoints_object_without_subsets_has_no_instances() {
        let ep = endpoints(serde_json::json!({"metadata": {"name": "emu", "namespace": "loco"}}));
        assert!(slices_from_endpoints(&ep).is_empty());
    }

    #[test]
    fn the_adapter_deletes_slices_of_vanished_subsets() {
        let mut adapter = EndpointsAdapter::default();
        let two = endpoints(serde_json::json!({
            "metadata": {"name": "emu", "namespace": "loco"},
            "subsets": [{"addresses": [address(0)]}, {"addresses": [{"ip": "fd00::1"}]}]
        }));
        let (apply, stale) = adapter.apply(&two);
        assert_eq!(apply.len(), 2);
        assert!(stale.is_empty());
        let one = endpoints(serde_json::json!({
            "metadata": {"name": "emu", "namespace": "loco"},
            "subsets": [{"addresses": [address(0)]}]
        }));
        let (apply, stale) = adapter.apply(&one);
        assert_eq!(apply.len(), 1);
        assert_eq!(stale[0].metadata.name.as_deref(), Some("emu.ep-1-v6"));
        assert_eq!(adapter.delete(&one).len(), 1);
    }

    #[test]
    fn static_files_in_both_shapes() {
        let ours = r#"[{"podName": "emu-0", "address": "10.0.0.1", "status": "ready", "zone": "z"},
                       {"ordinal": 1, "ip": "10.0.0.2", "status": "booting"}]"#;
        let parsed = parse_static(ours, "loco", "emu").unwrap();
        let index = EndpointIndex::from_slices(IndexConfig::default(), [&parsed.slice], Utc::now());
        let all = index.instances();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kubernetes.zone.as_deref(), Some("z"));
        assert_eq!(all[1].status, Status::Booting);

        let lego = "instances:\n  - id: instance-0\n    name: Windows 98 - Game Server\n    vncUrl: localhost:5901\n    ports: {vnc: 5901, health: 8080}\n";
        let parsed = parse_static(lego, "loco", "emu").unwrap();
        assert_eq!(parsed.slice.endpoints[0].addresses, vec!["127.0.0.1"]);
        let index = EndpointIndex::from_slices(IndexConfig::default(), [&parsed.slice], Utc::now());
        assert_eq!(
            index.instances().len(),
            1,
            "published, not dropped as invalid"
        );
        assert_eq!(
            parsed
                .names
                .lookup("emu-0", Some(0))
                .unwrap()
                .name
                .as_deref(),
            Some("Windows 98 - Game Server")
        );
        let unresolvable = "[{id: instance-0, vncUrl: 'no-such-host.invalid:5901'}]";
        let parsed = parse_static(unresolvable, "loco", "emu").unwrap();
        let index = EndpointIndex::from_slices(IndexConfig::default(), [&parsed.slice], Utc::now());
        assert!(
            index.instances().is_empty(),
            "an address that is no IP is never published"
        );
    }

    #[test]
    fn bad_static_files_say_what_is_wrong() {
        assert!(matches!(
            parse_static("{a: 1}", "loco", "emu"),
            Err(StaticError::Shape(_))
        ));
        assert_eq!(
            parse_static(r#"[{"address": "10.0.0.1"}]"#, "loco", "emu").unwrap_err(),
            StaticError::Entry(
                0,
                "needs an id (instance-N), an ordinal or a podName".into()
            )
        );
        assert!(parse_static(r#"[{"ordinal": 1}]"#, "loco", "emu").is_err());
        assert!(parse_static("", "loco", "emu")
            .unwrap()
            .slice
            .endpoints
            .is_empty());
    }
}
