use super::*;
use crate::dns::HEADLESS_LABEL;
use crate::model::Probe;
use crate::slices::{mk_endpoint, mk_port, mk_slice};
use chrono::TimeZone;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointHints, EndpointPort, ForZone};
use proptest::prelude::*;

const NS: &str = "loco";
const SVC: &str = "loco-loco-emulator";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn pod(n: u32) -> String {
    format!("loco-loco-emulator-{n}")
}

fn ready(n: u32) -> Endpoint {
    mk_endpoint(&pod(n), &format!("10.0.0.{}", n + 10), true, false)
}

fn booting(n: u32) -> Endpoint {
    mk_endpoint(&pod(n), &format!("10.0.0.{}", n + 10), false, false)
}

fn slice(name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    mk_slice(NS, name, SVC, endpoints)
}

fn index() -> EndpointIndex {
    EndpointIndex::new(IndexConfig::default())
}

fn kinds(outcome: &Outcome) -> Vec<(DeltaKind, String)> {
    outcome
        .deltas
        .iter()
        .map(|d| (d.kind, d.instance_id.clone()))
        .collect()
}

fn ids(index: &EndpointIndex) -> Vec<String> {
    index.instances().iter().map(|i| i.id.clone()).collect()
}

fn reasons(outcome: &Outcome) -> Vec<AnomalyReason> {
    outcome.anomalies.iter().map(|a| a.reason).collect()
}

fn with_conditions(
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Endpoint {
    let mut endpoint = ready_endpoint_without_conditions();
    endpoint.conditions = Some(EndpointConditions {
        ready,
        serving,
        terminating,
    });
    endpoint
}

fn ready_endpoint_without_conditions() -> Endpoint {
    let mut endpoint = ready(0);
    endpoint.conditions = None;
    endpoint
}

#[test]
fn slices_of_a_service_are_merged_into_one_instance_list() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0), ready(2)]), t(0));
    let out = idx.apply(&slice("b", vec![ready(1)]), t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceAdded, "instance-1".into())]
    );
    assert_eq!(ids(&idx), vec!["instance-0", "instance-1", "instance-2"]);
}

#[test]
fn instances_are_sorted_by_ordinal_not_by_name() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(10), ready(2), ready(1)]), t(0));
    assert_eq!(ids(&idx), vec!["instance-1", "instance-2", "instance-10"]);
}

#[test]
fn endpoint_moving_between_slices_emits_no_delta() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0), ready(1)]), t(0));
    let added_to_b = idx.apply(&slice("b", vec![ready(1)]), t(1));
    let removed_from_a = idx.apply(&slice("a", vec![ready(0)]), t(2));
    assert!(added_to_b.deltas.is_empty(), "{:?}", kinds(&added_to_b));
    assert!(removed_from_a.deltas.is_empty());
    assert_eq!(ids(&idx), vec!["instance-0", "instance-1"]);
}

#[test]
fn dual_stack_pod_in_two_slices_is_one_instance() {
    let mut idx = index();
    idx.apply(&slice("v4", vec![ready(0)]), t(0));
    let mut v6 = slice("v6", vec![mk_endpoint(&pod(0), "fd00::a", true, false)]);
    v6.address_type = "IPv6".into();
    let out = idx.apply(&v6, t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceUpdated, "instance-0".into())]
    );
    let instances = idx.instances();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].addresses.pod_ip.as_deref(), Some("10.0.0.10"));
    assert_eq!(instances[0].addresses.pod_ips, vec!["10.0.0.10", "fd00::a"]);
}

#[test]
fn ipv6_only_pod_gets_a_bracketed_health_url() {
    let mut idx = index();
    let mut v6 = slice("v6", vec![mk_endpoint(&pod(0), "fd00::a", true, false)]);
    v6.address_type = "IPv6".into();
    idx.apply(&v6, t(0));
    assert_eq!(
        idx.instances()[0].health_url.as_deref(),
        Some("http://[fd00::a]:8080")
    );
}

/// A Deployment pod (no hostname) at `ip`, in the slice `name` of `service`; `headless`
/// says whether the slice carries the headless-Service label.
fn deployment_slice(name: &str, service: &str, ip: &str, headless: bool) -> EndpointSlice {
    let mut endpoint = mk_endpoint("python-server-65b886d59c-nnktx", ip, true, false);
    endpoint.hostname = None;
    let mut s = mk_slice("net-test", name, service, vec![endpoint]);
    if !headless {
        s.metadata.labels.as_mut().unwrap().remove(HEADLESS_LABEL);
    }
    if ip.contains(':') {
        s.address_type = "IPv6".into();
    }
    s
}

fn dns_and_vnc(idx: &EndpointIndex) -> Vec<(Option<String>, String)> {
    idx.instances()
        .iter()
        .map(|i| (i.addresses.dns_name.clone(), i.vnc_url.clone()))
        .collect()
}

#[test]
fn a_headless_deployment_pod_is_named_by_its_dashed_address() {
    let mut idx = index();
    let svc = "python-server-headless";
    idx.apply(&deployment_slice("a", svc, "10.100.58.221", true), t(0));
    let name = "10-100-58-221.python-server-headless.net-test.svc.cluster.local";
    assert_eq!(
        dns_and_vnc(&idx),
        vec![(Some(name.to_owned()), format!("{name}:5901"))]
    );
    idx.apply(&deployment_slice("b", svc, "fd00:10:244::5", true), t(1));
    assert_eq!(
        dns_and_vnc(&idx)[0].0.as_deref(),
        Some(name),
        "a dual-stack pod is named by its preferred (IPv4) address"
    );
}

#[test]
fn an_ipv6_only_headless_pod_is_named_by_its_address_with_dashes() {
    let mut idx = index();
    idx.apply(
        &deployment_slice("a", "echo", "fd00:10:244:2::9", true),
        t(0),
    );
    let name = "fd00-10-244-2--9.echo.net-test.svc.cluster.local";
    assert_eq!(
        dns_and_vnc(&idx),
        vec![(Some(name.to_owned()), format!("{name}:5901"))]
    );
}

#[test]
fn endpoint_pod_names_names_a_deployment_pod_by_the_pod() {
    let mut config = IndexConfig::default();
    config.dns.endpoint_pod_names = true;
    let mut idx = EndpointIndex::new(config);
    idx.apply(&deployment_slice("a", "web", "10.100.58.221", true), t(0));
    assert_eq!(
        idx.instances()[0].addresses.dns_name.as_deref(),
        Some("python-server-65b886d59c-nnktx.web.net-test.svc.cluster.local")
    );
}

#[test]
fn endpoints_of_a_service_that_is_not_headless_have_no_name_and_a_vnc_url_by_address() {
    let mut idx = index();
    idx.apply(&deployment_slice("a", "web", "10.100.58.221", false), t(0));
    assert_eq!(
        dns_and_vnc(&idx),
        vec![(None, "10.100.58.221:5901".to_owned())]
    );
    let mut idx = index();
    idx.apply(&deployment_slice("a", "web", "fd00::5", false), t(0));
    assert_eq!(dns_and_vnc(&idx), vec![(None, "[fd00::5]:5901".to_owned())]);
    let json = serde_json::to_value(idx.instances()[0]).unwrap();
    assert_eq!(json["addresses"]["dnsName"], serde_json::Value::Null);
}

#[test]
fn a_statefulset_pod_of_a_service_that_is_not_headless_has_no_name() {
    let mut idx = index();
    let mut s = slice("a", vec![ready(0)]);
    s.metadata.labels.as_mut().unwrap().remove(HEADLESS_LABEL);
    idx.apply(&s, t(0));
    assert_eq!(dns_and_vnc(&idx), vec![(None, "10.0.0.10:5901".to_owned())]);
}

#[test]
fn status_comes_from_serving_and_terminating() {
    let cases = [
        ((Some(true), Some(true), Some(false)), Status::Ready),
        ((Some(false), Some(false), Some(false)), Status::Booting),
        ((Some(false), Some(true), Some(true)), Status::Offline),
        ((Some(false), Some(false), Some(true)), Status::Offline),
        // publishNotReadyAddresses: true reports ready=true for a pod that is not serving.
        ((Some(true), Some(false), Some(false)), Status::Booting),
        // Nil serving means true, nil terminating means false, nil ready means true.
        ((None, None, None), Status::Ready),
        ((Some(true), None, None), Status::Ready),
        ((None, Some(false), None), Status::Booting),
        ((None, None, Some(true)), Status::Offline),
        // A controller that predates `serving` says not-ready with `ready` alone.
        ((Some(false), None, None), Status::Booting),
    ];
    for ((ready, serving, terminating), expected) in cases {
        let endpoint = with_conditions(ready, serving, terminating);
        assert_eq!(
            status_of(&endpoint),
            expected,
            "ready={ready:?} serving={serving:?} terminating={terminating:?}"
        );
    }
    assert_eq!(
        status_of(&ready_endpoint_without_conditions()),
        Status::Ready
    );
}

#[test]
fn instance_fields_follow_the_lego_loco_contract() {
    let mut idx = index();
    let mut endpoint = ready(3);
    endpoint.node_name = Some("minikube".into());
    endpoint.zone = Some("zone-a".into());
    endpoint.hints = Some(EndpointHints {
        for_zones: Some(vec![ForZone {
            name: "zone-a".into(),
        }]),
        for_nodes: None,
    });
    idx.apply(&slice("a", vec![ready(0), endpoint]), t(5));
    let all = idx.instances();
    let game = all[0];
    assert_eq!(game.name, "Windows 98 - Game Server");
    let i = all[1];
    assert_eq!(i.id, "instance-3");
    assert_eq!(i.key, "loco/loco-loco-emulator/loco-loco-emulator-3");
    assert_eq!(i.ordinal, Some(3));
    assert_eq!(i.name, "Windows 98 - Client 3");
    assert_eq!(i.status, Status::Ready);
    assert!(i.ready && i.provisioned && i.health.ready);
    assert_eq!(i.pod_name, "loco-loco-emulator-3");
    assert_eq!(i.addresses.pod_ip.as_deref(), Some("10.0.0.13"));
    assert_eq!(i.addresses.hostname, "loco-loco-emulator-3");
    assert_eq!(
        i.addresses.dns_name.as_deref(),
        Some("loco-loco-emulator-3.loco-loco-emulator.loco.svc.cluster.local")
    );
    assert_eq!(i.ports.get("vnc"), Some(&5901));
    assert_eq!(i.ports.get("health"), Some(&8080));
    assert_eq!(i.health.last_transition, t(5));
    assert_eq!(i.health.details, "serving");
    assert_eq!(i.stream_url, "/proxy/vnc/instance-3");
    assert_eq!(
        i.vnc_url,
        "loco-loco-emulator-3.loco-loco-emulator.loco.svc.cluster.local:5901"
    );
    assert_eq!(i.health_url.as_deref(), Some("http://10.0.0.13:8080"));
    assert_eq!(i.kubernetes.namespace, "loco");
    assert_eq!(i.kubernetes.node_name.as_deref(), Some("minikube"));
    assert_eq!(i.kubernetes.zone.as_deref(), Some("zone-a"));
    assert_eq!(i.kubernetes.hint_zones, vec!["zone-a"]);
    let target = i.kubernetes.target_ref.as_ref().unwrap();
    assert_eq!(
        (
            target.kind.as_str(),
            target.name.as_str(),
            target.namespace.as_str()
        ),
        ("Pod", "loco-loco-emulator-3", "loco")
    );
    assert_eq!(target.uid.as_deref(), Some("uid-loco-loco-emulator-3"));
}

#[test]
fn instance_json_uses_the_frontend_field_names() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(1)]), t(0));
    let json = serde_json::to_value(idx.instances()[0]).unwrap();
    for field in [
        "id",
        "name",
        "status",
        "ready",
        "provisioned",
        "podName",
        "streamUrl",
        "vncUrl",
        "healthUrl",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["status"], "ready");
    assert_eq!(json["addresses"]["podIP"], "10.0.0.11");
    assert_eq!(
        json["addresses"]["dnsName"],
        "loco-loco-emulator-1.loco-loco-emulator.loco.svc.cluster.local"
    );
    assert_eq!(json["ports"]["vnc"], 5901);
    assert_eq!(json["health"]["lastTransition"], "2023-11-14T22:13:20.000Z");
    assert_eq!(json["kubernetes"]["targetRef"]["kind"], "Pod");
    assert_eq!(json["kubernetes"]["nodeName"], serde_json::Value::Null);
}

#[test]
fn each_status_transition_is_one_typed_delta() {
    let mut idx = index();
    let out = idx.apply(&slice("a", vec![booting(0)]), t(0));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceAdded, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].instance.status, Status::Booting);

    let out = idx.apply(&slice("a", vec![ready(0)]), t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceReady, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].reason, None);

    let out = idx.apply(&slice("a", vec![booting(0)]), t(2));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceNotReady, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].reason.as_deref(), Some("not-serving"));

    let terminating = mk_endpoint(&pod(0), "10.0.0.10", false, true);
    let out = idx.apply(&slice("a", vec![terminating]), t(3));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceNotReady, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].reason.as_deref(), Some("terminating"));
    assert_eq!(out.deltas[0].instance.status, Status::Offline);
    assert_eq!(out.deltas[0].instance.health.details, "terminating");

    let out = idx.apply(&slice("a", vec![]), t(4));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceRemoved, "instance-0".into())]
    );
    assert_eq!(
        out.deltas[0].instance.status,
        Status::Offline,
        "removed carries the last known state"
    );
    assert!(idx.instances().is_empty());
}

#[test]
fn a_new_ip_port_or_node_is_an_update_not_a_transition() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));

    let moved = mk_endpoint(&pod(0), "10.0.9.9", true, false);
    let out = idx.apply(&slice("a", vec![moved.clone()]), t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceUpdated, "instance-0".into())]
    );
    assert_eq!(
        out.deltas[0].instance.addresses.pod_ip.as_deref(),
        Some("10.0.9.9")
    );

    let mut on_node = moved.clone();
    on_node.node_name = Some("node-2".into());
    let out = idx.apply(&slice("a", vec![on_node.clone()]), t(2));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceUpdated, "instance-0".into())]
    );

    let mut new_port = slice("a", vec![on_node.clone()]);
    new_port.ports = Some(vec![mk_port("vnc", 5902), mk_port("health", 8080)]);
    let out = idx.apply(&new_port, t(3));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceUpdated, "instance-0".into())]
    );
    assert!(out.deltas[0].instance.vnc_url.ends_with(":5902"));

    let out = idx.apply(&new_port, t(4));
    assert!(out.deltas.is_empty(), "an identical object changes nothing");
}

#[test]
fn last_transition_changes_only_when_the_status_changes() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));
    idx.apply(
        &slice("a", vec![mk_endpoint(&pod(0), "10.0.0.99", true, false)]),
        t(10),
    );
    assert_eq!(idx.instances()[0].health.last_transition, t(0));
    idx.apply(&slice("a", vec![booting(0)]), t(20));
    assert_eq!(idx.instances()[0].health.last_transition, t(20));
}

#[test]
fn deleting_a_slice_removes_only_pods_no_other_slice_lists() {
    let mut idx = index();
    let a = slice("a", vec![ready(0), ready(1)]);
    idx.apply(&a, t(0));
    idx.apply(&slice("b", vec![ready(1), ready(2)]), t(0));
    let out = idx.delete(&a, t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceRemoved, "instance-0".into())]
    );
    assert_eq!(ids(&idx), vec!["instance-1", "instance-2"]);
}

#[test]
fn several_services_are_kept_apart() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));
    let other = mk_slice(
        NS,
        "web-1",
        "web",
        vec![mk_endpoint("web-0", "10.1.0.1", true, false)],
    );
    let out = idx.apply(&other, t(0));
    assert_eq!(out.deltas[0].service, "web");
    assert_eq!(idx.instances().len(), 2);
    assert_eq!(idx.service_instances(&ServiceRef::new(NS, "web")).len(), 1);
    assert_eq!(idx.service_instances(&ServiceRef::new(NS, SVC)).len(), 1);
}

#[test]
fn relabelled_slice_moves_its_pods_to_the_other_service() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));
    let moved = mk_slice(NS, "a", "web", vec![ready(0)]);
    let out = idx.apply(&moved, t(1));
    let mut seen: Vec<(DeltaKind, String)> = out
        .deltas
        .iter()
        .map(|d| (d.kind, d.service.clone()))
        .collect();
    seen.sort_by_key(|(k, _)| k.as_str());
    assert_eq!(
        seen,
        vec![
            (DeltaKind::InstanceAdded, "web".into()),
            (DeltaKind::InstanceRemoved, SVC.into())
        ]
    );
}

#[test]
fn relist_swaps_state_at_the_end_and_emits_only_net_deltas() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0), ready(1), booting(2)]), t(0));
    idx.begin_relist();
    idx.relist_apply(slice("a2", vec![ready(0)]));
    assert_eq!(
        ids(&idx).len(),
        3,
        "old state serves until the list is complete"
    );
    idx.relist_apply(slice("b", vec![ready(1), ready(2), ready(3)]));
    let out = idx.finish_relist(t(5));
    let mut got = kinds(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            (DeltaKind::InstanceAdded, "instance-3".into()),
            (DeltaKind::InstanceReady, "instance-2".into()),
        ]
    );
    assert!(!idx.relisting());
}

#[test]
fn relist_of_an_unchanged_cluster_emits_nothing_and_drops_vanished_services() {
    let mut idx = index();
    let a = slice("a", vec![ready(0)]);
    let web = mk_slice(
        NS,
        "w",
        "web",
        vec![mk_endpoint("web-0", "10.1.0.1", true, false)],
    );
    idx.apply(&a, t(0));
    idx.apply(&web, t(0));
    idx.begin_relist();
    idx.relist_apply(a.clone());
    idx.relist_apply(web);
    assert!(idx.finish_relist(t(1)).deltas.is_empty());
    idx.begin_relist();
    idx.relist_apply(a);
    let out = idx.finish_relist(t(2));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceRemoved, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].service, "web");
}

#[test]
fn endpoint_without_target_ref_is_identified_by_hostname_and_counted() {
    let mut idx = index();
    let mut endpoint = ready(4);
    endpoint.target_ref = None;
    let out = idx.apply(&slice("a", vec![endpoint]), t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::NoTargetRef]);
    let i = idx.instances()[0];
    assert_eq!(i.id, "instance-4");
    assert!(i.kubernetes.target_ref.is_none());
}

#[test]
fn endpoint_without_target_ref_or_hostname_is_identified_by_address() {
    let mut idx = index();
    let mut endpoint = ready(4);
    endpoint.target_ref = None;
    endpoint.hostname = None;
    let out = idx.apply(&slice("a", vec![endpoint]), t(0));
    assert_eq!(
        reasons(&out),
        vec![AnomalyReason::NoTargetRef, AnomalyReason::NoOrdinal]
    );
    assert_eq!(idx.instances()[0].id, "10.0.0.14");
}

#[test]
fn slice_without_ports_still_gives_instances_with_default_urls() {
    let mut idx = index();
    let mut s = slice("a", vec![ready(0)]);
    s.ports = None;
    let out = idx.apply(&s, t(0));
    assert!(out.anomalies.is_empty());
    let i = idx.instances()[0];
    assert!(i.ports.is_empty());
    assert!(i.vnc_url.ends_with(":5901"));
    assert_eq!(i.health_url.as_deref(), Some("http://10.0.0.10:8080"));
}

#[test]
fn unnamed_ports_are_kept_under_default_and_counted_when_several() {
    let mut idx = index();
    let mut s = slice("a", vec![ready(0)]);
    let unnamed = |port| EndpointPort {
        name: None,
        port: Some(port),
        ..EndpointPort::default()
    };
    s.ports = Some(vec![unnamed(5901)]);
    assert!(idx.apply(&s, t(0)).anomalies.is_empty());
    assert_eq!(idx.instances()[0].ports.get("default"), Some(&5901));
    s.ports = Some(vec![
        unnamed(5901),
        unnamed(8080),
        EndpointPort {
            name: Some("nil-port".into()),
            port: None,
            ..EndpointPort::default()
        },
    ]);
    let out = idx.apply(&s, t(1));
    assert_eq!(reasons(&out), vec![AnomalyReason::UnnamedPort]);
    assert_eq!(idx.instances()[0].ports.len(), 1);
}

#[test]
fn endpoint_with_no_address_is_skipped_and_counted() {
    let mut idx = index();
    let mut empty = ready(1);
    empty.addresses.clear();
    let out = idx.apply(&slice("a", vec![ready(0), empty]), t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::NoAddresses]);
    assert_eq!(ids(&idx), vec!["instance-0"]);
}

#[test]
fn fqdn_and_unknown_address_types_are_skipped_and_counted() {
    let mut idx = index();
    for address_type in ["FQDN", "", "IPv5"] {
        let mut s = slice("a", vec![ready(0)]);
        s.address_type = address_type.into();
        let out = idx.apply(&s, t(0));
        assert_eq!(reasons(&out), vec![AnomalyReason::UnsupportedAddressType]);
        assert!(idx.instances().is_empty());
    }
}

#[test]
fn a_slice_turning_fqdn_removes_what_it_listed() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));
    let mut s = slice("a", vec![ready(0)]);
    s.address_type = "FQDN".into();
    let out = idx.apply(&s, t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceRemoved, "instance-0".into())]
    );
}

#[test]
fn slice_without_service_label_is_skipped_and_counted() {
    let mut idx = index();
    let mut s = slice("a", vec![ready(0)]);
    s.metadata.labels = None;
    let out = idx.apply(&s, t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::MissingServiceLabel]);
    assert!(idx.instances().is_empty());
}

#[test]
fn slice_without_name_is_skipped_and_counted() {
    let mut idx = index();
    let mut s = slice("a", vec![ready(0)]);
    s.metadata.name = None;
    let out = idx.apply(&s, t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::MissingName]);
    assert_eq!(
        reasons(&idx.delete(&s, t(0))),
        vec![AnomalyReason::MissingName]
    );
}

#[test]
fn duplicate_endpoints_in_a_slice_merge_into_one_instance() {
    let mut idx = index();
    let twice = vec![booting(0), mk_endpoint(&pod(0), "10.0.0.77", true, false)];
    let out = idx.apply(&slice("a", twice), t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::DuplicateEndpoint]);
    let all = idx.instances();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].status,
        Status::Ready,
        "the most available entry wins"
    );
    assert_eq!(all[0].addresses.pod_ips, vec!["10.0.0.10", "10.0.0.77"]);
}

#[test]
fn pod_without_numeric_ordinal_keeps_its_name_as_id() {
    let mut idx = index();
    let deployment_pod = mk_endpoint("web-7f9c-x2k9q", "10.0.0.5", true, false);
    let out = idx.apply(&slice("a", vec![deployment_pod, ready(1)]), t(0));
    assert_eq!(reasons(&out), vec![AnomalyReason::NoOrdinal]);
    assert_eq!(ids(&idx), vec!["instance-1", "web-7f9c-x2k9q"]);
    assert_eq!(idx.instances()[1].name, "web-7f9c-x2k9q");
}

#[test]
fn normal_shapes_are_notes_and_only_lost_information_is_a_problem() {
    let mut idx = index();
    let mut apiserver = mk_endpoint("x", "172.18.0.2", true, false);
    apiserver.target_ref = None;
    apiserver.hostname = None;
    let deployment_pod = mk_endpoint("web-7f9c-x2k9q", "10.0.0.5", true, false);
    let out = idx.apply(&slice("a", vec![deployment_pod, apiserver]), t(0));
    assert_eq!(
        reasons(&out),
        vec![
            AnomalyReason::NoOrdinal,
            AnomalyReason::NoTargetRef,
            AnomalyReason::NoOrdinal
        ]
    );
    assert!(out.anomalies.iter().all(|a| !a.reason.loses_information()));
    let mut empty = ready(1);
    empty.addresses.clear();
    let out = idx.apply(&slice("b", vec![empty]), t(1));
    assert_eq!(reasons(&out), vec![AnomalyReason::NoAddresses]);
    assert!(out.anomalies[0].reason.loses_information());
}

#[test]
fn only_pods_named_after_the_statefulset_take_ordinals() {
    let mut idx = index();
    let intruder = mk_endpoint("aaa-0", "10.0.0.1", true, false);
    let huge = mk_endpoint("x-4294967295", "10.0.0.2", true, false);
    let own_huge = mk_endpoint(&pod(10_000), "10.0.0.3", true, false);
    let padded = mk_endpoint("loco-loco-emulator-01", "10.0.0.4", true, false);
    idx.apply(
        &slice("a", vec![intruder, huge, own_huge, padded, ready(0)]),
        t(0),
    );
    assert_eq!(
        ids(&idx),
        vec![
            "instance-0",
            "aaa-0",
            "loco-loco-emulator-01",
            "loco-loco-emulator-10000",
            "x-4294967295"
        ]
    );
    let first = idx.instances()[0].clone();
    assert_eq!(first.pod_name, pod(0));
    assert_eq!(first.name, "Windows 98 - Game Server");
    assert_eq!(first.stream_url, "/proxy/vnc/instance-0");
    assert!(idx.instances()[1..].iter().all(|i| i.ordinal.is_none()));
}

#[test]
fn ordinal_parsing_takes_only_the_statefulset_name_and_a_bounded_number() {
    let ordinal = |pod: &str| statefulset_ordinal(pod, "loco-loco-emulator", MAX_ORDINAL);
    assert_eq!(ordinal("loco-loco-emulator-7"), Some(7));
    assert_eq!(ordinal("loco-loco-emulator-0"), Some(0));
    assert_eq!(ordinal("loco-loco-emulator-9999"), Some(9999));
    assert_eq!(ordinal("loco-loco-emulator-10000"), None);
    assert_eq!(ordinal("loco-loco-emulator-07"), None);
    assert_eq!(ordinal("loco-loco-emulator-x2k91"), None);
    assert_eq!(ordinal("loco-loco-emulator-"), None);
    assert_eq!(ordinal("loco-loco-emulator"), None);
    assert_eq!(ordinal("loco-loco-emulator-1-2"), None);
    assert_eq!(ordinal("web-12"), None);
    assert_eq!(ordinal("x-4294967295"), None);
    assert_eq!(ordinal("loco-loco-emulator-99999999999999"), None);
}

// ---- property test -------------------------------------------------------------------

/// One generated change to the simulated set of slices.
#[derive(Clone, Debug)]
enum Op {
    Upsert {
        slice: usize,
        service: usize,
        ipv6: bool,
        endpoints: Vec<(u32, u8, u8, bool)>,
    },
    Delete {
        slice: usize,
    },
    Relist,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..2usize, proptest::bool::weighted(0.2),
              proptest::collection::vec((0..6u32, 0..4u8, 0..3u8, proptest::bool::weighted(0.2)), 0..5))
            .prop_map(|(slice, service, ipv6, endpoints)| Op::Upsert { slice, service, ipv6, endpoints }),
        2 => (0..4usize).prop_map(|slice| Op::Delete { slice }),
        1 => Just(Op::Relist),
    ]
}

/// Endpoints move between the 4 slices, a pod sits in several (dual-stack), and `other`
/// names a pod `alt-N`, which is not named after the service and takes no ordinal.
fn build(
    slice: usize,
    service: usize,
    ipv6: bool,
    endpoints: &[(u32, u8, u8, bool)],
) -> EndpointSlice {
    let services = ["emu", "web"];
    let endpoints = endpoints
        .iter()
        .map(|&(n, condition, ip, other)| {
            let address = if ipv6 {
                format!("fd00::{n}:{ip}")
            } else {
                format!("10.0.{ip}.{n}")
            };
            let (serving, terminating) = match condition {
                0 => (true, false),
                1 => (false, false),
                2 => (false, true),
                _ => (true, true),
            };
            let name = if other { "alt" } else { services[service] };
            let mut endpoint = mk_endpoint(&format!("{name}-{n}"), &address, serving, terminating);
            if ip == 2 {
                endpoint.node_name = Some("node-b".into());
            }
            endpoint
        })
        .collect();
    let mut s = mk_slice(NS, &format!("slice-{slice}"), services[service], endpoints);
    if ipv6 {
        s.address_type = "IPv6".into();
    }
    s
}

fn normalized(instances: Vec<&Instance>) -> Vec<Instance> {
    let mut list: Vec<Instance> = instances
        .into_iter()
        .cloned()
        .map(|mut i| {
            i.health.last_transition = t(0);
            i
        })
        .collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

fn replay(mut state: BTreeMap<String, Instance>, deltas: &[Delta]) -> BTreeMap<String, Instance> {
    for d in deltas {
        match d.kind {
            DeltaKind::InstanceRemoved => {
                assert!(
                    state.remove(&d.instance.key).is_some(),
                    "removed unknown {}",
                    d.instance.key
                );
            }
            DeltaKind::InstanceAdded => {
                assert!(
                    state
                        .insert(d.instance.key.clone(), d.instance.clone())
                        .is_none(),
                    "added twice {}",
                    d.instance.key
                );
            }
            _ => {
                assert!(
                    state
                        .insert(d.instance.key.clone(), d.instance.clone())
                        .is_some(),
                    "changed unknown {}",
                    d.instance.key
                );
            }
        }
    }
    state
}

fn as_map(index: &EndpointIndex) -> BTreeMap<String, Instance> {
    index
        .instances()
        .into_iter()
        .map(|i| (i.key.clone(), i.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn index_matches_a_fresh_build_and_deltas_replay_to_the_new_state(ops in proptest::collection::vec(op(), 1..40)) {
        let mut idx = index();
        let mut current: BTreeMap<usize, EndpointSlice> = BTreeMap::new();
        for (step, op) in ops.iter().enumerate() {
            let now = t(step as i64);
            let before = as_map(&idx);
            let outcome = match op {
                Op::Upsert { slice, service, ipv6, endpoints } => {
                    let s = build(*slice, *service, *ipv6, endpoints);
                    current.insert(*slice, s.clone());
                    idx.apply(&s, now)
                }
                Op::Delete { slice } => match current.remove(slice) {
                    Some(s) => idx.delete(&s, now),
                    None => idx.delete(&build(*slice, 0, false, &[]), now),
                },
                Op::Relist => {
                    idx.begin_relist();
                    for s in current.values() {
                        idx.relist_apply(s.clone());
                    }
                    let out = idx.finish_relist(now);
                    prop_assert!(out.deltas.is_empty(), "a re-list of the same state changed {:?}", out.deltas.len());
                    out
                }
            };
            let fresh = EndpointIndex::from_slices(IndexConfig::default(), current.values(), now);
            prop_assert_eq!(normalized(idx.instances()), normalized(fresh.instances()));
            prop_assert_eq!(replay(before, &outcome.deltas), as_map(&idx));
        }
    }
}

// ---- metadata and probes --------------------------------------------------------------

fn probe(reachable: bool, at: i64) -> Probe {
    Probe {
        reachable,
        status_code: reachable.then_some(200),
        latency_ms: Some(3),
        checked_at: t(at),
        error: (!reachable).then(|| "timed out".to_owned()),
    }
}

const KEY0: &str = "loco/loco-loco-emulator/loco-loco-emulator-0";

#[test]
fn metadata_names_instances_and_changes_are_updates() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0), ready(1)]), t(0));
    let metadata = crate::metadata::MetadataMap::parse(
        r#"{"0": {"name": "Host", "tags": ["lan"]}, "loco-loco-emulator-1": {"description": "spare"}}"#,
    )
    .unwrap();
    let out = idx.set_metadata(metadata, t(1));
    assert_eq!(
        kinds(&out),
        vec![
            (DeltaKind::InstanceUpdated, "instance-0".into()),
            (DeltaKind::InstanceUpdated, "instance-1".into())
        ]
    );
    let all = idx.instances();
    assert_eq!(all[0].name, "Host");
    assert_eq!(all[0].tags, vec!["lan"]);
    assert_eq!(all[1].name, "Windows 98 - Client 1");
    assert_eq!(all[1].description.as_deref(), Some("spare"));
    assert_eq!(
        all[0].health.last_transition,
        t(0),
        "metadata is no transition"
    );
    let out = idx.set_metadata(crate::metadata::MetadataMap::default(), t(2));
    assert_eq!(out.deltas.len(), 2);
    assert_eq!(idx.instances()[0].name, "Windows 98 - Game Server");
}

#[test]
fn metadata_never_adds_instances() {
    let mut idx = index();
    let metadata = crate::metadata::MetadataMap::parse(r#"{"5": {"name": "Ghost"}}"#).unwrap();
    assert!(idx.set_metadata(metadata, t(0)).deltas.is_empty());
    assert!(idx.instances().is_empty());
}

#[test]
fn a_failing_probe_degrades_a_serving_instance_and_a_passing_one_restores_it() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0), booting(1)]), t(0));
    assert!(idx.set_probe(KEY0, probe(true, 1), t(1)).deltas.len() == 1);
    let out = idx.set_probe(KEY0, probe(false, 2), t(2));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceNotReady, "instance-0".into())]
    );
    assert_eq!(out.deltas[0].reason.as_deref(), Some("probe-failing"));
    let i = &out.deltas[0].instance;
    assert_eq!(i.status, Status::Degraded);
    assert!(!i.ready && i.health.ready, "Kubernetes still says ready");
    assert!(!i.probe.as_ref().unwrap().reachable);
    assert!(
        idx.set_probe(KEY0, probe(false, 3), t(3)).deltas.is_empty(),
        "the same outcome again is no change"
    );
    let out = idx.set_probe(KEY0, probe(true, 4), t(4));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceReady, "instance-0".into())]
    );
}

#[test]
fn the_overlay_digest_follows_probe_outcomes_and_metadata_but_not_measurements() {
    let mut a = index();
    let mut b = index();
    for idx in [&mut a, &mut b] {
        idx.apply(&slice("a", vec![ready(0), ready(1)]), t(0));
    }
    assert_eq!(
        a.overlay_digest(),
        None,
        "no local inputs, nothing to digest"
    );
    a.set_probe(KEY0, probe(true, 1), t(1));
    let mut slower = probe(true, 2);
    slower.latency_ms = Some(900);
    b.set_probe(KEY0, slower, t(2));
    assert!(a.overlay_digest().is_some());
    assert_eq!(
        a.overlay_digest(),
        b.overlay_digest(),
        "same outcomes, same digest"
    );

    let before = b.overlay_digest();
    b.set_probe(KEY0, probe(false, 3), t(3));
    assert_ne!(b.overlay_digest(), before, "another outcome");
    b.set_probe(KEY0, probe(true, 4), t(4));
    assert_eq!(b.overlay_digest(), before, "the same outcome again");

    let named = crate::metadata::MetadataMap::parse(r#"{"0": {"name": "Host"}}"#).unwrap();
    b.set_metadata(named.clone(), t(5));
    assert_ne!(b.overlay_digest(), a.overlay_digest());
    a.set_metadata(named, t(6));
    assert_eq!(b.overlay_digest(), a.overlay_digest());
}

#[test]
fn a_failing_probe_does_not_change_a_pod_that_is_not_serving() {
    let mut idx = index();
    idx.apply(&slice("a", vec![booting(1)]), t(0));
    let key = "loco/loco-loco-emulator/loco-loco-emulator-1";
    let out = idx.set_probe(key, probe(false, 1), t(1));
    assert_eq!(
        kinds(&out),
        vec![(DeltaKind::InstanceUpdated, "instance-1".into())]
    );
    assert_eq!(out.deltas[0].instance.status, Status::Booting);
}

#[test]
fn probes_of_removed_instances_are_dropped() {
    let mut idx = index();
    idx.apply(&slice("a", vec![ready(0)]), t(0));
    idx.set_probe(KEY0, probe(false, 1), t(1));
    idx.apply(&slice("a", vec![]), t(2));
    assert!(idx.set_probe(KEY0, probe(false, 3), t(3)).deltas.is_empty());
    let out = idx.apply(&slice("a", vec![ready(0)]), t(4));
    assert_eq!(
        out.deltas[0].instance.status,
        Status::Ready,
        "a new pod starts unprobed"
    );
}

// ---- addresses are validated at the edge ------------------------------------------------

#[test]
fn addresses_that_are_not_ips_of_the_slice_type_are_dropped_and_counted() {
    let hostile = [
        "999.1.1.1",
        "not-an-ip",
        "http://evil/",
        "127.0.0.1:18990/internal/admin?x=",
        "fd00::1",
    ];
    let mut endpoints: Vec<Endpoint> = hostile
        .iter()
        .enumerate()
        .map(|(n, a)| mk_endpoint(&format!("bad-{n}"), a, true, false))
        .collect();
    let mut mixed = ready(1);
    mixed.addresses = vec!["http://evil/".into(), "10.0.0.11".into()];
    endpoints.push(mixed);
    let mut idx = index();
    let out = idx.apply(&slice("s1", endpoints), t(0));
    assert_eq!(ids(&idx), vec!["instance-1"]);
    let instance = idx.instances()[0].clone();
    assert_eq!(instance.addresses.pod_ips, vec!["10.0.0.11".to_owned()]);
    assert_eq!(
        instance.health_url.as_deref(),
        Some("http://10.0.0.11:8080")
    );
    let invalid: Vec<_> = out
        .anomalies
        .iter()
        .filter(|a| a.reason == AnomalyReason::InvalidAddress)
        .collect();
    assert_eq!(invalid.len(), hostile.len() + 1);
    assert!(AnomalyReason::InvalidAddress.loses_information());

    let mut v6 = slice("s6", vec![mk_endpoint(&pod(2), "10.0.0.12", true, false)]);
    v6.address_type = "IPv6".into();
    let out = idx.apply(&v6, t(1));
    assert_eq!(reasons(&out), vec![AnomalyReason::InvalidAddress]);
    assert_eq!(ids(&idx), vec!["instance-1"]);
}

#[test]
fn a_health_port_out_of_range_gives_no_health_url() {
    let mut s = slice("s1", vec![ready(0)]);
    s.ports = Some(vec![mk_port("health", 70000), mk_port("vnc", 5901)]);
    let mut idx = index();
    idx.apply(&s, t(0));
    assert_eq!(idx.instances()[0].health_url, None);
    assert_eq!(idx.instances()[0].health_target(), None);
}

#[test]
fn the_health_target_is_a_socket_address_parsed_from_the_health_url() {
    let mut idx = index();
    idx.apply(&slice("s1", vec![ready(0)]), t(0));
    let mut instance = idx.instances()[0].clone();
    assert_eq!(
        instance.health_target(),
        Some("10.0.0.10:8080".parse().unwrap())
    );
    for forged in [
        "http://127.0.0.1:18990/internal/admin?x=:8080",
        "http://evil/:8080",
        "https://10.0.0.10:8080",
        "http://10.0.0.10:8080/x",
    ] {
        instance.health_url = Some(forged.into());
        assert_eq!(instance.health_target(), None, "{forged}");
    }
}
