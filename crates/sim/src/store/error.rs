//! Store errors, each mapping to the HTTP code and `Status` body a real API server sends.

use super::kind::*;
use crate::status::{self, Cause, Details};
use serde_json::Value;

pub(crate) fn invalid_message(kind: ResourceKind, name: &str, causes: &[Cause]) -> String {
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

pub(crate) const CONFLICT_DETAIL: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

pub(crate) const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

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
    /// 422: a patch whose result does not decode (the API server names no kind and no object).
    #[error(" \"\" is invalid: {}: {}", .cause.field, .cause.message)]
    PatchUndecodable { cause: Cause },
    /// 500: a create that states a resourceVersion (the storage layer's plain error; the API server sends it with no
    /// reason).
    #[error("resourceVersion should not be set on objects to be created")]
    ResourceVersionOnCreate,
    /// 404: the namespace does not exist (a write into it, or a read or delete of it).
    #[error("namespaces \"{0}\" not found")]
    NamespaceNotFound(String),
    /// 409: a namespace of that name exists.
    #[error("namespaces \"{0}\" already exists")]
    NamespaceExists(String),
    /// 403: one of the namespaces the API server keeps (`default`, `kube-system`, `kube-public`).
    #[error("namespaces \"{0}\" is forbidden: this namespace may not be deleted")]
    NamespaceUndeletable(String),
    /// 500 with no reason: an error the API server does not map to a Status (a server-side
    /// apply configuration that does not fit the schema).
    #[error("{0}")]
    Internal(String),
    /// 422: a namespace name that is not a DNS label.
    #[error("Namespace \"{name}\" is invalid: metadata.name: {}", .cause.message)]
    NamespaceInvalid { name: String, cause: Cause },
}

impl StoreError {
    pub(crate) fn conflict(kind: ResourceKind, name: &str) -> StoreError {
        StoreError::Conflict {
            kind,
            name: name.to_string(),
            detail: CONFLICT_DETAIL.to_string(),
        }
    }

    pub(crate) fn invalid(kind: ResourceKind, name: &str, causes: Vec<Cause>) -> StoreError {
        StoreError::Invalid {
            kind,
            name: name.to_string(),
            causes,
        }
    }

    /// The HTTP status code of the error.
    pub fn code(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } | StoreError::NamespaceNotFound(_) => 404,
            StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. }
            | StoreError::NamespaceExists(_) => 409,
            StoreError::Invalid { .. }
            | StoreError::NamespaceInvalid { .. }
            | StoreError::PatchUndecodable { .. } => 422,
            StoreError::NamespaceUndeletable(_) => 403,
            StoreError::ResourceVersionOnCreate | StoreError::Internal(_) => 500,
            StoreError::BadRequest(_) => 400,
            StoreError::Expired(_) => 410,
            StoreError::TooLargeResourceVersion { .. } => 504,
        }
    }

    /// The `reason` of the Status body.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } | StoreError::NamespaceNotFound(_) => "NotFound",
            StoreError::AlreadyExists { .. } | StoreError::NamespaceExists(_) => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Invalid { .. }
            | StoreError::NamespaceInvalid { .. }
            | StoreError::PatchUndecodable { .. } => "Invalid",
            StoreError::NamespaceUndeletable(_) => "Forbidden",
            StoreError::ResourceVersionOnCreate | StoreError::Internal(_) => "",
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
            StoreError::NamespaceNotFound(name)
            | StoreError::NamespaceExists(name)
            | StoreError::NamespaceUndeletable(name) => Some(Details {
                name: Some(name.clone()),
                kind: Some("namespaces".into()),
                ..Details::default()
            }),
            StoreError::NamespaceInvalid { name, cause } => Some(Details {
                name: Some(name.clone()),
                kind: Some("Namespace".into()),
                causes: vec![cause.clone()],
                ..Details::default()
            }),
            StoreError::PatchUndecodable { cause } => Some(Details {
                causes: vec![cause.clone()],
                ..Details::default()
            }),
            StoreError::BadRequest(_)
            | StoreError::Expired(_)
            | StoreError::ResourceVersionOnCreate
            | StoreError::Internal(_) => None,
        };
        status::failure(self.code(), self.reason(), &message, details.as_ref())
    }
}
