//! Watch events as recorded in the history, list pages, and where lists and watches start.

use super::kind::*;
use bytes::Bytes;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

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
    pub(crate) line: OnceLock<Bytes>,
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

pub(crate) type ObjKey = (String, String);

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
