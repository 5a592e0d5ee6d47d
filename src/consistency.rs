//! A periodic check of the watched view against a fresh list of the API.
//!
//! A watch resumes from a resourceVersion, and resourceVersions mean something only
//! inside one API history. kube's client treats a watch response that ends mid-stream as
//! a normal end, so an API server killed and replaced behind the same address (restored
//! from a backup, or another cluster) is watched again from the old resourceVersion;
//! when the new server has already passed that number it accepts the watch, and every
//! change before it is silently missing. Nothing in the watch stream can tell. So the
//! gateway lists the objects' metadata (name, uid, resourceVersion) every so often and
//! compares them with what its watch delivered; a difference that is still there in the
//! next check, unchanged, cannot be a change in flight, and the view is listed again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

/// How an object was last seen: its identity and version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectStamp {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

impl ObjectStamp {
    pub fn of(metadata: &ObjectMeta) -> Self {
        Self {
            name: metadata.name.clone().unwrap_or_default(),
            uid: metadata.uid.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// How often the view is checked, and how long a difference may last before the next
/// check looks again.
#[derive(Clone, Copy, Debug)]
pub struct ConsistencyCheck {
    pub interval: Duration,
    pub recheck: Duration,
}

impl Default for ConsistencyCheck {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            recheck: Duration::from_secs(2),
        }
    }
}

/// One object on which the watch and the list disagree: the watch's stamp and the
/// list's (`None` where one of them does not have the object).
pub type Difference = (Option<ObjectStamp>, Option<ObjectStamp>);

/// The objects the watch has delivered, by name, with a list under way kept aside.
#[derive(Debug, Default)]
pub struct KnownObjects {
    current: BTreeMap<String, ObjectStamp>,
    listing: Option<BTreeMap<String, ObjectStamp>>,
    /// The difference the last check found; a check that finds it again re-lists.
    suspect: Option<Vec<Difference>>,
}

impl KnownObjects {
    pub fn begin_list(&mut self) {
        self.listing = Some(BTreeMap::new());
        self.suspect = None;
    }

    pub fn listed(&mut self, stamp: ObjectStamp) {
        self.listing
            .get_or_insert_with(BTreeMap::new)
            .insert(stamp.name.clone(), stamp);
    }

    pub fn finish_list(&mut self) {
        if let Some(listed) = self.listing.take() {
            self.current = listed;
        }
    }

    pub fn applied(&mut self, stamp: ObjectStamp) {
        self.current.insert(stamp.name.clone(), stamp);
    }

    pub fn deleted(&mut self, name: &str) {
        self.current.remove(name);
    }

    /// Whether a list is under way (a check then compares nothing).
    pub fn listing(&self) -> bool {
        self.listing.is_some()
    }

    /// Compares the watch's objects with a fresh list of `listed`. Returns the
    /// difference when it is exactly the one the previous check found (so it is not a
    /// change the watch has yet to deliver), and remembers what this check found.
    pub fn check(&mut self, mut listed: Vec<ObjectStamp>) -> Option<Vec<Difference>> {
        listed.sort();
        let mut differences = Vec::new();
        let mut listed_by_name: BTreeMap<&str, &ObjectStamp> =
            listed.iter().map(|s| (s.name.as_str(), s)).collect();
        for (name, known) in &self.current {
            match listed_by_name.remove(name.as_str()) {
                Some(fresh) if fresh == known => {}
                fresh => differences.push((Some(known.clone()), fresh.cloned())),
            }
        }
        differences.extend(
            listed_by_name
                .into_values()
                .map(|s| (None, Some(s.clone()))),
        );
        if differences.is_empty() {
            self.suspect = None;
            return None;
        }
        let persistent = self.suspect.as_ref() == Some(&differences);
        self.suspect = Some(differences.clone());
        persistent.then_some(differences)
    }

    /// Whether the last check left a difference to look at again soon.
    pub fn has_suspect(&self) -> bool {
        self.suspect.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(name: &str, uid: &str, rv: &str) -> ObjectStamp {
        ObjectStamp {
            name: name.into(),
            uid: uid.into(),
            resource_version: rv.into(),
        }
    }

    fn known(stamps: &[ObjectStamp]) -> KnownObjects {
        let mut k = KnownObjects::default();
        k.begin_list();
        for s in stamps {
            k.listed(s.clone());
        }
        k.finish_list();
        k
    }

    #[test]
    fn agreeing_views_are_consistent() {
        let mut k = known(&[stamp("a", "u1", "5"), stamp("b", "u2", "7")]);
        assert_eq!(
            k.check(vec![stamp("b", "u2", "7"), stamp("a", "u1", "5")]),
            None
        );
        assert!(!k.has_suspect());
    }

    #[test]
    fn a_change_in_flight_is_a_suspect_not_a_verdict() {
        let mut k = known(&[stamp("a", "u1", "5")]);
        assert_eq!(k.check(vec![stamp("a", "u1", "6")]), None);
        assert!(k.has_suspect());
        // The watch delivers it: the next check agrees.
        k.applied(stamp("a", "u1", "6"));
        assert_eq!(k.check(vec![stamp("a", "u1", "6")]), None);
        assert!(!k.has_suspect());
    }

    #[test]
    fn the_same_difference_twice_is_a_verdict() {
        // Another history: same name and version, another uid; and an object missed.
        let mut k = known(&[stamp("emu-a", "old", "2")]);
        let fresh = vec![stamp("emu-a", "new", "2"), stamp("emu-c", "new-c", "3")];
        assert_eq!(k.check(fresh.clone()), None);
        let verdict = k.check(fresh).expect("persistent");
        assert_eq!(verdict.len(), 2);
        assert_eq!(verdict[1], (None, Some(stamp("emu-c", "new-c", "3"))));
    }

    #[test]
    fn churn_that_differs_every_time_is_not_a_verdict() {
        let mut k = known(&[stamp("a", "u1", "5")]);
        assert_eq!(k.check(vec![stamp("a", "u1", "6")]), None);
        assert_eq!(k.check(vec![stamp("a", "u1", "7")]), None);
    }

    #[test]
    fn a_list_under_way_replaces_the_known_objects_at_its_end() {
        let mut k = known(&[stamp("a", "u1", "5")]);
        k.begin_list();
        k.listed(stamp("b", "u2", "9"));
        assert!(k.listing());
        k.finish_list();
        assert_eq!(k.check(vec![stamp("b", "u2", "9")]), None);
        k.deleted("b");
        assert_eq!(k.check(vec![]), None);
    }
}
