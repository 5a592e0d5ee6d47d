//! What the API server's typed decoding and validation do to an EndpointSlice or Endpoints
//! body.
//!
//! - **Decoding** (HTTP writes only, dry runs included): every known field has a Go type; a
//!   value of another type is refused: on a create or replace with the message of Go's JSON
//!   decoder (`json: cannot unmarshal string into Go struct field
//!   Endpoint.endpoints.addresses of type []string`, 400 BadRequest); when a JSON or merge
//!   patch produces it, with the same message as a 422 Invalid whose field is `patch`; when a
//!   strategic merge patch does, with the unstructured converter's message (`cannot restore
//!   slice from string`) in the same 422. Unknown fields are pruned, and reported as the
//!   request's `fieldValidation` asks: `Strict` refuses them (`strict decoding error:
//!   unknown field "…"`: 400 on a create or replace, the 422 of field `patch` on a patch),
//!   `Warn` (the default) answers with a `Warning` header per field, `Ignore` says nothing.
//!   Server-side apply types its configuration against the OpenAPI schema instead
//!   ([`crate::apply::typed_patch_error`]).
//! - **Validation** (every write, in-process ones too): the field rules of the API server's
//!   validation that the gateway's input depends on, as 422 causes.
//!
//! In-process writes through [`super::Store`] skip decoding, so that tests can store what a
//! typed API server never would (a gateway must survive an undecodable object).

use super::error::StoreError;
use super::kind::ResourceKind;
use super::rules::{invalid_value, is_dns_label, required, LABEL_RULE, MAX_ENDPOINTS_PER_SLICE};
use crate::status::Cause;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The `fieldValidation` query parameter: what to do with unknown fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses the parameter (absent means `Warn`); `options` names the request's options kind
    /// (`CreateOptions`, `UpdateOptions`, `PatchOptions`) for the error.
    pub fn parse(value: Option<&str>, options: &str) -> Result<FieldValidation, Value> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => {
                let cause = Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                    ),
                    field: "fieldValidation".into(),
                };
                let message = format!(
                    "{options}.meta.k8s.io \"\" is invalid: fieldValidation: {}",
                    cause.message
                );
                let details = crate::status::Details {
                    group: Some("meta.k8s.io".into()),
                    kind: Some(options.into()),
                    causes: vec![cause],
                    ..Default::default()
                };
                Err(crate::status::failure(
                    422,
                    "Invalid",
                    &message,
                    Some(&details),
                ))
            }
        }
    }
}

/// A Go type as the decoder sees it.
enum Ty {
    /// A string; the name of its Go type (`string`, `v1.AddressType`, …).
    Str(&'static str),
    Bool,
    Int(&'static str, i64, i64),
    /// A struct: its Go name and fields (JSON name, type).
    Struct(&'static str, &'static [(&'static str, &'static Ty)]),
    /// A slice: its Go type and element.
    List(&'static str, &'static Ty),
    /// `map[string]string`.
    StringMap,
    /// Anything (`fieldsV1`).
    Any,
}

static STRING: Ty = Ty::Str("string");
static UID: Ty = Ty::Str("types.UID");
static BOOL: Ty = Ty::Bool;
static INT32: Ty = Ty::Int("int32", i32::MIN as i64, i32::MAX as i64);
static INT64: Ty = Ty::Int("int64", i64::MIN, i64::MAX);
static STRING_MAP: Ty = Ty::StringMap;
static STRINGS: Ty = Ty::List("[]string", &STRING);
static PROTOCOL: Ty = Ty::Str("v1.Protocol");

static OWNER_REFERENCE: Ty = Ty::Struct(
    "OwnerReference",
    &[
        ("apiVersion", &STRING),
        ("kind", &STRING),
        ("name", &STRING),
        ("uid", &UID),
        ("controller", &BOOL),
        ("blockOwnerDeletion", &BOOL),
    ],
);
static MANAGED_FIELDS_ENTRY: Ty = Ty::Struct(
    "ManagedFieldsEntry",
    &[
        ("manager", &STRING),
        ("operation", &Ty::Str("v1.ManagedFieldsOperationType")),
        ("apiVersion", &STRING),
        ("time", &STRING),
        ("fieldsType", &STRING),
        ("fieldsV1", &Ty::Any),
        ("subresource", &STRING),
    ],
);
static OBJECT_META: Ty = Ty::Struct(
    "ObjectMeta",
    &[
        ("name", &STRING),
        ("generateName", &STRING),
        ("namespace", &STRING),
        ("selfLink", &STRING),
        ("uid", &UID),
        ("resourceVersion", &STRING),
        ("generation", &INT64),
        ("creationTimestamp", &STRING),
        ("deletionTimestamp", &STRING),
        ("deletionGracePeriodSeconds", &INT64),
        ("labels", &STRING_MAP),
        ("annotations", &STRING_MAP),
        (
            "ownerReferences",
            &Ty::List("[]v1.OwnerReference", &OWNER_REFERENCE),
        ),
        ("finalizers", &STRINGS),
        (
            "managedFields",
            &Ty::List("[]v1.ManagedFieldsEntry", &MANAGED_FIELDS_ENTRY),
        ),
    ],
);
static OBJECT_REFERENCE: Ty = Ty::Struct(
    "ObjectReference",
    &[
        ("kind", &STRING),
        ("namespace", &STRING),
        ("name", &STRING),
        ("uid", &UID),
        ("apiVersion", &STRING),
        ("resourceVersion", &STRING),
        ("fieldPath", &STRING),
    ],
);
static NAME_ONLY_ZONE: Ty = Ty::Struct("ForZone", &[("name", &STRING)]);
static NAME_ONLY_NODE: Ty = Ty::Struct("ForNode", &[("name", &STRING)]);
static ENDPOINT: Ty = Ty::Struct(
    "Endpoint",
    &[
        ("addresses", &STRINGS),
        (
            "conditions",
            &Ty::Struct(
                "EndpointConditions",
                &[("ready", &BOOL), ("serving", &BOOL), ("terminating", &BOOL)],
            ),
        ),
        ("hostname", &STRING),
        ("targetRef", &OBJECT_REFERENCE),
        ("deprecatedTopology", &STRING_MAP),
        ("nodeName", &STRING),
        ("zone", &STRING),
        (
            "hints",
            &Ty::Struct(
                "EndpointHints",
                &[
                    ("forZones", &Ty::List("[]v1.ForZone", &NAME_ONLY_ZONE)),
                    ("forNodes", &Ty::List("[]v1.ForNode", &NAME_ONLY_NODE)),
                ],
            ),
        ),
    ],
);
static ENDPOINT_PORT: Ty = Ty::Struct(
    "EndpointPort",
    &[
        ("name", &STRING),
        ("protocol", &PROTOCOL),
        ("port", &INT32),
        ("appProtocol", &STRING),
    ],
);
static ENDPOINT_SLICE: Ty = Ty::Struct(
    "EndpointSlice",
    &[
        ("kind", &STRING),
        ("apiVersion", &STRING),
        ("metadata", &OBJECT_META),
        ("addressType", &Ty::Str("v1.AddressType")),
        ("endpoints", &Ty::List("[]v1.Endpoint", &ENDPOINT)),
        ("ports", &Ty::List("[]v1.EndpointPort", &ENDPOINT_PORT)),
    ],
);
static ENDPOINT_ADDRESS: Ty = Ty::Struct(
    "EndpointAddress",
    &[
        ("ip", &STRING),
        ("hostname", &STRING),
        ("nodeName", &STRING),
        ("targetRef", &OBJECT_REFERENCE),
    ],
);
static ENDPOINT_ADDRESSES: Ty = Ty::List("[]v1.EndpointAddress", &ENDPOINT_ADDRESS);
static ENDPOINTS: Ty = Ty::Struct(
    "Endpoints",
    &[
        ("kind", &STRING),
        ("apiVersion", &STRING),
        ("metadata", &OBJECT_META),
        (
            "subsets",
            &Ty::List(
                "[]v1.EndpointSubset",
                &Ty::Struct(
                    "EndpointSubset",
                    &[
                        ("addresses", &ENDPOINT_ADDRESSES),
                        ("notReadyAddresses", &ENDPOINT_ADDRESSES),
                        ("ports", &Ty::List("[]v1.EndpointPort", &ENDPOINT_PORT)),
                    ],
                ),
            ),
        ),
    ],
);

fn schema(kind: ResourceKind) -> &'static Ty {
    match kind {
        ResourceKind::EndpointSlice => &ENDPOINT_SLICE,
        ResourceKind::Endpoints => &ENDPOINTS,
    }
}

/// Which of the API server's decoders reads an object, for the wording of a type error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Decoder {
    /// Go's `encoding/json` (the body of a create or replace, the result of a JSON or merge
    /// patch).
    #[default]
    Json,
    /// The unstructured converter's `FromUnstructured` (the result of a strategic merge
    /// patch, a map decoded by reflection).
    Unstructured,
}

/// What decoding found: unknown fields (pruned) and the first type error.
#[derive(Default)]
struct Walk {
    decoder: Decoder,
    unknown: Vec<String>,
    type_error: Option<String>,
    /// The Go decoder's error context: the struct holding the field, and the field names
    /// from the top (indices left out).
    context: Option<&'static str>,
    fields: Vec<&'static str>,
}

/// How Go's decoder names a JSON value in a type error.
fn describe(value: &Value) -> String {
    match value {
        Value::String(_) => "string".into(),
        Value::Bool(_) => "bool".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
        Value::Number(n) => format!("number {n}"),
        Value::Null => "null".into(),
    }
}

/// The Go kind of a value an unstructured map holds (`reflect.Kind`'s name).
fn unstructured_kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
        Value::Null => "invalid",
    }
}

/// The error of `FromUnstructured` converting `value` into a field of type `ty`, if any
/// (`runtime.DefaultUnstructuredConverter`: only these conversions are allowed, and an
/// out-of-range integer is truncated, not refused).
fn unstructured_error(ty: &Ty, value: &Value) -> Option<String> {
    let from = unstructured_kind(value);
    match (ty, value) {
        (_, Value::Null) | (Ty::Any, _) => None,
        (Ty::Str(_), Value::String(_)) | (Ty::Bool, Value::Bool(_)) => None,
        // Go converts an integer to a string (a rune), but the converter refuses it.
        (Ty::Str(name), Value::Number(n)) if !n.is_f64() => {
            Some(format!("cannot convert int64 to {name}"))
        }
        (Ty::Str(_), _) => Some("unrecognized type: string".into()),
        (Ty::Bool, _) => Some("unrecognized type: bool".into()),
        (Ty::Int(..), Value::Number(n)) if !n.is_f64() => None,
        (Ty::Int(name, ..), Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.5);
            (f.trunc() != f).then(|| format!("cannot convert float64 to {name}"))
        }
        (Ty::Int(name, ..), _) => Some(format!("unrecognized type: {name}")),
        (Ty::List(..), Value::Array(_)) => None,
        (Ty::List(..), _) => Some(format!("cannot restore slice from {from}")),
        (Ty::Struct(..), Value::Object(_)) => None,
        (Ty::Struct(..), _) => Some(format!("cannot restore struct from: {from}")),
        (Ty::StringMap, Value::Object(map)) => {
            map.values().find_map(|v| unstructured_error(&STRING, v))
        }
        (Ty::StringMap, _) => Some(format!("cannot restore map from {from}")),
    }
}

impl Walk {
    fn mismatch(&mut self, value: &Value, go_type: &str) {
        // The unstructured converter's errors are found before a value is visited.
        if self.type_error.is_some() || self.decoder == Decoder::Unstructured {
            return;
        }
        let what = match value {
            Value::Number(_) if !go_type.starts_with("int") => "number".to_owned(),
            _ => describe(value),
        };
        let target = match self.context {
            Some(container) => format!(
                "Go struct field {container}.{} of type {go_type}",
                self.fields.join(".")
            ),
            None => format!("Go value of type {go_type}"),
        };
        self.type_error = Some(format!("json: cannot unmarshal {what} into {target}"));
    }

    fn go_name(ty: &Ty) -> String {
        match ty {
            Ty::Str(name) | Ty::Int(name, ..) | Ty::List(name, _) => (*name).to_owned(),
            Ty::Bool => "bool".into(),
            Ty::Struct(name, _) => format!("v1.{name}"),
            Ty::StringMap => "map[string]string".into(),
            Ty::Any => "interface {}".into(),
        }
    }

    /// Checks `value` against `ty`, pruning unknown fields; `path` is the field path as
    /// strict decoding prints it (`endpoints[0].ready`).
    fn visit(&mut self, ty: &'static Ty, value: &mut Value, path: &str) {
        if self.decoder == Decoder::Unstructured {
            if let Some(error) = unstructured_error(ty, value) {
                self.type_error.get_or_insert(error);
                return;
            }
        }
        let ok = match (ty, &mut *value) {
            (_, Value::Null) | (Ty::Any, _) => true,
            (Ty::Str(_), Value::String(_)) | (Ty::Bool, Value::Bool(_)) => true,
            (Ty::Int(_, low, high), Value::Number(n)) => {
                n.as_i64().is_some_and(|i| (*low..=*high).contains(&i))
            }
            (Ty::StringMap, Value::Object(map)) => {
                for v in map.values() {
                    if !matches!(v, Value::String(_) | Value::Null) {
                        self.mismatch(v, "string");
                    }
                }
                true
            }
            (Ty::List(_, element), Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.visit(element, item, &format!("{path}[{i}]"));
                }
                true
            }
            (Ty::Struct(name, fields), Value::Object(map)) => {
                self.visit_struct(name, fields, map, path);
                true
            }
            _ => false,
        };
        if !ok {
            self.mismatch(value, &Self::go_name(ty));
        }
    }

    fn visit_struct(
        &mut self,
        name: &'static str,
        fields: &'static [(&'static str, &'static Ty)],
        map: &mut Map<String, Value>,
        path: &str,
    ) {
        let at = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        // Known fields in the order of the Go struct (the order the server encodes them
        // in, so the first type error is the one it finds first), then the unknown ones.
        for (field, ty) in fields {
            if let Some(value) = map.get_mut(*field) {
                let saved = self.context.replace(name);
                self.fields.push(field);
                self.visit(ty, value, &at(field));
                self.fields.pop();
                self.context = saved;
            }
        }
        map.retain(|key, _| {
            let known = fields.iter().any(|(f, _)| f == key);
            if !known {
                self.unknown.push(at(key));
            }
            known
        });
    }
}

fn walk(kind: ResourceKind, object: &mut Value, decoder: Decoder) -> Walk {
    let mut walk = Walk {
        decoder,
        ..Walk::default()
    };
    walk.visit(schema(kind), object, "");
    walk.unknown.sort();
    walk
}

fn strict_error(unknown: &[String]) -> String {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    format!("strict decoding error: {}", fields.join(", "))
}

/// The `Warning` texts for pruned fields under `Warn`.
fn warnings(directive: FieldValidation, unknown: Vec<String>) -> Vec<String> {
    match directive {
        FieldValidation::Warn => unknown
            .into_iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// Decodes the body of a create or replace: the object with unknown fields pruned, and the
/// warnings to send; or the 400 the API server answers.
pub fn decode(
    kind: ResourceKind,
    mut object: Value,
    directive: FieldValidation,
) -> Result<(Value, Vec<String>), StoreError> {
    let found = walk(kind, &mut object, Decoder::Json);
    let cannot = |error: String| {
        let k = kind.kind();
        StoreError::BadRequest(format!(
            "{k} in version \"v1\" cannot be handled as a {k}: {error}"
        ))
    };
    if let Some(error) = found.type_error {
        return Err(cannot(error));
    }
    if directive == FieldValidation::Strict && !found.unknown.is_empty() {
        return Err(cannot(strict_error(&found.unknown)));
    }
    Ok((object, warnings(directive, found.unknown)))
}

/// Decodes the result of a JSON or merge patch: pruned, with warnings; a type error, or
/// unknown fields under `Strict`, is the 422 Invalid of field `patch` whose value is the
/// patched object.
pub fn decode_patched(
    kind: ResourceKind,
    object: Value,
    directive: FieldValidation,
) -> Result<(Value, Vec<String>), StoreError> {
    let shown = object.to_string();
    decode_patch_result(kind, object, directive, Decoder::Json, shown)
}

/// Decodes the result of a strategic merge patch `patch`, as [`decode_patched`] does, but
/// with the unstructured converter's wording of a type error; the value of field `patch` is
/// the patch as Go prints a map (`map[endpoints:[map[addresses:10.0.0.1]]]`).
pub fn decode_strategic(
    kind: ResourceKind,
    object: Value,
    patch: &Value,
    directive: FieldValidation,
) -> Result<(Value, Vec<String>), StoreError> {
    decode_patch_result(
        kind,
        object,
        directive,
        Decoder::Unstructured,
        go_print(patch),
    )
}

fn decode_patch_result(
    kind: ResourceKind,
    mut object: Value,
    directive: FieldValidation,
    decoder: Decoder,
    shown: String,
) -> Result<(Value, Vec<String>), StoreError> {
    let found = walk(kind, &mut object, decoder);
    let refused = |error: &str| StoreError::PatchUndecodable {
        cause: invalid_value("patch", &json!(shown), error),
    };
    if let Some(error) = found.type_error {
        return Err(refused(&error));
    }
    if directive == FieldValidation::Strict && !found.unknown.is_empty() {
        return Err(refused(&strict_error(&found.unknown)));
    }
    Ok((object, warnings(directive, found.unknown)))
}

/// A JSON value as Go's `%v` prints what `json.Unmarshal` makes of it: maps with sorted
/// keys (`map[a:1 b:[x y]]`), slices in brackets, strings unquoted, `<nil>` for null.
pub fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.is_finite() && f.trunc() == f && f.abs() < 1e21 => {
                format!("{f:.0}")
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_print).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            let entries: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// Whether a field holds a value of another type than `expected` (null and absent are not):
/// one that does not decode. The content rules judge only decoded values; a value of the
/// wrong type is the decoder's to refuse, and in-process writes, which skip decoding, store
/// it as it is (a gateway must survive such an object).
fn undecodable(value: Option<&Value>, expected: fn(&Value) -> bool) -> bool {
    value.is_some_and(|v| !v.is_null() && !expected(v))
}

fn items(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn too_many(field: &str, count: usize, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany".into(),
        message: format!("Too many: {count}: must have at most {max} items"),
        field: field.into(),
    }
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
        field: field.into(),
    }
}

fn dns_label(causes: &mut Vec<Cause>, field: &str, value: Option<&Value>) {
    if let Some(label) = value.and_then(Value::as_str) {
        if !is_dns_label(label) {
            causes.push(invalid_value(field, &json!(label), LABEL_RULE));
        }
    }
}

fn protocol(causes: &mut Vec<Cause>, field: &str, value: Option<&Value>) {
    if let Some(p) = value.and_then(Value::as_str) {
        if !matches!(p, "TCP" | "UDP" | "SCTP") {
            causes.push(not_supported(field, p, &["SCTP", "TCP", "UDP"]));
        }
    }
}

/// Most addresses one endpoint may have.
const MAX_ADDRESSES: usize = 100;

/// The API server's field rules for the content of an EndpointSlice or Endpoints object
/// (names, uids and immutability are checked with the metadata). `creating` adds the rules
/// of a create (a supported `addressType`). Values that do not decode are not judged
/// ([`undecodable`]).
pub fn content_causes(kind: ResourceKind, object: &Value, creating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        ResourceKind::EndpointSlice => slice_causes(object, creating, &mut causes),
        ResourceKind::Endpoints => endpoints_causes(object, &mut causes),
    }
    causes
}

fn slice_causes(object: &Value, creating: bool, causes: &mut Vec<Cause>) {
    let address_type = object.get("addressType").and_then(Value::as_str);
    if let Some(t) = address_type.filter(|t| creating && !t.is_empty()) {
        if !matches!(t, "IPv4" | "IPv6" | "FQDN") {
            causes.push(not_supported("addressType", t, &["FQDN", "IPv4", "IPv6"]));
        }
    }
    let endpoints = items(object.get("endpoints"));
    if endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
        causes.push(too_many(
            "endpoints",
            endpoints.len(),
            MAX_ENDPOINTS_PER_SLICE,
        ));
        return;
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        let addresses = items(endpoint.get("addresses"));
        if undecodable(endpoint.get("addresses"), Value::is_array) {
            // Not a list: nothing to count.
        } else if addresses.is_empty() {
            causes.push(required(
                &format!("{at}.addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            causes.push(too_many(
                &format!("{at}.addresses"),
                addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (j, address) in addresses.iter().enumerate() {
            let Some(text) = address.as_str() else {
                continue;
            };
            let (valid, family) = match address_type {
                Some("IPv4") => (text.parse::<Ipv4Addr>().is_ok(), "IPv4"),
                Some("IPv6") => (
                    text.parse::<Ipv6Addr>()
                        .is_ok_and(|ip| ip.to_ipv4_mapped().is_none()),
                    "IPv6",
                ),
                _ => (true, ""),
            };
            if !valid {
                causes.push(invalid_value(
                    &format!("{at}.addresses[{j}]"),
                    address,
                    &format!("must be a valid {family} address"),
                ));
            }
        }
        dns_label(causes, &format!("{at}.hostname"), endpoint.get("hostname"));
    }
    let mut names = BTreeSet::new();
    for (i, port) in items(object.get("ports")).iter().enumerate() {
        if undecodable(port.get("name"), Value::is_string) {
            continue;
        }
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() {
            dns_label(causes, &format!("ports[{i}].name"), port.get("name"));
        }
        if !names.insert(name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: {name:?}"),
                field: format!("ports[{i}].name"),
            });
        }
        protocol(
            causes,
            &format!("ports[{i}].protocol"),
            port.get("protocol"),
        );
    }
}

fn endpoints_causes(object: &Value, causes: &mut Vec<Cause>) {
    for (i, subset) in items(object.get("subsets")).iter().enumerate() {
        let at = format!("subsets[{i}]");
        let ready = items(subset.get("addresses"));
        let not_ready = items(subset.get("notReadyAddresses"));
        let lists_decode = !undecodable(subset.get("addresses"), Value::is_array)
            && !undecodable(subset.get("notReadyAddresses"), Value::is_array);
        if lists_decode && ready.is_empty() && not_ready.is_empty() {
            causes.push(required(
                &at,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (list, addresses) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, address) in addresses.iter().enumerate() {
                let field = format!("{at}.{list}[{j}]");
                match address.get("ip").and_then(Value::as_str) {
                    _ if undecodable(address.get("ip"), Value::is_string) => {}
                    Some(ip) if ip.parse::<IpAddr>().is_ok() => {}
                    ip => causes.push(invalid_value(
                        &format!("{field}.ip"),
                        &json!(ip.unwrap_or("")),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                }
                dns_label(
                    causes,
                    &format!("{field}.hostname"),
                    address.get("hostname"),
                );
            }
        }
        let ports = items(subset.get("ports"));
        for (k, port) in ports.iter().enumerate() {
            let field = format!("{at}.ports[{k}]");
            match port.get("name").and_then(Value::as_str).unwrap_or("") {
                _ if undecodable(port.get("name"), Value::is_string) => {}
                "" if ports.len() > 1 => causes.push(required(&format!("{field}.name"), "")),
                "" => {}
                _ => dns_label(causes, &format!("{field}.name"), port.get("name")),
            }
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !undecodable(port.get("port"), Value::is_number) && !(1..=65535).contains(&number) {
                causes.push(invalid_value(
                    &format!("{field}.port"),
                    &json!(number),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            protocol(causes, &format!("{field}.protocol"), port.get("protocol"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(endpoints: Value) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "a"}, "addressType": "IPv4", "endpoints": endpoints})
    }

    fn bad_request(result: Result<(Value, Vec<String>), StoreError>) -> String {
        match result {
            Err(StoreError::BadRequest(message)) => message,
            other => panic!("not a BadRequest: {other:?}"),
        }
    }

    #[test]
    fn a_value_of_another_type_is_worded_as_the_go_decoder_words_it() {
        let cases = [
            (
                json!([{"addresses": "10.0.0.1"}]),
                "json: cannot unmarshal string into Go struct field Endpoint.endpoints.addresses of type []string",
            ),
            (
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]),
                "json: cannot unmarshal string into Go struct field EndpointConditions.endpoints.conditions.ready of type bool",
            ),
            (
                json!([{"addresses": ["10.0.0.1"], "conditions": []}]),
                "json: cannot unmarshal array into Go struct field Endpoint.endpoints.conditions of type v1.EndpointConditions",
            ),
            (
                json!("none"),
                "json: cannot unmarshal string into Go struct field EndpointSlice.endpoints of type []v1.Endpoint",
            ),
            (
                json!([{"addresses": [10]}]),
                "json: cannot unmarshal number into Go struct field Endpoint.endpoints.addresses of type string",
            ),
        ];
        for (endpoints, error) in cases {
            assert_eq!(
                bad_request(decode(
                    ResourceKind::EndpointSlice,
                    slice(endpoints),
                    FieldValidation::Ignore
                )),
                format!(
                    "EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: {error}"
                )
            );
        }
        let ports = json!({"metadata": {"name": "a", "labels": {"x": 1}}, "addressType": "IPv4",
                           "ports": [{"port": 70000}]});
        assert!(bad_request(decode(
            ResourceKind::EndpointSlice,
            ports,
            FieldValidation::Ignore
        ))
        .ends_with(
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
        ));
        let port = json!({"metadata": {"name": "a"}, "ports": [{"port": 1.5}]});
        assert!(bad_request(decode(ResourceKind::EndpointSlice, port, FieldValidation::Ignore))
            .ends_with("json: cannot unmarshal number 1.5 into Go struct field EndpointPort.ports.port of type int32"));
        let endpoints = json!({"metadata": {"name": "a"}, "subsets": [{"addresses": [{"ip": 1}]}]});
        assert_eq!(
            bad_request(decode(ResourceKind::Endpoints, endpoints, FieldValidation::Ignore)),
            "Endpoints in version \"v1\" cannot be handled as a Endpoints: json: cannot unmarshal number into Go struct field EndpointAddress.subsets.addresses.ip of type string"
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_as_field_validation_asks() {
        let body = json!({"metadata": {"name": "a", "colour": "red"}, "addressType": "IPv4",
                          "topology": {"zone": "a"},
                          "endpoints": [{"addresses": ["10.0.0.1"], "ready": true,
                                         "conditions": {"ready": true}}]});
        let pruned = json!({"metadata": {"name": "a"}, "addressType": "IPv4",
                            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]});
        let (object, warnings) = decode(
            ResourceKind::EndpointSlice,
            body.clone(),
            FieldValidation::Ignore,
        )
        .unwrap();
        assert_eq!((object, warnings), (pruned.clone(), vec![]));
        let (object, warnings) = decode(
            ResourceKind::EndpointSlice,
            body.clone(),
            FieldValidation::Warn,
        )
        .unwrap();
        assert_eq!(object, pruned);
        assert_eq!(
            warnings,
            vec![
                "unknown field \"endpoints[0].ready\"",
                "unknown field \"metadata.colour\"",
                "unknown field \"topology\""
            ]
        );
        assert_eq!(
            bad_request(decode(ResourceKind::EndpointSlice, body.clone(), FieldValidation::Strict)),
            "EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: strict decoding error: \
             unknown field \"endpoints[0].ready\", unknown field \"metadata.colour\", unknown field \"topology\""
        );
        let refused = decode_patched(ResourceKind::EndpointSlice, body, FieldValidation::Strict)
            .unwrap_err()
            .status();
        assert_eq!(
            (refused["code"].as_u64(), refused["reason"].as_str()),
            (Some(422), Some("Invalid"))
        );
        let cause = &refused["details"]["causes"][0];
        assert_eq!(cause["field"], "patch");
        assert!(cause["message"].as_str().unwrap().ends_with(
            "strict decoding error: unknown field \"endpoints[0].ready\", unknown field \"metadata.colour\", \
             unknown field \"topology\""
        ));
    }

    #[test]
    fn a_strategic_merge_patch_is_refused_in_the_unstructured_converters_words() {
        let refused = |object: Value, patch: Value, directive| {
            let status = decode_strategic(ResourceKind::EndpointSlice, object, &patch, directive)
                .unwrap_err()
                .status();
            assert_eq!(
                (status["code"].as_u64(), status["reason"].as_str()),
                (Some(422), Some("Invalid"))
            );
            status["message"].as_str().unwrap().to_owned()
        };
        let patch = json!({"endpoints": [{"addresses": "10.0.0.1"}]});
        assert_eq!(
            refused(slice(patch["endpoints"].clone()), patch, FieldValidation::Ignore),
            " \"\" is invalid: patch: Invalid value: \"map[endpoints:[map[addresses:10.0.0.1]]]\": \
             cannot restore slice from string"
        );
        let cases = [
            (
                json!({"conditions": {"ready": "yes"}}),
                "unrecognized type: bool",
            ),
            (
                json!({"conditions": []}),
                "cannot restore struct from: slice",
            ),
            (json!({"hostname": 7}), "cannot convert int64 to string"),
            (json!({"hostname": 7.5}), "unrecognized type: string"),
            (
                json!({"deprecatedTopology": "zone-a"}),
                "cannot restore map from string",
            ),
        ];
        for (fields, error) in cases {
            let mut endpoint = json!({"addresses": ["10.0.0.1"]});
            endpoint
                .as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let message = refused(slice(json!([endpoint])), json!({}), FieldValidation::Warn);
            assert!(
                message.ends_with(&format!("\"map[]\": {error}")),
                "{message}"
            );
        }
        let ports = json!({"metadata": {"name": "a"}, "ports": [{"port": 80.5, "protocol": 6}]});
        assert!(refused(ports, json!({}), FieldValidation::Warn)
            .ends_with("cannot convert int64 to v1.Protocol"));
        let integral =
            json!({"metadata": {"name": "a"}, "ports": [{"port": 80.0}], "topology": {}});
        let (object, warnings) = decode_strategic(
            ResourceKind::EndpointSlice,
            integral.clone(),
            &json!({"topology": {}}),
            FieldValidation::Warn,
        )
        .unwrap();
        assert_eq!(object.get("topology"), None);
        assert_eq!(warnings, vec!["unknown field \"topology\""]);
        assert!(
            refused(integral, json!({"topology": {}}), FieldValidation::Strict).ends_with(
                "\"map[topology:map[]]\": strict decoding error: unknown field \"topology\""
            )
        );
    }

    /// The Go types the decoder knows and the OpenAPI schemas served at `/openapi/v3` (that
    /// server-side apply and the strategic merge patch follow) name the same fields.
    #[test]
    fn the_decoders_types_have_the_fields_of_the_openapi_schemas() {
        fn compare(ty: &Ty, schema: crate::openapi::Schema, path: &str, out: &mut Vec<String>) {
            match ty {
                Ty::Struct(_, fields) => {
                    let mut mine: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    mine.sort_unstable();
                    if mine != schema.field_names() {
                        out.push(format!("{path}: {mine:?} vs {:?}", schema.field_names()));
                    }
                    for (field, ty) in *fields {
                        compare(ty, schema.field(field), &format!("{path}.{field}"), out);
                    }
                }
                Ty::List(_, element) => compare(element, schema.items(), &format!("{path}[]"), out),
                _ => {}
            }
        }
        let mut differences = Vec::new();
        for kind in [ResourceKind::EndpointSlice, ResourceKind::Endpoints] {
            let root = crate::openapi::Schema::of(kind);
            compare(super::schema(kind), root, kind.kind(), &mut differences);
        }
        assert!(differences.is_empty(), "{differences:#?}");
    }

    #[test]
    fn values_that_do_not_decode_are_left_to_the_decoder() {
        let slice = json!({"addressType": "IPv4", "endpoints": [
            {"addresses": "10.0.0.1"}, {"addresses": []}], "ports": [{"name": 7}, {"name": 8}]});
        let fields: Vec<String> = content_causes(ResourceKind::EndpointSlice, &slice, true)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, vec!["endpoints[1].addresses"]);
        let endpoints = json!({"subsets": [
            {"addresses": {"ip": "10.0.0.1"}},
            {"addresses": [{"ip": 10}], "ports": [{"name": "a", "port": "80"}, {"name": 1, "port": 80}]},
            {}]});
        let fields: Vec<String> = content_causes(ResourceKind::Endpoints, &endpoints, true)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, vec!["subsets[2]"]);
    }

    #[test]
    fn go_prints_maps_sorted_and_strings_bare() {
        let value = json!({"b": [1, 2.5, 3.0, null, true], "a": {"x": "y z"}});
        assert_eq!(go_print(&value), "map[a:map[x:y z] b:[1 2.5 3 <nil> true]]");
    }

    #[test]
    fn free_form_fields_keep_what_they_hold() {
        let body = json!({"metadata": {"name": "a", "labels": {"a": "b"},
                                       "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}]},
                          "addressType": "IPv4", "endpoints": null, "ports": null});
        let (object, warnings) = decode(
            ResourceKind::EndpointSlice,
            body.clone(),
            FieldValidation::Strict,
        )
        .unwrap();
        assert_eq!((object, warnings), (body, vec![]));
    }

    #[test]
    fn a_patch_that_makes_a_type_wrong_is_invalid() {
        let err = decode_patched(
            ResourceKind::EndpointSlice,
            slice(json!([{"addresses": "10.0.0.1"}])),
            FieldValidation::Warn,
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
        let status = err.status();
        assert_eq!(status["details"]["causes"][0]["field"], "patch");
        assert!(status["message"]
            .as_str()
            .unwrap()
            .starts_with(" \"\" is invalid: patch: Invalid value: \"{"));
    }

    #[test]
    fn field_validation_values_are_the_api_servers() {
        assert_eq!(
            FieldValidation::parse(None, "CreateOptions"),
            Ok(FieldValidation::Warn)
        );
        assert_eq!(
            FieldValidation::parse(Some("Strict"), "CreateOptions"),
            Ok(FieldValidation::Strict)
        );
        let err = FieldValidation::parse(Some("strict"), "PatchOptions").unwrap_err();
        assert_eq!(err["code"], 422);
        assert_eq!(
            err["message"],
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"strict\": \
             supported values: \"Ignore\", \"Strict\", \"Warn\""
        );
    }

    #[test]
    fn content_rules_name_each_field() {
        let object = json!({"addressType": "IPv4", "endpoints": [
            {"addresses": []},
            {"addresses": ["10.0.0.300"], "hostname": "Web_0"},
            {"addresses": ["fd00::1"]}],
            "ports": [{"name": "http", "protocol": "HTTP"}, {"name": "http"}]});
        let fields: Vec<(String, String)> =
            content_causes(ResourceKind::EndpointSlice, &object, true)
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect();
        assert_eq!(
            fields,
            vec![
                (
                    "endpoints[0].addresses".into(),
                    "Required value: must contain at least 1 address".into()
                ),
                (
                    "endpoints[1].addresses[0]".into(),
                    "Invalid value: \"10.0.0.300\": must be a valid IPv4 address".into()
                ),
                (
                    "endpoints[1].hostname".into(),
                    format!("Invalid value: \"Web_0\": {LABEL_RULE}")
                ),
                (
                    "endpoints[2].addresses[0]".into(),
                    "Invalid value: \"fd00::1\": must be a valid IPv4 address".into()
                ),
                (
                    "ports[0].protocol".into(),
                    "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                        .into()
                ),
                ("ports[1].name".into(), "Duplicate value: \"http\"".into()),
            ]
        );
        let unsupported = json!({"addressType": "IPX"});
        assert_eq!(
            content_causes(ResourceKind::EndpointSlice, &unsupported, true).len(),
            1
        );
        assert!(content_causes(ResourceKind::EndpointSlice, &unsupported, false).is_empty());
        let endpoints = json!({"subsets": [{"ports": [{"port": 0}, {"name": "b", "port": 80}]},
                                           {"notReadyAddresses": [{"ip": "10.0.0.1"}]}]});
        let fields: Vec<String> = content_causes(ResourceKind::Endpoints, &endpoints, true)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "subsets[0]",
                "subsets[0].ports[0].name",
                "subsets[0].ports[0].port"
            ]
        );
    }
}
