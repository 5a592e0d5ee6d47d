//! Which instances a client wants: the filter of `/live`, `/stream` and `/ws`, also the
//! key under which a serialized snapshot is shared (see [`crate::rendered`]).

use crate::model::{Instance, Status};

/// Which instances a client wants; an empty list means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub services: Vec<String>,
    pub statuses: Vec<Status>,
    pub zones: Vec<String>,
    /// Not a filter: list this zone's instances first (topology-aware clients).
    pub prefer_zone: Option<String>,
}

impl Filter {
    pub fn matches(&self, instance: &Instance) -> bool {
        self.matches_place(instance)
            && any_or(&self.statuses, &instance.status)
            && (self.zones.is_empty()
                || instance
                    .kubernetes
                    .zone
                    .as_ref()
                    .is_some_and(|z| self.zones.contains(z)))
    }

    /// The part of the filter an instance cannot leave without being removed: its
    /// namespace and service.
    pub fn matches_place(&self, instance: &Instance) -> bool {
        any_or(&self.namespaces, &instance.namespace) && any_or(&self.services, &instance.service)
    }

    /// Whether an instance can enter or leave the view without being added or removed
    /// (its status or zone changed), so a subscriber must track what it has shown.
    pub fn is_by_state(&self) -> bool {
        !self.statuses.is_empty() || !self.zones.is_empty()
    }
}

fn any_or<T: PartialEq>(wanted: &[T], value: &T) -> bool {
    wanted.is_empty() || wanted.contains(value)
}
