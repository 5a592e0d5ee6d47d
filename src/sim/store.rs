//! The object store of the simulated API server: objects as JSON, one global resourceVersion counter, a bounded
//! history of watch events, and the namespaces seen.
//!
//! Every write takes the store lock, bumps the counter by one, records one event in the history and broadcasts it
//! once; watches filter the broadcast themselves. The history lets a watch resume from an older resourceVersion and
//! lets a paginated list rebuild the exact state its continue token refers to (a consistent snapshot across pages).

use super::clock;
use super::status::{self, Cause, Details};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::broadcast;

/// The annotation the EndpointSlice and Endpoints controllers stamp with the time of the change that caused a write.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Most endpoints one EndpointSlice may hold (apiserver validation).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

/// Capacity of the event broadcast; a watch that falls further behind catches up from the history.
const BROADCAST_CAPACITY: usize = 1024;

/// The resources the simulated server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `discovery.k8s.io/v1` `endpointslices`.
    EndpointSlice,
    /// core `v1` `endpoints`.
    Endpoints,
}

impl ResourceKind {
    /// Both kinds.
    pub const ALL: [ResourceKind; 2] = [ResourceKind::EndpointSlice, ResourceKind::Endpoints];

    /// The `kind` field of an object.
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::Endpoints => "Endpoints",
        }
    }

    /// The `kind` of a list.
    pub fn list_kind(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "EndpointSliceList",
            ResourceKind::Endpoints => "EndpointsList",
        }
    }

    /// The `apiVersion` field of an object.
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io/v1",
            ResourceKind::Endpoints => "v1",
        }
    }

    /// The API group, `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io",
            ResourceKind::Endpoints => "",
        }
    }

    /// The plural resource name used in URLs and in `details.kind` of most Status bodies.
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "endpointslices",
            ResourceKind::Endpoints => "endpoints",
        }
    }

    /// `endpointslices.discovery.k8s.io` or `endpoints`: the resource as error messages name it.
    pub fn qualified_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// `EndpointSlice.discovery.k8s.io` or `Endpoints`: the kind as Invalid messages name it.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_string(),
            g => format!("{}.{g}", self.kind()),
        }
    }

    fn index(self) -> usize {
        match self {
            ResourceKind::EndpointSlice => 0,
            ResourceKind::Endpoints => 1,
        }
    }
}

fn invalid_message(kind: ResourceKind, name: &str, causes: &[Cause]) -> String {
    let errs: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    let joined = if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    };
    format!("{} {name:?} is invalid: {joined}", kind.qualified_kind())
}

const CONFLICT_DETAIL: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

/// Why a store operation failed; each variant maps to the HTTP code and Status body a real API server sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// 404: no object of that name.
    #[error("{} \"{}\" not found", .kind.qualified_resource(), .name)]
    NotFound { kind: ResourceKind, name: String },
    /// 409: create with a name that exists.
    #[error("{} \"{}\" already exists", .kind.qualified_resource(), .name)]
    AlreadyExists { kind: ResourceKind, name: String },
    /// 409: update or delete whose precondition (resourceVersion or uid) does not hold.
    #[error("Operation cannot be fulfilled on {} \"{}\": {}", .kind.qualified_resource(), .name, .detail)]
    Conflict {
        kind: ResourceKind,
        name: String,
        detail: String,
    },
    /// 422: the object fails validation.
    #[error("{}", invalid_message(*.kind, .name, .causes))]
    Invalid {
        kind: ResourceKind,
        name: String,
        causes: Vec<Cause>,
    },
    /// 400: the request itself is wrong (bad body, mismatched namespace, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 410: a resourceVersion or continue token older than the history.
    #[error("{0}")]
    Expired(String),
    /// 504: a resourceVersion newer than the store.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
}

impl StoreError {
    fn conflict(kind: ResourceKind, name: &str) -> StoreError {
        StoreError::Conflict {
            kind,
            name: name.to_string(),
            detail: CONFLICT_DETAIL.to_string(),
        }
    }

    fn invalid(kind: ResourceKind, name: &str, causes: Vec<Cause>) -> StoreError {
        StoreError::Invalid {
            kind,
            name: name.to_string(),
            causes,
        }
    }

    /// The HTTP status code of the error.
    pub fn code(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Invalid { .. } => 422,
            StoreError::BadRequest(_) => 400,
            StoreError::Expired(_) => 410,
            StoreError::TooLargeResourceVersion { .. } => 504,
        }
    }

    /// The `reason` of the Status body.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Invalid { .. } => "Invalid",
            StoreError::BadRequest(_) => "BadRequest",
            StoreError::Expired(_) => "Expired",
            StoreError::TooLargeResourceVersion { .. } => "Timeout",
        }
    }

    /// The exact Kubernetes `Status` body for this error.
    pub fn status(&self) -> Value {
        let message = self.to_string();
        let details = match self {
            StoreError::NotFound { kind, name }
            | StoreError::AlreadyExists { kind, name }
            | StoreError::Conflict { kind, name, .. } => Some(Details {
                name: Some(name.clone()),
                group: Some(kind.group().to_string()),
                kind: Some(kind.plural().to_string()),
                ..Details::default()
            }),
            StoreError::Invalid { kind, name, causes } => Some(Details {
                name: Some(name.clone()),
                group: Some(kind.group().to_string()),
                kind: Some(kind.kind().to_string()),
                causes: causes.clone(),
                ..Details::default()
            }),
            StoreError::TooLargeResourceVersion { .. } => Some(Details {
                causes: vec![Cause {
                    reason: "ResourceVersionTooLarge".into(),
                    message: "Too large resource version".into(),
                    field: String::new(),
                }],
                retry_after_seconds: Some(1),
                ..Details::default()
            }),
            StoreError::BadRequest(_) | StoreError::Expired(_) => None,
        };
        status::failure(self.code(), self.reason(), &message, details.as_ref())
    }
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The `type` field on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write, as recorded in the history and broadcast to watches.
#[derive(Debug)]
pub struct StoredEvent {
    /// The resourceVersion of the write.
    pub rv: u64,
    pub kind: ResourceKind,
    pub ty: EventType,
    /// The object after the write (for DELETED: the last state, stamped with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the write (`None` for ADDED).
    pub prev: Option<Arc<Value>>,
    line: OnceLock<Bytes>,
}

impl StoredEvent {
    /// The event as one JSON watch line (`{"type":…,"object":…}\n`), serialized once and shared by every watch.
    pub fn json_line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line(self.ty.as_str(), &self.object))
            .clone()
    }
}

/// Serializes one watch event line.
pub fn watch_line(ty: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        ty: &'a str,
        object: &'a Value,
    }
    let mut buf = serde_json::to_vec(&Line { ty, object }).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

type ObjKey = (String, String);

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    /// The resourceVersion of the snapshot the page was cut from.
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Which state a list reads.
#[derive(Clone, Debug)]
pub enum ListFrom {
    /// The newest state.
    Current,
    /// The state at exactly this resourceVersion (rebuilt from the history).
    Exact(u64),
    /// The snapshot and position a continue token names.
    Continue(String),
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub enum WatchFrom {
    /// The current state as synthetic ADDED events, then changes.
    CurrentState,
    /// Changes only, from now.
    Now,
    /// Changes with a resourceVersion above this one.
    After(u64),
}

/// What a watch gets when it starts: the events before the live broadcast, and the broadcast.
pub struct WatchStart {
    /// Objects to send as synthetic ADDED events (for [`WatchFrom::CurrentState`]).
    pub initial_objects: Vec<Arc<Value>>,
    /// History events to replay (for [`WatchFrom::After`]).
    pub replay: Vec<Arc<StoredEvent>>,
    pub rx: broadcast::Receiver<Arc<StoredEvent>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

struct State {
    rv: u64,
    objects: [BTreeMap<ObjKey, Arc<Value>>; 2],
    history: VecDeque<Arc<StoredEvent>>,
    /// The oldest resourceVersion the history can resume or rebuild from.
    floor: u64,
    /// Bumped when the history is forgotten; continue tokens from an older epoch expire.
    epoch: u64,
    namespaces: BTreeMap<String, Value>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    history_limit: usize,
}

/// Handle to the store; cheap to clone, all clones share the same objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource_version", &self.current_resource_version())
            .finish()
    }
}

fn random_uid() -> String {
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

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn namespace_object(name: &str, rv: u64, created: &str) -> Value {
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

/// Whether `s` is a lowercase RFC 1123 subdomain (the rule for object and namespace names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
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
fn check_body(kind: ResourceKind, obj: &Value) -> Result<(), StoreError> {
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
fn check_namespace(obj: &mut Value, namespace: &str) -> Result<(), StoreError> {
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

fn required(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
        field: field.into(),
    }
}

fn invalid_value(field: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

const NAME_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The small validation a real server does and clients rely on: name, addressType (required, immutable), at most
/// 1000 endpoints per slice. Everything else is accepted as it is.
fn validate(kind: ResourceKind, obj: &Value, old: Option<&Value>) -> Result<(), StoreError> {
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
        if let Some(eps) = obj.get("endpoints").and_then(Value::as_array) {
            if eps.len() > MAX_ENDPOINTS_PER_SLICE {
                causes.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!(
                        "Too many: {}: must have at most {MAX_ENDPOINTS_PER_SLICE} items",
                        eps.len()
                    ),
                    field: "endpoints".into(),
                });
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(StoreError::invalid(kind, name, causes))
    }
}

/// Stamps the trigger-time annotation with `now`, unless the write sets it to a value different from the stored one.
/// Leaves malformed (non-object) annotations alone.
pub fn stamp_trigger_time(obj: &mut Value, old: Option<&Value>, now: &str) {
    if !obj.is_object() {
        return;
    }
    let ptr = |v: &Value| {
        v.get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let new_val = ptr(obj);
    let old_val = old.and_then(ptr);
    if new_val.is_some() && new_val != old_val {
        return;
    }
    let meta = metadata_mut(obj);
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if ann.is_null() {
        *ann = Value::Object(Map::new());
    }
    if let Some(a) = ann.as_object_mut() {
        a.insert(TRIGGER_TIME_ANNOTATION.into(), json!(now));
    }
}

/// Whether an EndpointSlice update changes its generation: anything outside metadata, or the labels.
fn spec_or_labels_changed(old: &Value, new: &Value) -> bool {
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

fn set_type_meta(kind: ResourceKind, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("kind".into(), json!(kind.kind()));
        m.insert("apiVersion".into(), json!(kind.api_version()));
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
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
fn prepare_create(
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
    stamp_trigger_time(&mut obj, None, &clock::rfc3339_nano(now));
    Ok(obj)
}

/// Builds the object an update of `old` to `new` stores (without the resourceVersion).
fn prepare_update(
    kind: ResourceKind,
    namespace: &str,
    name: &str,
    old: &Value,
    mut new: Value,
    now: DateTime<Utc>,
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
    stamp_trigger_time(&mut new, Some(old), &clock::rfc3339_nano(now));
    Ok(new)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueKey {
    rv: u64,
    epoch: u64,
    start: (String, String),
}

fn encode_continue(k: &ContinueKey) -> String {
    serde_json::to_vec(k)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(s: &str) -> Result<ContinueKey, StoreError> {
    let bad = || StoreError::BadRequest(format!("continue key is not valid: {s:?}"));
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect();
    serde_json::from_slice(&bytes.map_err(|_| bad())?).map_err(|_| bad())
}

/// Preconditions of a delete (from `DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Store {
    /// An empty store keeping `history_limit` events for resuming watches. Its resourceVersion starts at 1.
    pub fn new(history_limit: usize) -> Store {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let created = clock::rfc3339_seconds(Utc::now());
        let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
            .iter()
            .map(|n| (n.to_string(), namespace_object(n, 1, &created)))
            .collect();
        Store {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rv: 1,
                    objects: [BTreeMap::new(), BTreeMap::new()],
                    history: VecDeque::new(),
                    floor: 1,
                    epoch: 0,
                    namespaces,
                }),
                events,
                history_limit,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write: bumps the counter, stores the event in the history and broadcasts it. Returns the new RV.
    fn commit(
        &self,
        st: &mut State,
        kind: ResourceKind,
        key: ObjKey,
        ty: EventType,
        object: Option<Value>,
        prev: Option<Arc<Value>>,
    ) -> Value {
        st.rv += 1;
        let rv = st.rv;
        let stamped = match (ty, object) {
            (EventType::Deleted, _) => with_rv(prev.as_deref().unwrap_or(&Value::Null), rv),
            (_, Some(mut o)) => {
                set_rv(&mut o, rv);
                o
            }
            (_, None) => Value::Null,
        };
        let object = Arc::new(stamped);
        if ty == EventType::Deleted {
            st.objects[kind.index()].remove(&key);
        } else {
            st.objects[kind.index()].insert(key.clone(), object.clone());
            if !st.namespaces.contains_key(&key.0) {
                let created = clock::rfc3339_seconds(Utc::now());
                let ns = namespace_object(&key.0, rv, &created);
                st.namespaces.insert(key.0.clone(), ns);
            }
        }
        let event = Arc::new(StoredEvent {
            rv,
            kind,
            ty,
            object: object.clone(),
            prev,
            line: OnceLock::new(),
        });
        if self.inner.history_limit == 0 {
            st.floor = rv;
        } else {
            st.history.push_back(event.clone());
            while st.history.len() > self.inner.history_limit {
                if let Some(old) = st.history.pop_front() {
                    st.floor = old.rv;
                }
            }
        }
        let _ = self.inner.events.send(event);
        (*object).clone()
    }

    /// Creates an object (namespace from the argument; `metadata.generateName` is honoured). Returns the stored object.
    pub fn create(
        &self,
        kind: ResourceKind,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, StoreError> {
        self.create_with(kind, namespace, obj, false)
    }

    /// [`Store::create`], optionally as a dry run that validates and returns the object without storing it.
    pub fn create_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        obj: Value,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        let mut obj = prepare_create(kind, namespace, obj, Utc::now())?;
        let mut st = self.lock();
        let given = meta_str(&obj, "name").unwrap_or("").to_string();
        let name = if given.is_empty() {
            match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix: String = prefix.chars().take(58).collect();
                    loop {
                        let candidate = format!("{prefix}{}", random_suffix());
                        if !st.objects[kind.index()]
                            .contains_key(&(namespace.to_string(), candidate.clone()))
                        {
                            break candidate;
                        }
                    }
                }
                _ => {
                    return Err(StoreError::invalid(
                        kind,
                        "",
                        vec![required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ))
                }
            }
        } else {
            given
        };
        metadata_mut(&mut obj).insert("name".into(), json!(name));
        validate(kind, &obj, None)?;
        let key = (namespace.to_string(), name.clone());
        if st.objects[kind.index()].contains_key(&key) {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        if dry_run {
            return Ok(obj);
        }
        Ok(self.commit(&mut st, kind, key, EventType::Added, Some(obj), None))
    }

    /// Replaces an object (PUT). Without `metadata.resourceVersion` in `obj` the update is unconditional; a different
    /// one is a Conflict. A missing EndpointSlice is NotFound; a missing Endpoints is created.
    pub fn replace(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        obj: Value,
    ) -> Result<Value, StoreError> {
        self.update_with(kind, namespace, name, false, |_| Ok(obj))
    }

    /// Applies an RFC 7386 merge patch to an object.
    pub fn merge_patch(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, StoreError> {
        self.patch_with(kind, namespace, name, false, |cur| {
            let mut next = cur.clone();
            super::merge_patch::merge_patch(&mut next, patch);
            Ok(next)
        })
    }

    /// Applies an RFC 6902 JSON patch to an object.
    pub fn json_patch(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, StoreError> {
        self.patch_with(kind, namespace, name, false, |cur| {
            super::merge_patch::json_patch(cur, patch).map_err(|e| {
                StoreError::BadRequest(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })
        })
    }

    /// Applies `f` to the stored object and stores the result (a patch); the object must exist.
    pub fn patch_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        f: impl FnOnce(&Value) -> Result<Value, StoreError>,
    ) -> Result<Value, StoreError> {
        self.update_with(kind, namespace, name, dry_run, |cur| match cur {
            Some(c) => f(c),
            None => Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            }),
        })
    }

    /// Stores `f(current)` as the new state of the object, with the update rules of [`Store::replace`].
    pub fn update_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        f: impl FnOnce(Option<&Value>) -> Result<Value, StoreError>,
    ) -> Result<Value, StoreError> {
        self.upsert_with(kind, namespace, name, dry_run, f)
            .map(|(v, _)| v)
    }

    /// [`Store::update_with`], also telling whether the object was created (an Endpoints PUT to a missing name).
    pub fn upsert_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        f: impl FnOnce(Option<&Value>) -> Result<Value, StoreError>,
    ) -> Result<(Value, bool), StoreError> {
        let now = Utc::now();
        let mut st = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let cur = st.objects[kind.index()].get(&key).cloned();
        let new = f(cur.as_deref())?;
        let Some(old) = cur else {
            if kind == ResourceKind::Endpoints {
                let mut obj = prepare_create(kind, namespace, new, now)?;
                match meta_str(&obj, "name") {
                    Some(n) if !n.is_empty() && n != name => {
                        return Err(StoreError::BadRequest(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => {}
                }
                metadata_mut(&mut obj).insert("name".into(), json!(name));
                validate(kind, &obj, None)?;
                if dry_run {
                    return Ok((obj, true));
                }
                let stored = self.commit(&mut st, kind, key, EventType::Added, Some(obj), None);
                return Ok((stored, true));
            }
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        };
        let mut next = prepare_update(kind, namespace, name, &old, new, now)?;
        validate(kind, &next, Some(&old))?;
        if dry_run {
            if let Some(rv) = meta_str(&old, "resourceVersion").map(str::to_string) {
                metadata_mut(&mut next).insert("resourceVersion".into(), json!(rv));
            }
            return Ok((next, false));
        }
        let stored = self.commit(
            &mut st,
            kind,
            key,
            EventType::Modified,
            Some(next),
            Some(old),
        );
        Ok((stored, false))
    }

    /// Deletes an object at once. Returns its last state stamped with the deletion's resourceVersion.
    pub fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Value, StoreError> {
        self.delete_with(kind, namespace, name, &Preconditions::default(), false)
    }

    /// [`Store::delete`] with preconditions and an optional dry run.
    pub fn delete_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        let mut st = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let Some(old) = st.objects[kind.index()].get(&key).cloned() else {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        };
        let cur_uid = meta_str(&old, "uid").unwrap_or("");
        let cur_rv = meta_str(&old, "resourceVersion").unwrap_or("");
        if let Some(uid) = pre
            .uid
            .as_deref()
            .filter(|u| !u.is_empty() && *u != cur_uid)
        {
            return Err(StoreError::Conflict {
                kind,
                name: name.to_string(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_uid}"
                ),
            });
        }
        if let Some(rv) = pre
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty() && *r != cur_rv)
        {
            return Err(StoreError::Conflict {
                kind,
                name: name.to_string(),
                detail: format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur_rv}"
                ),
            });
        }
        if dry_run {
            return Ok((*old).clone());
        }
        Ok(self.commit(&mut st, kind, key, EventType::Deleted, None, Some(old)))
    }

    /// The stored object (with kind and apiVersion), if any.
    pub fn get(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<Value> {
        self.get_arc(kind, namespace, name).map(|o| (*o).clone())
    }

    /// The stored object, shared.
    pub fn get_arc(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects[kind.index()]
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The object as it was at resourceVersion `rv` (rebuilt from the history), with the RV the answer is valid at.
    pub fn get_at(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        rv: u64,
    ) -> Result<Option<Arc<Value>>, StoreError> {
        let st = self.lock();
        let at = Self::check_readable(&st, rv)?;
        let key = (namespace.to_string(), name.to_string());
        let mut obj = st.objects[kind.index()].get(&key).cloned();
        for ev in st.history.iter().rev().take_while(|e| e.rv > at) {
            if ev.kind == kind && key_of(&ev.object) == key {
                obj = if ev.ty == EventType::Added {
                    None
                } else {
                    ev.prev.clone()
                };
            }
        }
        Ok(obj)
    }

    /// All objects of `kind` (with kind and apiVersion), in one namespace or all, in (namespace, name) order, with the
    /// current resourceVersion.
    pub fn list(&self, kind: ResourceKind, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let st = self.lock();
        let items = st.objects[kind.index()]
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| (**v).clone())
            .collect();
        (items, st.rv)
    }

    /// The resourceVersion of the latest write (1 for a new store).
    pub fn current_resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn oldest_resource_version(&self) -> u64 {
        self.lock().floor
    }

    /// Drops the event history: watches from an older resourceVersion get 410 Expired, and every continue token
    /// issued before expires.
    pub fn forget_history(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.floor = st.rv;
        st.epoch += 1;
    }

    /// Registers a namespace so that it is listed (every namespace can be read, listed or not).
    pub fn ensure_namespace(&self, name: &str) {
        let mut st = self.lock();
        let rv = st.rv;
        if !st.namespaces.contains_key(name) {
            let created = clock::rfc3339_seconds(Utc::now());
            st.namespaces
                .insert(name.to_string(), namespace_object(name, rv, &created));
        }
    }

    /// The Namespace object for `name`: every valid namespace name exists in the simulation.
    pub fn namespace(&self, name: &str) -> Option<Value> {
        if !is_dns_subdomain(name) || name.len() > 63 || name.contains('.') {
            return None;
        }
        let st = self.lock();
        Some(
            st.namespaces.get(name).cloned().unwrap_or_else(|| {
                namespace_object(name, st.rv, &clock::rfc3339_seconds(Utc::now()))
            }),
        )
    }

    /// The namespaces seen so far (the default ones and every namespace an object was written to), with the RV.
    pub fn namespaces(&self) -> (Vec<Value>, u64) {
        let st = self.lock();
        (st.namespaces.values().cloned().collect(), st.rv)
    }

    fn check_readable(st: &State, rv: u64) -> Result<u64, StoreError> {
        if rv > st.rv {
            return Err(StoreError::TooLargeResourceVersion {
                requested: rv,
                current: st.rv,
            });
        }
        if rv < st.floor {
            return Err(StoreError::Expired(format!(
                "too old resource version: {rv} ({})",
                st.floor
            )));
        }
        Ok(rv)
    }

    /// One page of a list: objects of `kind` in `namespace` (or all) that pass `filter`, in (namespace, name) order.
    /// With a `limit`, a continue token is issued while more matching objects follow; every page of one list is cut
    /// from the same snapshot and carries its resourceVersion.
    pub fn list_page(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        from: ListFrom,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Result<ListPage, StoreError> {
        let st = self.lock();
        let (at, start) = match from {
            ListFrom::Current => (st.rv, None),
            ListFrom::Exact(rv) => (Self::check_readable(&st, rv)?, None),
            ListFrom::Continue(token) => {
                let key = decode_continue(&token)?;
                if key.epoch != st.epoch || key.rv < st.floor {
                    return Err(StoreError::Expired(CONTINUE_EXPIRED.into()));
                }
                if key.rv > st.rv {
                    return Err(StoreError::BadRequest(format!(
                        "continue key is not valid: {token:?}"
                    )));
                }
                (key.rv, Some(key.start))
            }
        };
        let in_scope =
            |k: &ObjKey| namespace.is_none_or(|n| n == k.0) && start.as_ref().is_none_or(|s| k > s);
        let map = &st.objects[kind.index()];
        let lower = match (&start, namespace) {
            (Some(s), _) => Bound::Excluded(s.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut snapshot: BTreeMap<ObjKey, Arc<Value>> = map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| namespace.is_none_or(|n| n == k.0))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if at < st.rv {
            for ev in st.history.iter().rev().take_while(|e| e.rv > at) {
                if ev.kind != kind {
                    continue;
                }
                let key = key_of(&ev.object);
                if !in_scope(&key) {
                    continue;
                }
                match (&ev.ty, &ev.prev) {
                    (EventType::Added, _) | (_, None) => {
                        snapshot.remove(&key);
                    }
                    (_, Some(prev)) => {
                        snapshot.insert(key, prev.clone());
                    }
                }
            }
        }
        let mut matching = snapshot.into_iter().filter(|(_, v)| filter(v));
        let mut items = Vec::new();
        let mut last_key = None;
        for (k, v) in matching.by_ref() {
            if limit.is_some_and(|l| items.len() >= l) {
                // One more match exists beyond the page.
                let rest = 1 + matching.count() as u64;
                let token = encode_continue(&ContinueKey {
                    rv: at,
                    epoch: st.epoch,
                    start: last_key.unwrap_or_default(),
                });
                return Ok(ListPage {
                    items,
                    rv: at,
                    continue_token: Some(token),
                    remaining: Some(rest),
                });
            }
            last_key = Some(k);
            items.push(v);
        }
        Ok(ListPage {
            items,
            rv: at,
            continue_token: None,
            remaining: None,
        })
    }

    /// Starts a watch on `kind`: what to send first, and the live broadcast, taken atomically so nothing is lost.
    pub fn start_watch(
        &self,
        kind: ResourceKind,
        from: WatchFrom,
    ) -> Result<WatchStart, StoreError> {
        let st = self.lock();
        let rx = self.inner.events.subscribe();
        let mut start = WatchStart {
            initial_objects: Vec::new(),
            replay: Vec::new(),
            rx,
            rv: st.rv,
        };
        match from {
            WatchFrom::CurrentState => {
                start.initial_objects = st.objects[kind.index()].values().cloned().collect();
            }
            WatchFrom::Now => {}
            WatchFrom::After(rv) => {
                start.replay = Self::events_after_locked(&st, rv)?;
            }
        }
        Ok(start)
    }

    fn events_after_locked(st: &State, rv: u64) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        if rv < st.floor {
            return Err(StoreError::Expired(format!(
                "too old resource version: {rv} ({})",
                st.floor
            )));
        }
        let skip = st.history.partition_point(|e| e.rv <= rv);
        Ok(st.history.iter().skip(skip).cloned().collect())
    }

    /// The history events after `rv` (for a watch that fell behind the broadcast), or Expired.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        Self::events_after_locked(&self.lock(), rv)
    }

    /// A receiver of every future event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.events.subscribe()
    }
}

/// The (namespace, name) key of an object.
pub fn key_of(obj: &Value) -> ObjKey {
    (
        meta_str(obj, "namespace").unwrap_or("").to_string(),
        meta_str(obj, "name").unwrap_or("").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "loco";

    fn slice(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "addressType": "IPv4", "endpoints": []})
    }

    fn rv_of(v: &Value) -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn writes_bump_one_global_counter() {
        let s = Store::new(100);
        assert_eq!(s.current_resource_version(), 1);
        let a = s
            .create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let e = s
            .create(
                ResourceKind::Endpoints,
                NS,
                json!({"metadata": {"name": "web"}}),
            )
            .unwrap();
        assert_eq!((rv_of(&a), rv_of(&e)), (2, 3));
        assert_eq!(a["kind"], "EndpointSlice");
        assert_eq!(a["metadata"]["generation"], 1);
        assert!(e["metadata"].get("generation").is_none());
        assert_eq!(a["metadata"]["namespace"], NS);
        assert!(a["metadata"]["uid"].as_str().unwrap().len() == 36);
    }

    #[test]
    fn generate_name_appends_five_characters() {
        let s = Store::new(100);
        let o = s
            .create(
                ResourceKind::EndpointSlice,
                NS,
                json!({"metadata": {"generateName": "web-"}, "addressType": "IPv4"}),
            )
            .unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    }

    #[test]
    fn duplicate_create_is_already_exists() {
        let s = Store::new(100);
        s.create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let err = s
            .create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.status().to_string(),
            r#"{"apiVersion":"v1","code":409,"details":{"group":"discovery.k8s.io","kind":"endpointslices","name":"a"},"kind":"Status","message":"endpointslices.discovery.k8s.io \"a\" already exists","metadata":{},"reason":"AlreadyExists","status":"Failure"}"#
        );
    }

    #[test]
    fn replace_rules() {
        let s = Store::new(100);
        let a = s
            .create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let mut stale = a.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let err = s
            .replace(ResourceKind::EndpointSlice, NS, "a", stale)
            .unwrap_err();
        assert_eq!(err.code(), 409);
        assert!(err.to_string().contains("the object has been modified"));
        // No RV: unconditional; labels unchanged and spec unchanged keeps generation.
        let b = s
            .replace(ResourceKind::EndpointSlice, NS, "a", slice("a"))
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 1);
        assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
        let mut c = b.clone();
        c["endpoints"] = json!([{"addresses": ["10.0.0.1"]}]);
        let c = s.replace(ResourceKind::EndpointSlice, NS, "a", c).unwrap();
        assert_eq!(c["metadata"]["generation"], 2);
        let err = s
            .replace(ResourceKind::EndpointSlice, NS, "nope", slice("nope"))
            .unwrap_err();
        assert_eq!(err.code(), 404);
        let e = s
            .replace(
                ResourceKind::Endpoints,
                NS,
                "web",
                json!({"metadata": {"name": "web"}}),
            )
            .unwrap();
        assert_eq!(e["metadata"]["name"], "web");
        let err = s
            .replace(ResourceKind::EndpointSlice, NS, "a", slice("other"))
            .unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn validation_is_small_but_real() {
        let s = Store::new(100);
        let err = s
            .create(
                ResourceKind::EndpointSlice,
                NS,
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.to_string(),
            "EndpointSlice.discovery.k8s.io \"a\" is invalid: addressType: Required value"
        );
        let st = err.status();
        assert_eq!(st["details"]["causes"][0]["field"], "addressType");
        assert_eq!(st["details"]["kind"], "EndpointSlice");
        s.create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let mut v6 = slice("a");
        v6["addressType"] = json!("IPv6");
        let err = s
            .replace(ResourceKind::EndpointSlice, NS, "a", v6)
            .unwrap_err();
        assert!(err.to_string().contains("field is immutable"), "{err}");
        let many: Vec<Value> = (0..1001)
            .map(|_| json!({"addresses": ["10.0.0.1"]}))
            .collect();
        let mut big = slice("big");
        big["endpoints"] = Value::Array(many);
        assert_eq!(
            s.create(ResourceKind::EndpointSlice, NS, big)
                .unwrap_err()
                .code(),
            422
        );
        let err = s
            .create(
                ResourceKind::EndpointSlice,
                NS,
                json!({"addressType": "IPv4"}),
            )
            .unwrap_err();
        assert!(err.to_string().contains("name or generateName is required"));
        // Odd but legal objects are stored as they are.
        s.create(
            ResourceKind::EndpointSlice,
            NS,
            json!({"metadata": {"name": "odd"}, "addressType": "FQDN", "endpoints": [{"addresses": ["a.example"]}], "ports": null}),
        )
        .unwrap();
    }

    #[test]
    fn namespace_mismatch_is_bad_request() {
        let s = Store::new(100);
        let mut o = slice("a");
        o["metadata"]["namespace"] = json!("other");
        assert_eq!(
            s.create(ResourceKind::EndpointSlice, NS, o)
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            s.create(ResourceKind::EndpointSlice, NS, json!([1]))
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn trigger_time_is_stamped_unless_the_writer_states_a_new_one() {
        let s = Store::new(100);
        let a = s
            .create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let t1 = a["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string();
        assert!(clock::parse_rfc3339(&t1).is_some());
        let mut own = slice("a");
        own["metadata"]["annotations"] = json!({TRIGGER_TIME_ANNOTATION: "2020-01-01T00:00:00.5Z"});
        let b = s
            .replace(ResourceKind::EndpointSlice, NS, "a", own.clone())
            .unwrap();
        assert_eq!(
            b["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION],
            "2020-01-01T00:00:00.5Z"
        );
        // The same value again is not a new statement: the write time is stamped.
        let c = s
            .replace(ResourceKind::EndpointSlice, NS, "a", own)
            .unwrap();
        assert_ne!(
            c["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION],
            "2020-01-01T00:00:00.5Z"
        );
    }

    #[test]
    fn merge_patch_and_delete() {
        let s = Store::new(100);
        s.create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let p = s
            .merge_patch(
                ResourceKind::EndpointSlice,
                NS,
                "a",
                &json!({"metadata": {"labels": {"x": "y"}}}),
            )
            .unwrap();
        assert_eq!(p["metadata"]["labels"], json!({"app": "web", "x": "y"}));
        assert_eq!(p["metadata"]["generation"], 2);
        let d = s.delete(ResourceKind::EndpointSlice, NS, "a").unwrap();
        assert_eq!(rv_of(&d), s.current_resource_version());
        assert_eq!(
            s.delete(ResourceKind::EndpointSlice, NS, "a")
                .unwrap_err()
                .code(),
            404
        );
        assert_eq!(
            s.merge_patch(ResourceKind::EndpointSlice, NS, "a", &json!({}))
                .unwrap_err()
                .code(),
            404
        );
    }

    #[test]
    fn pages_share_one_snapshot_even_when_writes_happen_between() {
        let s = Store::new(100);
        for n in ["a", "b", "c", "d", "e"] {
            s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
        }
        let all = |_: &Value| true;
        let p1 = s
            .list_page(
                ResourceKind::EndpointSlice,
                Some(NS),
                ListFrom::Current,
                Some(2),
                &all,
            )
            .unwrap();
        assert_eq!(p1.items.len(), 2);
        assert_eq!(p1.remaining, Some(3));
        s.delete(ResourceKind::EndpointSlice, NS, "c").unwrap();
        s.create(ResourceKind::EndpointSlice, NS, slice("bb"))
            .unwrap();
        s.merge_patch(
            ResourceKind::EndpointSlice,
            NS,
            "d",
            &json!({"metadata": {"labels": {"x": "1"}}}),
        )
        .unwrap();
        let p2 = s
            .list_page(
                ResourceKind::EndpointSlice,
                Some(NS),
                ListFrom::Continue(p1.continue_token.unwrap()),
                Some(2),
                &all,
            )
            .unwrap();
        let names: Vec<_> = p2.items.iter().map(|o| key_of(o).1).collect();
        assert_eq!(names, ["c", "d"]);
        assert!(p2.items[1]["metadata"]["labels"].get("x").is_none());
        assert_eq!(p2.rv, p1.rv);
        let p3 = s
            .list_page(
                ResourceKind::EndpointSlice,
                Some(NS),
                ListFrom::Continue(p2.continue_token.unwrap()),
                Some(2),
                &all,
            )
            .unwrap();
        assert_eq!(p3.items.len(), 1);
        assert!(p3.continue_token.is_none());
    }

    #[test]
    fn forgotten_history_expires_watches_and_continue_tokens() {
        let s = Store::new(100);
        for n in ["a", "b", "c"] {
            s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
        }
        let all = |_: &Value| true;
        let p1 = s
            .list_page(
                ResourceKind::EndpointSlice,
                None,
                ListFrom::Current,
                Some(1),
                &all,
            )
            .unwrap();
        assert!(s
            .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
            .is_ok());
        s.forget_history();
        let err = s
            .list_page(
                ResourceKind::EndpointSlice,
                None,
                ListFrom::Continue(p1.continue_token.unwrap()),
                Some(1),
                &all,
            )
            .unwrap_err();
        assert_eq!(err.code(), 410);
        assert!(err
            .to_string()
            .starts_with("The provided continue parameter is too old"));
        let err = s
            .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "too old resource version: 2 (4)");
        assert!(s
            .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(4))
            .is_ok());
        assert_eq!(
            s.list_page(
                ResourceKind::EndpointSlice,
                None,
                ListFrom::Continue("zz".into()),
                None,
                &all
            )
            .unwrap_err()
            .code(),
            400
        );
    }

    #[test]
    fn bounded_history_moves_the_floor() {
        let s = Store::new(2);
        for n in ["a", "b", "c", "d"] {
            s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
        }
        // RVs 2..=5 written, history keeps 4 and 5: resuming from 3 still works, from 2 does not.
        assert_eq!(s.oldest_resource_version(), 3);
        let w = s
            .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(3))
            .unwrap();
        assert_eq!(w.replay.iter().map(|e| e.rv).collect::<Vec<_>>(), [4, 5]);
        assert!(s
            .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
            .is_err());
    }

    #[test]
    fn exact_reads_rebuild_older_state() {
        let s = Store::new(100);
        s.create(ResourceKind::EndpointSlice, NS, slice("a"))
            .unwrap();
        let rv = s.current_resource_version();
        s.delete(ResourceKind::EndpointSlice, NS, "a").unwrap();
        let all = |_: &Value| true;
        let page = s
            .list_page(
                ResourceKind::EndpointSlice,
                None,
                ListFrom::Exact(rv),
                None,
                &all,
            )
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(s
            .get_at(ResourceKind::EndpointSlice, NS, "a", rv)
            .unwrap()
            .is_some());
        assert!(s
            .get_at(ResourceKind::EndpointSlice, NS, "a", rv + 1)
            .unwrap()
            .is_none());
        assert_eq!(
            s.list_page(
                ResourceKind::EndpointSlice,
                None,
                ListFrom::Exact(rv + 5),
                None,
                &all
            )
            .unwrap_err()
            .code(),
            504
        );
    }

    #[test]
    fn dry_run_does_not_persist() {
        let s = Store::new(100);
        let o = s
            .create_with(ResourceKind::EndpointSlice, NS, slice("a"), true)
            .unwrap();
        assert_eq!(o["metadata"]["name"], "a");
        assert!(s.get(ResourceKind::EndpointSlice, NS, "a").is_none());
        assert_eq!(s.current_resource_version(), 1);
    }
}
