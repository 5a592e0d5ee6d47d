//! Hostile data from the cluster and from files, as property tests: EndpointSlices with
//! invalid, duplicate and wrong-family addresses, unicode, overlong and control-character
//! names, absurd ordinals, missing conditions and targetRefs, unsupported address types;
//! and arbitrary metadata files. Never a panic, every bad input an anomaly (or an error),
//! everything else still published.
//!
//! Runs are seeded (the same inputs every run, so the counts in RELIABILITY.md are
//! reproducible); `cargo test -p loco-discovery-core --test hostile_corpus -- --nocapture`
//! prints how many inputs of each kind were tried.

mod seeded;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use loco_discovery_core::index::{EndpointIndex, IndexConfig, Outcome};
use loco_discovery_core::metadata::MetadataMap;
use loco_discovery_core::slices::{mk_endpoint, mk_port, mk_slice};
use proptest::prelude::*;
use seeded::{runner, text_of};
use std::collections::BTreeSet;
use std::net::IpAddr;

const NS: &str = "loco";
const SVC: &str = "loco-loco-emulator";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

/// Addresses that are no IP at all.
const NOT_IPS: [&str; 6] = [
    "999.1.1.1",
    "not-an-ip",
    "http://evil/",
    "127.0.0.1:18990/internal/admin?x=",
    "10.0.0.1\n2026-11-29T00:00:00Z ERROR forged",
    "::ffff:999.0.0.1",
];

/// Names a pod may carry that give no ordinal: unicode, at and over the DNS limit,
/// control characters, absurd numbers.
fn odd_name(kind: u8, i: usize) -> String {
    let suffix = format!("-{i}x");
    match kind % 7 {
        0 => format!("émulateur-ü-☃{suffix}"),
        1 => format!("{}{suffix}", "a".repeat(253 - suffix.len())),
        2 => format!("{}{suffix}", "b".repeat(400)),
        3 => format!("emu{i}\n2026-11-29T00:00:00Z ERROR forged\r\u{1b}[31m\u{202e}"),
        4 => format!("x{i}-4294967295"),
        5 => format!("{SVC}-{}", 99_999 + i),
        _ => format!("{SVC}-0{i}"),
    }
}

/// One endpoint of the corpus, by what makes it hostile.
#[derive(Clone, Debug)]
enum Kind {
    Valid,
    NoConditions,
    NoTargetRef,
    OddName(u8),
    NotAnIp(u8),
    WrongFamily,
    ValidAndInvalid(u8),
    SameAddressTwice,
    NoAddress,
    EmptyAddress,
    ListedTwice,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Valid),
        1 => Just(Kind::NoConditions),
        1 => Just(Kind::NoTargetRef),
        2 => any::<u8>().prop_map(Kind::OddName),
        2 => any::<u8>().prop_map(Kind::NotAnIp),
        1 => Just(Kind::WrongFamily),
        1 => any::<u8>().prop_map(Kind::ValidAndInvalid),
        1 => Just(Kind::SameAddressTwice),
        1 => Just(Kind::NoAddress),
        1 => Just(Kind::EmptyAddress),
        1 => Just(Kind::ListedTwice),
    ]
}

/// The shape of a whole slice.
#[derive(Clone, Debug)]
enum SliceKind {
    Ipv4,
    Ipv6,
    Fqdn,
    UnknownType,
    NoServiceLabel,
    NoName,
}

fn slice_kind() -> impl Strategy<Value = SliceKind> {
    prop_oneof![
        6 => Just(SliceKind::Ipv4),
        3 => Just(SliceKind::Ipv6),
        1 => Just(SliceKind::Fqdn),
        1 => Just(SliceKind::UnknownType),
        1 => Just(SliceKind::NoServiceLabel),
        1 => Just(SliceKind::NoName),
    ]
}

/// What one slice of the corpus is expected to do to the index.
#[derive(Default)]
struct Expected {
    /// Pod names published.
    published: BTreeSet<String>,
    /// Anomalies that lose information (see `AnomalyReason::loses_information`).
    lossy: usize,
    /// Endpoints built hostile (all but `Kind::Valid`), or 1 for a refused slice.
    hostile: usize,
    endpoints: usize,
}

fn ip(ipv6: bool, n: usize) -> String {
    if ipv6 {
        format!("fd00::{:x}", n + 1)
    } else {
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
    }
}

/// Builds slice number `s` of the corpus and what it should do. Pod names carry `s`, so
/// slices never share pods.
fn build_slice(
    s: usize,
    shape: &SliceKind,
    kinds: &[Kind],
    ports: u8,
) -> (EndpointSlice, Expected) {
    let ipv6 = matches!(shape, SliceKind::Ipv6);
    let mut expected = Expected::default();
    let mut endpoints = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let n = s * 1000 + i;
        let pod = format!("{SVC}-{n}");
        let good = ip(ipv6, n);
        let mut endpoint = mk_endpoint(&pod, &good, true, false);
        let mut publish = Some(pod.clone());
        match kind {
            Kind::Valid => {}
            Kind::NoConditions => endpoint.conditions = None,
            Kind::NoTargetRef => {
                endpoint.target_ref = None;
                endpoint.hostname = Some(format!("host-{n}"));
                publish = endpoint.hostname.clone();
            }
            Kind::OddName(k) => {
                let name = odd_name(*k, n);
                endpoint = mk_endpoint(&name, &good, true, false);
                publish = Some(name);
            }
            Kind::NotAnIp(k) => {
                endpoint.addresses = vec![NOT_IPS[*k as usize % NOT_IPS.len()].into()];
                publish = None;
                expected.lossy += 1;
            }
            Kind::WrongFamily => {
                endpoint.addresses = vec![ip(!ipv6, n)];
                publish = None;
                expected.lossy += 1;
            }
            Kind::ValidAndInvalid(k) => {
                endpoint.addresses = vec![NOT_IPS[*k as usize % NOT_IPS.len()].into(), good];
                expected.lossy += 1;
            }
            Kind::SameAddressTwice => endpoint.addresses = vec![good.clone(), good],
            Kind::NoAddress => {
                endpoint.addresses = vec![];
                publish = None;
                expected.lossy += 1;
            }
            Kind::EmptyAddress => {
                endpoint.addresses = vec![String::new()];
                publish = None;
                expected.lossy += 1;
            }
            Kind::ListedTwice => {
                endpoints.push(endpoint.clone());
                expected.lossy += 1;
                expected.endpoints += 1;
            }
        }
        if !matches!(kind, Kind::Valid) {
            expected.hostile += 1;
        }
        expected.endpoints += 1;
        endpoints.push(endpoint);
        expected.published.extend(publish);
    }
    let mut slice = mk_slice(NS, &format!("emu-{s}-{}", "é".repeat(s)), SVC, endpoints);
    slice.ports = Some(match ports % 3 {
        0 => vec![mk_port("vnc", 5901), mk_port("health", 8080)],
        // Out-of-range numbers: kept as given, but never a health URL.
        1 => vec![mk_port("vnc", -1), mk_port("health", 70_000)],
        _ => {
            expected.lossy += 1;
            vec![mk_port("", 5901), mk_port("", 8080)]
        }
    });
    let refused = |expected: &mut Expected| {
        expected.published.clear();
        expected.lossy = 1;
        expected.hostile = 1;
    };
    match shape {
        SliceKind::Ipv4 => {}
        SliceKind::Ipv6 => slice.address_type = "IPv6".into(),
        SliceKind::Fqdn => {
            slice.address_type = "FQDN".into();
            refused(&mut expected);
        }
        SliceKind::UnknownType => {
            slice.address_type = "IPv5\n".into();
            refused(&mut expected);
        }
        SliceKind::NoServiceLabel => {
            slice.metadata.labels = None;
            refused(&mut expected);
        }
        SliceKind::NoName => {
            slice.metadata.name = None;
            refused(&mut expected);
        }
    }
    (slice, expected)
}

fn lossy(outcome: &Outcome) -> usize {
    outcome
        .anomalies
        .iter()
        .filter(|a| a.reason.loses_information())
        .count()
}

fn published(index: &EndpointIndex) -> BTreeSet<String> {
    index
        .instances()
        .iter()
        .map(|i| i.pod_name.clone())
        .collect()
}

/// Every published address is an IP, and every health URL a parsed IP and port.
fn check_published(index: &EndpointIndex) -> Result<(), TestCaseError> {
    for instance in index.instances() {
        for address in &instance.addresses.pod_ips {
            prop_assert!(address.parse::<IpAddr>().is_ok(), "{address:?} published");
        }
        prop_assert_eq!(
            instance.health_url.is_some(),
            instance.health_target().is_some()
        );
        if let Some(ordinal) = instance.ordinal {
            prop_assert!(ordinal <= loco_discovery_core::index::MAX_ORDINAL);
            prop_assert_eq!(&instance.pod_name, &format!("{SVC}-{ordinal}"));
        }
    }
    Ok(())
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    slices: usize,
    endpoints: usize,
    hostile: usize,
    anomalies: usize,
    lossy: usize,
    published: usize,
}

fn corpus_case() -> impl Strategy<Value = Vec<(SliceKind, Vec<Kind>, u8)>> {
    proptest::collection::vec(
        (
            slice_kind(),
            proptest::collection::vec(kind(), 0..40),
            any::<u8>(),
        ),
        1..5,
    )
}

/// Hostile slices applied one by one: no panic, one lost-information anomaly per bad
/// endpoint (or refused slice), every good endpoint published and only those, the same
/// slices again change nothing, a re-list of them gives the same view, and deleting them
/// all empties it.
#[test]
fn hostile_slices_are_counted_and_the_rest_is_published() {
    let tally = std::cell::RefCell::new(Tally::default());
    runner(96)
        .run(&corpus_case(), |case| {
            let built: Vec<(EndpointSlice, Expected)> = case
                .iter()
                .enumerate()
                .map(|(s, (shape, kinds, ports))| build_slice(s, shape, kinds, *ports))
                .collect();
            let mut index = EndpointIndex::new(IndexConfig::default());
            let mut want = BTreeSet::new();
            let mut count = tally.borrow_mut();
            count.cases += 1;
            for (slice, expected) in &built {
                let outcome = index.apply(slice, t(1));
                prop_assert_eq!(lossy(&outcome), expected.lossy, "{:?}", outcome.anomalies);
                want.extend(expected.published.iter().cloned());
                count.slices += 1;
                count.endpoints += expected.endpoints;
                count.hostile += expected.hostile;
                count.anomalies += outcome.anomalies.len();
                count.lossy += lossy(&outcome);
            }
            prop_assert_eq!(published(&index), want.clone());
            count.published += want.len();
            check_published(&index)?;
            for (slice, expected) in &built {
                let again = index.apply(slice, t(2));
                prop_assert!(again.deltas.is_empty(), "{:?}", again.deltas);
                prop_assert_eq!(lossy(&again), expected.lossy);
            }
            let relisted = EndpointIndex::from_slices(
                IndexConfig::default(),
                built.iter().map(|b| &b.0),
                t(3),
            );
            prop_assert_eq!(published(&relisted), want);
            for (slice, _) in &built {
                index.delete(slice, t(4));
            }
            prop_assert!(index.instances().is_empty());
            Ok(())
        })
        .unwrap();
    let tally = tally.into_inner();
    println!("hostile slices: {tally:?}");
    assert!(tally.lossy > 0 && tally.published > 0);
}

/// One slice of 1,000 endpoints, every kind of hostile endpoint in turn.
#[test]
fn a_slice_of_a_thousand_hostile_endpoints() {
    let kinds = [
        Kind::Valid,
        Kind::NoConditions,
        Kind::NoTargetRef,
        Kind::OddName(0),
        Kind::OddName(1),
        Kind::OddName(2),
        Kind::OddName(3),
        Kind::OddName(4),
        Kind::OddName(5),
        Kind::OddName(6),
        Kind::NotAnIp(0),
        Kind::NotAnIp(1),
        Kind::NotAnIp(2),
        Kind::NotAnIp(3),
        Kind::NotAnIp(4),
        Kind::NotAnIp(5),
        Kind::WrongFamily,
        Kind::ValidAndInvalid(2),
        Kind::SameAddressTwice,
        Kind::NoAddress,
        Kind::EmptyAddress,
        Kind::ListedTwice,
    ];
    let all: Vec<Kind> = kinds.iter().cycle().take(1000).cloned().collect();
    for shape in [SliceKind::Ipv4, SliceKind::Ipv6] {
        let (slice, expected) = build_slice(0, &shape, &all, 0);
        let mut index = EndpointIndex::new(IndexConfig::default());
        let outcome = index.apply(&slice, t(1));
        assert_eq!(lossy(&outcome), expected.lossy);
        assert_eq!(published(&index), expected.published);
        assert!(index.apply(&slice, t(2)).deltas.is_empty());
        let removed = index.delete(&slice, t(3));
        assert_eq!(removed.deltas.len(), expected.published.len());
        assert!(index.instances().is_empty());
        println!(
            "{shape:?} slice: {} endpoints, {} hostile, {} anomalies ({} lost information), {} published",
            expected.endpoints,
            expected.hostile,
            outcome.anomalies.len(),
            lossy(&outcome),
            expected.published.len()
        );
    }
}

/// An absurd ordinal, a leading zero or another StatefulSet's name never takes an
/// ordinal (and so never an `instance-N` id of the grid).
#[test]
fn odd_names_take_no_ordinal_and_keep_their_name() {
    let kinds: Vec<Kind> = (0..7).map(Kind::OddName).collect();
    let (slice, _) = build_slice(0, &SliceKind::Ipv4, &kinds, 0);
    let index = EndpointIndex::from_slices(IndexConfig::default(), [&slice], t(1));
    let instances = index.instances();
    assert_eq!(instances.len(), 7);
    for instance in instances {
        assert_eq!(instance.ordinal, None, "{}", instance.pod_name);
        assert_eq!(instance.id, instance.pod_name);
    }
}

/// Pieces of YAML and JSON and the words of a metadata file.
const YAMLISH: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ": ",
    ", ",
    "\n",
    "\n  ",
    "- ",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "<<: ",
    "instances",
    "name",
    "tags",
    "description",
    "\"0\"",
    "4294967296",
    "-1",
    "null",
    "~",
    "|",
    "# ",
    "%YAML 1.2\n---\n",
    "\u{feff}",
    "\0",
];

/// Text that looks like YAML or JSON: brackets, quotes, anchors, tags, and the keys and
/// fields of a metadata file.
fn yamlish() -> impl Strategy<Value = String> {
    text_of(YAMLISH, "[a-z0-9\u{e9}\u{2603}-]{1,12}", 60)
}

/// Well-formed metadata documents with hostile keys and values.
fn metadata_json() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        (0u32..5).prop_map(|n| n.to_string()),
        Just("4294967296".to_owned()),
        Just("-1".to_owned()),
        (0u32..5).prop_map(|n| format!("{SVC}-{n}")),
        any::<String>(),
    ];
    let text = prop_oneof![
        Just("x\n2026-11-29T00:00:00Z ERROR forged".to_owned()),
        any::<String>()
    ];
    let entry = (
        proptest::option::of(text.clone()),
        proptest::option::of(text.clone()),
        proptest::collection::vec(text, 0..3),
    )
        .prop_map(|(name, description, tags)| {
            serde_json::json!({"name": name, "description": description, "tags": tags})
        });
    (
        proptest::collection::btree_map(key, entry, 0..6),
        any::<bool>(),
    )
        .prop_map(|(map, wrapped)| {
            let map = serde_json::Value::Object(map.into_iter().collect());
            let doc = if wrapped {
                serde_json::json!({ "instances": map })
            } else {
                map
            };
            doc.to_string()
        })
}

/// Documents the parser must refuse or survive without running out of stack or memory.
fn hand_written_metadata() -> Vec<String> {
    let mut docs = vec![
        "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n".to_owned(),
        "\"0\": {name: \"x\n2026-11-29T00:00:00Z ERROR forged\"}".to_owned(),
        format!("\"{}\": {{name: a}}", "9".repeat(400)),
        "\"0\": {name: a}\n\"0\": {name: b}".to_owned(),
        "\"0\": {name: [1, 2]}".to_owned(),
        "\"0\": {tags: a}".to_owned(),
        "instances: 7".to_owned(),
        "--- !!binary aGVsbG8=".to_owned(),
        "\u{feff}{}".to_owned(),
    ];
    for depth in [64, 1_000, 10_000] {
        docs.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        docs.push(format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)));
        docs.push(format!("{}x", "- ".repeat(depth)));
    }
    docs
}

/// A metadata file can name instances, never add or remove them.
fn metadata_never_changes_the_instance_set(map: MetadataMap) -> Result<(), TestCaseError> {
    let slice = mk_slice(
        NS,
        "emu-a",
        SVC,
        (0..3)
            .map(|n| mk_endpoint(&format!("{SVC}-{n}"), &format!("10.0.0.{n}"), true, false))
            .collect::<Vec<Endpoint>>(),
    );
    let mut index = EndpointIndex::from_slices(IndexConfig::default(), [&slice], t(0));
    let before = published(&index);
    let outcome = index.set_metadata(map, t(1));
    prop_assert_eq!(published(&index), before);
    prop_assert!(outcome
        .deltas
        .iter()
        .all(|d| d.kind == loco_discovery_core::model::DeltaKind::InstanceUpdated));
    Ok(())
}

/// Arbitrary bytes, YAML-like text and hand-written bombs into the metadata parser: a
/// result (`Ok` or a refusal with a message), never a panic, and whatever it accepts
/// names instances without adding any.
#[test]
fn metadata_files_of_any_text_are_parsed_or_refused() {
    use std::cell::Cell;
    let (accepted, refused, tried) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let check = |text: &str| -> Result<(), TestCaseError> {
        tried.set(tried.get() + 1);
        match MetadataMap::parse(text) {
            Ok(map) => {
                accepted.set(accepted.get() + 1);
                metadata_never_changes_the_instance_set(map)?;
            }
            Err(error) => {
                refused.set(refused.get() + 1);
                prop_assert!(!error.to_string().is_empty());
            }
        }
        Ok(())
    };
    for doc in hand_written_metadata() {
        check(&doc).unwrap();
    }
    let bytes = proptest::collection::vec(any::<u8>(), 0..300)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = prop_oneof![bytes, yamlish(), any::<String>(), metadata_json()];
    runner(400).run(&text, |text| check(&text)).unwrap();
    println!(
        "metadata files: {} tried ({} hand-written), {} accepted, {} refused",
        tried.get(),
        hand_written_metadata().len(),
        accepted.get(),
        refused.get()
    );
    assert!(refused.get() > 0 && accepted.get() > 0);
}
