//! The only user of `kube`: watches the EndpointSlices (or Endpoints) of the configured
//! services and feeds the index, with the other inputs (metadata, probes, a static file)
//! through the same task, then publishes the index's deltas to the hub.
//!
//! Objects arrive as `DynamicObject` and are decoded one by one, so a single malformed
//! object is skipped and counted instead of failing the whole list forever.

use crate::consistency::{ConsistencyCheck, KnownObjects, ObjectStamp};
use crate::metrics as m;
use crate::sources::{merge_metadata, EndpointsAdapter, StaticInstances};
use crate::trigger_time::{record, TriggerTimes};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::watcher::{self, watcher, Event};
use loco_discovery_core::hub::Hub;
use loco_discovery_core::index::{
    Anomaly, EndpointIndex, IndexConfig, Outcome, SERVICE_NAME_LABEL,
};
use loco_discovery_core::metadata::MetadataMap;
use loco_discovery_core::model::Probe;
use loco_discovery_core::text::printable;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What to watch: the services' EndpointSlices in one namespace.
#[derive(Clone, Debug)]
pub struct WatchTarget {
    pub namespace: String,
    pub services: Vec<String>,
}

impl WatchTarget {
    /// The label selector that picks the slices of every watched service.
    pub fn label_selector(&self) -> String {
        match self.services.as_slice() {
            [one] => format!("{SERVICE_NAME_LABEL}={one}"),
            many => format!("{SERVICE_NAME_LABEL} in ({})", many.join(",")),
        }
    }
}

/// Whether an API error says the resourceVersion asked for is newer than anything the
/// server has: the server's history is not the one the version came from (an API server
/// restored from a backup, or a new cluster behind the same address).
fn is_too_large_resource_version(status: &kube::core::Status) -> bool {
    status.code == 504
        && (status.details.as_ref().is_some_and(|d| {
            d.causes
                .iter()
                .any(|c| c.reason == "ResourceVersionTooLarge")
        }) || status.message.contains("Too large resource version"))
}

/// A stable, bounded name for a watch error, used in logs and as a metric label.
pub fn error_reason(error: &watcher::Error) -> &'static str {
    fn client_reason(error: &kube::Error) -> &'static str {
        match error {
            kube::Error::Api(status) if is_too_large_resource_version(status) => {
                "too_large_resource_version"
            }
            kube::Error::Api(status) if status.code == 410 => "gone_410",
            kube::Error::Api(status) if status.code >= 500 => "http_5xx",
            kube::Error::Api(_) => "http_4xx",
            kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded => "decode",
            _ => "network",
        }
    }
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => client_reason(e),
        watcher::Error::WatchError(status) if is_too_large_resource_version(status) => {
            "too_large_resource_version"
        }
        watcher::Error::WatchError(status) if status.code == 410 => "gone_410",
        watcher::Error::WatchError(status) if status.code >= 500 => "http_5xx",
        watcher::Error::WatchError(_) => "http_4xx",
        watcher::Error::NoResourceVersion => "decode",
    }
}

/// The resourceVersion of a watch event: the name of the change on every replica.
fn origin_of(object: &DynamicObject) -> String {
    object
        .metadata
        .resource_version
        .clone()
        .filter(|rv| !rv.is_empty())
        .unwrap_or_else(|| "unversioned".into())
}

/// Decodes one object as an EndpointSlice; a failure is logged and counted.
fn decode(object: DynamicObject, target: &WatchTarget) -> Option<EndpointSlice> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(error) => {
            report_undecodable(&name, target, &error.to_string());
            return None;
        }
    };
    match serde_json::from_value::<EndpointSlice>(value) {
        Ok(slice) => Some(slice),
        Err(error) => {
            report_undecodable(&name, target, &error.to_string());
            None
        }
    }
}

fn report_undecodable(name: &str, target: &WatchTarget, error: &str) {
    warn!(namespace = %target.namespace, slice = %printable(name), reason = "undecodable",
          error = %printable(error), "skipping an EndpointSlice that does not decode");
    metrics::counter!(m::MALFORMED_OBJECTS, "reason" => "undecodable").increment(1);
}

/// A DELETED object that does not decode is still removed, by name.
fn deleted_slice(object: DynamicObject, target: &WatchTarget) -> EndpointSlice {
    let metadata = object.metadata.clone();
    decode(object, target).unwrap_or_else(|| EndpointSlice {
        metadata,
        ..EndpointSlice::default()
    })
}

/// An added or modified slice as `(apply, delete)`: one that does not decode counts as
/// absent, so a replica that watched it change and one that listed it afterwards agree
/// (neither shows its endpoints).
fn changed_slice(
    object: DynamicObject,
    target: &WatchTarget,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let metadata = object.metadata.clone();
    match decode(object, target) {
        Some(slice) => (vec![slice], Vec::new()),
        None => (
            Vec::new(),
            vec![EndpointSlice {
                metadata,
                ..EndpointSlice::default()
            }],
        ),
    }
}

/// Warns about and counts what lost information; normal shapes are noted at debug level.
fn report_anomalies(anomalies: &[Anomaly]) {
    for a in anomalies {
        if a.reason.loses_information() {
            warn!(namespace = %printable(&a.namespace), slice = %printable(&a.slice),
                  reason = a.reason.as_str(), detail = %printable(&a.detail),
                  "EndpointSlice content skipped or merged");
            metrics::counter!(m::MALFORMED_OBJECTS, "reason" => a.reason.as_str()).increment(1);
        } else {
            debug!(namespace = %printable(&a.namespace), slice = %printable(&a.slice),
                   reason = a.reason.as_str(), detail = %printable(&a.detail),
                   "EndpointSlice note");
        }
    }
}

fn publish(hub: &Hub, outcome: Outcome, origin: &str, change_time: Option<DateTime<Utc>>) {
    report_anomalies(&outcome.anomalies);
    for delta in &outcome.deltas {
        debug!(kind = %delta.kind, service = %printable(&delta.service),
               instance = %printable(&delta.instance_id), "delta");
        metrics::counter!(m::DELTAS, "type" => delta.kind.as_str()).increment(1);
    }
    hub.publish_change(&outcome.deltas, origin, change_time, Utc::now());
}

/// The service a slice belongs to, for metric labels.
fn service_of(object: &DynamicObject) -> String {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .unwrap_or_default()
}

/// Which objects the watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// discovery.k8s.io/v1 EndpointSlices, by the `kubernetes.io/service-name` label.
    EndpointSlices,
    /// core/v1 Endpoints objects, named like their Service.
    Endpoints,
}

/// Inputs to the discovery loop besides the Kubernetes watch; all go through the one
/// task that owns the index.
#[derive(Debug)]
pub enum Input {
    /// New display metadata (the metadata file changed).
    Metadata(MetadataMap),
    /// A health probe result for the instance `key`.
    Probe { key: String, probe: Probe },
    /// The static instances file, parsed.
    Static(Box<StaticInstances>),
}

/// One change from a source, in the index's terms.
enum SourceEvent {
    Init,
    /// One object of a list; `stamp` is `None` for an object the gateway does not want.
    Listed {
        slices: Vec<EndpointSlice>,
        stamp: Option<ObjectStamp>,
    },
    InitDone,
    Changed {
        apply: Vec<EndpointSlice>,
        delete: Vec<EndpointSlice>,
        origin: String,
        change_time: Option<DateTime<Utc>>,
        service: String,
        received: Instant,
        /// The object that changed, and whether it is gone.
        stamp: ObjectStamp,
        deleted: bool,
    },
    Failed(&'static str, String),
}

type SourceStream = std::pin::Pin<Box<dyn futures::Stream<Item = SourceEvent> + Send>>;

fn slice_events(client: kube::Client, target: &WatchTarget) -> SourceStream {
    let resource = ApiResource::erase::<EndpointSlice>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &target.namespace, &resource);
    let config = watcher::Config::default().labels(&target.label_selector());
    let target = target.clone();
    let mut times = TriggerTimes::default();
    let stream = watcher(api, config).map(move |event| match event {
        Err(error) => SourceEvent::Failed(error_reason(&error), error.to_string()),
        Ok(Event::Init) => {
            times.relist();
            SourceEvent::Init
        }
        Ok(Event::InitApply(object)) => {
            record(
                times.listed(&object.metadata),
                &service_of(&object),
                Utc::now(),
            );
            SourceEvent::Listed {
                stamp: Some(ObjectStamp::of(&object.metadata)),
                slices: decode(object, &target).into_iter().collect(),
            }
        }
        Ok(Event::InitDone) => SourceEvent::InitDone,
        Ok(Event::Apply(object)) => {
            let received = Instant::now();
            let service = service_of(&object);
            let change_time = record(times.changed(&object.metadata), &service, Utc::now());
            let origin = origin_of(&object);
            let stamp = ObjectStamp::of(&object.metadata);
            let (apply, delete) = changed_slice(object, &target);
            SourceEvent::Changed {
                apply,
                delete,
                origin,
                change_time,
                service,
                received,
                stamp,
                deleted: false,
            }
        }
        Ok(Event::Delete(object)) => {
            let received = Instant::now();
            let service = service_of(&object);
            let origin = origin_of(&object);
            let stamp = ObjectStamp::of(&object.metadata);
            times.deleted(&object.metadata);
            SourceEvent::Changed {
                apply: Vec::new(),
                delete: vec![deleted_slice(object, &target)],
                origin,
                change_time: None,
                service,
                received,
                stamp,
                deleted: true,
            }
        }
    });
    Box::pin(stream)
}

fn endpoints_events(client: kube::Client, target: &WatchTarget) -> SourceStream {
    let resource = ApiResource::erase::<Endpoints>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &target.namespace, &resource);
    let mut config = watcher::Config::default();
    if let [one] = target.services.as_slice() {
        config = config.fields(&format!("metadata.name={one}"));
    }
    let target = target.clone();
    let mut adapter = EndpointsAdapter::default();
    let mut times = TriggerTimes::default();
    let wanted = move |object: &DynamicObject| {
        object
            .metadata
            .name
            .as_ref()
            .is_some_and(|n| target.services.contains(n))
    };
    let decode_endpoints = |object: DynamicObject| -> Option<Endpoints> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(&object).ok()?;
        match serde_json::from_value::<Endpoints>(value) {
            Ok(endpoints) => Some(endpoints),
            Err(error) => {
                warn!(endpoints = %printable(&name), reason = "undecodable",
                      error = %printable(&error.to_string()),
                      "skipping an Endpoints object that does not decode");
                metrics::counter!(m::MALFORMED_OBJECTS, "reason" => "undecodable").increment(1);
                None
            }
        }
    };
    let stream = watcher(api, config).map(move |event| match event {
        Err(error) => SourceEvent::Failed(error_reason(&error), error.to_string()),
        Ok(Event::Init) => {
            adapter.reset();
            times.relist();
            SourceEvent::Init
        }
        Ok(Event::InitDone) => SourceEvent::InitDone,
        Ok(Event::InitApply(object) | Event::Apply(object) | Event::Delete(object))
            if !wanted(&object) =>
        {
            SourceEvent::Listed {
                slices: Vec::new(),
                stamp: None,
            }
        }
        Ok(Event::InitApply(object)) => {
            let service = object.metadata.name.clone().unwrap_or_default();
            record(times.listed(&object.metadata), &service, Utc::now());
            let stamp = Some(ObjectStamp::of(&object.metadata));
            let slices = decode_endpoints(object)
                .map(|e| adapter.apply(&e).0)
                .unwrap_or_default();
            SourceEvent::Listed { slices, stamp }
        }
        Ok(Event::Apply(object)) => {
            let received = Instant::now();
            let service = object.metadata.name.clone().unwrap_or_default();
            let change_time = record(times.changed(&object.metadata), &service, Utc::now());
            let origin = origin_of(&object);
            let metadata = object.metadata.clone();
            let stamp = ObjectStamp::of(&metadata);
            // An Endpoints object that does not decode counts as absent, as in a list.
            let (apply, delete) = match decode_endpoints(object) {
                Some(endpoints) => adapter.apply(&endpoints),
                None => (
                    Vec::new(),
                    adapter.delete(&Endpoints {
                        metadata,
                        ..Endpoints::default()
                    }),
                ),
            };
            SourceEvent::Changed {
                apply,
                delete,
                origin,
                change_time,
                service,
                received,
                stamp,
                deleted: false,
            }
        }
        Ok(Event::Delete(object)) => {
            let received = Instant::now();
            let service = object.metadata.name.clone().unwrap_or_default();
            let origin = origin_of(&object);
            let stamp = ObjectStamp::of(&object.metadata);
            times.deleted(&object.metadata);
            let gone = Endpoints {
                metadata: object.metadata.clone(),
                ..Endpoints::default()
            };
            let delete = adapter.delete(&gone);
            SourceEvent::Changed {
                apply: Vec::new(),
                delete,
                origin,
                change_time: None,
                service,
                received,
                stamp,
                deleted: true,
            }
        }
    });
    Box::pin(stream)
}

/// Where instances come from.
pub enum Source {
    /// The Kubernetes API, watching `kind`.
    Kubernetes {
        client: kube::Client,
        kind: WatchKind,
    },
    /// Only what arrives as [`Input::Static`].
    Static,
}

impl Source {
    /// A fresh event stream: for Kubernetes, a new watcher that starts with a list.
    fn events(&self, target: &WatchTarget) -> SourceStream {
        match self {
            Source::Kubernetes {
                client,
                kind: WatchKind::EndpointSlices,
            } => slice_events(client.clone(), target),
            Source::Kubernetes {
                client,
                kind: WatchKind::Endpoints,
            } => endpoints_events(client.clone(), target),
            Source::Static => Box::pin(futures::stream::pending()),
        }
    }

    /// The watched objects as a fresh list sees them (metadata only), for the
    /// consistency check; `None` for a source with nothing to check.
    fn list_stamps(
        &self,
        target: &WatchTarget,
    ) -> Option<futures::future::BoxFuture<'static, Result<Vec<ObjectStamp>, kube::Error>>> {
        let Source::Kubernetes { client, kind } = self else {
            return None;
        };
        let (resource, params) = match kind {
            WatchKind::EndpointSlices => (
                ApiResource::erase::<EndpointSlice>(&()),
                ListParams::default().labels(&target.label_selector()),
            ),
            WatchKind::Endpoints => (ApiResource::erase::<Endpoints>(&()), ListParams::default()),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &target.namespace, &resource);
        let services = target.services.clone();
        let kind = *kind;
        Some(Box::pin(async move {
            let list = api.list_metadata(&params).await?;
            Ok(list
                .items
                .iter()
                .filter(|o| {
                    kind == WatchKind::EndpointSlices
                        || o.metadata
                            .name
                            .as_ref()
                            .is_some_and(|n| services.contains(n))
                })
                .map(|o| ObjectStamp::of(&o.metadata))
                .collect())
        }))
    }
}

/// How long the watch waits before listing again after an error: jittered exponential
/// backoff from `min` up to `max`, reset by every complete list.
#[derive(Clone, Copy, Debug)]
pub struct WatchBackoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(800),
            max: Duration::from_secs(30),
        }
    }
}

impl WatchBackoff {
    fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// The event id prefix of a change: the watch event's resourceVersion, the same on every
/// replica, followed by the digest of this replica's own inputs when it has any (so a
/// replica whose probes or metadata differ never honours another's id).
fn change_origin(resource_version: &str, overlay: Option<u32>) -> String {
    match overlay {
        None => resource_version.to_owned(),
        Some(digest) => format!("{resource_version}_{digest:08x}"),
    }
}

/// How the discovery loop builds its index and keeps its watch honest.
#[derive(Clone, Debug, Default)]
pub struct DiscoverySettings {
    pub index: IndexConfig,
    pub backoff: WatchBackoff,
    pub consistency: ConsistencyCheck,
}

/// What woke the discovery loop.
enum Wake {
    Shutdown,
    Input(Option<Input>),
    Restart,
    Event(Option<SourceEvent>),
    CheckDue,
    Checked(Result<Vec<ObjectStamp>, kube::Error>),
}

/// Runs discovery until `shutdown` resolves: the source's events and the `inputs` feed
/// one index, whose deltas are published to the hub. Kubernetes errors never end the
/// loop: after any watch error the watch is dropped and, after a jittered exponential
/// backoff, started again with a fresh list, which confirms the view against the API
/// (a watch resumed from an old resourceVersion cannot: a quiet cluster sends nothing,
/// and an API server with another history may accept the version and skip everything
/// up to it). The list is swapped in whole, so only the net change is published.
pub async fn run_discovery(
    source: Source,
    target: WatchTarget,
    settings: DiscoverySettings,
    hub: Arc<Hub>,
    mut inputs: tokio::sync::mpsc::Receiver<Input>,
    shutdown: impl Future<Output = ()>,
) {
    let DiscoverySettings {
        index: index_config,
        backoff,
        consistency,
    } = settings;
    let mut events: Option<SourceStream> = Some(source.events(&target));
    let mut restart_at: Option<tokio::time::Instant> = None;
    let mut delays = backoff.delays();
    let mut known = KnownObjects::default();
    let mut check_at = tokio::time::Instant::now() + consistency.interval;
    let mut check: Option<futures::future::BoxFuture<'static, _>> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut index = EndpointIndex::new(index_config);
    let mut failing = false;
    let mut inputs_open = true;
    // Re-lists have no resourceVersion in kube-runtime's events: their deltas get a
    // process-local origin, which another replica cannot resume from (it resets).
    let boot: u32 = rand::random();
    let mut lists = 0u64;
    let mut static_names = MetadataMap::default();
    let mut file_metadata = MetadataMap::default();
    metrics::gauge!(m::WATCH_READY).set(0.0);
    info!(namespace = %target.namespace, services = ?target.services, "discovery starting");
    loop {
        let wake = tokio::select! {
            _ = &mut shutdown => Wake::Shutdown,
            input = inputs.recv(), if inputs_open => Wake::Input(input),
            _ = async { tokio::time::sleep_until(restart_at.unwrap_or_else(tokio::time::Instant::now)).await },
                if restart_at.is_some() => Wake::Restart,
            event = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => Wake::Event(event),
            _ = tokio::time::sleep_until(check_at), if check.is_none() && events.is_some() => Wake::CheckDue,
            listed = async { check.as_mut().expect("guarded").await }, if check.is_some() => Wake::Checked(listed),
        };
        let event = match wake {
            Wake::Shutdown => break,
            Wake::Restart => {
                restart_at = None;
                events = Some(source.events(&target));
                continue;
            }
            Wake::Input(None) => {
                inputs_open = false;
                continue;
            }
            Wake::Input(Some(Input::Metadata(metadata))) => {
                file_metadata = metadata;
                let merged = merge_metadata(&static_names, &file_metadata);
                let outcome = index.set_metadata(merged, Utc::now());
                lists += 1;
                publish(&hub, outcome, &format!("meta-{boot:08x}-{lists}"), None);
                continue;
            }
            Wake::Input(Some(Input::Probe { key, probe })) => {
                let outcome = index.set_probe(&key, probe, Utc::now());
                if !outcome.deltas.is_empty() {
                    lists += 1;
                    publish(&hub, outcome, &format!("probe-{boot:08x}-{lists}"), None);
                }
                continue;
            }
            Wake::Input(Some(Input::Static(instances))) => {
                let instances = *instances;
                static_names = instances.names;
                let now = Utc::now();
                // Names first (an entry whose name alone changed is an update), then the
                // instances themselves.
                let mut outcome =
                    index.set_metadata(merge_metadata(&static_names, &file_metadata), now);
                index.begin_relist();
                index.relist_apply(instances.slice);
                let listed = index.finish_relist(now);
                outcome.deltas.extend(listed.deltas);
                outcome.anomalies.extend(listed.anomalies);
                lists += 1;
                info!(
                    instances = index.instances().len(),
                    "static instances loaded"
                );
                publish(&hub, outcome, &format!("static-{boot:08x}-{lists}"), None);
                hub.mark_ready(Utc::now());
                metrics::gauge!(m::WATCH_READY).set(1.0);
                continue;
            }
            Wake::Event(None) => {
                // A source stream never ends by itself; start it again if it does.
                events = None;
                restart_at =
                    Some(tokio::time::Instant::now() + delays.next().unwrap_or(backoff.max));
                continue;
            }
            Wake::CheckDue => {
                check = source.list_stamps(&target);
                check_at = tokio::time::Instant::now() + consistency.interval;
                continue;
            }
            Wake::Checked(listed) => {
                check = None;
                let listed = match listed {
                    Ok(listed) if !known.listing() && events.is_some() => listed,
                    Ok(_) => continue,
                    Err(error) => {
                        debug!(error = %printable(&error.to_string()), "consistency check: the list failed; the watch will tell");
                        continue;
                    }
                };
                match known.check(listed) {
                    None if known.has_suspect() => {
                        check_at = tokio::time::Instant::now() + consistency.recheck;
                        continue;
                    }
                    None => continue,
                    Some(differences) => {
                        let sample: Vec<String> = differences
                            .iter()
                            .take(3)
                            .map(|(watched, listed)| {
                                format!("watched {watched:?}, listed {listed:?}")
                            })
                            .collect();
                        SourceEvent::Failed(
                            "inconsistent",
                            format!(
                                "{} objects differ from a fresh list (the API server's history is not the one the watch resumed in?), e.g. {}",
                                differences.len(),
                                sample.join("; ")
                            ),
                        )
                    }
                }
            }
            Wake::Event(Some(event)) => event,
        };
        if let SourceEvent::Failed(reason, error) = &event {
            let delay = delays.next().unwrap_or(backoff.max);
            warn!(namespace = %target.namespace, services = ?target.services, reason,
                  error = %printable(&error.to_string()), retry_in = ?delay,
                  "watch error; listing again after a backoff");
            metrics::counter!(m::WATCH_ERRORS, "reason" => *reason).increment(1);
            failing = true;
            hub.mark_unsynced();
            events = None;
            check = None;
            restart_at = Some(tokio::time::Instant::now() + delay);
            continue;
        }
        match event {
            SourceEvent::Failed(..) => {}
            SourceEvent::Init => {
                info!(namespace = %target.namespace, "listing");
                index.begin_relist();
                known.begin_list();
            }
            SourceEvent::Listed { slices, stamp } => {
                if index.relisting() {
                    for slice in slices {
                        index.relist_apply(slice);
                    }
                }
                if let Some(stamp) = stamp {
                    known.listed(stamp);
                }
            }
            SourceEvent::InitDone => {
                known.finish_list();
                check_at = tokio::time::Instant::now() + consistency.interval;
                let outcome = index.finish_relist(Utc::now());
                info!(namespace = %target.namespace, deltas = outcome.deltas.len(),
                      instances = index.instances().len(), "list complete");
                if failing {
                    info!(namespace = %target.namespace, "watch recovered");
                    failing = false;
                }
                if index.instances().is_empty() {
                    info!(namespace = %target.namespace, services = ?target.services,
                          "no endpoints found for the watched services (yet)");
                }
                lists += 1;
                publish(&hub, outcome, &format!("list-{boot:08x}-{lists}"), None);
                hub.mark_ready(Utc::now());
                delays = backoff.delays();
                metrics::counter!(m::WATCH_RELISTS).increment(1);
                metrics::gauge!(m::WATCH_READY).set(1.0);
            }
            SourceEvent::Changed {
                apply,
                delete,
                origin,
                change_time,
                service,
                received,
                stamp,
                deleted,
            } => {
                if deleted {
                    known.deleted(&stamp.name);
                } else {
                    known.applied(stamp);
                }
                let now = Utc::now();
                let mut outcome = Outcome::default();
                for slice in &delete {
                    let o = index.delete(slice, now);
                    outcome.deltas.extend(o.deltas);
                    outcome.anomalies.extend(o.anomalies);
                }
                for slice in &apply {
                    let o = index.apply(slice, now);
                    outcome.deltas.extend(o.deltas);
                    outcome.anomalies.extend(o.anomalies);
                }
                if let Ok(resource_version) = origin.parse::<u64>() {
                    if hub.observe_resource_version(resource_version) {
                        warn!(namespace = %target.namespace, resource_version,
                              "the API server's resourceVersion went back: another history; resetting every subscriber");
                    }
                }
                let origin = change_origin(&origin, index.overlay_digest());
                publish(&hub, outcome, &origin, change_time);
                hub.confirm(now);
                metrics::histogram!(m::RECEIPT_TO_PUBLISHED, "service" => service)
                    .record(received.elapsed().as_secs_f64());
            }
        }
    }
    info!(namespace = %target.namespace, "discovery stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_service_selects_by_equality_several_by_set() {
        let one = WatchTarget {
            namespace: "loco".into(),
            services: vec!["emu".into()],
        };
        assert_eq!(one.label_selector(), "kubernetes.io/service-name=emu");
        let two = WatchTarget {
            namespace: "loco".into(),
            services: vec!["emu".into(), "web".into()],
        };
        assert_eq!(
            two.label_selector(),
            "kubernetes.io/service-name in (emu,web)"
        );
    }

    #[test]
    fn watch_errors_map_to_bounded_reasons() {
        let status = |code| {
            Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            })
        };
        assert_eq!(
            error_reason(&watcher::Error::WatchError(status(410))),
            "gone_410"
        );
        assert_eq!(
            error_reason(&watcher::Error::InitialListFailed(kube::Error::Api(
                status(503)
            ))),
            "http_5xx"
        );
        assert_eq!(
            error_reason(&watcher::Error::WatchStartFailed(kube::Error::Api(status(
                403
            )))),
            "http_4xx"
        );
        assert_eq!(error_reason(&watcher::Error::NoResourceVersion), "decode");
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use loco_discovery_core::index::AnomalyReason;
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs through the gateway's human log format.
    fn logged(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str = "x\n2026-11-29T00:00:00Z ERROR forged: admin logged in";

    #[test]
    fn a_hostile_name_from_the_cluster_logs_as_one_line() {
        let out = logged(|| {
            report_anomalies(&[Anomaly {
                reason: AnomalyReason::DuplicateEndpoint,
                namespace: FORGED.into(),
                slice: FORGED.into(),
                detail: format!("endpoint {FORGED} listed twice"),
            }]);
            let target = WatchTarget {
                namespace: "loco".into(),
                services: vec![],
            };
            report_undecodable(FORGED, &target, FORGED);
        });
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains("\n2026-11-29T00:00:00Z ERROR"), "{out}");
        assert!(
            out.contains("x\\n2026-11-29T00:00:00Z ERROR forged"),
            "{out}"
        );
    }
}
