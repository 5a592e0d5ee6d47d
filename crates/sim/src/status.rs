//! Kubernetes `Status` bodies: the JSON every error (and a successful delete) is answered with.
//!
//! Clients key on these fields: kubectl prints `Error from server (<reason>): <message>`, kube-rs turns the body
//! into `Error::Api(Status)` and its watcher compares `code` with 410.

use serde_json::{json, Map, Value};

/// One entry of `details.causes` (used by 422 Invalid and 504 Timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable cause, e.g. `FieldValueRequired`.
    pub reason: String,
    /// Human-readable text without the field path, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `addressType`; empty when the cause is not about a field.
    pub field: String,
}

/// `details` of a Status: which object the status is about.
#[derive(Clone, Debug, Default)]
pub struct Details {
    pub name: Option<String>,
    /// API group; `None` (and omitted) for the core group.
    pub group: Option<String>,
    /// Plural resource name for most errors, the Kind for `Invalid`.
    pub kind: Option<String>,
    pub uid: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u64>,
}

impl Details {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.group {
            if !g.is_empty() {
                m.insert("group".into(), json!(g));
            }
        }
        if let Some(k) = &self.kind {
            m.insert("kind".into(), json!(k));
        }
        if let Some(u) = &self.uid {
            m.insert("uid".into(), json!(u));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| {
                    let mut cm = Map::new();
                    cm.insert("reason".into(), json!(c.reason));
                    cm.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        cm.insert("field".into(), json!(c.field));
                    }
                    Value::Object(cm)
                })
                .collect();
            m.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.retry_after_seconds {
            m.insert("retryAfterSeconds".into(), json!(r));
        }
        Value::Object(m)
    }
}

/// The `reason` a real API server uses for an HTTP status code (`""` when it has none).
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// A `Failure` Status. `details` is omitted when `None`; the generic errors of the real server (404 for an unknown
/// path, 405) carry an empty `details: {}`, which `Some(Details::default())` gives.
pub fn failure(code: u16, reason: &str, message: &str, details: Option<&Details>) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("Status"));
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("metadata".into(), json!({}));
    m.insert("status".into(), json!("Failure"));
    m.insert("message".into(), json!(message));
    if !reason.is_empty() {
        m.insert("reason".into(), json!(reason));
    }
    if let Some(d) = details {
        m.insert("details".into(), d.to_json());
    }
    m.insert("code".into(), json!(code));
    Value::Object(m)
}

/// The `Success` Status a delete answers with (`details.kind` is the plural resource name).
pub fn success(details: &Details) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details.to_json(),
    })
}

/// 404 for a path the server does not serve.
pub fn path_not_found() -> Value {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(&Details::default()),
    )
}

/// 405 for a method the resource does not support.
pub fn method_not_allowed() -> Value {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(&Details::default()),
    )
}

/// A 400 BadRequest with `message`.
pub fn bad_request(message: &str) -> Value {
    failure(400, "BadRequest", message, None)
}

/// The Status of an injected fault answering `code`.
pub fn injected(code: u16) -> Value {
    let message = match code {
        429 => "Too many requests, please try again later.".to_string(),
        500 => "Internal error occurred: simulated fault".to_string(),
        503 => "the server is currently unable to handle the request".to_string(),
        504 => "Timeout: request did not complete within the allowed duration".to_string(),
        _ => format!("simulated fault: HTTP {code}"),
    };
    let details = match code {
        429 | 503 => Some(Details {
            retry_after_seconds: Some(1),
            ..Details::default()
        }),
        _ => None,
    };
    failure(code, reason_for_code(code), &message, details.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_for_core_group_has_no_group_key() {
        let d = Details {
            name: Some("web".into()),
            group: Some(String::new()),
            kind: Some("endpoints".into()),
            ..Details::default()
        };
        let v = failure(404, "NotFound", "endpoints \"web\" not found", Some(&d));
        let want: Value = serde_json::from_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"endpoints \"web\" not found","reason":"NotFound","details":{"name":"web","kind":"endpoints"},"code":404}"#,
        )
        .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn success_status_names_the_plural_resource() {
        let d = Details {
            name: Some("a".into()),
            group: Some("discovery.k8s.io".into()),
            kind: Some("endpointslices".into()),
            uid: Some("u".into()),
            ..Details::default()
        };
        let want: Value = serde_json::from_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"a","group":"discovery.k8s.io","kind":"endpointslices","uid":"u"}}"#,
        )
        .unwrap();
        assert_eq!(success(&d), want);
    }

    #[test]
    fn injected_fault_uses_the_code_as_status_code() {
        let v = injected(503);
        assert_eq!(v["code"], 503);
        assert_eq!(v["reason"], "ServiceUnavailable");
    }
}
