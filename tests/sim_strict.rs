//! The simulated API refuses what the real API server refuses, with its status codes and
//! `Status` bodies: writes into missing namespaces, creates that state a resourceVersion,
//! replaces naming another object's uid, unknown fields and values of the wrong type on every
//! kind of write (create, replace, JSON, merge and strategic merge patches, server-side
//! apply), dry runs included.

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
    let content_type = match method {
        Method::PATCH => "application/merge-patch+json",
        _ => "application/json",
    };
    call_as(cluster, method, path, content_type, body).await
}

async fn call_as(
    cluster: &SimCluster,
    method: Method,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method.clone(), cluster.url(path));
    if let Some(body) = body {
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

/// The answer is the Failure Status of `code` with `reason`, `message` and `details`.
fn assert_refused(answer: Answer, code: u16, reason: &str, message: &str, details: Option<Value>) {
    assert_eq!(
        (answer.code, answer.body),
        (code, failure(code, reason, message, details))
    );
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
    assert_refused(
        answer,
        404,
        "NotFound",
        "namespaces \"net-test\" not found",
        Some(json!({"name": "net-test", "kind": "namespaces"})),
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
    assert_refused(
        kept,
        403,
        "Forbidden",
        "namespaces \"default\" is forbidden: this namespace may not be deleted",
        Some(json!({"name": "default", "kind": "namespaces"})),
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
    assert_refused(
        answer,
        500,
        "",
        "resourceVersion should not be set on objects to be created",
        None,
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
    assert!(answer.warnings.is_empty());
    assert_refused(
        answer,
        409,
        "Conflict",
        &message,
        Some(json!({"name": "a", "group": "discovery.k8s.io", "kind": "endpointslices"})),
    );
}

/// A slice as an older or hand-written manifest has it: a `topology` field that no longer
/// exists and an endpoint-level `ready`.
fn with_unknown_fields(name: &str) -> Value {
    let mut body = slice(name);
    body["topology"] = json!({"kubernetes.io/hostname": "node-1"});
    body["endpoints"][0]["ready"] = json!(true);
    body
}

#[tokio::test]
async fn unknown_fields_are_pruned_refused_or_warned_about_as_field_validation_asks() {
    let cluster = SimCluster::start().await;
    let path = format!("{SLICES}/loco/endpointslices");
    let strict = call(
        &cluster,
        Method::POST,
        &format!("{path}?fieldValidation=Strict"),
        Some(with_unknown_fields("a")),
    )
    .await;
    assert_refused(strict, 400, "BadRequest",
                "EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: strict decoding error: \
                 unknown field \"endpoints[0].ready\", unknown field \"topology\"",
                None);
    let warned = call(
        &cluster,
        Method::POST,
        &path,
        Some(with_unknown_fields("a")),
    )
    .await;
    assert_eq!(warned.code, 201);
    assert_eq!(
        warned.warnings,
        vec![
            "299 - \"unknown field \\\"endpoints[0].ready\\\"\"",
            "299 - \"unknown field \\\"topology\\\"\""
        ]
    );
    assert_eq!(warned.body.get("topology"), None);
    assert_eq!(warned.body["endpoints"][0].get("ready"), None);
    let ignored = call(
        &cluster,
        Method::PUT,
        &format!("{path}/a?fieldValidation=Ignore"),
        Some(with_unknown_fields("a")),
    )
    .await;
    assert_eq!((ignored.code, ignored.warnings.len()), (200, 0));
    assert_eq!(ignored.body.get("topology"), None);
    // A patch: the patched object is decoded (the API server's 422 of field `patch`, whose
    // value is the patched object).
    let patched = call(
        &cluster,
        Method::PATCH,
        &format!("{path}/a?fieldValidation=Strict"),
        Some(json!({"topology": {}})),
    )
    .await;
    assert_eq!(
        (patched.code, patched.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    let cause = &patched.body["details"]["causes"][0];
    assert_eq!(cause["field"], "patch");
    let message = cause["message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid value: \"{")
            && message.ends_with("}\": strict decoding error: unknown field \"topology\""),
        "{message}"
    );
    let bogus = call(
        &cluster,
        Method::POST,
        &format!("{path}?fieldValidation=strict"),
        Some(slice("b")),
    )
    .await;
    assert_eq!(bogus.code, 422);
}

#[tokio::test]
async fn values_of_the_wrong_type_are_refused_as_the_decoder_refuses_them() {
    let cluster = SimCluster::start().await;
    let path = format!("{SLICES}/loco/endpointslices");
    let mut wrong = slice("a");
    wrong["endpoints"][0]["addresses"] = json!("10.0.0.1");
    let created = call(&cluster, Method::POST, &path, Some(wrong)).await;
    assert_refused(created, 400, "BadRequest",
                "EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: json: cannot unmarshal \
                 string into Go struct field Endpoint.endpoints.addresses of type []string",
                None);
    assert_eq!(
        call(&cluster, Method::POST, &path, Some(slice("a")))
            .await
            .code,
        201
    );
    let patched = call(
        &cluster,
        Method::PATCH,
        &format!("{path}/a"),
        Some(json!({"endpoints": [{"addresses": "10.0.0.1"}]})),
    )
    .await;
    assert_eq!(patched.code, 422);
    assert_eq!(patched.body["reason"], "Invalid");
    let cause = &patched.body["details"]["causes"][0];
    assert_eq!(cause["field"], "patch");
    assert!(cause["message"].as_str().unwrap().ends_with(
        "json: cannot unmarshal string into Go struct field Endpoint.endpoints.addresses of type []string"
    ));
    let stored = call(&cluster, Method::GET, &format!("{path}/a"), None).await;
    assert_eq!(
        stored.body["endpoints"][0]["addresses"],
        json!(["10.0.0.1"])
    );
}

#[tokio::test]
async fn invalid_content_is_refused_with_a_cause_per_field() {
    let cluster = SimCluster::start().await;
    let mut invalid = slice("a");
    invalid["endpoints"] = json!([{"addresses": []}, {"addresses": ["10.0.0.256"]}]);
    let answer = call(
        &cluster,
        Method::POST,
        &format!("{SLICES}/loco/endpointslices"),
        Some(invalid),
    )
    .await;
    assert_eq!(answer.code, 422);
    assert_eq!(
        answer.body["message"],
        "EndpointSlice.discovery.k8s.io \"a\" is invalid: [endpoints[0].addresses: Required value: must \
         contain at least 1 address, endpoints[1].addresses[0]: Invalid value: \"10.0.0.256\": must be a \
         valid IPv4 address]"
    );
    assert_eq!(
        answer.body["details"],
        json!({"name": "a", "group": "discovery.k8s.io", "kind": "EndpointSlice", "causes": [
            {"reason": "FieldValueRequired", "message": "Required value: must contain at least 1 address",
             "field": "endpoints[0].addresses"},
            {"reason": "FieldValueInvalid", "message": "Invalid value: \"10.0.0.256\": must be a valid IPv4 address",
             "field": "endpoints[1].addresses[0]"}]})
    );
    let endpoints = json!({"metadata": {"name": "web"},
                           "subsets": [{"addresses": [{"ip": "not-an-ip"}], "ports": [{"port": 80}]}]});
    let answer = call(
        &cluster,
        Method::POST,
        "/api/v1/namespaces/loco/endpoints",
        Some(endpoints),
    )
    .await;
    assert_eq!(answer.code, 422);
    assert_eq!(
        answer.body["details"]["causes"][0]["field"],
        "subsets[0].addresses[0].ip"
    );
}

const STRATEGIC: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// Strategic merge patches and server-side apply are held to the same rules as the other
/// writes: a strategic merge patch is decoded as the unstructured converter decodes it (422
/// of field `patch`, its value the patch as Go prints a map), an apply configuration is typed
/// against the schema (the 500 the API server answers, whatever `fieldValidation` says), and
/// a dry run is refused exactly as the write would be, storing nothing either way.
#[tokio::test]
async fn strategic_merge_patches_and_server_side_apply_are_decoded_and_validated_dry_runs_too() {
    let cluster = SimCluster::start().await;
    let path = format!("{SLICES}/loco/endpointslices");
    assert_eq!(
        call(&cluster, Method::POST, &path, Some(slice("a")))
            .await
            .code,
        201
    );
    let item = format!("{path}/a");
    let rv = || cluster.store().current_resource_version();

    // Strategic merge patch: unknown fields pruned with a warning, refused under Strict.
    let before = rv();
    let dry = call_as(
        &cluster,
        Method::PATCH,
        &format!("{item}?dryRun=All"),
        STRATEGIC,
        Some(json!({"topology": {"zone": "a"}, "metadata": {"labels": {"x": "y"}}})),
    )
    .await;
    assert_eq!(dry.code, 200);
    assert_eq!(
        dry.warnings,
        vec!["299 - \"unknown field \\\"topology\\\"\""]
    );
    assert_eq!(
        (
            dry.body.get("topology"),
            &dry.body["metadata"]["labels"]["x"]
        ),
        (None, &json!("y"))
    );
    assert_eq!(rv(), before, "a dry run stores nothing");
    for dry_run in ["", "&dryRun=All"] {
        let strict = call_as(
            &cluster,
            Method::PATCH,
            &format!("{item}?fieldValidation=Strict{dry_run}"),
            STRATEGIC,
            Some(json!({"topology": {"zone": "a"}})),
        )
        .await;
        assert_refused(strict, 422, "Invalid",
            " \"\" is invalid: patch: Invalid value: \"map[topology:map[zone:a]]\": strict decoding error: \
             unknown field \"topology\"",
            Some(json!({"causes": [{"reason": "FieldValueInvalid",
                "message": "Invalid value: \"map[topology:map[zone:a]]\": strict decoding error: unknown field \"topology\"",
                "field": "patch"}]})));
        // A value of the wrong type, in the unstructured converter's words.
        let wrong = call_as(
            &cluster,
            Method::PATCH,
            &format!("{item}?{dry_run}"),
            STRATEGIC,
            Some(json!({"endpoints": [{"addresses": "10.0.0.9"}]})),
        )
        .await;
        assert_eq!(
            (wrong.code, wrong.body["reason"].as_str()),
            (422, Some("Invalid"))
        );
        assert_eq!(
            wrong.body["message"],
            " \"\" is invalid: patch: Invalid value: \"map[endpoints:[map[addresses:10.0.0.9]]]\": \
             cannot restore slice from string"
        );
        // Content the validation refuses.
        let invalid = call_as(
            &cluster,
            Method::PATCH,
            &format!("{item}?{dry_run}"),
            STRATEGIC,
            Some(json!({"endpoints": [{"addresses": ["10.0.0.256"]}]})),
        )
        .await;
        assert_eq!(
            (
                invalid.code,
                invalid.body["details"]["causes"][0]["field"].as_str()
            ),
            (422, Some("endpoints[0].addresses[0]"))
        );
    }
    assert_eq!(rv(), before, "nothing refused was stored");

    // Server-side apply: the configuration is typed against the schema first.
    let mut unknown = slice("a");
    unknown["metadata"]["namespace"] = json!("loco");
    unknown["topology"] = json!({"zone": "a"});
    let mut wrong = slice("a");
    wrong["metadata"]["namespace"] = json!("loco");
    wrong["endpoints"][0]["conditions"]["ready"] = json!("yes");
    let cases = [
        (unknown, ".topology: field not declared in schema"),
        (
            wrong,
            ".endpoints[0].conditions.ready: expected boolean, got &{yes}",
        ),
    ];
    for (config, error) in cases {
        for query in [
            "",
            "&fieldValidation=Ignore",
            "&dryRun=All",
            "&fieldValidation=Strict&dryRun=All",
        ] {
            let applied = call_as(
                &cluster,
                Method::PATCH,
                &format!("{item}?fieldManager=me{query}"),
                APPLY,
                Some(config.clone()),
            )
            .await;
            assert_refused(applied, 500, "",
                &format!("failed to create typed patch object (loco/a; discovery.k8s.io/v1, Kind=EndpointSlice): {error}"),
                None);
        }
    }
    // An apply that creates, dry run: validated as a create.
    let mut empty = slice("b");
    empty["endpoints"][0]["addresses"] = json!([]);
    let created = call_as(
        &cluster,
        Method::PATCH,
        &format!("{path}/b?fieldManager=me&dryRun=All"),
        APPLY,
        Some(empty),
    )
    .await;
    assert_eq!(
        (
            created.code,
            created.body["details"]["causes"][0]["field"].as_str()
        ),
        (422, Some("endpoints[0].addresses"))
    );
    let fine = call_as(
        &cluster,
        Method::PATCH,
        &format!("{path}/b?fieldManager=me&dryRun=All"),
        APPLY,
        Some(slice("b")),
    )
    .await;
    assert_eq!(fine.code, 201);

    // Creates and replaces, dry run: refused as they would be.
    let mut typo = slice("c");
    typo["endpoints"][0]["addresses"] = json!("10.0.0.3");
    let created = call(
        &cluster,
        Method::POST,
        &format!("{path}?dryRun=All"),
        Some(typo),
    )
    .await;
    assert_eq!(created.code, 400);
    let mut extra = slice("a");
    extra["topology"] = json!({});
    let replaced = call(
        &cluster,
        Method::PUT,
        &format!("{item}?dryRun=All&fieldValidation=Strict"),
        Some(extra),
    )
    .await;
    assert_eq!(
        (replaced.code, replaced.body["message"].as_str()),
        (400, Some("EndpointSlice in version \"v1\" cannot be handled as a EndpointSlice: strict decoding error: unknown field \"topology\""))
    );
    assert_eq!(rv(), before, "dry runs and refusals stored nothing");
    assert!(cluster
        .store()
        .get(loco_discovery_sim::ResourceKind::EndpointSlice, "loco", "b")
        .is_none());
}
