//! The namespaces of the simulated cluster. Objects are written only into a namespace that
//! exists, as the API server's NamespaceLifecycle admission requires: a few exist from the
//! start ([`INITIAL_NAMESPACES`]), more are created as `kubectl create namespace` does, and
//! deleting one deletes everything in it. Namespaces are not watched; each carries the
//! store's resourceVersion at its creation.

use super::error::*;
use super::events::EventType;
use super::kind::ResourceKind;
use super::objects::*;
use super::rules::*;
use super::{State, Store};
use crate::clock;
use chrono::Utc;
use serde_json::{json, Value};

/// The namespaces of a new store: the four every cluster has, and `loco`, where lego-loco
/// and the gateway's defaults live.
pub const INITIAL_NAMESPACES: [&str; 5] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "loco",
];

/// The namespaces the API server refuses to delete.
const UNDELETABLE: [&str; 3] = ["default", "kube-system", "kube-public"];

pub(super) fn initial_namespaces() -> std::collections::BTreeMap<String, Value> {
    let created = clock::rfc3339_seconds(Utc::now());
    INITIAL_NAMESPACES
        .iter()
        .map(|n| (n.to_string(), namespace_object(n, 1, &created)))
        .collect()
}

/// Refuses a write into a namespace that does not exist.
pub(super) fn require_namespace(st: &State, name: &str) -> Result<(), StoreError> {
    if st.namespaces.contains_key(name) {
        Ok(())
    } else {
        Err(StoreError::NamespaceNotFound(name.to_string()))
    }
}

impl Store {
    /// Creates a namespace (`kubectl create namespace`); with `dry_run`, only checks it could be.
    pub fn create_namespace(&self, name: &str, dry_run: bool) -> Result<Value, StoreError> {
        if !is_dns_label(name) {
            let cause = if name.is_empty() {
                required("metadata.name", "name or generateName is required")
            } else {
                invalid_value("metadata.name", &json!(name), LABEL_RULE)
            };
            return Err(StoreError::NamespaceInvalid {
                name: name.to_string(),
                cause,
            });
        }
        let mut st = self.lock();
        if st.namespaces.contains_key(name) {
            return Err(StoreError::NamespaceExists(name.to_string()));
        }
        let object = namespace_object(name, st.rv, &clock::rfc3339_seconds(Utc::now()));
        if !dry_run {
            st.namespaces.insert(name.to_string(), object.clone());
        }
        Ok(object)
    }

    /// Creates the namespace unless it exists (what a cluster's setup does before its
    /// controllers write into it).
    pub fn ensure_namespace(&self, name: &str) {
        match self.create_namespace(name, false) {
            Ok(_) | Err(StoreError::NamespaceExists(_)) => {}
            Err(error) => tracing::warn!(%error, "namespace not created"),
        }
    }

    /// Deletes a namespace and every object in it (each one a DELETED event). Returns the
    /// namespace as the API server answers a delete: terminating.
    pub fn delete_namespace(&self, name: &str, dry_run: bool) -> Result<Value, StoreError> {
        if UNDELETABLE.contains(&name) {
            return Err(StoreError::NamespaceUndeletable(name.to_string()));
        }
        let mut st = self.lock();
        let Some(mut object) = st.namespaces.get(name).cloned() else {
            return Err(StoreError::NamespaceNotFound(name.to_string()));
        };
        object["metadata"]["deletionTimestamp"] = json!(clock::rfc3339_seconds(Utc::now()));
        object["status"]["phase"] = json!("Terminating");
        if dry_run {
            return Ok(object);
        }
        for kind in ResourceKind::ALL {
            let inside: Vec<_> = st.objects[kind.index()]
                .iter()
                .filter(|((ns, _), _)| ns == name)
                .map(|(key, old)| (key.clone(), old.clone()))
                .collect();
            for (key, old) in inside {
                self.commit(&mut st, kind, key, EventType::Deleted, None, Some(old));
            }
        }
        st.namespaces.remove(name);
        Ok(object)
    }

    /// The Namespace object, if the namespace exists.
    pub fn namespace(&self, name: &str) -> Option<Value> {
        self.lock().namespaces.get(name).cloned()
    }

    /// The namespaces that exist, in name order, with the current resourceVersion.
    pub fn namespaces(&self) -> (Vec<Value>, u64) {
        let st = self.lock();
        (st.namespaces.values().cloned().collect(), st.rv)
    }
}
