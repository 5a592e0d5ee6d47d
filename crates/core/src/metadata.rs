//! Instance display metadata: a JSON or YAML file (a mounted ConfigMap) mapping an ordinal
//! or a pod name to a display name, description and tags.
//!
//! A UI hint only: metadata never adds or removes instances and never supplies addresses.
//!
//! ```yaml
//! "0": {name: "Game Server", description: "Hosts the match", tags: [host]}
//! loco-loco-emulator-3: {name: "Player 3"}
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

/// Display hints for one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceMetadata {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Metadata by ordinal and by pod name; a pod-name entry wins over an ordinal entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataMap {
    pub by_ordinal: BTreeMap<u32, InstanceMetadata>,
    pub by_pod: BTreeMap<String, InstanceMetadata>,
}

/// Why a metadata file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("not a mapping of ordinal or pod name to {{name, description, tags}}: {0}")]
    Shape(String),
}

impl MetadataMap {
    /// Parses the file's text, JSON or YAML (JSON is YAML). An empty file is no metadata.
    pub fn parse(text: &str) -> Result<MetadataMap, MetadataError> {
        if text.trim().is_empty() {
            return Ok(MetadataMap::default());
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Document {
            Wrapped {
                instances: BTreeMap<String, InstanceMetadata>,
            },
            Plain(BTreeMap<String, InstanceMetadata>),
        }
        let document: Option<Document> =
            serde_saphyr::from_str(text).map_err(|e| MetadataError::Shape(e.to_string()))?;
        let entries = match document {
            None => BTreeMap::new(),
            Some(Document::Wrapped { instances }) => instances,
            Some(Document::Plain(map)) => map,
        };
        let mut map = MetadataMap::default();
        for (key, value) in entries {
            match key.parse::<u32>() {
                Ok(ordinal) => {
                    map.by_ordinal.insert(ordinal, value);
                }
                Err(_) => {
                    map.by_pod.insert(key, value);
                }
            }
        }
        Ok(map)
    }

    /// The metadata of a pod, by name first, then by ordinal.
    pub fn lookup(&self, pod: &str, ordinal: Option<u32>) -> Option<&InstanceMetadata> {
        self.by_pod
            .get(pod)
            .or_else(|| ordinal.and_then(|o| self.by_ordinal.get(&o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_by_ordinal_and_pod_name() {
        let json = r#"{"0": {"name": "Host", "tags": ["a"]}, "emu-3": {"description": "third"}}"#;
        let map = MetadataMap::parse(json).unwrap();
        assert_eq!(
            map.lookup("emu-0", Some(0)).unwrap().name.as_deref(),
            Some("Host")
        );
        assert_eq!(
            map.lookup("emu-3", Some(3)).unwrap().description.as_deref(),
            Some("third")
        );
        assert!(map.lookup("emu-4", Some(4)).is_none());
        let yaml = "instances:\n  \"1\": {name: One}\n  emu-1: {name: Pod One}\n";
        let map = MetadataMap::parse(yaml).unwrap();
        assert_eq!(
            map.lookup("emu-1", Some(1)).unwrap().name.as_deref(),
            Some("Pod One")
        );
        assert_eq!(
            map.lookup("other-1", Some(1)).unwrap().name.as_deref(),
            Some("One")
        );
    }

    #[test]
    fn empty_files_are_no_metadata_and_bad_shapes_are_errors() {
        assert_eq!(MetadataMap::parse("").unwrap(), MetadataMap::default());
        assert_eq!(MetadataMap::parse("{}").unwrap(), MetadataMap::default());
        assert!(MetadataMap::parse("[1, 2]").is_err());
        assert!(MetadataMap::parse(r#"{"0": {"address": "10.0.0.1"}}"#).is_err());
        assert!(MetadataMap::parse("{not yaml").is_err());
    }
}
