//! The simulated API refuses what the real API server refuses, with its status codes and
//! `Status` bodies: writes into missing namespaces, creates that state a resourceVersion,
//! replaces naming another object's uid.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::SimCluster;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces";

struct Answer {
    code: u16,
    body: Value,
    warnings: Vec<String>,
}

async fn call(cluster: &SimCluster, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = reqwest::Client::new().request(method.clone(), cluster.url(path));
    if let Some(body) = body {
        let content_type = match method {
            Method::PATCH => "application/merge-patch+json",
            _ => "application/json",
        };
        request = request
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        code,
        body,
        warnings,
    }
}

fn slice(name: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "code": code});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

#[tokio::test]
async fn writes_need_a_namespace_that_exists_and_kubectl_can_create_one() {
    let cluster = SimCluster::start().await;
    let answer = call(
        &cluster,
        Method::POST,
        &format!("{SLICES}/net-test/endpointslices"),
        Some(slice("a")),
    )
    .await;
    assert_eq!(
        (answer.code, answer.body),
        (
            404,
            failure(
                404,
                "NotFound",
                "namespaces \"net-test\" not found",
                Some(json!({"name": "net-test", "kind": "namespaces"}))
            )
        )
    );
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "net-test", "creationTimestamp": null},
                           "spec": {}, "status": {}});
    let created = call(
        &cluster,
        Method::POST,
        "/api/v1/namespaces?fieldManager=kubectl-create&fieldValidation=Strict",
        Some(namespace.clone()),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert_eq!(created.body["status"]["phase"], "Active");
    let again = call(
        &cluster,
        Method::POST,
        "/api/v1/namespaces",
        Some(namespace),
    )
    .await;
    assert_eq!(
        (again.code, again.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let listed = call(&cluster, Method::GET, "/api/v1/namespaces", None).await;
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "loco",
            "net-test"
        ]
    );
    let path = format!("{SLICES}/net-test/endpointslices");
    assert_eq!(
        call(&cluster, Method::POST, &path, Some(slice("a")))
            .await
            .code,
        201
    );

    let deleted = call(
        &cluster,
        Method::DELETE,
        "/api/v1/namespaces/net-test",
        None,
    )
    .await;
    assert_eq!(deleted.code, 200);
    assert_eq!(deleted.body["status"]["phase"], "Terminating");
    let gone = call(&cluster, Method::GET, "/api/v1/namespaces/net-test", None).await;
    assert_eq!(gone.code, 404);
    assert_eq!(
        call(&cluster, Method::GET, &format!("{path}/a"), None)
            .await
            .code,
        404
    );
    let kept = call(&cluster, Method::DELETE, "/api/v1/namespaces/default", None).await;
    assert_eq!(
        (kept.code, kept.body),
        (
            403,
            failure(
                403,
                "Forbidden",
                "namespaces \"default\" is forbidden: this namespace may not be deleted",
                Some(json!({"name": "default", "kind": "namespaces"}))
            )
        )
    );
}

#[tokio::test]
async fn a_create_stating_a_resource_version_is_refused() {
    let cluster = SimCluster::start().await;
    let mut dumped = slice("a");
    dumped["metadata"]["resourceVersion"] = json!("48151");
    let answer = call(
        &cluster,
        Method::POST,
        &format!("{SLICES}/loco/endpointslices"),
        Some(dumped),
    )
    .await;
    assert_eq!(
        (answer.code, answer.body),
        (
            500,
            failure(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
                None
            )
        )
    );
}

#[tokio::test]
async fn a_replace_naming_another_uid_is_a_conflict() {
    let cluster = SimCluster::start().await;
    let path = format!("{SLICES}/loco/endpointslices");
    let created = call(&cluster, Method::POST, &path, Some(slice("a"))).await;
    let uid = created.body["metadata"]["uid"].as_str().unwrap().to_owned();
    let mut replacement = slice("a");
    replacement["metadata"]["uid"] = json!("6f9619ff-8b86-4011-b42d-00c04fc964ff");
    let answer = call(
        &cluster,
        Method::PUT,
        &format!("{path}/a"),
        Some(replacement),
    )
    .await;
    let message = format!(
        "Operation cannot be fulfilled on endpointslices.discovery.k8s.io \"a\": Precondition failed: \
         UID in precondition: 6f9619ff-8b86-4011-b42d-00c04fc964ff, UID in object meta: {uid}"
    );
    assert_eq!(
        (answer.code, answer.body),
        (
            409,
            failure(
                409,
                "Conflict",
                &message,
                Some(json!({"name": "a", "group": "discovery.k8s.io", "kind": "endpointslices"}))
            )
        )
    );
    assert!(answer.warnings.is_empty());
}
