//! The OpenAPI v3 documents kubectl reads before a `create`, `replace` or `apply` with its
//! default `--validate=strict`: it looks for the `fieldValidation` query parameter on the
//! PATCH operation of the object's kind (`x-kubernetes-group-version-kind`) and, when the
//! server has it, leaves validation to the server and sends `fieldValidation=Strict`.
//!
//! Only the operations and parameters are described, no schemas: kubectl then computes
//! client-side patches from its built-in types, as it does without OpenAPI. Served at
//! `/openapi/v3` (the index) and `/openapi/v3/<api/v1 | apis/discovery.k8s.io/v1>`.

use super::store::ResourceKind;
use serde_json::{json, Map, Value};

/// The group-version paths documented, and the kinds under each.
const GROUP_VERSIONS: [(&str, ResourceKind); 2] = [
    ("api/v1", ResourceKind::Endpoints),
    ("apis/discovery.k8s.io/v1", ResourceKind::EndpointSlice),
];

/// A fixed hash: the documents never change while the server runs.
const HASH: &str = "6c6f636f2d73696d";

/// `GET /openapi/v3`: where each group-version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = GROUP_VERSIONS
        .iter()
        .map(|(gv, _)| {
            (
                gv.to_string(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={HASH}")}),
            )
        })
        .collect();
    json!({"paths": paths})
}

fn parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(kind: ResourceKind, action: &str, params: &[&str], bodies: &[&str]) -> Value {
    let mut op = json!({
        "operationId": format!("{action}{}", kind.kind()),
        "parameters": params.iter().map(|p| parameter(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": kind.group(), "version": "v1", "kind": kind.kind(),
        },
    });
    if !bodies.is_empty() {
        let content: Map<String, Value> = bodies
            .iter()
            .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// `GET /openapi/v3/<group-version>`: the create, replace and patch operations of the kind
/// served there, or `None` for a group-version the server does not serve.
pub fn group_version(path: &str) -> Option<Value> {
    let (gv, kind) = GROUP_VERSIONS.iter().find(|(gv, _)| *gv == path)?;
    let writes = ["dryRun", "fieldManager", "fieldValidation"];
    let collection = format!("/{gv}/namespaces/{{namespace}}/{}", kind.plural());
    let item = format!("{collection}/{{name}}");
    let json_body = ["application/json"];
    let patches = [
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.30.0"},
        "paths": {
            collection: {"post": operation(*kind, "post", &writes, &json_body)},
            item: {
                "put": operation(*kind, "put", &writes, &json_body),
                "patch": operation(*kind, "patch", &[&writes[..], &["force"]].concat(), &patches),
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_documents_field_validation_on_its_patch_operation() {
        let index = index();
        for (gv, kind) in GROUP_VERSIONS {
            let url = index["paths"][gv]["serverRelativeURL"].as_str().unwrap();
            let path = url
                .trim_start_matches("/openapi/v3/")
                .split('?')
                .next()
                .unwrap();
            let doc = group_version(path).unwrap();
            let item = format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", kind.plural());
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
                .is_none());
        }
        assert!(group_version("apis/apps/v1").is_none());
    }
}
