//! Server-side printing: the `meta.k8s.io` `Table` kubectl asks for with `Accept: application/json;as=Table;…`.
//! Columns and cell texts follow the real printers (k/k `pkg/printers/internalversion/printers.go`).

use super::clock;
use super::store::ResourceKind;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// What `rows[].object` carries (`includeObject=` parameter; default `Metadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value; unknown values fall back to the default.
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// How to print a table: API version of the Table and what each row embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
    pub api_version: &'static str,
    pub include: IncludeObject,
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The column definitions of a kind.
pub fn columns(kind: ResourceKind) -> Value {
    let col = |name: &str, ty: &str, format: &str, desc: &str| json!({"name": name, "type": ty, "format": format, "description": desc, "priority": 0});
    match kind {
        ResourceKind::EndpointSlice => json!([
            col("Name", "string", "name", NAME_DOC),
            col("AddressType", "string", "", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation."),
            col("Ports", "string", "", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "", "endpoints is a list of unique endpoints in this slice."),
            col("Age", "date", "", AGE_DOC),
        ]),
        ResourceKind::Endpoints => json!([
            col("Name", "string", "name", NAME_DOC),
            col("Endpoints", "string", "", "The set of all endpoints is the union of all subsets."),
            col("Age", "string", "", AGE_DOC),
        ]),
    }
}

fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        "<unset>".into()
    } else {
        ret
    }
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The `Ports` cell of an EndpointSlice: first 3 port numbers (or names, or `*`).
pub fn slice_ports(obj: &Value) -> String {
    let ports = arr(obj.get("ports"));
    let list: Vec<String> = ports
        .iter()
        .take(3)
        .map(|p| {
            if let Some(n) = p.get("port").and_then(Value::as_i64) {
                n.to_string()
            } else if let Some(name) = p.get("name").and_then(Value::as_str) {
                name.to_string()
            } else {
                "*".into()
            }
        })
        .collect();
    list_with_more(&list, ports.len() > 3, ports.len(), 3)
}

/// The `Endpoints` cell of an EndpointSlice: first 3 addresses over all endpoints.
pub fn slice_endpoints(obj: &Value) -> String {
    let addrs: Vec<&str> = arr(obj.get("endpoints"))
        .iter()
        .flat_map(|e| arr(e.get("addresses")))
        .map(|a| a.as_str().unwrap_or(""))
        .collect();
    let list: Vec<String> = addrs.iter().take(3).map(|s| s.to_string()).collect();
    list_with_more(&list, addrs.len() > 3, addrs.len(), 3)
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The `Endpoints` cell of an Endpoints object: up to 3 `ip:port` pairs from the ready addresses.
pub fn endpoints_cell(obj: &Value) -> String {
    let subsets = arr(obj.get("subsets"));
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss.get("addresses"));
        let ip = |a: &Value| {
            a.get("ip")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let ports = arr(ss.get("ports"));
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(ip(a));
            }
            continue;
        }
        for p in ports {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(&ip(a), port));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

/// The `Age` cell: time since `metadata.creationTimestamp`, or `<unknown>`.
pub fn age(obj: &Value, now: DateTime<Utc>) -> String {
    obj.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(clock::parse_rfc3339)
        .map(|t| clock::human_duration(now - t))
        .unwrap_or_else(|| "<unknown>".into())
}

/// The cells of one row.
pub fn cells(kind: ResourceKind, obj: &Value, now: DateTime<Utc>) -> Value {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind {
        ResourceKind::EndpointSlice => json!([
            name,
            obj.get("addressType").and_then(Value::as_str).unwrap_or(""),
            slice_ports(obj),
            slice_endpoints(obj),
            age(obj, now),
        ]),
        ResourceKind::Endpoints => json!([name, endpoints_cell(obj), age(obj, now)]),
    }
}

/// `PartialObjectMetadata` of an object: its metadata with the meta.k8s.io type.
pub fn partial_metadata(obj: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One row, with its embedded object.
pub fn row(kind: ResourceKind, obj: &Value, opts: TableOptions, now: DateTime<Utc>) -> Value {
    row_of(cells(kind, obj, now), obj, opts)
}

/// A row of `cells`, embedding `obj` as `opts` ask.
fn row_of(cells: Value, obj: &Value, opts: TableOptions) -> Value {
    let mut r = json!({"cells": cells});
    match opts.include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj, opts.api_version),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A whole Table. `with_columns = false` gives an empty `columnDefinitions` (watch events after the first).
pub fn table<'a>(
    kind: ResourceKind,
    objs: impl IntoIterator<Item = &'a Value>,
    opts: TableOptions,
    metadata: Value,
    with_columns: bool,
) -> Value {
    let now = Utc::now();
    let rows: Vec<Value> = objs.into_iter().map(|o| row(kind, o, opts, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": opts.api_version,
        "metadata": metadata,
        "columnDefinitions": if with_columns { columns(kind) } else { json!([]) },
        "rows": rows,
    })
}

/// The Table of namespaces (`kubectl get namespaces`): name, status (phase), age.
pub fn namespace_table(objs: &[Value], opts: TableOptions, metadata: Value) -> Value {
    let now = Utc::now();
    let col = |name: &str, ty: &str, format: &str, desc: &str| json!({"name": name, "type": ty, "format": format, "description": desc, "priority": 0});
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let text = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("");
            let cells = json!([text("/metadata/name"), text("/status/phase"), age(o, now)]);
            row_of(cells, o, opts)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": opts.api_version,
        "metadata": metadata,
        "columnDefinitions": [
            col("Name", "string", "name", NAME_DOC),
            col("Status", "string", "", "The status of the namespace"),
            col("Age", "string", "", AGE_DOC),
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_cells_follow_the_real_printer() {
        let now = Utc::now();
        let created = clock::rfc3339_seconds(now - chrono::Duration::seconds(300));
        let obj = json!({
            "metadata": {"name": "web-abc12", "creationTimestamp": created},
            "addressType": "IPv4",
            "ports": [{"port": 8080}, {"name": "http"}, {}, {"port": 1}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
        });
        assert_eq!(
            cells(ResourceKind::EndpointSlice, &obj, now),
            json!([
                "web-abc12",
                "IPv4",
                "8080,http,* + 1 more...",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                "5m"
            ])
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4", "ports": null});
        assert_eq!(
            cells(ResourceKind::EndpointSlice, &empty, now),
            json!(["e", "IPv4", "<unset>", "<unset>", "<unknown>"])
        );
    }

    #[test]
    fn endpoints_cell_lists_ready_ip_port_pairs() {
        let obj = json!({"subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
            "notReadyAddresses": [{"ip": "10.0.0.9"}],
            "ports": [{"port": 80}, {"port": 443}],
        }]});
        assert_eq!(
            endpoints_cell(&obj),
            "10.0.0.1:80,[fd00::1]:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(endpoints_cell(&json!({})), "<none>");
        assert_eq!(
            endpoints_cell(
                &json!({"subsets": [{"notReadyAddresses": [{"ip": "1.2.3.4"}], "ports": [{"port": 1}]}]})
            ),
            ""
        );
        assert_eq!(
            endpoints_cell(&json!({"subsets": [{"addresses": [{"ip": "1.2.3.4"}]}]})),
            "1.2.3.4"
        );
    }

    #[test]
    fn rows_embed_partial_object_metadata_by_default() {
        let obj = json!({"metadata": {"name": "a", "namespace": "loco"}, "addressType": "IPv4"});
        let opts = TableOptions {
            api_version: "meta.k8s.io/v1",
            include: IncludeObject::parse(None),
        };
        let t = table(
            ResourceKind::EndpointSlice,
            [&obj],
            opts,
            json!({"resourceVersion": "5"}),
            true,
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "loco");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 5);
        let t = table(ResourceKind::Endpoints, [&obj], opts, json!({}), false);
        assert_eq!(t["columnDefinitions"], json!([]));
    }
}
