//! What a write does to an object before it is stored: validation, names, uids, type meta and
//! resourceVersions. Annotations are the writer's: the trigger-time annotation is written by
//! the controllers (the scenario), never stamped by the server.

use super::error::*;
use super::events::*;
use super::kind::*;
use super::rules::*;
use crate::clock;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

/// The annotation the EndpointSlice and Endpoints controllers set to the time of the Pod or Service change that caused
/// a write (only they write it; the server never does).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

pub(crate) fn random_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn namespace_object(name: &str, rv: u64, created: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": random_uid(),
            "resourceVersion": rv.to_string(),
            "creationTimestamp": created,
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub(crate) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("checked to be an object");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// Checks the body is an object of `kind` and that its metadata is an object.
pub(crate) fn check_body(kind: ResourceKind, obj: &Value) -> Result<(), StoreError> {
    let Some(map) = obj.as_object() else {
        return Err(StoreError::BadRequest(format!(
            "the body of the request must be a {} object",
            kind.kind()
        )));
    };
    if let Some(v) = map.get("apiVersion").and_then(Value::as_str) {
        if !v.is_empty() && v != kind.api_version() {
            return Err(StoreError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
    }
    if let Some(k) = map.get("kind").and_then(Value::as_str) {
        if !k.is_empty() && k != kind.kind() {
            return Err(StoreError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind()
            )));
        }
    }
    match map.get("metadata") {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(StoreError::BadRequest(
            "metadata must be an object".to_string(),
        )),
    }
}

/// Checks (or fills) the namespace of the body against the namespace of the request.
pub(crate) fn check_namespace(obj: &mut Value, namespace: &str) -> Result<(), StoreError> {
    match meta_str(obj, "namespace") {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(StoreError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            metadata_mut(obj).insert("namespace".into(), json!(namespace));
            Ok(())
        }
    }
}

/// The validation a real server does and clients rely on: the name, `addressType` (required, immutable), and the
/// content rules of [`super::schema::content_causes`].
pub(crate) fn validate(
    kind: ResourceKind,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), StoreError> {
    let name = meta_str(obj, "name").unwrap_or("");
    let mut causes = Vec::new();
    if !is_dns_subdomain(name) {
        causes.push(invalid_value("metadata.name", &json!(name), NAME_RULE));
    }
    if kind == ResourceKind::EndpointSlice {
        let at = obj.get("addressType");
        match at.and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {
                if let Some(old_at) = old.and_then(|o| o.get("addressType")) {
                    if Some(old_at) != at {
                        causes.push(invalid_value(
                            "addressType",
                            &json!(s),
                            "field is immutable",
                        ));
                    }
                }
            }
            _ => causes.push(required("addressType", "")),
        }
    }
    causes.extend(super::schema::content_causes(kind, obj, old.is_none()));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(StoreError::invalid(kind, name, causes))
    }
}

/// Whether a create states a resourceVersion the API server's storage refuses: a non-zero number (`"0"` and
/// non-numbers are ignored, as by the etcd3 storage's versioner).
pub(crate) fn stated_resource_version(obj: &Value) -> bool {
    meta_str(obj, "resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .is_some_and(|rv| rv != 0)
}

/// A replace whose body carries `metadata.uid` is conditional on it (the API server makes the uid a precondition of
/// the update): another object's uid is a Conflict. Missing objects are not checked.
pub(crate) fn check_uid_precondition(
    kind: ResourceKind,
    name: &str,
    current: Option<&Value>,
    body: &Value,
) -> Result<(), StoreError> {
    let (Some(current), Some(uid)) = (current, meta_str(body, "uid").filter(|u| !u.is_empty()))
    else {
        return Ok(());
    };
    let stored = meta_str(current, "uid").unwrap_or("");
    if uid == stored {
        return Ok(());
    }
    Err(StoreError::Conflict {
        kind,
        name: name.to_string(),
        detail: format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}"
        ),
    })
}

/// Whether an EndpointSlice update changes its generation: anything outside metadata, or the labels.
pub(crate) fn spec_or_labels_changed(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return true;
    };
    let skip = |k: &str| matches!(k, "metadata" | "kind" | "apiVersion");
    let differs = |a: &Map<String, Value>, b: &Map<String, Value>| {
        a.iter()
            .filter(|(k, _)| !skip(k))
            .any(|(k, v)| b.get(k) != Some(v))
    };
    let labels = |v: &Value| v.get("metadata").and_then(|m| m.get("labels")).cloned();
    differs(o, n) || differs(n, o) || labels(old) != labels(new)
}

pub(crate) fn set_type_meta(kind: ResourceKind, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("kind".into(), json!(kind.kind()));
        m.insert("apiVersion".into(), json!(kind.api_version()));
    }
}

pub(crate) fn set_rv(obj: &mut Value, rv: u64) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
}

/// Returns a copy of `obj` carrying resourceVersion `rv`.
pub fn with_rv(obj: &Value, rv: u64) -> Value {
    let mut o = obj.clone();
    if o.is_object() {
        set_rv(&mut o, rv);
    }
    o
}

/// Builds the object a create stores (without name generation and resourceVersion).
pub(crate) fn prepare_create(
    kind: ResourceKind,
    namespace: &str,
    mut obj: Value,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    check_body(kind, &obj)?;
    check_namespace(&mut obj, namespace)?;
    set_type_meta(kind, &mut obj);
    let meta = metadata_mut(&mut obj);
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.insert("uid".into(), json!(random_uid()));
    meta.insert(
        "creationTimestamp".into(),
        json!(clock::rfc3339_seconds(now)),
    );
    if kind == ResourceKind::EndpointSlice {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    Ok(obj)
}

/// Builds the object an update of `old` to `new` stores (without the resourceVersion).
pub(crate) fn prepare_update(
    kind: ResourceKind,
    namespace: &str,
    name: &str,
    old: &Value,
    mut new: Value,
) -> Result<Value, StoreError> {
    check_body(kind, &new)?;
    check_namespace(&mut new, namespace)?;
    match meta_str(&new, "name") {
        Some(n) if !n.is_empty() && n != name => {
            return Err(StoreError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    if let Some(rv) = meta_str(&new, "resourceVersion") {
        if !rv.is_empty() && Some(rv) != meta_str(old, "resourceVersion") {
            return Err(StoreError::conflict(kind, name));
        }
    }
    if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
        if Some(uid) != meta_str(old, "uid") {
            let cause = invalid_value("metadata.uid", &json!(uid), "field is immutable");
            return Err(StoreError::invalid(kind, name, vec![cause]));
        }
    }
    set_type_meta(kind, &mut new);
    let generation = if kind == ResourceKind::EndpointSlice {
        let g = old
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        Some(if spec_or_labels_changed(old, &new) {
            g + 1
        } else {
            g
        })
    } else {
        None
    };
    let keep = |f: &str| old.get("metadata").and_then(|m| m.get(f)).cloned();
    let (uid, created) = (keep("uid"), keep("creationTimestamp"));
    let meta = metadata_mut(&mut new);
    meta.insert("name".into(), json!(name));
    meta.remove("resourceVersion");
    for (field, value) in [("uid", uid), ("creationTimestamp", created)] {
        match value {
            Some(v) => meta.insert(field.into(), v),
            None => meta.remove(field),
        };
    }
    match generation {
        Some(g) => meta.insert("generation".into(), json!(g)),
        None => meta.remove("generation"),
    };
    Ok(new)
}

/// The (namespace, name) key of an object.
pub fn key_of(obj: &Value) -> ObjKey {
    (
        meta_str(obj, "namespace").unwrap_or("").to_string(),
        meta_str(obj, "name").unwrap_or("").to_string(),
    )
}
