//! Unit tests of the object store.

use super::*;

const NS: &str = "loco";

fn slice(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "web"}}, "addressType": "IPv4", "endpoints": []})
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn writes_bump_one_global_counter() {
    let s = Store::new(100);
    assert_eq!(s.current_resource_version(), 1);
    let a = s
        .create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let e = s
        .create(
            ResourceKind::Endpoints,
            NS,
            json!({"metadata": {"name": "web"}}),
        )
        .unwrap();
    assert_eq!((rv_of(&a), rv_of(&e)), (2, 3));
    assert_eq!(a["kind"], "EndpointSlice");
    assert_eq!(a["metadata"]["generation"], 1);
    assert!(e["metadata"].get("generation").is_none());
    assert_eq!(a["metadata"]["namespace"], NS);
    assert!(a["metadata"]["uid"].as_str().unwrap().len() == 36);
}

#[test]
fn generate_name_appends_five_characters() {
    let s = Store::new(100);
    let o = s
        .create(
            ResourceKind::EndpointSlice,
            NS,
            json!({"metadata": {"generateName": "web-"}, "addressType": "IPv4"}),
        )
        .unwrap();
    let name = o["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
}

#[test]
fn duplicate_create_is_already_exists() {
    let s = Store::new(100);
    s.create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let err = s
        .create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(
        err.status().to_string(),
        r#"{"apiVersion":"v1","code":409,"details":{"group":"discovery.k8s.io","kind":"endpointslices","name":"a"},"kind":"Status","message":"endpointslices.discovery.k8s.io \"a\" already exists","metadata":{},"reason":"AlreadyExists","status":"Failure"}"#
    );
}

#[test]
fn replace_rules() {
    let s = Store::new(100);
    let a = s
        .create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let mut stale = a.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let err = s
        .replace(ResourceKind::EndpointSlice, NS, "a", stale)
        .unwrap_err();
    assert_eq!(err.code(), 409);
    assert!(err.to_string().contains("the object has been modified"));
    // No RV: unconditional; labels unchanged and spec unchanged keeps generation.
    let b = s
        .replace(ResourceKind::EndpointSlice, NS, "a", slice("a"))
        .unwrap();
    assert_eq!(b["metadata"]["generation"], 1);
    assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
    let mut c = b.clone();
    c["endpoints"] = json!([{"addresses": ["10.0.0.1"]}]);
    let c = s.replace(ResourceKind::EndpointSlice, NS, "a", c).unwrap();
    assert_eq!(c["metadata"]["generation"], 2);
    let err = s
        .replace(ResourceKind::EndpointSlice, NS, "nope", slice("nope"))
        .unwrap_err();
    assert_eq!(err.code(), 404);
    let e = s
        .replace(
            ResourceKind::Endpoints,
            NS,
            "web",
            json!({"metadata": {"name": "web"}}),
        )
        .unwrap();
    assert_eq!(e["metadata"]["name"], "web");
    let err = s
        .replace(ResourceKind::EndpointSlice, NS, "a", slice("other"))
        .unwrap_err();
    assert_eq!(err.code(), 400);
}

#[test]
fn validation_is_small_but_real() {
    let s = Store::new(100);
    let err = s
        .create(
            ResourceKind::EndpointSlice,
            NS,
            json!({"metadata": {"name": "a"}}),
        )
        .unwrap_err();
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.to_string(),
        "EndpointSlice.discovery.k8s.io \"a\" is invalid: addressType: Required value"
    );
    let st = err.status();
    assert_eq!(st["details"]["causes"][0]["field"], "addressType");
    assert_eq!(st["details"]["kind"], "EndpointSlice");
    s.create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let mut v6 = slice("a");
    v6["addressType"] = json!("IPv6");
    let err = s
        .replace(ResourceKind::EndpointSlice, NS, "a", v6)
        .unwrap_err();
    assert!(err.to_string().contains("field is immutable"), "{err}");
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"addresses": ["10.0.0.1"]}))
        .collect();
    let mut big = slice("big");
    big["endpoints"] = Value::Array(many);
    assert_eq!(
        s.create(ResourceKind::EndpointSlice, NS, big)
            .unwrap_err()
            .code(),
        422
    );
    let err = s
        .create(
            ResourceKind::EndpointSlice,
            NS,
            json!({"addressType": "IPv4"}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("name or generateName is required"));
    // Odd but legal objects are stored as they are.
    s.create(
        ResourceKind::EndpointSlice,
        NS,
        json!({"metadata": {"name": "odd"}, "addressType": "FQDN", "endpoints": [{"addresses": ["a.example"]}], "ports": null}),
    )
    .unwrap();
}

#[test]
fn namespace_mismatch_is_bad_request() {
    let s = Store::new(100);
    let mut o = slice("a");
    o["metadata"]["namespace"] = json!("other");
    assert_eq!(
        s.create(ResourceKind::EndpointSlice, NS, o)
            .unwrap_err()
            .code(),
        400
    );
    assert_eq!(
        s.create(ResourceKind::EndpointSlice, NS, json!([1]))
            .unwrap_err()
            .code(),
        400
    );
}

#[test]
fn writes_never_stamp_the_trigger_time() {
    let s = Store::new(100);
    let a = s
        .create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    assert!(a["metadata"].get("annotations").is_none());
    let mut own = slice("a");
    own["metadata"]["annotations"] = json!({TRIGGER_TIME_ANNOTATION: "2020-01-01T00:00:00.5Z"});
    s.replace(ResourceKind::EndpointSlice, NS, "a", own.clone())
        .unwrap();
    let labelled = s
        .merge_patch(
            ResourceKind::EndpointSlice,
            NS,
            "a",
            &json!({"metadata": {"labels": {"team": "x"}}}),
        )
        .unwrap();
    assert_eq!(
        labelled["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION], "2020-01-01T00:00:00.5Z",
        "a label change keeps the controller's trigger time"
    );
    let again = s
        .replace(ResourceKind::EndpointSlice, NS, "a", own)
        .unwrap();
    assert_eq!(
        again["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION],
        "2020-01-01T00:00:00.5Z"
    );
}

#[test]
fn merge_patch_and_delete() {
    let s = Store::new(100);
    s.create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let p = s
        .merge_patch(
            ResourceKind::EndpointSlice,
            NS,
            "a",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .unwrap();
    assert_eq!(p["metadata"]["labels"], json!({"app": "web", "x": "y"}));
    assert_eq!(p["metadata"]["generation"], 2);
    let d = s.delete(ResourceKind::EndpointSlice, NS, "a").unwrap();
    assert_eq!(rv_of(&d), s.current_resource_version());
    assert_eq!(
        s.delete(ResourceKind::EndpointSlice, NS, "a")
            .unwrap_err()
            .code(),
        404
    );
    assert_eq!(
        s.merge_patch(ResourceKind::EndpointSlice, NS, "a", &json!({}))
            .unwrap_err()
            .code(),
        404
    );
}

#[test]
fn pages_share_one_snapshot_even_when_writes_happen_between() {
    let s = Store::new(100);
    for n in ["a", "b", "c", "d", "e"] {
        s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
    }
    let all = |_: &Value| true;
    let p1 = s
        .list_page(
            ResourceKind::EndpointSlice,
            Some(NS),
            ListFrom::Current,
            Some(2),
            &all,
        )
        .unwrap();
    assert_eq!(p1.items.len(), 2);
    assert_eq!(p1.remaining, Some(3));
    s.delete(ResourceKind::EndpointSlice, NS, "c").unwrap();
    s.create(ResourceKind::EndpointSlice, NS, slice("bb"))
        .unwrap();
    s.merge_patch(
        ResourceKind::EndpointSlice,
        NS,
        "d",
        &json!({"metadata": {"labels": {"x": "1"}}}),
    )
    .unwrap();
    let p2 = s
        .list_page(
            ResourceKind::EndpointSlice,
            Some(NS),
            ListFrom::Continue(p1.continue_token.unwrap()),
            Some(2),
            &all,
        )
        .unwrap();
    let names: Vec<_> = p2.items.iter().map(|o| key_of(o).1).collect();
    assert_eq!(names, ["c", "d"]);
    assert!(p2.items[1]["metadata"]["labels"].get("x").is_none());
    assert_eq!(p2.rv, p1.rv);
    let p3 = s
        .list_page(
            ResourceKind::EndpointSlice,
            Some(NS),
            ListFrom::Continue(p2.continue_token.unwrap()),
            Some(2),
            &all,
        )
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.continue_token.is_none());
}

#[test]
fn forgotten_history_expires_watches_and_continue_tokens() {
    let s = Store::new(100);
    for n in ["a", "b", "c"] {
        s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
    }
    let all = |_: &Value| true;
    let p1 = s
        .list_page(
            ResourceKind::EndpointSlice,
            None,
            ListFrom::Current,
            Some(1),
            &all,
        )
        .unwrap();
    assert!(s
        .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
        .is_ok());
    s.forget_history();
    let err = s
        .list_page(
            ResourceKind::EndpointSlice,
            None,
            ListFrom::Continue(p1.continue_token.unwrap()),
            Some(1),
            &all,
        )
        .unwrap_err();
    assert_eq!(err.code(), 410);
    assert!(err
        .to_string()
        .starts_with("The provided continue parameter is too old"));
    let err = s
        .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "too old resource version: 2 (4)");
    assert!(s
        .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(4))
        .is_ok());
    assert_eq!(
        s.list_page(
            ResourceKind::EndpointSlice,
            None,
            ListFrom::Continue("zz".into()),
            None,
            &all
        )
        .unwrap_err()
        .code(),
        400
    );
}

#[test]
fn bounded_history_moves_the_floor() {
    let s = Store::new(2);
    for n in ["a", "b", "c", "d"] {
        s.create(ResourceKind::EndpointSlice, NS, slice(n)).unwrap();
    }
    // RVs 2..=5 written, history keeps 4 and 5: resuming from 3 still works, from 2 does not.
    assert_eq!(s.oldest_resource_version(), 3);
    let w = s
        .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(3))
        .unwrap();
    assert_eq!(w.replay.iter().map(|e| e.rv).collect::<Vec<_>>(), [4, 5]);
    assert!(s
        .start_watch(ResourceKind::EndpointSlice, WatchFrom::After(2))
        .is_err());
}

#[test]
fn exact_reads_rebuild_older_state() {
    let s = Store::new(100);
    s.create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let rv = s.current_resource_version();
    s.delete(ResourceKind::EndpointSlice, NS, "a").unwrap();
    let all = |_: &Value| true;
    let page = s
        .list_page(
            ResourceKind::EndpointSlice,
            None,
            ListFrom::Exact(rv),
            None,
            &all,
        )
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(s
        .get_at(ResourceKind::EndpointSlice, NS, "a", rv)
        .unwrap()
        .is_some());
    assert!(s
        .get_at(ResourceKind::EndpointSlice, NS, "a", rv + 1)
        .unwrap()
        .is_none());
    assert_eq!(
        s.list_page(
            ResourceKind::EndpointSlice,
            None,
            ListFrom::Exact(rv + 5),
            None,
            &all
        )
        .unwrap_err()
        .code(),
        504
    );
}

#[test]
fn dry_run_does_not_persist() {
    let s = Store::new(100);
    let o = s
        .create_with(ResourceKind::EndpointSlice, NS, slice("a"), true)
        .unwrap();
    assert_eq!(o["metadata"]["name"], "a");
    assert!(s.get(ResourceKind::EndpointSlice, NS, "a").is_none());
    assert_eq!(s.current_resource_version(), 1);
}

#[test]
fn writes_into_a_namespace_that_does_not_exist_are_refused() {
    let s = Store::new(100);
    let rv = s.current_resource_version();
    let err = s
        .create(ResourceKind::EndpointSlice, "nowhere", slice("a"))
        .unwrap_err();
    assert_eq!(
        err.status(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "namespaces \"nowhere\" not found", "reason": "NotFound",
               "details": {"name": "nowhere", "kind": "namespaces"}, "code": 404})
    );
    let err = s
        .replace(
            ResourceKind::Endpoints,
            "nowhere",
            "web",
            json!({"metadata": {"name": "web"}}),
        )
        .unwrap_err();
    assert_eq!(err.code(), 404, "an Endpoints PUT that would create");
    assert_eq!(s.current_resource_version(), rv);
    assert!(s.namespace("nowhere").is_none());
    for ns in INITIAL_NAMESPACES {
        s.create(ResourceKind::EndpointSlice, ns, slice("a"))
            .unwrap();
    }
}

#[test]
fn namespaces_are_created_and_deleted_with_what_they_hold() {
    let s = Store::new(100);
    let created = s.create_namespace("net-test", false).unwrap();
    assert_eq!(created["metadata"]["name"], "net-test");
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(
        s.create_namespace("net-test", false).unwrap_err().status()["message"],
        "namespaces \"net-test\" already exists"
    );
    assert_eq!(s.create_namespace("Bad", false).unwrap_err().code(), 422);
    assert!(s.create_namespace("dry", true).is_ok());
    assert!(s.namespace("dry").is_none());
    s.create(ResourceKind::EndpointSlice, "net-test", slice("a"))
        .unwrap();
    s.create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let mut rx = s.subscribe();
    let deleted = s.delete_namespace("net-test", false).unwrap();
    assert_eq!(deleted["status"]["phase"], "Terminating");
    let event = rx.try_recv().unwrap();
    assert_eq!(
        (event.ty, key_of(&event.object)),
        (EventType::Deleted, ("net-test".into(), "a".into()))
    );
    assert!(s.namespace("net-test").is_none());
    assert!(s.get(ResourceKind::EndpointSlice, NS, "a").is_some());
    assert_eq!(
        s.delete_namespace("net-test", false).unwrap_err().code(),
        404
    );
    let kept = s.delete_namespace("default", false).unwrap_err();
    assert_eq!(
        (kept.code(), kept.reason(), kept.to_string()),
        (
            403,
            "Forbidden",
            "namespaces \"default\" is forbidden: this namespace may not be deleted".into()
        )
    );
}

#[test]
fn a_create_stating_a_resource_version_is_refused_as_the_storage_refuses_it() {
    let s = Store::new(100);
    let mut dumped = slice("a");
    dumped["metadata"]["resourceVersion"] = json!("1234");
    let err = s
        .create(ResourceKind::EndpointSlice, NS, dumped.clone())
        .unwrap_err();
    assert_eq!(
        err.status(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "resourceVersion should not be set on objects to be created", "code": 500})
    );
    assert!(s
        .create_with(ResourceKind::EndpointSlice, NS, dumped, true)
        .is_ok());
    let mut zero = slice("a");
    zero["metadata"]["resourceVersion"] = json!("0");
    let stored = s.create(ResourceKind::EndpointSlice, NS, zero).unwrap();
    assert_ne!(stored["metadata"]["resourceVersion"], "0");
}

#[test]
fn a_replace_naming_another_uid_is_a_conflict_and_a_patch_changing_it_invalid() {
    let s = Store::new(100);
    let stored = s
        .create(ResourceKind::EndpointSlice, NS, slice("a"))
        .unwrap();
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_owned();
    let mut other = slice("a");
    other["metadata"]["uid"] = json!("0b7c5a52-0000-4000-8000-000000000000");
    let err = s
        .replace(ResourceKind::EndpointSlice, NS, "a", other)
        .unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(
        err.to_string(),
        format!("Operation cannot be fulfilled on endpointslices.discovery.k8s.io \"a\": Precondition failed: UID in precondition: 0b7c5a52-0000-4000-8000-000000000000, UID in object meta: {uid}")
    );
    let mut same = slice("a");
    same["metadata"]["uid"] = json!(uid);
    s.replace(ResourceKind::EndpointSlice, NS, "a", same)
        .unwrap();
    let err = s
        .merge_patch(
            ResourceKind::EndpointSlice,
            NS,
            "a",
            &json!({"metadata": {"uid": "x"}}),
        )
        .unwrap_err();
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.to_string(),
        "EndpointSlice.discovery.k8s.io \"a\" is invalid: metadata.uid: Invalid value: \"x\": field is immutable"
    );
}
