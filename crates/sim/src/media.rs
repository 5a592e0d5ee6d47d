//! Content negotiation: which representation the `Accept` header asks for. Anything unrecognised (including no
//! header at all, as kube-rs sends) gets plain JSON.

use super::table::{IncludeObject, TableOptions};

/// How objects are written in a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves.
    Json,
    /// A `meta.k8s.io` Table (kubectl's table output).
    Table(TableOptions),
    /// `PartialObjectMetadata` / `PartialObjectMetadataList` of this `meta.k8s.io` API version.
    Metadata(&'static str),
}

fn meta_version(v: Option<&str>) -> Option<&'static str> {
    match v {
        Some("v1") => Some("meta.k8s.io/v1"),
        Some("v1beta1") => Some("meta.k8s.io/v1beta1"),
        _ => None,
    }
}

/// Picks the first media range of `accept` that the server can produce.
pub fn negotiate(accept: Option<&str>, include: IncludeObject) -> Representation {
    let Some(accept) = accept else {
        return Representation::Json;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let ty = parts.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(ty.as_str(), "application/json" | "*/*" | "application/*") {
            continue;
        }
        let (mut as_, mut g, mut v) = (None, None, None);
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(val.trim()),
                    "g" => g = Some(val.trim()),
                    "v" => v = Some(val.trim()),
                    _ => {}
                }
            }
        }
        match as_ {
            None => return Representation::Json,
            Some("Table") if g == Some("meta.k8s.io") => {
                if let Some(api_version) = meta_version(v) {
                    return Representation::Table(TableOptions {
                        api_version,
                        include,
                    });
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if g == Some("meta.k8s.io") =>
            {
                if let Some(api_version) = meta_version(v) {
                    return Representation::Metadata(api_version);
                }
            }
            _ => {}
        }
    }
    Representation::Json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_header_picks_table_v1() {
        let h = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(h), IncludeObject::Metadata),
            Representation::Table(TableOptions {
                api_version: "meta.k8s.io/v1",
                include: IncludeObject::Metadata
            })
        );
    }

    #[test]
    fn plain_and_missing_headers_give_json() {
        assert_eq!(
            negotiate(None, IncludeObject::Metadata),
            Representation::Json
        );
        assert_eq!(
            negotiate(Some("application/json, */*"), IncludeObject::Metadata),
            Representation::Json
        );
        assert_eq!(
            negotiate(
                Some("application/vnd.kubernetes.protobuf"),
                IncludeObject::Metadata
            ),
            Representation::Json
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=Table;v=v9;g=meta.k8s.io"),
                IncludeObject::Metadata
            ),
            Representation::Json
        );
    }

    #[test]
    fn metadata_only_requests() {
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                IncludeObject::Metadata
            ),
            Representation::Metadata("meta.k8s.io/v1")
        );
    }
}
