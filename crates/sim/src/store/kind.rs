//! The resources the simulated server serves and their names, groups and versions.

/// The resources the simulated server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `discovery.k8s.io/v1` `endpointslices`.
    EndpointSlice,
    /// core `v1` `endpoints`.
    Endpoints,
}

impl ResourceKind {
    /// Both kinds.
    pub const ALL: [ResourceKind; 2] = [ResourceKind::EndpointSlice, ResourceKind::Endpoints];

    /// The `kind` field of an object.
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::Endpoints => "Endpoints",
        }
    }

    /// The `kind` of a list.
    pub fn list_kind(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "EndpointSliceList",
            ResourceKind::Endpoints => "EndpointsList",
        }
    }

    /// The `apiVersion` field of an object.
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io/v1",
            ResourceKind::Endpoints => "v1",
        }
    }

    /// The API group, `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io",
            ResourceKind::Endpoints => "",
        }
    }

    /// The plural resource name used in URLs and in `details.kind` of most Status bodies.
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "endpointslices",
            ResourceKind::Endpoints => "endpoints",
        }
    }

    /// `endpointslices.discovery.k8s.io` or `endpoints`: the resource as error messages name it.
    pub fn qualified_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// `EndpointSlice.discovery.k8s.io` or `Endpoints`: the kind as Invalid messages name it.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_string(),
            g => format!("{}.{g}", self.kind()),
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            ResourceKind::EndpointSlice => 0,
            ResourceKind::Endpoints => 1,
        }
    }
}
