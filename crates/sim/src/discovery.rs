//! Discovery documents, always in the legacy form with `Content-Type: application/json`: kubectl 1.27, 1.30 and
//! 1.33 all follow legacy discovery, while an aggregated (v2) answer breaks 1.27.

use serde_json::{json, Value};

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `GET /version`. kubectl (and its dispatcher) read `major` and `minor`.
pub fn version(minor: &str) -> Value {
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    let patch_minor = if digits.is_empty() {
        "0"
    } else {
        digits.as_str()
    };
    json!({
        "major": "1",
        "minor": minor,
        "gitVersion": format!("v1.{patch_minor}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`: the core group versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn discovery_group() -> Value {
    json!({
        "name": "discovery.k8s.io",
        "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"},
    })
}

/// `GET /apis`: the named groups.
pub fn api_groups() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [discovery_group()]})
}

/// `GET /apis/discovery.k8s.io`: one group.
pub fn discovery_api_group() -> Value {
    let mut g = discovery_group();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

/// `GET /api/v1`: endpoints and namespaces.
pub fn core_v1_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "endpoints", "singularName": "endpoints", "namespaced": true, "kind": "Endpoints",
             "verbs": VERBS, "shortNames": ["ep"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
             "verbs": ["create", "delete", "get", "list"], "shortNames": ["ns"]},
        ],
    })
}

/// `GET /apis/discovery.k8s.io/v1`: endpointslices.
pub fn discovery_v1_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "discovery.k8s.io/v1",
        "resources": [
            {"name": "endpointslices", "singularName": "endpointslice", "namespaced": true, "kind": "EndpointSlice",
             "verbs": VERBS},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_reports_the_configured_minor() {
        let v = version("33");
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("33"))
        );
        assert_eq!(v["gitVersion"], "v1.33.0");
        assert_eq!(version("31+")["gitVersion"], "v1.31.0");
    }

    #[test]
    fn resource_lists_name_both_resources() {
        assert_eq!(core_v1_resources()["resources"][0]["name"], "endpoints");
        assert_eq!(
            discovery_v1_resources()["resources"][0]["kind"],
            "EndpointSlice"
        );
        assert_eq!(api_groups()["groups"][0]["name"], "discovery.k8s.io");
    }
}
