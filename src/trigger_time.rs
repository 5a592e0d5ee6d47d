//! Change → gateway latency from the `endpoints.kubernetes.io/last-change-trigger-time`
//! annotation, measured only when the annotation moved with the event.
//!
//! The EndpointSlice (and Endpoints) controller writes the annotation when a Pod or
//! Service change makes it rewrite the object; every other writer (a label or annotation
//! change by kubectl, a re-list) keeps the old value, and a latency computed from it would
//! be the age of the object. So an event is measured only when its annotation differs from
//! the one the gateway last saw on the same object and is not older than it; an object
//! seen for the first time in a watch (ADDED) is measured, one that arrives in a list is
//! not. Every event not measured is counted with its reason.

use crate::metrics as m;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use tracing::debug;

/// The annotation the EndpointSlice controller stamps with the time of the Pod or Service
/// change that caused the write.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Why an event's trigger time was not measured (the `reason` label of
/// `loco_discovery_trigger_time_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The object has no trigger-time annotation.
    Missing,
    /// The annotation is not an RFC 3339 time.
    Unparsable,
    /// The annotation is the one the previous version of the object carried: another
    /// writer changed the object.
    Unchanged,
    /// The annotation is older than the one seen before.
    Older,
    /// The object came in a (re-)list, not as a change.
    Relist,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Missing => "missing",
            Skip::Unparsable => "unparsable",
            Skip::Unchanged => "unchanged",
            Skip::Older => "older",
            Skip::Relist => "relist",
        }
    }
}

/// What to do with one event's annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The change happened at this time: measure it and carry it on the deltas.
    Measure(DateTime<Utc>),
    Skip(Skip),
}

/// The latest trigger time seen on each object, by namespace and name.
#[derive(Debug, Default)]
pub struct TriggerTimes {
    seen: HashMap<(String, String), DateTime<Utc>>,
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn annotation(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)
        .map(String::as_str)
}

fn parse(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl TriggerTimes {
    /// A list starts: what was seen before no longer counts.
    pub fn relist(&mut self) {
        self.seen.clear();
    }

    /// An object that came in a list: remembered, never measured.
    pub fn listed(&mut self, meta: &ObjectMeta) -> Judgement {
        if let Some(time) = annotation(meta).and_then(parse) {
            self.seen.insert(key(meta), time);
        }
        Judgement::Skip(Skip::Relist)
    }

    /// An added or modified object, judged against the version of it seen before.
    pub fn changed(&mut self, meta: &ObjectMeta) -> Judgement {
        let Some(raw) = annotation(meta) else {
            return Judgement::Skip(Skip::Missing);
        };
        let Some(time) = parse(raw) else {
            return Judgement::Skip(Skip::Unparsable);
        };
        match self.seen.get(&key(meta)) {
            Some(previous) if time == *previous => Judgement::Skip(Skip::Unchanged),
            Some(previous) if time < *previous => Judgement::Skip(Skip::Older),
            _ => {
                self.seen.insert(key(meta), time);
                Judgement::Measure(time)
            }
        }
    }

    /// A deleted object: a new object of the same name starts afresh.
    pub fn deleted(&mut self, meta: &ObjectMeta) {
        self.seen.remove(&key(meta));
    }
}

/// Records a judgement in the metrics: the change → gateway latency of a measured event
/// (received at `received`), or the reason it was skipped. Returns the change time to put
/// on the event's deltas.
pub fn record(
    judgement: Judgement,
    service: &str,
    received: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match judgement {
        Judgement::Measure(time) => {
            let seconds = (received - time).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            metrics::histogram!(m::CHANGE_TO_GATEWAY, "service" => service.to_owned())
                .record(seconds);
            Some(time)
        }
        Judgement::Skip(reason) => {
            debug!(
                service = %loco_discovery_core::text::printable(service),
                reason = reason.as_str(),
                "trigger time not measured"
            );
            metrics::counter!(m::TRIGGER_TIME_SKIPPED, "reason" => reason.as_str()).increment(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(name: &str, trigger: Option<&str>, label: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("loco".into()),
            labels: Some(BTreeMap::from([("x".to_owned(), label.to_owned())])),
            annotations: trigger
                .map(|t| BTreeMap::from([(TRIGGER_TIME_ANNOTATION.to_owned(), t.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    fn at(raw: &str) -> Judgement {
        Judgement::Measure(parse(raw).unwrap())
    }

    const OLD: &str = "2023-06-30T19:41:27Z";
    const NEW: &str = "2023-06-30T19:41:28.5Z";

    #[test]
    fn a_new_trigger_time_is_measured_and_an_unchanged_one_is_not() {
        let mut times = TriggerTimes::default();
        assert_eq!(times.changed(&meta("a", Some(OLD), "1")), at(OLD));
        assert_eq!(
            times.changed(&meta("a", Some(OLD), "2")),
            Judgement::Skip(Skip::Unchanged),
            "a label-only update keeps the annotation"
        );
        assert_eq!(
            times.changed(&meta("a", Some("2023-06-30T21:41:27+02:00"), "3")),
            Judgement::Skip(Skip::Unchanged),
            "the same instant written another way"
        );
        assert_eq!(times.changed(&meta("a", Some(NEW), "3")), at(NEW));
        assert_eq!(
            times.changed(&meta("a", Some(OLD), "3")),
            Judgement::Skip(Skip::Older)
        );
        assert_eq!(
            times.changed(&meta("a", Some(NEW), "3")),
            Judgement::Skip(Skip::Unchanged),
            "an older value in between does not make the newest one new again"
        );
    }

    #[test]
    fn a_listed_object_is_not_measured_and_its_next_unchanged_update_neither() {
        let mut times = TriggerTimes::default();
        assert_eq!(
            times.listed(&meta("a", Some(OLD), "1")),
            Judgement::Skip(Skip::Relist)
        );
        assert_eq!(
            times.changed(&meta("a", Some(OLD), "2")),
            Judgement::Skip(Skip::Unchanged)
        );
        assert_eq!(times.changed(&meta("a", Some(NEW), "2")), at(NEW));
        times.relist();
        assert_eq!(times.changed(&meta("a", Some(NEW), "2")), at(NEW));
    }

    #[test]
    fn missing_and_unparsable_annotations_are_not_measured() {
        let mut times = TriggerTimes::default();
        times.listed(&meta("a", Some(OLD), "1"));
        assert_eq!(
            times.changed(&meta("a", None, "1")),
            Judgement::Skip(Skip::Missing)
        );
        assert_eq!(
            times.changed(&meta("a", Some("yesterday"), "1")),
            Judgement::Skip(Skip::Unparsable)
        );
        assert_eq!(
            times.changed(&meta("a", Some(OLD), "1")),
            Judgement::Skip(Skip::Unchanged),
            "a removed and restored annotation is still the old one"
        );
    }

    #[test]
    fn objects_are_told_apart_and_a_deleted_one_starts_afresh() {
        let mut times = TriggerTimes::default();
        assert_eq!(times.changed(&meta("a", Some(OLD), "1")), at(OLD));
        assert_eq!(times.changed(&meta("b", Some(OLD), "1")), at(OLD));
        times.deleted(&meta("a", Some(OLD), "1"));
        assert_eq!(times.changed(&meta("a", Some(OLD), "1")), at(OLD));
    }
}
