//! Strategic merge patch (`application/strategic-merge-patch+json`), what `kubectl apply`
//! and `kubectl patch` without `--type` send.
//!
//! Objects merge key by key and `null` removes a key, as in a JSON merge patch. Lists
//! follow the schema's `x-kubernetes-patch-strategy`: with `merge` a list of scalars is a
//! union and a list of objects merges element by element on its
//! `x-kubernetes-patch-merge-key`; any other list is replaced whole. (In EndpointSlices
//! and Endpoints every list is replaced; only metadata's `finalizers` and
//! `ownerReferences` merge.) The patch directives:
//! - `"$patch": "replace"` in an object: the object becomes the patch's content;
//!   in a merging list: the list becomes the patch's other elements;
//! - `"$patch": "delete"` in an object: the object is removed; in an element of a list
//!   of objects: the element with that key is removed;
//! - `"$retainKeys": [..]`: only those keys of the object are kept;
//! - `"$setElementOrder/<list>": [..]`: the order of a merging list's elements;
//! - `"$deleteFromPrimitiveList/<list>": [..]`: values removed from a list of scalars.

use super::openapi::{ListMerge, Schema};
use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// What a patch does to an object.
enum Outcome {
    Keep,
    Delete,
}

/// Applies a strategic merge patch to `target` (an object of the kind `schema` describes).
pub fn apply(target: &Value, patch: &Value, schema: Schema) -> Result<Value, String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let mut out = target.as_object().cloned().unwrap_or_default();
    match merge_object(&mut out, patch, schema)? {
        Outcome::Keep => Ok(Value::Object(out)),
        Outcome::Delete => Err("a strategic merge patch cannot delete the whole object".into()),
    }
}

fn directive(patch: &Map<String, Value>) -> Result<Option<&str>, String> {
    match patch.get(PATCH) {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(s.as_str()))
        }
        Some(other) => Err(format!("unknown patch directive {PATCH}: {other}")),
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ORDER) || key.starts_with(DELETE_FROM)
}

/// A patch value with every directive taken out (what it says when there is nothing to
/// merge it into).
fn plain(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_directive(k))
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| !i.as_object().is_some_and(|m| m.contains_key(PATCH)))
                .map(plain)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_object(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
) -> Result<Outcome, String> {
    match directive(patch)? {
        Some("delete") => return Ok(Outcome::Delete),
        Some("replace") => {
            *target = plain(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Ok(Outcome::Keep);
        }
        _ => {}
    }
    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        let field = schema.field(key);
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let mut current = match target.get(key) {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                match merge_object(&mut current, inner, field)? {
                    Outcome::Delete => {
                        target.remove(key);
                    }
                    Outcome::Keep => {
                        target.insert(key.clone(), Value::Object(current));
                    }
                }
            }
            Value::Array(items) => {
                let current = target.get(key).and_then(Value::as_array).cloned();
                let merged = merge_list(current.unwrap_or_default(), items, field)?;
                target.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(DELETE_FROM) {
            let gone = value
                .as_array()
                .ok_or_else(|| format!("{key} must be a list"))?;
            if let Some(Value::Array(items)) = target.get_mut(list) {
                items.retain(|i| !gone.contains(i));
            }
        }
    }
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(SET_ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| format!("{key} must be a list"))?;
            let merge = schema.field(list).patch_merge();
            if let Some(Value::Array(items)) = target.get_mut(list) {
                reorder(items, order, &merge);
            }
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| format!("{RETAIN_KEYS} must be a list"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Outcome::Keep)
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    schema: Schema,
) -> Result<Vec<Value>, String> {
    match schema.patch_merge() {
        ListMerge::Atomic => Ok(patch.iter().map(plain).collect()),
        ListMerge::Set => {
            for item in patch {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            Ok(current)
        }
        ListMerge::Map(keys) => {
            let replace = patch
                .iter()
                .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"));
            if replace {
                return Ok(patch
                    .iter()
                    .filter(|i| i.get(PATCH).is_none())
                    .map(plain)
                    .collect());
            }
            let key_of = |v: &Value| keys.iter().map(|k| v.get(k).cloned()).collect::<Vec<_>>();
            for item in patch {
                let Some(fields) = item.as_object() else {
                    return Err("elements of a merging list must be objects".into());
                };
                let key = key_of(item);
                if key.iter().all(Option::is_none) {
                    return Err(format!(
                        "an element of a merging list has no merge key {keys:?}"
                    ));
                }
                let at = current.iter().position(|c| key_of(c) == key);
                match (directive(fields)?, at) {
                    (Some("delete"), Some(i)) => {
                        current.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        let mut element = current[i].as_object().cloned().unwrap_or_default();
                        merge_object(&mut element, fields, schema.items())?;
                        current[i] = Value::Object(element);
                    }
                    (_, None) => current.push(plain(item)),
                }
            }
            Ok(current)
        }
    }
}

/// Orders a merging list by `$setElementOrder`: the listed elements first, in that order.
fn reorder(items: &mut Vec<Value>, order: &[Value], merge: &ListMerge) {
    let matches = |item: &Value, wanted: &Value| match merge {
        ListMerge::Map(keys) => keys.iter().all(|k| item.get(k) == wanted.get(k)),
        _ => item == wanted,
    };
    let mut ordered = Vec::with_capacity(items.len());
    for wanted in order {
        if let Some(i) = items.iter().position(|item| matches(item, wanted)) {
            ordered.push(items.remove(i));
        }
    }
    ordered.append(items);
    *items = ordered;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResourceKind;
    use serde_json::json;

    fn slice() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"],
                         "ownerReferences": [{"uid": "1", "name": "one"}, {"uid": "2", "name": "two"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
            "ports": [{"name": "http", "port": 80}],
        })
    }

    fn patched(patch: Value) -> Value {
        apply(&slice(), &patch, Schema::of(ResourceKind::EndpointSlice)).unwrap()
    }

    #[test]
    fn lists_without_a_merge_strategy_are_replaced_and_maps_merge() {
        let out = patched(json!({
            "endpoints": [{"addresses": ["10.0.0.9"]}],
            "metadata": {"labels": {"a": null, "c": "3"}},
        }));
        assert_eq!(out["endpoints"], json!([{"addresses": ["10.0.0.9"]}]));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["ports"], slice()["ports"]);
    }

    #[test]
    fn merging_lists_follow_their_keys_and_directives() {
        let out = patched(json!({"metadata": {
            "finalizers": ["z"],
            "$deleteFromPrimitiveList/finalizers": ["x"],
            "$setElementOrder/finalizers": ["z", "y"],
            "ownerReferences": [{"uid": "2", "name": "deux"}, {"uid": "1", "$patch": "delete"}, {"uid": "3", "name": "three"}],
        }}));
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "y"]));
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "2", "name": "deux"}, {"uid": "3", "name": "three"}])
        );
        let out = patched(
            json!({"metadata": {"ownerReferences": [{"$patch": "replace"}, {"uid": "9", "name": "nine"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "9", "name": "nine"}])
        );
    }

    #[test]
    fn object_directives_replace_delete_and_retain() {
        let out = patched(json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
        let out = patched(json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert!(out["metadata"].get("labels").is_none());
        let out = patched(json!({"metadata": {"labels": {"$retainKeys": ["b", "c"], "c": "3"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let out = patched(
            json!({"ports": [{"name": "vnc", "port": 5901}], "$setElementOrder/endpoints": []}),
        );
        assert_eq!(out["ports"], json!([{"name": "vnc", "port": 5901}]));
    }

    #[test]
    fn malformed_patches_are_refused() {
        let schema = Schema::of(ResourceKind::EndpointSlice);
        assert!(apply(&slice(), &json!([1]), schema).is_err());
        assert!(apply(&slice(), &json!({"$patch": "explode"}), schema).is_err());
        assert!(apply(&slice(), &json!({"$patch": "delete"}), schema).is_err());
        assert!(apply(
            &slice(),
            &json!({"metadata": {"ownerReferences": [{"name": "no key"}]}}),
            schema
        )
        .is_err());
    }
}
