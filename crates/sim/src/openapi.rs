//! The OpenAPI v3 documents of the two served group versions, and the schemas behind them.
//!
//! kubectl 1.30 and later read `/openapi/v3` before `create`, `replace`, `apply` and `diff`
//! (unless run with `--validate=false`): a PATCH operation that lists the `fieldValidation`
//! parameter tells it the server validates fields itself, so it sends
//! `fieldValidation=Strict` instead of validating on its own. `apply` also computes its
//! strategic merge patch from these schemas. kubectl 1.27 `apply` requires
//! `/openapi/v2` (protobuf) instead, and fails on a 404: it gets a valid document that
//! describes no resource, so it validates nothing itself and merges with the types
//! compiled into it. The same schemas tell the strategic merge patch and server-side apply
//! here how each list merges (`x-kubernetes-patch-strategy`, `x-kubernetes-list-type`).
//!
//! The schemas are those the API server publishes for EndpointSlice, Endpoints and the
//! metadata they share, without their descriptions.

use super::store::ResourceKind;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

const SCHEMA_PREFIX: &str = "#/components/schemas/";

fn schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        serde_json::from_str(include_str!("openapi/schemas.json")).expect("valid schemas")
    })
}

/// The schema name of a kind's objects.
fn root_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::EndpointSlice => "io.k8s.api.discovery.v1.EndpointSlice",
        ResourceKind::Endpoints => "io.k8s.api.core.v1.Endpoints",
    }
}

/// A position in a kind's schema; `None` inside it means "no schema known here" (anything
/// goes, and lists are atomic).
#[derive(Clone, Copy, Debug)]
pub struct Schema(Option<&'static Value>);

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListMerge {
    /// Replaced as a whole (`atomic`, or no strategy).
    Atomic,
    /// A set of scalars, merged by value (`x-kubernetes-list-type: set`).
    Set,
    /// Elements merged by these keys (`x-kubernetes-list-type: map`).
    Map(Vec<String>),
}

impl Schema {
    /// The schema of a kind's objects.
    pub fn of(kind: ResourceKind) -> Schema {
        Schema(schemas().get(root_name(kind))).resolved()
    }

    fn resolved(self) -> Schema {
        let mut at = self.0;
        while let Some(reference) = at.and_then(|s| s.get("$ref")).and_then(Value::as_str) {
            at = reference
                .strip_prefix(SCHEMA_PREFIX)
                .and_then(|name| schemas().get(name));
        }
        Schema(at)
    }

    /// The schema of field `name` of an object (or of any value of a map).
    pub fn field(self, name: &str) -> Schema {
        let Some(schema) = self.0 else {
            return Schema(None);
        };
        let field = schema
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| schema.get("additionalProperties").filter(|v| v.is_object()));
        Schema(field).resolved()
    }

    /// The schema of a list's elements.
    pub fn items(self) -> Schema {
        Schema(self.0.and_then(|s| s.get("items"))).resolved()
    }

    fn extension(self, name: &str) -> Option<&'static Value> {
        self.0.and_then(|s| s.get(name))
    }

    /// Whether a schema is known here.
    pub fn is_known(self) -> bool {
        self.0.is_some()
    }

    /// The JSON type of values here (`object`, `array`, `string`, `integer`, `boolean`), if
    /// the schema says.
    pub fn json_type(self) -> Option<&'static str> {
        self.extension("type").and_then(Value::as_str)
    }

    /// Whether an object here lists its fields (a struct, not a free-form map).
    pub fn has_fields(self) -> bool {
        self.extension("properties").is_some()
    }

    /// The fields listed here, sorted.
    #[cfg(test)]
    pub fn field_names(self) -> Vec<&'static str> {
        self.extension("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether field `name` is one of the fields listed here.
    pub fn declares(self, name: &str) -> bool {
        self.extension("properties")
            .is_some_and(|p| p.get(name).is_some())
    }

    /// Whether this is a map with arbitrary keys (labels, annotations).
    pub fn is_free_map(self) -> bool {
        self.0.is_some_and(|s| {
            s.get("additionalProperties").is_some() && s.get("properties").is_none()
        })
    }

    /// How a list at this position merges in server-side apply (`x-kubernetes-list-type`).
    pub fn list_type(self) -> ListMerge {
        match self
            .extension("x-kubernetes-list-type")
            .and_then(Value::as_str)
        {
            Some("set") => ListMerge::Set,
            Some("map") => ListMerge::Map(
                self.extension("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListMerge::Atomic,
        }
    }

    /// How a list at this position merges in a strategic merge patch
    /// (`x-kubernetes-patch-strategy: merge`, with `x-kubernetes-patch-merge-key` for
    /// lists of objects).
    pub fn patch_merge(self) -> ListMerge {
        let merge = self
            .extension("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .is_some_and(|s| s.split(',').any(|p| p == "merge"));
        if !merge {
            return ListMerge::Atomic;
        }
        match self
            .extension("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
        {
            Some(key) => ListMerge::Map(vec![key.to_owned()]),
            None => ListMerge::Set,
        }
    }
}

/// The group versions served, as `/openapi/v3` names them, with their kind.
fn group_versions() -> [(&'static str, ResourceKind); 2] {
    [
        ("api/v1", ResourceKind::Endpoints),
        ("apis/discovery.k8s.io/v1", ResourceKind::EndpointSlice),
    ]
}

/// A short stable hash of a document, for its `serverRelativeURL`.
fn content_hash(doc: &Value) -> String {
    let text = doc.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016X}")
}

/// `GET /openapi/v3`: where each group version's document is.
pub fn root() -> Value {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|(path, kind)| {
            let url = format!("/openapi/v3/{path}?hash={}", content_hash(&document(kind)));
            (path.to_owned(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<group version>`, if it is one of the served ones.
pub fn group_version(path: &str) -> Option<Value> {
    group_versions()
        .into_iter()
        .find(|(p, _)| *p == path)
        .map(|(_, kind)| document(kind))
}

/// The media type of the protobuf OpenAPI v2 document.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `GET /openapi/v2`: a Swagger 2.0 document with no paths and no definitions, as JSON or,
/// when `protobuf`, as the gnostic `openapi_v2.Document` message kubectl decodes.
pub fn v2(protobuf: bool) -> Vec<u8> {
    const TITLE: &str = "Kubernetes";
    const VERSION: &str = "v1.30.0";
    if !protobuf {
        let doc =
            json!({"swagger": "2.0", "info": {"title": TITLE, "version": VERSION}, "paths": {}});
        return doc.to_string().into_bytes();
    }
    use super::protobuf::delimited;
    // Document { swagger = 1; info = 2 { title = 1 }; paths = 8 {} }
    let info = delimited(1, TITLE.as_bytes());
    [delimited(1, b"2.0"), delimited(2, &info), delimited(8, &[])].concat()
}

fn query_parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn document(kind: ResourceKind) -> Value {
    let gvk = json!({"group": kind.group(), "version": "v1", "kind": kind.kind()});
    let object = json!({"$ref": format!("{SCHEMA_PREFIX}{}", root_name(kind))});
    let ok = |schema: &Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
    let operation = |action: &str, verb: &str, query: &[&str]| {
        json!({
            "operationId": format!("{verb}{}", kind.kind()),
            "parameters": query.iter().map(|q| query_parameter(q)).collect::<Vec<_>>(),
            "responses": ok(&object),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    let writes = ["dryRun", "fieldManager", "fieldValidation"];
    let patch_types = [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ];
    let patch_body: Map<String, Value> = patch_types
        .iter()
        .map(|t| {
            let schema = json!({"$ref": format!("{SCHEMA_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.Patch")});
            (t.to_string(), json!({ "schema": schema }))
        })
        .collect();
    let mut patch = operation(
        "patch",
        "patchNamespaced",
        &["dryRun", "fieldManager", "fieldValidation", "force"],
    );
    patch["requestBody"] = json!({"content": patch_body, "required": true});
    let mut create = operation("post", "createNamespaced", &writes);
    create["requestBody"] =
        json!({"content": {"application/json": {"schema": object}}, "required": true});
    let mut replace = operation("put", "replaceNamespaced", &writes);
    replace["requestBody"] =
        json!({"content": {"application/json": {"schema": object}}, "required": true});
    let prefix = match kind.group() {
        "" => "/api/v1".to_owned(),
        group => format!("/apis/{group}/v1"),
    };
    let plural = kind.plural();
    let paths = json!({
        format!("{prefix}/namespaces/{{namespace}}/{plural}"): {
            "get": operation("list", "listNamespaced", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
            "post": create,
            "parameters": [path_parameter("namespace")],
        },
        format!("{prefix}/namespaces/{{namespace}}/{plural}/{{name}}"): {
            "get": operation("get", "readNamespaced", &[]),
            "put": replace,
            "patch": patch,
            "delete": operation("delete", "deleteNamespaced", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            "parameters": [path_parameter("name"), path_parameter("namespace")],
        },
        format!("{prefix}/{plural}"): {
            "get": operation("list", "listForAllNamespaces", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
        },
    });
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.30.0"},
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_points_at_each_group_version_document() {
        let root = root();
        for (path, _) in group_versions() {
            let url = root["paths"][path]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{path}?hash=")),
                "{url}"
            );
            assert!(group_version(path).is_some());
        }
        assert!(group_version("apis/apps/v1").is_none());
    }

    #[test]
    fn each_kind_documents_field_validation_on_its_patch_operation() {
        // kubectl 1.30+ leave validation to the server (and send fieldValidation=Strict)
        // when the PATCH operation of the object's kind lists the parameter.
        for (path, kind) in group_versions() {
            let doc = group_version(path).unwrap();
            let prefix = match kind.group() {
                "" => "/api/v1".to_owned(),
                group => format!("/apis/{group}/v1"),
            };
            let item = format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                kind.plural()
            );
            let patch = &doc["paths"][item.as_str()]["patch"];
            assert_eq!(
                patch["x-kubernetes-group-version-kind"]["kind"],
                kind.kind()
            );
            assert!(patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            assert!(patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some());
        }
    }

    #[test]
    fn the_schema_says_what_is_declared_and_of_which_type() {
        let slice = Schema::of(ResourceKind::EndpointSlice);
        assert!(slice.has_fields() && slice.declares("endpoints") && !slice.declares("topology"));
        assert_eq!(slice.field("endpoints").json_type(), Some("array"));
        let endpoint = slice.field("endpoints").items();
        assert_eq!(
            endpoint.field("conditions").field("ready").json_type(),
            Some("boolean")
        );
        assert_eq!(
            slice.field("ports").items().field("port").json_type(),
            Some("integer")
        );
        assert!(!slice.field("topology").is_known());
    }

    #[test]
    fn every_reference_resolves() {
        let text = serde_json::to_string(schemas()).unwrap();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference.split('"').next().unwrap();
            let name = name.strip_prefix(SCHEMA_PREFIX).unwrap();
            assert!(schemas().contains_key(name), "{name}");
        }
    }

    #[test]
    fn list_strategies_come_from_the_schema() {
        let slice = Schema::of(ResourceKind::EndpointSlice);
        assert_eq!(slice.field("endpoints").list_type(), ListMerge::Atomic);
        assert_eq!(slice.field("endpoints").patch_merge(), ListMerge::Atomic);
        let meta = slice.field("metadata");
        assert_eq!(meta.field("finalizers").patch_merge(), ListMerge::Set);
        assert_eq!(
            meta.field("ownerReferences").patch_merge(),
            ListMerge::Map(vec!["uid".into()])
        );
        assert!(meta.field("labels").is_free_map());
        assert!(meta.field("labels").field("app").0.is_some());
        let endpoints = Schema::of(ResourceKind::Endpoints);
        assert_eq!(endpoints.field("subsets").list_type(), ListMerge::Atomic);
        assert!(endpoints.field("nope").0.is_none());
    }
}
