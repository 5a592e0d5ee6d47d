//! `metadata.managedFields`: which field manager set which fields, as server-side apply
//! records it (`FieldsV1`), for what kubectl needs: every write records its manager's
//! fields, an apply owns exactly the fields of its configuration, and a field another
//! manager owns with a different value is a conflict.
//!
//! A field path is a list of `FieldsV1` keys: `f:<name>` for a field, `k:<keys as JSON>`
//! for an element of a list keyed by some of its fields, `v:<value as JSON>` for an
//! element of a set. The schema says which lists are which; lists it calls atomic (and
//! every scalar) are one field.

use super::openapi::{ListMerge, Schema};
use super::store::ResourceKind;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A field path, as `FieldsV1` keys.
pub type Path = Vec<String>;

/// The fields an object sets, each with its value (`None` for a map, set or keyed list
/// that is a field itself and holds fields: only its existence counts).
pub type Fields = BTreeMap<Path, Option<Value>>;

/// Metadata the server owns; never part of a field set.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields set by `object` (an object of `kind`).
pub fn fields_of(kind: ResourceKind, object: &Value) -> Fields {
    let mut out = Fields::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    let schema = Schema::of(kind);
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind") || value.is_null() {
            continue;
        }
        let path = vec![format!("f:{key}")];
        if key == "metadata" {
            let Some(meta) = value.as_object() else {
                continue;
            };
            let meta_schema = schema.field("metadata");
            for (field, v) in meta {
                if SERVER_METADATA.contains(&field.as_str()) || v.is_null() {
                    continue;
                }
                let mut p = path.clone();
                p.push(format!("f:{field}"));
                collect(v, meta_schema.field(field), p, &mut out);
            }
            continue;
        }
        collect(value, schema.field(key), path, &mut out);
    }
    out
}

fn collect(value: &Value, schema: Schema, path: Path, out: &mut Fields) {
    match value {
        Value::Object(map) if map.is_empty() => {
            out.insert(path, None);
        }
        Value::Object(map) => {
            if schema.is_free_map() {
                out.insert(path.clone(), None);
            }
            for (key, v) in map {
                if v.is_null() {
                    continue;
                }
                let mut p = path.clone();
                p.push(format!("f:{key}"));
                collect(v, schema.field(key), p, out);
            }
        }
        Value::Array(items) => match schema.list_type() {
            ListMerge::Set => {
                out.insert(path.clone(), None);
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p, Some(item.clone()));
                }
            }
            ListMerge::Map(keys) => {
                out.insert(path.clone(), None);
                for item in items {
                    let mut p = path.clone();
                    p.push(element_key(item, &keys));
                    out.insert(p.clone(), None);
                    collect(item, schema.items(), p, out);
                }
            }
            ListMerge::Atomic => {
                out.insert(path, Some(value.clone()));
            }
        },
        other => {
            out.insert(path, Some(other.clone()));
        }
    }
}

/// `k:{"uid":"…"}`: the key of a list element by its key fields.
pub fn element_key(item: &Value, keys: &[String]) -> String {
    let picked: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    format!("k:{}", Value::Object(picked))
}

/// A path as conflicts name it: `.metadata.labels.app`, `.metadata.finalizers[="x"]`,
/// `.metadata.ownerReferences[uid="…"]`.
pub fn path_string(path: &Path) -> String {
    let mut out = String::new();
    for key in path {
        if let Some(name) = key.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(value) = key.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(keys) = key.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
            let inner: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    out
}

/// A set of paths as `FieldsV1`: nested objects, `{}` for a field, `".": {}` for a field
/// that also holds fields.
pub fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut map = Map::new();
        if node.member && !node.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (key, child) in &node.children {
            map.insert(key.clone(), render(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for key in path {
            node = node.children.entry(key.clone()).or_default();
        }
        node.member = true;
    }
    render(&root)
}

/// The paths of a `FieldsV1` object.
pub fn from_fields_v1(value: &Value) -> BTreeSet<Path> {
    fn walk(value: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = value.as_object() else {
            return;
        };
        if map.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (key, child) in map {
            if key == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(key.clone());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn parse(value: &Value) -> Option<Entry> {
        let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            fields: value
                .get("fieldsV1")
                .map(from_fields_v1)
                .unwrap_or_default(),
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        entry["fieldsType"] = json!("FieldsV1");
        entry["fieldsV1"] = to_fields_v1(&self.fields);
        entry
    }

    /// The manager as conflicts name it: `"kubectl"` for an apply, `"x" using v1 at <time>`
    /// for an update.
    pub fn describe(&self) -> String {
        if self.operation == "Update" {
            match &self.time {
                Some(time) => format!("{:?} using {} at {time}", self.manager, self.api_version),
                None => format!("{:?} using {}", self.manager, self.api_version),
            }
        } else {
            format!("{:?}", self.manager)
        }
    }
}

/// The entries of an object's `metadata.managedFields`.
pub fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Writes `entries` as the object's `metadata.managedFields` (dropping empty ones).
pub fn set_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records a write that is not an apply (create, replace, patch) by `manager`: it takes
/// over every field it added or changed (such writes never conflict), and fields the
/// write removed belong to nobody. A write that sets `managedFields` itself keeps what it
/// set.
pub fn record_update(
    kind: ResourceKind,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now: &str,
) {
    let given = new.pointer("/metadata/managedFields").cloned();
    let had = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .cloned();
    if given.is_some() && given != had {
        return;
    }
    let before = old.map(|o| fields_of(kind, o)).unwrap_or_default();
    let after = fields_of(kind, new);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|(path, value)| before.get(*path) != Some(*value))
        .map(|(path, _)| path.clone())
        .collect();
    let mut list = old.map(entries).unwrap_or_default();
    for entry in &mut list {
        entry
            .fields
            .retain(|p| after.contains_key(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let api_version = kind.api_version().to_owned();
        match list.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.api_version == api_version
        }) {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = Some(now.to_owned());
            }
            None => list.push(Entry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version,
                time: Some(now.to_owned()),
                fields: changed,
            }),
        }
    }
    set_entries(new, &list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice() -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web", "namespace": "loco", "uid": "u",
                         "labels": {"kubernetes.io/service-name": "web"},
                         "finalizers": ["a"],
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "s1"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
        })
    }

    #[test]
    fn the_field_set_of_an_object_follows_its_schema() {
        let fields = fields_of(ResourceKind::EndpointSlice, &slice());
        let v1 = to_fields_v1(&fields.keys().cloned().collect());
        assert_eq!(
            v1,
            json!({
                "f:addressType": {},
                "f:endpoints": {},
                "f:metadata": {
                    "f:finalizers": {".": {}, "v:\"a\"": {}},
                    "f:labels": {".": {}, "f:kubernetes.io/service-name": {}},
                    "f:ownerReferences": {".": {}, "k:{\"uid\":\"s1\"}": {
                        ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}},
                },
            })
        );
        assert_eq!(from_fields_v1(&v1), fields.keys().cloned().collect());
    }

    #[test]
    fn paths_are_named_like_the_api_server_names_them() {
        let p = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Path>();
        assert_eq!(path_string(&p(&["f:endpoints"])), ".endpoints");
        assert_eq!(
            path_string(&p(&["f:metadata", "f:labels", "f:app"])),
            ".metadata.labels.app"
        );
        assert_eq!(
            path_string(&p(&[
                "f:metadata",
                "f:ownerReferences",
                "k:{\"uid\":\"s1\"}"
            ])),
            ".metadata.ownerReferences[uid=\"s1\"]"
        );
    }

    #[test]
    fn an_update_owns_what_it_changed_and_removed_fields_belong_to_nobody() {
        let mut created = slice();
        record_update(
            ResourceKind::EndpointSlice,
            None,
            &mut created,
            "kubectl-create",
            "t1",
        );
        let first = entries(&created);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].manager, "kubectl-create");
        assert!(first[0].fields.contains(&vec!["f:endpoints".to_string()]));

        let mut patched = created.clone();
        patched["endpoints"] = json!([{"addresses": ["10.0.0.2"]}]);
        patched["metadata"]["labels"] = json!({"kubernetes.io/service-name": "web"});
        patched["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("finalizers");
        record_update(
            ResourceKind::EndpointSlice,
            Some(&created),
            &mut patched,
            "kubectl-patch",
            "t2",
        );
        let list = entries(&patched);
        assert_eq!(list.len(), 2);
        assert!(!list[0].fields.contains(&vec!["f:endpoints".to_string()]));
        assert!(!list[0]
            .fields
            .iter()
            .any(|p| p.contains(&"f:finalizers".to_string())));
        assert_eq!(
            list[1].fields,
            BTreeSet::from([vec!["f:endpoints".to_string()]])
        );
        assert_eq!(
            list[1].describe(),
            "\"kubectl-patch\" using discovery.k8s.io/v1 at t2"
        );
    }
}
