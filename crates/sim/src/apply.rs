//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, what
//! `kubectl apply --server-side` and `kubectl diff --server-side` send): create-or-update
//! from a field manager's configuration, owning exactly the fields of that configuration.
//!
//! - A missing object is created from the configuration.
//! - Fields of the configuration are set; objects, sets and keyed lists merge with the live
//!   object, atomic lists and scalars are replaced (the schema says which is which).
//! - A field the manager applied before and leaves out now is removed, unless another
//!   manager owns it too.
//! - A field another manager owns with a different value is a conflict (409, reason
//!   `Conflict`, a cause per field), unless `force=true`, which takes it over.
//! - For the manager `kubectl` on an object that client-side apply made (it carries the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation, and the live object
//!   still holds what it says), conflicts over fields of that configuration are taken
//!   over, and the annotation follows the applied configuration: switching a resource
//!   from `kubectl apply` to `kubectl apply --server-side` and back works, as on a real
//!   API server.
//! - A configuration that does not fit the schema (a field the schema does not declare, a
//!   value of another type) is refused before anything else, whatever `fieldValidation`
//!   says, with the 500 (no reason) the API server answers: `failed to create typed patch
//!   object (loco/web; discovery.k8s.io/v1, Kind=EndpointSlice): .topology: field not
//!   declared in schema` ([`typed_patch_error`]).

use super::managed_fields::{self, fields_of, Entry, Path};
use super::openapi::{ListMerge, Schema};
use super::status::{self, Cause, Details};
use super::store::ResourceKind;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

const APPLY: &str = "Apply";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The manager for which the last-applied annotation is upgraded and kept in step.
const KUBECTL: &str = "kubectl";

/// Who applies, and how.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// The time recorded in `managedFields`.
    pub now: &'a str,
}

/// The object `config` applied by `who` makes of `live` (`None`: it does not exist yet),
/// with its `managedFields`; or the 409 Status of the conflicts.
pub fn apply(
    kind: ResourceKind,
    live: Option<&Value>,
    config: &Value,
    who: &Applier<'_>,
) -> Result<Value, Value> {
    let mut config = config.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let applied = fields_of(kind, &config);
    let own = |entries: &mut Vec<Entry>| {
        entries.retain(|e| !(e.manager == who.manager && e.operation == APPLY));
        entries.push(Entry {
            manager: who.manager.to_owned(),
            operation: APPLY.into(),
            api_version: kind.api_version().into(),
            time: Some(who.now.to_owned()),
            fields: applied.keys().cloned().collect(),
        });
    };
    let Some(live) = live else {
        let mut entries = Vec::new();
        own(&mut entries);
        managed_fields::set_entries(&mut config, &entries);
        return Ok(config);
    };
    let live_fields = fields_of(kind, live);
    let mut entries = managed_fields::entries(live);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for (path, value) in &applied {
        if live_fields.get(path) == Some(value) {
            continue;
        }
        for entry in entries
            .iter_mut()
            .filter(|e| !(e.manager == who.manager && e.operation == APPLY))
        {
            if entry.fields.contains(path) {
                conflicts.push((entry.describe(), path.clone()));
                if who.force {
                    entry.fields.remove(path);
                }
            }
        }
    }
    let from_client_side_apply = who.manager == KUBECTL
        && client_side_applied(kind, live, &live_fields)
            .is_some_and(|fields| conflicts.iter().all(|(_, p)| fields.contains(p)));
    if !conflicts.is_empty() && !who.force && !from_client_side_apply {
        return Err(conflict_status(&conflicts));
    }
    if from_client_side_apply {
        for entry in entries
            .iter_mut()
            .filter(|e| !(e.manager == who.manager && e.operation == APPLY))
        {
            entry
                .fields
                .retain(|p| !conflicts.iter().any(|(_, c)| c == p));
        }
    }
    let schema = Schema::of(kind);
    let mut merged = merge(live, &config, schema);
    let before: BTreeSet<Path> = entries
        .iter()
        .find(|e| e.manager == who.manager && e.operation == APPLY)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut dropped: Vec<&Path> = before
        .iter()
        .filter(|p| !applied.contains_key(*p))
        .filter(|p| {
            !entries
                .iter()
                .filter(|e| !(e.manager == who.manager && e.operation == APPLY))
                .any(|e| e.fields.contains(*p))
        })
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        let member = live_fields.get(path) == Some(&None);
        remove(&mut merged, path, member);
    }
    own(&mut entries);
    let remaining = fields_of(kind, &merged);
    for entry in &mut entries {
        entry.fields.retain(|p| remaining.contains_key(p));
    }
    managed_fields::set_entries(&mut merged, &entries);
    if who.manager == KUBECTL {
        keep_last_applied_in_step(&mut merged, &config);
    }
    Ok(merged)
}

/// What the API server's typed conversion of an apply configuration refuses (structured
/// merge diff's validation against the schema), as the message of its 500; `None` when the
/// configuration fits. One error per map at most (the walk of a map stops at its first
/// undeclared field); several are listed under `errors:`.
pub fn typed_patch_error(kind: ResourceKind, config: &Value) -> Option<String> {
    let mut errors = Vec::new();
    typed_errors(config, Schema::of(kind), "", &mut errors);
    let listed = match errors.as_slice() {
        [] => return None,
        [one] => one.clone(),
        many => {
            let lines: Vec<String> = many.iter().map(|e| format!("  {e}")).collect();
            format!("errors:\n{}", lines.join("\n"))
        }
    };
    let meta = |field: &str| {
        config
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind_name = config.get("kind").and_then(Value::as_str).unwrap_or("");
    Some(format!(
        "failed to create typed patch object ({}/{}; {group}/{version}, Kind={kind_name}): {listed}",
        meta("namespace"),
        meta("name"),
    ))
}

/// A value as Go's `%v` prints structured merge diff's value of it (`&{10.0.0.1}`).
fn smd_value(value: &Value) -> String {
    format!("&{{{}}}", crate::store::go_print(value))
}

/// Go's `%T` of what `json.Unmarshal` makes of a value.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Null => "<nil>",
    }
}

/// How structured merge diff names a list element in a path: by index in an atomic list,
/// by value in a set, by its keys in a keyed list.
fn element_name(merge: &ListMerge, index: usize, item: &Value) -> String {
    match merge {
        ListMerge::Atomic => format!("[{index}]"),
        ListMerge::Set => format!("[={item}]"),
        ListMerge::Map(keys) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", item.get(k).unwrap_or(&Value::Null)))
                .collect();
            format!("[{}]", keys.join(","))
        }
    }
}

fn typed_errors(value: &Value, schema: Schema, path: &str, errors: &mut Vec<String>) {
    if value.is_null() || !schema.is_known() {
        return;
    }
    let refuse = |errors: &mut Vec<String>, message: String| {
        errors.push(format!("{path}: {message}"));
    };
    match schema.json_type() {
        Some("object") => {
            let Value::Object(map) = value else {
                return refuse(errors, format!("expected map, got {}", smd_value(value)));
            };
            if !schema.has_fields() && !schema.is_free_map() {
                return;
            }
            for (key, child) in map {
                let at = format!("{path}.{key}");
                if schema.has_fields() && !schema.declares(key) && !schema.is_free_map() {
                    errors.push(format!("{at}: field not declared in schema"));
                    return;
                }
                typed_errors(child, schema.field(key), &at, errors);
            }
        }
        Some("array") => {
            let Value::Array(items) = value else {
                return refuse(errors, format!("expected list, got {}", smd_value(value)));
            };
            let merge = schema.list_type();
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}{}", element_name(&merge, i, item));
                typed_errors(item, schema.items(), &at, errors);
            }
        }
        Some("string") if !value.is_string() => refuse(
            errors,
            format!(
                "expected string, got &value.valueUnstructured{{Value:{}}}",
                go_sharp(value)
            ),
        ),
        Some("integer" | "number") if !value.is_number() => refuse(
            errors,
            format!("expected numeric (int or float), got {}", go_type(value)),
        ),
        Some("boolean") if !value.is_boolean() => refuse(
            errors,
            format!("expected boolean, got {}", smd_value(value)),
        ),
        _ => {}
    }
}

/// Go's `%#v` of a value `json.Unmarshal` made (`"a"`, `10`, `[]interface {}{"a"}`).
fn go_sharp(value: &Value) -> String {
    match value {
        Value::Null => "interface {}(nil)".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(_) | Value::Number(_) => crate::store::go_print(value),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_sharp).collect();
            format!("[]interface {{}}{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", go_sharp(v)))
                .collect();
            format!("map[string]interface {{}}{{{}}}", items.join(", "))
        }
    }
}

/// The fields of the live object's last-applied configuration, if it has one and the live
/// object still holds every value of it.
fn client_side_applied(
    kind: ResourceKind,
    live: &Value,
    live_fields: &managed_fields::Fields,
) -> Option<BTreeSet<Path>> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    let fields = fields_of(kind, &last);
    fields
        .iter()
        .all(|(p, v)| live_fields.get(p) == Some(v))
        .then(|| fields.into_keys().collect())
}

/// Sets the last-applied annotation, where there is one, to the applied configuration.
fn keep_last_applied_in_step(merged: &mut Value, config: &Value) {
    let Some(annotations) = merged
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !annotations.contains_key(LAST_APPLIED) {
        return;
    }
    let mut applied = config.clone();
    if let Some(own) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        own.remove(LAST_APPLIED);
    }
    annotations.insert(LAST_APPLIED.into(), Value::String(applied.to_string()));
}

/// `live` with `config` merged in, list by list as the schema says.
fn merge(live: &Value, config: &Value, schema: Schema) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (key, value) in c {
                if value.is_null() {
                    out.remove(key);
                    continue;
                }
                let merged = match l.get(key) {
                    Some(current) => merge(current, value, schema.field(key)),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match schema.list_type() {
            ListMerge::Atomic => config.clone(),
            ListMerge::Set => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
                Value::Array(out)
            }
            ListMerge::Map(keys) => {
                let key_of = |v: &Value| managed_fields::element_key(v, &keys);
                let mut out = l.clone();
                for item in c {
                    match out.iter().position(|o| key_of(o) == key_of(item)) {
                        Some(i) => out[i] = merge(&out[i], item, schema.items()),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => config.clone(),
    }
}

/// Removes the field at `path`. A field that is a container of fields (`member`: a map,
/// a set, a keyed list or one of its elements) goes only when nothing is left in it.
fn remove(object: &mut Value, path: &Path, member: bool) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = object;
    for key in parents {
        let Some(next) = step(at, key) else {
            return;
        };
        at = next;
    }
    let empty = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    };
    match at {
        Value::Object(map) => {
            let Some(name) = last.strip_prefix("f:") else {
                return;
            };
            if !member || map.get(name).is_none_or(empty) {
                map.remove(name);
            }
        }
        Value::Array(items) => {
            if let Some(i) = items.iter().position(|item| matches_key(item, last)) {
                if !member || last.starts_with("v:") || empty(&strip_keys(&items[i], last)) {
                    items.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// A keyed list element without its key fields (what is left when its own fields go).
fn strip_keys(item: &Value, key: &str) -> Value {
    let keys: Map<String, Value> = key
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str(k).ok())
        .unwrap_or_default();
    match item {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !keys.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn matches_key(item: &Value, key: &str) -> bool {
    if let Some(value) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(value).is_ok_and(|v| &v == item);
    }
    if let Some(keys) = key.strip_prefix("k:") {
        return serde_json::from_str::<Map<String, Value>>(keys).is_ok_and(|keys| {
            keys.iter()
                .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
        });
    }
    false
}

fn step<'a>(at: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match at {
        Value::Object(map) => map.get_mut(key.strip_prefix("f:")?),
        Value::Array(items) => items.iter_mut().find(|item| matches_key(item, key)),
        _ => None,
    }
}

/// The Status of an apply that conflicts with other managers, worded as the API server
/// words it.
fn conflict_status(conflicts: &[(String, Path)]) -> Value {
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|(manager, path)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {manager}"),
            field: managed_fields::path_string(path),
        })
        .collect();
    let message = if let [(manager, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            managed_fields::path_string(path)
        )
    } else {
        let mut by_manager: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        by_manager.sort();
        by_manager.dedup();
        let lines: Vec<String> = by_manager
            .into_iter()
            .flat_map(|manager| {
                let paths = conflicts
                    .iter()
                    .filter(move |(m, _)| m == manager)
                    .map(|(_, p)| format!("- {}", managed_fields::path_string(p)));
                std::iter::once(format!("conflicts with {manager}:")).chain(paths)
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    status::failure(
        409,
        "Conflict",
        &message,
        Some(&Details {
            causes,
            ..Details::default()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(ip: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web", "namespace": "loco", "labels": labels},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip]}],
        })
    }

    fn by(manager: &str, force: bool) -> Applier<'_> {
        Applier {
            manager,
            force,
            now: "2026-01-01T00:00:00Z",
        }
    }

    const KIND: ResourceKind = ResourceKind::EndpointSlice;

    /// Applies `config(ip, labels)` as `manager` onto `live`.
    fn run(
        live: Option<&Value>,
        ip: &str,
        labels: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, Value> {
        apply(KIND, live, &config(ip, labels), &by(manager, force))
    }

    #[test]
    fn a_first_apply_creates_and_owns_the_configuration() {
        let out = run(None, "10.0.0.1", json!({"a": "1"}), "kubectl", false).unwrap();
        let entries = managed_fields::entries(&out);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].operation, "Apply");
        assert_eq!(
            out["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:addressType": {}, "f:endpoints": {},
                   "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
    }

    #[test]
    fn fields_left_out_are_removed_and_kept_ones_change() {
        let first = run(
            None,
            "10.0.0.1",
            json!({"a": "1", "b": "2"}),
            "kubectl",
            false,
        )
        .unwrap();
        let second = run(
            Some(&first),
            "10.0.0.2",
            json!({"a": "1"}),
            "kubectl",
            false,
        )
        .unwrap();
        assert_eq!(second["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(second["endpoints"][0]["addresses"][0], "10.0.0.2");
    }

    #[test]
    fn another_managers_field_with_another_value_conflicts_unless_forced() {
        let mine = run(None, "10.0.0.1", json!({"a": "1"}), "kubectl", false).unwrap();
        let status = run(Some(&mine), "10.0.0.9", json!({"a": "1"}), "other", false).unwrap_err();
        assert_eq!(status["code"], 409);
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["message"],
            "Apply failed with 1 conflict: conflict with \"kubectl\": .endpoints"
        );
        assert_eq!(status["details"]["causes"][0]["field"], ".endpoints");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        // The same value is shared ownership, not a conflict.
        let shared = run(Some(&mine), "10.0.0.1", json!({"b": "2"}), "other", false).unwrap();
        assert_eq!(shared["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let forced = run(Some(&mine), "10.0.0.9", json!({}), "other", true).unwrap();
        assert_eq!(forced["endpoints"][0]["addresses"][0], "10.0.0.9");
        let kubectl = managed_fields::entries(&forced)
            .into_iter()
            .find(|e| e.manager == "kubectl")
            .unwrap();
        assert!(
            !kubectl.fields.contains(&vec!["f:endpoints".to_string()]),
            "taken over"
        );
    }

    #[test]
    fn kubectl_takes_over_what_client_side_apply_set_and_keeps_its_annotation_in_step() {
        let mut live = config("10.0.0.1", json!({"a": "1"}));
        let last = live.to_string();
        live["metadata"]["annotations"] = json!({LAST_APPLIED: last});
        managed_fields::record_update(KIND, None, &mut live, "kubectl-client-side-apply", "t0");
        let changed = config("10.0.0.2", json!({"a": "1"}));
        assert_eq!(
            apply(KIND, Some(&live), &changed, &by("someone", false)).unwrap_err()["code"],
            409
        );
        let out = apply(KIND, Some(&live), &changed, &by("kubectl", false)).unwrap();
        assert_eq!(out["endpoints"][0]["addresses"][0], "10.0.0.2");
        let annotation: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(annotation["endpoints"][0]["addresses"][0], "10.0.0.2");
    }

    #[test]
    fn a_configuration_that_does_not_fit_the_schema_is_refused_as_the_typed_conversion_refuses_it()
    {
        let mut unknown = config("10.0.0.1", json!({"a": "1"}));
        unknown["topology"] = json!({"kubernetes.io/hostname": "node-1"});
        assert_eq!(
            typed_patch_error(KIND, &unknown).as_deref(),
            Some("failed to create typed patch object (loco/web; discovery.k8s.io/v1, Kind=EndpointSlice): .topology: field not declared in schema")
        );
        let mut nested = config("10.0.0.1", json!({"a": "1"}));
        nested["endpoints"][0]["ready"] = json!(true);
        nested["metadata"]["colour"] = json!("red");
        assert_eq!(
            typed_patch_error(KIND, &nested).unwrap().split_once("): ").unwrap().1,
            "errors:\n  .endpoints[0].ready: field not declared in schema\n  .metadata.colour: field not declared in schema"
        );
        let mut wrong = config("10.0.0.1", json!({"a": "1"}));
        wrong["endpoints"][0]["addresses"] = json!("10.0.0.1");
        wrong["endpoints"][0]["conditions"] = json!({"ready": "yes"});
        wrong["ports"] = json!([{"port": "80", "name": 7}]);
        assert_eq!(
            typed_patch_error(KIND, &wrong)
                .unwrap()
                .split_once("): ")
                .unwrap()
                .1,
            "errors:\n  .endpoints[0].addresses: expected list, got &{10.0.0.1}\n  \
             .endpoints[0].conditions.ready: expected boolean, got &{yes}\n  \
             .ports[0].name: expected string, got &value.valueUnstructured{Value:7}\n  \
             .ports[0].port: expected numeric (int or float), got string"
        );
        let labels = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web",
            "labels": {"any-key": "v"}, "managedFields": null,
            "ownerReferences": [{"uid": "u1", "name": "x", "kind": "Service", "apiVersion": "v1", "extra": 1}]}});
        assert_eq!(
            typed_patch_error(ResourceKind::Endpoints, &labels).as_deref(),
            Some("failed to create typed patch object (/web; /v1, Kind=Endpoints): .metadata.ownerReferences[uid=\"u1\"].extra: field not declared in schema")
        );
        assert_eq!(
            typed_patch_error(KIND, &config("10.0.0.1", json!({"a": "1"}))),
            None
        );
    }

    #[test]
    fn several_conflicts_are_listed_by_manager() {
        let mine = run(None, "10.0.0.1", json!({"a": "1"}), "kubectl", false).unwrap();
        let status = run(Some(&mine), "10.0.0.9", json!({"a": "2"}), "other", false).unwrap_err();
        assert_eq!(
            status["message"],
            "Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .endpoints\n- .metadata.labels.a"
        );
    }
}
