//! The object store of the simulated API server: objects as JSON, one global resourceVersion counter, a bounded
//! history of watch events, and the namespaces seen.
//!
//! Every write takes the store lock, bumps the counter by one, records one event in the history and broadcasts it
//! once; watches filter the broadcast themselves. The history lets a watch resume from an older resourceVersion and
//! lets a paginated list rebuild the exact state its continue token refers to (a consistent snapshot across pages).

mod continue_token;
mod error;
mod events;
mod kind;
mod namespaces;
mod objects;
mod rules;
mod schema;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use events::{watch_line, EventType, ListFrom, ListPage, StoredEvent, WatchFrom, WatchStart};
pub use kind::ResourceKind;
pub use namespaces::INITIAL_NAMESPACES;
pub(crate) use objects::check_uid_precondition;
pub use objects::{key_of, with_rv, TRIGGER_TIME_ANNOTATION};
pub(crate) use rules::is_dns_subdomain;
pub use rules::MAX_ENDPOINTS_PER_SLICE;
pub use schema::{decode, decode_patched, decode_strategic, go_print, FieldValidation};

use self::continue_token::*;
use self::error::*;
use self::events::*;
use self::namespaces::*;
use self::objects::*;
use self::rules::*;
use chrono::Utc;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::broadcast;

/// Capacity of the event broadcast; a watch that falls further behind catches up from the history.
const BROADCAST_CAPACITY: usize = 1024;

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
        Store {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rv: 1,
                    objects: [BTreeMap::new(), BTreeMap::new()],
                    history: VecDeque::new(),
                    floor: 1,
                    epoch: 0,
                    namespaces: initial_namespaces(),
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
        let stated_rv = stated_resource_version(&obj);
        let mut obj = prepare_create(kind, namespace, obj, Utc::now())?;
        let mut st = self.lock();
        require_namespace(&st, namespace)?;
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
        // The storage refuses a stated resourceVersion before it looks for the name; a dry run
        // only looks for the name.
        if stated_rv && !dry_run {
            return Err(StoreError::ResourceVersionOnCreate);
        }
        if st.objects[kind.index()].contains_key(&key) {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        if dry_run {
            return Ok(obj);
        }
        Ok(self.commit(&mut st, kind, key, EventType::Added, Some(obj), None))
    }

    /// Replaces an object (PUT). Without `metadata.resourceVersion` in `obj` the update is unconditional; a different
    /// one is a Conflict, and so is a `metadata.uid` other than the stored object's. A missing EndpointSlice is
    /// NotFound; a missing Endpoints is created.
    pub fn replace(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        obj: Value,
    ) -> Result<Value, StoreError> {
        self.replace_with(kind, namespace, name, obj, false)
            .map(|(v, _)| v)
    }

    /// [`Store::replace`], optionally as a dry run, also telling whether the object was created.
    pub fn replace_with(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        obj: Value,
        dry_run: bool,
    ) -> Result<(Value, bool), StoreError> {
        self.upsert_with(kind, namespace, name, dry_run, |current| {
            check_uid_precondition(kind, name, current, &obj)?;
            Ok(obj)
        })
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
                require_namespace(&st, namespace)?;
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
        let mut next = prepare_update(kind, namespace, name, &old, new)?;
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
