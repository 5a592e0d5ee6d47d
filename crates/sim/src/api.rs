//! The HTTP side: routes of the Kubernetes URL scheme, list/get/watch/create/update/patch/delete handlers, fault
//! gates and the admin routes. Built on hyper directly for exact control of chunked watch streams.

use super::clock;
use super::discovery;
use super::faults::{self, Faults};
use super::managed_fields;
use super::media::{negotiate, Representation};
use super::openapi::Schema;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{self, Details};
use super::store::{
    check_uid_precondition, decode, decode_patched, decode_strategic, FieldValidation, ListFrom,
    Preconditions, ResourceKind, Store, StoreError, WatchFrom,
};
use super::table::{self, IncludeObject};
use super::watch::{WatchSession, WatchSpec};
use super::SimOptions;
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use rand::Rng;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The response body type: a full buffer or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (bigger gets 413).
const MAX_BODY: usize = 8 * 1024 * 1024;

const ENDPOINTS_WARNING: &str =
    "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\"";

/// Shared state of one served listener.
pub struct ApiServer {
    pub store: Store,
    pub faults: Faults,
    pub opts: SimOptions,
    pub shutdown: watch::Receiver<bool>,
    pub local_addr: SocketAddr,
}

mod namespaces;

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    Health,
    Api,
    Apis,
    CoreV1,
    DiscoveryGroup,
    DiscoveryV1,
    Namespaces,
    Namespace(String),
    Collection {
        kind: ResourceKind,
        namespace: Option<String>,
        watch: bool,
    },
    Item {
        kind: ResourceKind,
        namespace: String,
        name: String,
        watch: bool,
    },
    /// `/openapi/v3` (`None`) or one group version's document under it.
    OpenApi(Option<String>),
    /// `/openapi/v2`.
    OpenApiV2,
    Admin(String),
    NotFound,
}

fn resource_route(kind: ResourceKind, rest: &[&str]) -> Route {
    let (watch, rest) = match rest.first() {
        Some(&"watch") => (true, &rest[1..]),
        _ => (false, rest),
    };
    let plural = kind.plural();
    match rest {
        [p] if *p == plural => Route::Collection {
            kind,
            namespace: None,
            watch,
        },
        ["namespaces"] if kind == ResourceKind::Endpoints && !watch => Route::Namespaces,
        ["namespaces", ns] if kind == ResourceKind::Endpoints && !watch => {
            Route::Namespace(ns.to_string())
        }
        ["namespaces", ns, p] if *p == plural => Route::Collection {
            kind,
            namespace: Some(ns.to_string()),
            watch,
        },
        ["namespaces", ns, p, name] if *p == plural => Route::Item {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            watch,
        },
        _ => Route::NotFound,
    }
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::Api,
        ["api", "v1"] => Route::CoreV1,
        ["api", "v1", rest @ ..] => resource_route(ResourceKind::Endpoints, rest),
        ["apis"] => Route::Apis,
        ["apis", "discovery.k8s.io"] => Route::DiscoveryGroup,
        ["apis", "discovery.k8s.io", "v1"] => Route::DiscoveryV1,
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => {
            resource_route(ResourceKind::EndpointSlice, rest)
        }
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApi(None),
        ["openapi", "v3", rest @ ..] => Route::OpenApi(Some(rest.join("/"))),
        ["sim", "faults"] => Route::Admin(String::new()),
        ["sim", "faults", action] => Route::Admin(action.to_string()),
        _ => Route::NotFound,
    }
}

/// Query parameters, form-decoded (`+` is a space); empty pairs (kube-rs's leading `&`) are skipped.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let pairs = form_urlencoded_pairs(q.unwrap_or(""));
        Query(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn get_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(v) => Err(format!("invalid boolean value for {key}: {v:?}")),
        }
    }
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_else(|_| {
        // Fall back to a lossy split so that odd encodings never fail the request outright.
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (lossy_decode(k), lossy_decode(v))
            })
            .collect()
    })
}

fn lossy_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `resourceVersion` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RvParam {
    Unset,
    Zero,
    At(u64),
}

fn parse_rv(v: Option<&str>) -> Result<RvParam, StoreError> {
    match v {
        None | Some("") => Ok(RvParam::Unset),
        Some("0") => Ok(RvParam::Zero),
        Some(s) => s.parse::<u64>().map(RvParam::At).map_err(|_| {
            StoreError::BadRequest(format!(
                "resourceVersion: Invalid value: {s:?}: must be a non-negative integer"
            ))
        }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RvMatch {
    None,
    NotOlderThan,
    Exact,
}

fn parse_rv_match(q: &Query, rv: RvParam) -> Result<RvMatch, StoreError> {
    let m = match q.get("resourceVersionMatch") {
        None | Some("") => return Ok(RvMatch::None),
        Some("NotOlderThan") => RvMatch::NotOlderThan,
        Some("Exact") => RvMatch::Exact,
        Some(other) => {
            return Err(StoreError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            )))
        }
    };
    match (m, rv) {
        (_, RvParam::Unset) => Err(StoreError::BadRequest(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
        )),
        (RvMatch::Exact, RvParam::Zero) => Err(StoreError::BadRequest(
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
        )),
        _ => Ok(m),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(code: u16, v: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

fn status_response(status: Value) -> Response<Body> {
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
    json_response(code, &status)
}

fn error_response(e: &StoreError) -> Response<Body> {
    json_response(e.code(), &e.status())
}

fn bad_request(msg: impl AsRef<str>) -> Response<Body> {
    status_response(status::bad_request(msg.as_ref()))
}

/// An object serialized without `kind` and `apiVersion` (the form of list items).
struct Stripped<'a>(&'a Value);

impl Serialize for Stripped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut map = s.serialize_map(None)?;
                for (k, v) in m {
                    if k != "kind" && k != "apiVersion" {
                        map.serialize_entry(k, v)?;
                    }
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    metadata: Value,
    items: Vec<Stripped<'a>>,
}

fn list_metadata(rv: u64, cont: Option<&str>, remaining: Option<u64>) -> Value {
    let mut m = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        m["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        m["remainingItemCount"] = json!(r);
    }
    m
}

/// Reads the request body (bounded).
async fn read_body(body: Incoming) -> Result<Bytes, Value> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(status::failure(
                413,
                "RequestEntityTooLarge",
                "the request body is too large",
                None,
            ))
        }
        Err(e) => Err(status::bad_request(&format!(
            "error reading the request body: {e}"
        ))),
    }
}

/// Decodes a request body as JSON, or YAML when the content type says so.
fn decode_body(bytes: &[u8], content_type: &str) -> Result<Value, Value> {
    if content_type.contains("yaml") {
        return serde_saphyr::from_slice::<Value>(bytes)
            .map_err(|e| status::bad_request(&format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice::<Value>(bytes).map_err(|e| {
        status::bad_request(&format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

fn dry_run(q: &Query) -> Result<bool, Value> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(status::bad_request(&format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

fn content_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl ApiServer {
    /// Handles one request; never fails (every error is a Status response).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        tracing::debug!(method = %req.method(), uri = %req.uri(), "sim request");
        let route = route(req.uri().path());
        if let Route::Admin(action) = &route {
            return Ok(self.admin(req.method(), action, &Query::parse(req.uri().query())));
        }
        // Fault gates: a stall holds the request, a failure window answers with its status.
        let mut faults_rx = self.faults.subscribe();
        let mut shutdown = self.shutdown.clone();
        if !*shutdown.borrow() {
            tokio::select! {
                _ = faults::wait_unstalled(&mut faults_rx) => {}
                _ = async { let _ = shutdown.wait_for(|v| *v).await; } => {}
            }
        }
        if *shutdown.borrow() {
            return Ok(status_response(status::failure(
                503,
                "ServiceUnavailable",
                "the server is shutting down",
                None,
            )));
        }
        if let Some(code) = self.faults.state().failing() {
            let mut resp = status_response(status::injected(code));
            if matches!(code, 429 | 503) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return Ok(resp);
        }
        let mut resp = self.dispatch(route, req).await;
        resp.headers_mut()
            .entry(header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        Ok(resp)
    }

    fn admin(&self, method: &Method, action: &str, q: &Query) -> Response<Body> {
        let seconds = || -> Result<Duration, Value> {
            let s = q.get("seconds").unwrap_or("");
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() && (0.0..=1e7).contains(&v) => {
                    Ok(Duration::from_secs_f64(v))
                }
                _ => Err(status::bad_request(&format!(
                    "seconds must be a non-negative number, got {s:?}"
                ))),
            }
        };
        match (method, action) {
            (&Method::GET, "") => {}
            (&Method::POST, "cut-watches") => self.faults.cut_watches(),
            (&Method::POST, "forget-history") => self.faults.forget_history(),
            (&Method::POST, "clear") => self.faults.clear(),
            (&Method::POST, "errors") => {
                let code = match q.get("status").unwrap_or("").parse::<u16>() {
                    Ok(c) if (400..=599).contains(&c) => c,
                    _ => return bad_request("status must be an HTTP error code (400-599)"),
                };
                match seconds() {
                    Ok(d) => self.faults.fail_requests(code, d),
                    Err(r) => return status_response(r),
                }
            }
            (&Method::POST, "stall") => match seconds() {
                Ok(d) => self.faults.stall(d),
                Err(r) => return status_response(r),
            },
            (_, "" | "cut-watches" | "forget-history" | "clear" | "errors" | "stall") => {
                return status_response(status::method_not_allowed())
            }
            _ => return status_response(status::path_not_found()),
        }
        json_response(200, &self.faults.describe())
    }

    async fn dispatch(&self, route: Route, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let q = Query::parse(req.uri().query());
        let repr = self.representation(&q, &req);
        let get_only = |v: Value| {
            if method == Method::GET {
                json_response(200, &v)
            } else {
                status_response(status::method_not_allowed())
            }
        };
        match route {
            Route::Version => get_only(discovery::version(&self.opts.server_minor)),
            Route::Health => {
                if method == Method::GET {
                    let mut r = Response::new(full("ok"));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    r
                } else {
                    status_response(status::method_not_allowed())
                }
            }
            Route::Api => get_only(discovery::api_versions(&self.local_addr.to_string())),
            Route::Apis => get_only(discovery::api_groups()),
            Route::CoreV1 => get_only(discovery::core_v1_resources()),
            Route::DiscoveryGroup => get_only(discovery::discovery_api_group()),
            Route::DiscoveryV1 => get_only(discovery::discovery_v1_resources()),
            Route::Namespaces => self.namespaces(&method, &q, repr, req).await,
            Route::Namespace(ns) => self.namespace(&method, ns, &q, repr),
            Route::Collection {
                kind,
                namespace,
                watch,
            } => {
                let mut resp = match method {
                    Method::GET => {
                        self.list_or_watch(kind, namespace, None, watch, &q, repr)
                            .await
                    }
                    Method::POST if !watch => match namespace {
                        Some(ns) => self.create(kind, &ns, &q, req).await,
                        None => status_response(status::method_not_allowed()),
                    },
                    Method::DELETE if !watch => match namespace {
                        Some(ns) => self.delete_collection(kind, &ns, &q),
                        None => status_response(status::method_not_allowed()),
                    },
                    _ => status_response(status::method_not_allowed()),
                };
                self.deprecation_warning(kind, &mut resp);
                resp
            }
            Route::Item {
                kind,
                namespace,
                name,
                watch,
            } => {
                let mut resp = match method {
                    Method::GET => {
                        self.list_or_watch(kind, Some(namespace), Some(name), watch, &q, repr)
                            .await
                    }
                    Method::PUT if !watch => self.replace(kind, &namespace, &name, &q, req).await,
                    Method::PATCH if !watch => self.patch(kind, &namespace, &name, &q, req).await,
                    Method::DELETE if !watch => self.delete(kind, &namespace, &name, &q, req).await,
                    _ => status_response(status::method_not_allowed()),
                };
                self.deprecation_warning(kind, &mut resp);
                resp
            }
            Route::OpenApi(None) => get_only(super::openapi::root()),
            Route::OpenApiV2 if method == Method::GET => {
                let protobuf = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("protobuf"));
                let mut resp = Response::new(full(super::openapi::v2(protobuf)));
                let media = if protobuf {
                    super::openapi::V2_PROTOBUF
                } else {
                    "application/json"
                };
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
                resp
            }
            Route::OpenApiV2 => status_response(status::method_not_allowed()),
            Route::OpenApi(Some(path)) => match super::openapi::group_version(&path) {
                Some(doc) => get_only(doc),
                None => status_response(status::path_not_found()),
            },
            Route::Admin(_) | Route::NotFound => status_response(status::path_not_found()),
        }
    }

    fn deprecation_warning(&self, kind: ResourceKind, resp: &mut Response<Body>) {
        let minor: u32 = self
            .opts
            .server_minor
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        if kind == ResourceKind::Endpoints && minor >= 33 {
            resp.headers_mut()
                .append(header::WARNING, HeaderValue::from_static(ENDPOINTS_WARNING));
        }
    }

    fn representation(&self, q: &Query, req: &Request<Incoming>) -> Representation {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        negotiate(accept, IncludeObject::parse(q.get("includeObject")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn list_or_watch(
        &self,
        kind: ResourceKind,
        namespace: Option<String>,
        name: Option<String>,
        watch_path: bool,
        q: &Query,
        repr: Representation,
    ) -> Response<Body> {
        let watch = match q.get_bool("watch") {
            Ok(w) => watch_path || w.unwrap_or(false),
            Err(e) => return bad_request(e),
        };
        let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return bad_request(e.to_string()),
        };
        let mut fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return bad_request(e.to_string()),
        };
        let rv = match parse_rv(q.get("resourceVersion")) {
            Ok(rv) => rv,
            Err(e) => return error_response(&e),
        };
        if watch {
            if let Some(n) = &name {
                fields = fields.and(FieldSelector::with_name(n));
            }
            return self
                .watch(kind, namespace, labels, fields, rv, repr, q)
                .await;
        }
        // A plain GET of one object.
        if let (Some(name), Some(ns)) = (name, namespace.as_deref()) {
            return self.get_one(kind, ns, &name, rv, repr).await;
        }
        self.list(kind, namespace, labels, fields, rv, repr, q)
            .await
    }

    /// Waits (bounded) until the store reaches `rv`; false when it does not in time.
    async fn wait_for_rv(&self, rv: u64) -> bool {
        let mut rx = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + self.opts.too_new_wait;
        while self.store.current_resource_version() < rv {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return false,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
        true
    }

    async fn get_one(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        rv: RvParam,
        repr: Representation,
    ) -> Response<Body> {
        if let RvParam::At(n) = rv {
            if !self.wait_for_rv(n).await {
                return error_response(&StoreError::TooLargeResourceVersion {
                    requested: n,
                    current: self.store.current_resource_version(),
                });
            }
        }
        let Some(obj) = self.store.get_arc(kind, ns, name) else {
            return error_response(&StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        };
        match repr {
            Representation::Json => json_response(200, &*obj),
            Representation::Table(opts) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                json_response(
                    200,
                    &table::table(kind, [&*obj], opts, json!({"resourceVersion": rv}), true),
                )
            }
            Representation::Metadata(v) => json_response(200, &table::partial_metadata(&obj, v)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        rv: RvParam,
        repr: Representation,
        q: &Query,
    ) -> Response<Body> {
        let rv_match = match parse_rv_match(q, rv) {
            Ok(m) => m,
            Err(e) => return error_response(&e),
        };
        let limit = match q.get("limit") {
            None | Some("") => None,
            Some(s) => match s.parse::<i128>() {
                Ok(n) if n <= 0 => None,
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => {
                    return bad_request(format!("limit: Invalid value: {s:?}: must be an integer"))
                }
            },
        };
        let cont = q.get("continue").filter(|c| !c.is_empty());
        let from = match (cont, rv, rv_match) {
            (Some(_), RvParam::At(_), _) => {
                return bad_request(
                    "specifying resource version is not allowed when using continue",
                )
            }
            (Some(_), _, RvMatch::NotOlderThan | RvMatch::Exact) => {
                return bad_request(
                    "resourceVersionMatch is forbidden when continue token is specified",
                )
            }
            (Some(c), _, _) => ListFrom::Continue(c.to_string()),
            (None, RvParam::Unset | RvParam::Zero, _) => ListFrom::Current,
            (None, RvParam::At(n), RvMatch::Exact) => ListFrom::Exact(n),
            (None, RvParam::At(n), RvMatch::None) if limit.is_some() => ListFrom::Exact(n),
            (None, RvParam::At(n), _) => {
                if !self.wait_for_rv(n).await {
                    return error_response(&StoreError::TooLargeResourceVersion {
                        requested: n,
                        current: self.store.current_resource_version(),
                    });
                }
                ListFrom::Current
            }
        };
        if let ListFrom::Exact(n) = from {
            self.wait_for_rv(n).await;
        }
        let filter = |o: &Value| labels.matches(o) && fields.matches(o);
        let page = match self
            .store
            .list_page(kind, namespace.as_deref(), from, limit, &filter)
        {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let remaining = page
            .remaining
            .filter(|_| labels.is_empty() && fields.is_empty());
        let metadata = list_metadata(page.rv, page.continue_token.as_deref(), remaining);
        match repr {
            Representation::Json => json_response(
                200,
                &ListBody {
                    kind: kind.list_kind(),
                    api_version: kind.api_version(),
                    metadata,
                    items: page.items.iter().map(|o| Stripped(o)).collect(),
                },
            ),
            Representation::Table(opts) => json_response(
                200,
                &table::table(kind, page.items.iter().map(|o| &**o), opts, metadata, true),
            ),
            Representation::Metadata(v) => json_response(
                200,
                &json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": v,
                    "metadata": metadata,
                    "items": page.items.iter().map(|o| table::partial_metadata(o, v)).collect::<Vec<_>>(),
                }),
            ),
        }
    }

    /// A watch. One from a resourceVersion the store has not reached waits for it like a list does, then is
    /// refused with 504 "Too large resource version" (an API server restored or replaced behind the same address:
    /// the client must re-list).
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &self,
        kind: ResourceKind,
        namespace: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        rv: RvParam,
        repr: Representation,
        q: &Query,
    ) -> Response<Body> {
        let bookmarks = match q.get_bool("allowWatchBookmarks") {
            Ok(b) => b.unwrap_or(false),
            Err(e) => return bad_request(e),
        };
        let send_initial = match q.get_bool("sendInitialEvents") {
            Ok(b) => b,
            Err(e) => return bad_request(e),
        };
        let timeout = match q.get("timeoutSeconds") {
            None | Some("") => None,
            Some(s) => match s.parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_secs(n.min(365 * 24 * 3600))),
                Err(_) => return bad_request(format!("timeoutSeconds: Invalid value: {s:?}")),
            },
        };
        let timeout =
            timeout.unwrap_or_else(|| Duration::from_secs(rand::rng().random_range(1800..3600)));
        let from = match (send_initial, rv) {
            (Some(true), _) => {
                if q.get("resourceVersionMatch") != Some("NotOlderThan") {
                    return bad_request(
                        "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    );
                }
                if !bookmarks {
                    return bad_request(
                        "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
                    );
                }
                WatchFrom::CurrentState
            }
            (Some(false), RvParam::Unset | RvParam::Zero) => WatchFrom::Now,
            (_, RvParam::Unset | RvParam::Zero) => WatchFrom::CurrentState,
            (_, RvParam::At(n)) => {
                if !self.wait_for_rv(n).await {
                    return error_response(&StoreError::TooLargeResourceVersion {
                        requested: n,
                        current: self.store.current_resource_version(),
                    });
                }
                WatchFrom::After(n)
            }
        };
        let spec = WatchSpec {
            kind,
            namespace,
            labels,
            fields,
            repr,
            bookmarks,
            bookmark_interval: self.opts.bookmark_interval,
            timeout,
            initial_events_end: send_initial == Some(true),
            from,
        };
        let session = WatchSession::start(
            self.store.clone(),
            &self.faults,
            self.shutdown.clone(),
            spec,
        );
        let stream = session
            .into_stream()
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        resp
    }

    async fn create(
        &self,
        kind: ResourceKind,
        ns: &str,
        q: &Query,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let manager = field_manager(q, &req);
        let (dry, mut obj, warnings) = match read_typed_object(kind, q, req, "CreateOptions").await
        {
            Ok(read) => read,
            Err(response) => return response,
        };
        let now = clock::rfc3339_seconds(chrono::Utc::now());
        managed_fields::record_update(kind, None, &mut obj, &manager, &now);
        let response = match self.store.create_with(kind, ns, obj, dry) {
            Ok(o) => json_response(201, &o),
            Err(e) => error_response(&e),
        };
        with_warnings(response, &warnings)
    }

    async fn replace(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        q: &Query,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let manager = field_manager(q, &req);
        let (dry, mut obj, warnings) = match read_typed_object(kind, q, req, "UpdateOptions").await
        {
            Ok(read) => read,
            Err(response) => return response,
        };
        let now = clock::rfc3339_seconds(chrono::Utc::now());
        let result = self.store.upsert_with(kind, ns, name, dry, |cur| {
            check_uid_precondition(kind, name, cur, &obj)?;
            managed_fields::record_update(kind, cur, &mut obj, &manager, &now);
            Ok(obj)
        });
        let response = match result {
            Ok((o, created)) => json_response(if created { 201 } else { 200 }, &o),
            Err(e) => error_response(&e),
        };
        with_warnings(response, &warnings)
    }

    async fn patch(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        q: &Query,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let dry = match dry_run(q) {
            Ok(d) => d,
            Err(r) => return status_response(r),
        };
        let directive = match FieldValidation::parse(q.get("fieldValidation"), "PatchOptions") {
            Ok(d) => d,
            Err(r) => return status_response(r),
        };
        let force = match q.get_bool("force") {
            Ok(f) => f,
            Err(e) => return bad_request(e),
        };
        let ct = content_type(&req);
        let Some(patch_type) = PatchType::of(&ct) else {
            return unsupported_media_type(PatchType::ACCEPTED);
        };
        if force.is_some() && patch_type != PatchType::Apply {
            return bad_request(format!(
                "force: Invalid value: {}: may not be specified for non-apply patch",
                force.unwrap_or_default()
            ));
        }
        let manager = field_manager(q, &req);
        let bytes = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return status_response(r),
        };
        let patch = match decode_body(&bytes, &ct) {
            Ok(v) => v,
            Err(r) => return status_response(r),
        };
        if patch_type == PatchType::Apply {
            let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                return status_response(status::failure(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    None,
                ));
            };
            let who = super::apply::Applier {
                manager,
                force: force.unwrap_or(false),
                now: &clock::rfc3339_seconds(chrono::Utc::now()),
            };
            return self.server_side_apply(kind, ns, name, &patch, &who, dry);
        }
        if patch_type == PatchType::Merge && !patch.is_object() {
            return bad_request("the body of a merge patch must be a JSON object");
        }
        let now = clock::rfc3339_seconds(chrono::Utc::now());
        let mut warnings = Vec::new();
        let result = self.store.patch_with(kind, ns, name, dry, |cur| {
            let rejected = |e: String| {
                StoreError::BadRequest(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            };
            // The patched object is decoded as the API server decodes it: pruned, with a
            // warning per unknown field, or refused (422, field `patch`).
            let (mut next, found) = match patch_type {
                PatchType::Merge => {
                    let mut next = cur.clone();
                    super::merge_patch::merge_patch(&mut next, &patch);
                    decode_patched(kind, next, directive)?
                }
                PatchType::Json => {
                    let next = super::merge_patch::json_patch(cur, &patch).map_err(rejected)?;
                    decode_patched(kind, next, directive)?
                }
                PatchType::Strategic | PatchType::Apply => {
                    let next = super::strategic_merge::apply(cur, &patch, Schema::of(kind))
                        .map_err(rejected)?;
                    decode_strategic(kind, next, &patch, directive)?
                }
            };
            warnings = found;
            managed_fields::record_update(kind, Some(cur), &mut next, &manager, &now);
            Ok(next)
        });
        let response = match result {
            Ok(o) => json_response(200, &o),
            Err(e) => error_response(&e),
        };
        with_warnings(response, &warnings)
    }

    /// Server-side apply: create-or-update under optimistic concurrency (the merged object
    /// carries the live resourceVersion, so a write in between is retried, not lost).
    fn server_side_apply(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        config: &Value,
        who: &super::apply::Applier<'_>,
        dry: bool,
    ) -> Response<Body> {
        if !config.is_object() {
            return bad_request("the body of an apply patch must be an object");
        }
        // The configuration is typed against the schema first, dry run or not.
        if let Some(error) = super::apply::typed_patch_error(kind, config) {
            return error_response(&StoreError::Internal(error));
        }
        if let Some(given) = config.pointer("/metadata/name").and_then(Value::as_str) {
            if given != name {
                return bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                ));
            }
        }
        for _ in 0..5 {
            let live = self.store.get(kind, ns, name);
            let mut next = match super::apply::apply(kind, live.as_ref(), config, who) {
                Ok(next) => next,
                Err(conflict) => return status_response(conflict),
            };
            let result = match live {
                None => {
                    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("name".into(), json!(name));
                    }
                    self.store
                        .create_with(kind, ns, next, dry)
                        .map(|o| (o, 201))
                }
                Some(_) => self
                    .store
                    .patch_with(kind, ns, name, dry, |_| Ok(next))
                    .map(|o| (o, 200)),
            };
            match result {
                Ok((object, code)) => return json_response(code, &object),
                Err(StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }) => continue,
                Err(StoreError::Conflict { .. })
                    if config.pointer("/metadata/resourceVersion").is_none() =>
                {
                    continue
                }
                Err(e) => return error_response(&e),
            }
        }
        error_response(&StoreError::conflict(kind, name))
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        q: &Query,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let mut dry = match dry_run(q) {
            Ok(d) => d,
            Err(r) => return status_response(r),
        };
        let bytes = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return status_response(r),
        };
        let mut pre = Preconditions::default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let opts: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    return bad_request(format!(
                        "the body of the request could not be decoded as DeleteOptions: {e}"
                    ))
                }
            };
            let s = |p: &str| opts.pointer(p).and_then(Value::as_str).map(str::to_string);
            pre.uid = s("/preconditions/uid");
            pre.resource_version = s("/preconditions/resourceVersion");
            if opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"))
            {
                dry = true;
            }
        }
        match self.store.delete_with(kind, ns, name, &pre, dry) {
            Ok(o) => json_response(
                200,
                &status::success(&Details {
                    name: Some(name.to_string()),
                    group: Some(kind.group().to_string()),
                    kind: Some(kind.plural().to_string()),
                    uid: o
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    ..Details::default()
                }),
            ),
            Err(e) => error_response(&e),
        }
    }

    fn delete_collection(&self, kind: ResourceKind, ns: &str, q: &Query) -> Response<Body> {
        let dry = match dry_run(q) {
            Ok(d) => d,
            Err(r) => return status_response(r),
        };
        let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return bad_request(e.to_string()),
        };
        let fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return bad_request(e.to_string()),
        };
        let filter = |o: &Value| labels.matches(o) && fields.matches(o);
        let page = match self
            .store
            .list_page(kind, Some(ns), ListFrom::Current, None, &filter)
        {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let mut deleted = Vec::new();
        for obj in &page.items {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Ok(d) = self
                .store
                .delete_with(kind, ns, name, &Preconditions::default(), dry)
            {
                deleted.push(d);
            }
        }
        json_response(
            200,
            &ListBody {
                kind: kind.list_kind(),
                api_version: kind.api_version(),
                metadata: list_metadata(self.store.current_resource_version(), None, None),
                items: deleted.iter().map(Stripped).collect(),
            },
        )
    }
}

/// The patch formats served, by content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    const ACCEPTED: &'static str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

    fn of(content_type: &str) -> Option<PatchType> {
        match content_type {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// The field manager of a write: `fieldManager`, else the client's name from its
/// User-Agent (as the API server does), else `unknown`.
fn field_manager(q: &Query, req: &Request<Incoming>) -> String {
    if let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|name| !name.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn unsupported_media_type(accepted: &str) -> Response<Body> {
    status_response(status::failure(
        415,
        "UnsupportedMediaType",
        &format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
        None,
    ))
}

/// The dry-run flag, the object of a create or replace request decoded as the API server
/// decodes it (unknown fields pruned) and the warnings to answer with; or the error response.
async fn read_typed_object(
    kind: ResourceKind,
    q: &Query,
    req: Request<Incoming>,
    options: &str,
) -> Result<(bool, Value, Vec<String>), Response<Body>> {
    let directive =
        FieldValidation::parse(q.get("fieldValidation"), options).map_err(status_response)?;
    let (dry, obj) = read_object(q, req).await?;
    let (obj, warnings) = decode(kind, obj, directive).map_err(|e| error_response(&e))?;
    Ok((dry, obj, warnings))
}

/// Adds a `Warning: 299 - "<text>"` header per warning, as the API server sends them.
fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for text in warnings {
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// The dry-run flag and the decoded object of a create or replace request, or the error
/// response to send instead.
async fn read_object(q: &Query, req: Request<Incoming>) -> Result<(bool, Value), Response<Body>> {
    let dry = dry_run(q).map_err(status_response)?;
    let ct = content_type(&req);
    if ct.contains("protobuf") {
        return Err(unsupported_media_type("application/json, application/yaml"));
    }
    let bytes = read_body(req.into_body()).await.map_err(status_response)?;
    let obj = decode_body(&bytes, &ct).map_err(status_response)?;
    Ok((dry, obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_kubernetes_url_scheme() {
        let es = ResourceKind::EndpointSlice;
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/loco/endpointslices"),
            Route::Collection {
                kind: es,
                namespace: Some("loco".into()),
                watch: false
            }
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/endpointslices"),
            Route::Collection {
                kind: es,
                namespace: None,
                watch: false
            }
        );
        assert_eq!(
            route("/api/v1/namespaces/loco/endpoints/web"),
            Route::Item {
                kind: ResourceKind::Endpoints,
                namespace: "loco".into(),
                name: "web".into(),
                watch: false
            }
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/watch/namespaces/loco/endpointslices"),
            Route::Collection {
                kind: es,
                namespace: Some("loco".into()),
                watch: true
            }
        );
        assert_eq!(
            route("/api/v1/namespaces/loco"),
            Route::Namespace("loco".into())
        );
        assert_eq!(route("/api/v1/endpointslices"), Route::NotFound);
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/loco/endpoints"),
            Route::NotFound
        );
        assert_eq!(route("/openapi/v3"), Route::OpenApi(None));
        assert_eq!(
            route("/openapi/v3/apis/discovery.k8s.io/v1"),
            Route::OpenApi(Some("apis/discovery.k8s.io/v1".into()))
        );
        assert_eq!(route("/openapi/v2"), Route::OpenApiV2);
        assert_eq!(route("/sim/faults/stall"), Route::Admin("stall".into()));
    }

    #[test]
    fn query_decoding_handles_kube_rs_and_kubectl_forms() {
        let q = Query::parse(Some("&labelSelector=app+in+%28a%2C+b%29&limit=500"));
        assert_eq!(q.get("labelSelector"), Some("app in (a, b)"));
        assert_eq!(q.get("limit"), Some("500"));
        let q = Query::parse(Some("fieldSelector=metadata.name%3Dx&watch=1"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=x"));
        assert_eq!(q.get_bool("watch"), Ok(Some(true)));
        assert!(Query::parse(Some("watch=maybe")).get_bool("watch").is_err());
    }

    #[test]
    fn lossy_decoding_never_panics() {
        assert_eq!(lossy_decode("a%"), "a%");
        assert_eq!(lossy_decode("a%4"), "a%4");
        assert_eq!(lossy_decode("a%41+b"), "aA b");
        assert_eq!(lossy_decode("%zz"), "%zz");
    }

    #[test]
    fn resource_version_rules() {
        assert_eq!(parse_rv(None).unwrap(), RvParam::Unset);
        assert_eq!(parse_rv(Some("0")).unwrap(), RvParam::Zero);
        assert_eq!(parse_rv(Some("42")).unwrap(), RvParam::At(42));
        assert_eq!(parse_rv(Some("abc")).unwrap_err().code(), 400);
        assert_eq!(parse_rv(Some("-1")).unwrap_err().code(), 400);
        let q = Query::parse(Some("resourceVersionMatch=Exact"));
        assert!(parse_rv_match(&q, RvParam::Unset).is_err());
        assert!(parse_rv_match(&q, RvParam::Zero).is_err());
        assert_eq!(parse_rv_match(&q, RvParam::At(3)).unwrap(), RvMatch::Exact);
        let q = Query::parse(Some("resourceVersionMatch=Sometimes"));
        assert!(parse_rv_match(&q, RvParam::At(3)).is_err());
    }
}
