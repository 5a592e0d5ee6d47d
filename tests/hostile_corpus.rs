//! Hostile input the gateway parses itself: static instance files, query strings,
//! `Last-Event-ID` values (property tests), and raw WebSocket frames sent to a running
//! gateway. Never a panic, every bad input refused or counted, everything else served.
//!
//! Runs are seeded, so the counts in RELIABILITY.md are reproducible:
//! `cargo test --test hostile_corpus -- --nocapture` prints them.

#[path = "../crates/core/tests/seeded/mod.rs"]
mod seeded;
mod support;

use loco_discovery::http::{parse_filter, parse_stream_query};
use loco_discovery::sources::{parse_static, StaticError};
use loco_discovery_core::index::{EndpointIndex, IndexConfig};
use proptest::prelude::*;
use seeded::{runner, text_of};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

// ---- static instance files ------------------------------------------------------------

/// Where a static entry says its pod is.
#[derive(Clone, Debug)]
enum Identity {
    PodName(String),
    Ordinal(i64),
    Id(String),
    Nothing,
}

/// Where a static entry says its address is.
#[derive(Clone, Debug)]
enum Address {
    /// The `address` field.
    Field(String),
    PodIp(String),
    VncUrl(String),
    Nothing,
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u8..4).prop_map(|n| format!("10.0.0.{n}")),
        1 => Just("999.1.1.1".to_owned()),
        1 => Just("not-an-ip".to_owned()),
        1 => Just("http://evil/".to_owned()),
        1 => Just("127.0.0.1:18990/internal/admin?x=".to_owned()),
        1 => Just("x\n2026-11-29T00:00:00Z ERROR forged".to_owned()),
        1 => Just(String::new()),
        1 => Just("a".repeat(300)),
        1 => Just("fd00::1".to_owned()),
        1 => any::<String>(),
    ]
}

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        6 => hostile_text().prop_map(Identity::PodName),
        4 => (0i64..5).prop_map(Identity::Ordinal),
        1 => prop_oneof![Just(-1i64), Just(4_294_967_296)].prop_map(Identity::Ordinal),
        4 => prop_oneof![
            Just("instance-4294967295".to_owned()),
            Just("instance--1".to_owned()),
            Just("instance-".to_owned()),
            (0u8..5).prop_map(|n| format!("instance-{n}")),
        ]
        .prop_map(Identity::Id),
        1 => Just(Identity::Nothing),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        6 => hostile_text().prop_map(Address::Field),
        3 => hostile_text().prop_map(Address::PodIp),
        3 => hostile_text().prop_map(|h| Address::VncUrl(format!("{h}:5901"))),
        1 => Just(Address::VncUrl("no-port".to_owned())),
        1 => Just(Address::Nothing),
    ]
}

/// One entry as JSON, and the pod and address the parser should read from it (`None`
/// for the pod when the entry names none; for the address, when it gives none).
fn entry_json(identity: &Identity, address: &Address) -> serde_json::Value {
    let mut entry = serde_json::Map::new();
    match identity {
        Identity::PodName(name) => entry.insert("podName".into(), name.clone().into()),
        Identity::Ordinal(n) => entry.insert("ordinal".into(), (*n).into()),
        Identity::Id(id) => entry.insert("id".into(), id.clone().into()),
        Identity::Nothing => None,
    };
    match address {
        Address::Field(a) => entry.insert("address".into(), a.clone().into()),
        Address::PodIp(a) => entry.insert("addresses".into(), serde_json::json!({"podIP": a})),
        Address::VncUrl(u) => entry.insert("vncUrl".into(), u.clone().into()),
        Address::Nothing => None,
    };
    entry.into()
}

/// The pod an entry names, `Err(())` when its `ordinal` is refused by the parser's type,
/// `Ok(None)` when it names none.
fn pod_of(identity: &Identity) -> Result<Option<String>, ()> {
    match identity {
        Identity::PodName(name) => Ok(Some(name.clone())),
        Identity::Ordinal(n) => u32::try_from(*n)
            .map(|n| Some(format!("emu-{n}")))
            .map_err(|_| ()),
        Identity::Id(id) => Ok(id
            .strip_prefix("instance-")
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| format!("emu-{n}"))),
        Identity::Nothing => Ok(None),
    }
}

fn address_of(address: &Address) -> Option<String> {
    match address {
        Address::Field(a) | Address::PodIp(a) => Some(a.clone()),
        Address::VncUrl(u) => u.rsplit_once(':').map(|(host, _)| host.to_owned()),
        Address::Nothing => None,
    }
}

/// A static file of hostile entries: refused (naming the first bad entry) exactly when an
/// entry names no pod or no address; otherwise every entry whose address is no IPv4
/// address, and every repeated pod, is an anomaly of the index, and the rest is published.
#[test]
fn static_files_of_hostile_entries_are_refused_or_counted() {
    let (files, entries, refused, anomalies) =
        (Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0));
    let strategy = proptest::collection::vec((identity(), address()), 0..8);
    runner(300)
        .run(&strategy, |list| {
            files.set(files.get() + 1);
            entries.set(entries.get() + list.len());
            let json: Vec<_> = list.iter().map(|(i, a)| entry_json(i, a)).collect();
            let text = serde_json::to_string(&json).unwrap();
            let parsed = parse_static(&text, "loco", "emu");
            let first_bad = list
                .iter()
                .position(|(i, a)| !matches!(pod_of(i), Ok(Some(_))) || address_of(a).is_none());
            let Some(bad) = first_bad else {
                let parsed = parsed.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                let mut index = EndpointIndex::new(IndexConfig::default());
                let outcome = index.apply(&parsed.slice, chrono::Utc::now());
                let (mut want, mut lossy) = (BTreeSet::new(), 0);
                for (identity, address) in &list {
                    let pod = pod_of(identity).unwrap().unwrap();
                    let ip = address_of(address).unwrap();
                    // A pod without a name is known by its address.
                    let pod = if pod.is_empty() { ip.clone() } else { pod };
                    if ip.parse::<Ipv4Addr>().is_err() || !want.insert(pod) {
                        lossy += 1;
                    }
                }
                let counted = outcome
                    .anomalies
                    .iter()
                    .filter(|a| a.reason.loses_information())
                    .count();
                prop_assert_eq!(counted, lossy, "{:?}", outcome.anomalies);
                anomalies.set(anomalies.get() + counted);
                let published: BTreeSet<String> = index
                    .instances()
                    .iter()
                    .map(|i| i.pod_name.clone())
                    .collect();
                prop_assert_eq!(published, want);
                return Ok(());
            };
            refused.set(refused.get() + 1);
            // An ordinal out of u32's range refuses the document while it is read.
            let unreadable = list.iter().any(|(i, _)| pod_of(i).is_err());
            match parsed {
                Err(StaticError::Entry(n, _)) => prop_assert!(!unreadable && n == bad),
                Err(StaticError::Shape(_)) => prop_assert!(unreadable),
                Ok(_) => prop_assert!(false, "entry {} accepted", bad),
            }
            Ok(())
        })
        .unwrap();
    println!(
        "static files: {} files of {} hostile entries; {} refused, {} anomalies counted in the rest",
        files.get(),
        entries.get(),
        refused.get(),
        anomalies.get()
    );
}

/// Pieces of YAML and JSON and the words of a static file.
const STATIC_LIKE: &[&str] = &[
    "instances:\n",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ": ",
    ", ",
    "\n  ",
    "podName",
    "ordinal",
    "id: instance-",
    "vncUrl",
    "ports",
    "status",
    "&x ",
    "*x",
    "!!map ",
    "18446744073709551616",
];

/// Text that looks like a static file: its field names, YAML and JSON punctuation.
fn static_like_text() -> impl Strategy<Value = String> {
    text_of(STATIC_LIKE, "[a-z0-9.:/]{1,16}", 50)
}

/// Arbitrary bytes and static-file-like text: parsed or refused, never a panic, and an
/// accepted file goes through the index without one.
#[test]
fn static_files_of_any_text_are_parsed_or_refused() {
    let (tried, accepted) = (Cell::new(0), Cell::new(0));
    let bytes = proptest::collection::vec(any::<u8>(), 0..300)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = prop_oneof![bytes, static_like_text()];
    runner(300)
        .run(&text, |text| {
            tried.set(tried.get() + 1);
            if let Ok(parsed) = parse_static(&text, "loco", "emu") {
                accepted.set(accepted.get() + 1);
                let index = EndpointIndex::from_slices(
                    IndexConfig::default(),
                    [&parsed.slice],
                    chrono::Utc::now(),
                );
                for instance in index.instances() {
                    prop_assert!(instance
                        .addresses
                        .pod_ips
                        .iter()
                        .all(|a| a.parse::<Ipv4Addr>().is_ok()));
                }
            }
            Ok(())
        })
        .unwrap();
    println!(
        "static file texts: {} tried, {} accepted, the rest refused",
        tried.get(),
        accepted.get()
    );
}

// ---- query strings and Last-Event-ID ---------------------------------------------------

/// Query strings built from the routes' parameters, hostile values, bad percent-encoding
/// and raw bytes.
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("service"),
        Just("namespace"),
        Just("status"),
        Just("zone"),
        Just("preferZone"),
        Just("lastEventId"),
        Just("access_token"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("ready".to_owned()),
        Just("sleepy".to_owned()),
        Just("ready,offline,,".to_owned()),
        Just("%FF".to_owned()),
        Just("%zz".to_owned()),
        Just("%".to_owned()),
        Just("%C3%28".to_owned()),
        Just("%0A2026-11-29T00:00:00Z%20ERROR".to_owned()),
        Just("12.1".to_owned()),
        Just("9".repeat(5000)),
        "[a-zA-Z0-9%+&=;,._~-]{0,20}",
        any::<String>(),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// What the routes accept of a query: every `%` two hex digits, decoding to UTF-8.
fn well_encoded(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(byte) = query
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
            else {
                return false;
            };
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).is_ok()
}

/// Whether `id` could be an event id this gateway sent.
fn plausible_id(id: &str) -> bool {
    id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

/// Any query string and any `Last-Event-ID`: a filter or a refusal (a 400), never a
/// panic; refused exactly when the encoding is bad, a status unknown or the event id
/// implausible; and the refusal's message holds no raw control character.
#[test]
fn query_strings_and_event_ids_are_parsed_or_refused() {
    let (tried, refused) = (Cell::new(0), Cell::new(0));
    let header = prop_oneof![
        Just(None),
        Just(Some("12.1".to_owned())),
        Just(Some("x\n2026-11-29T00:00:00Z ERROR forged".to_owned())),
        Just(Some("9".repeat(201))),
        any::<String>().prop_map(Some),
    ];
    runner(600)
        .run(&(query(), header), |(query, header)| {
            tried.set(tried.get() + 1);
            let filter = parse_filter(&query);
            let stream = parse_stream_query(&query, header.as_deref());
            if !well_encoded(&query) {
                prop_assert!(filter.is_err() && stream.is_err());
            }
            if let Ok(filter) = &filter {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
                let statuses = pairs
                    .iter()
                    .filter(|(k, _)| k == "status")
                    .flat_map(|(_, v)| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|v| !v.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .count();
                prop_assert_eq!(filter.statuses.len(), statuses);
                let query_id = pairs
                    .iter()
                    .find(|(k, _)| k == "lastEventId")
                    .map(|(_, v)| v.clone());
                let id = header.clone().or(query_id);
                prop_assert_eq!(stream.is_ok(), id.as_deref().is_none_or(plausible_id));
            }
            for error in [filter.err(), stream.err()].into_iter().flatten() {
                refused.set(refused.get() + 1);
                prop_assert!(!error.chars().any(char::is_control), "{error:?}");
                prop_assert!(error.len() < 400, "{} bytes", error.len());
            }
            Ok(())
        })
        .unwrap();
    println!(
        "query strings: {} (query, Last-Event-ID) pairs tried, {} refusals (filter and stream parse)",
        tried.get(),
        refused.get()
    );
}

/// WebSocket text a subscriber may send: pings with hostile `ts` values, other JSON,
/// arbitrary strings.
fn ws_text() -> impl Strategy<Value = String> {
    let ts = prop_oneof![
        Just(serde_json::json!(7)),
        Just(serde_json::json!("x\n2026-11-29T00:00:00Z ERROR forged")),
        Just(serde_json::json!({"nested": [1, 2, {"deep": null}]})),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    prop_oneof![
        ts.prop_map(|ts| serde_json::json!({"type": "__ping", "ts": ts}).to_string()),
        any::<String>().prop_map(|t| serde_json::json!({"type": t}).to_string()),
        any::<String>(),
    ]
}

/// Any text frame: a pong exactly for a `__ping`, carrying its `ts` back, and valid JSON;
/// nothing for anything else; never a panic.
#[test]
fn websocket_text_gets_a_pong_only_for_a_ping() {
    let (tried, pongs) = (Cell::new(0), Cell::new(0));
    runner(300)
        .run(&ws_text(), |text| {
            tried.set(tried.get() + 1);
            let sent: Option<serde_json::Value> = serde_json::from_str(&text).ok();
            let ping = sent.as_ref().filter(|v| v["type"] == "__ping");
            match (loco_discovery::http::pong_for(&text), ping) {
                (Some(pong), Some(ping)) => {
                    pongs.set(pongs.get() + 1);
                    let pong: serde_json::Value = serde_json::from_str(&pong).unwrap();
                    prop_assert_eq!(&pong["type"], "__pong");
                    prop_assert_eq!(&pong["ts"], &ping["ts"]);
                }
                (None, None) => {}
                (pong, _) => prop_assert!(false, "{text:?} answered {pong:?}"),
            }
            Ok(())
        })
        .unwrap();
    println!(
        "websocket texts: {} tried, {} pings answered",
        tried.get(),
        pongs.get()
    );
}

// ---- WebSocket frames -------------------------------------------------------------------

/// A client frame: `first` is FIN, RSV and opcode; masked with a zero key unless `unmasked`.
fn frame(first: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mask = if unmasked { 0 } else { 0x80 };
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(mask | n as u8),
        n if n <= 0xffff => {
            out.push(mask | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(mask | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    if !unmasked {
        out.extend([0, 0, 0, 0]);
    }
    out.extend(payload);
    out
}

/// How a connection ended: the close code the gateway sent, 0 for a close without
/// one, or `None` when the socket closed without a close frame. Panics when it stays
/// open for `LIMIT`.
async fn ending(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return close_code_in(&buf),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(code) = close_code_in(&buf) {
                    return Some(code);
                }
            }
            Err(_) => panic!("the connection is still open after {LIMIT:?}"),
        }
    }
}

/// The code of the first close frame among the server frames in `buf`.
fn close_code_in(mut buf: &[u8]) -> Option<u16> {
    while buf.len() >= 2 {
        let (opcode, short) = (buf[0] & 0x0f, (buf[1] & 0x7f) as usize);
        let (len, start) = match short {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n, 2),
        };
        let payload = buf.get(start..start + len)?;
        if opcode == 8 {
            return Some(
                payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]])),
            );
        }
        buf = &buf[start + len..];
    }
    None
}

/// Reads server frames until a text frame holding `needle`; false if the connection
/// ends or `LIMIT` passes first.
async fn text_arrives(stream: &mut TcpStream, needle: &str) -> bool {
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            return false;
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return true;
        }
    }
    false
}

const PING: &[u8] = br#"{"type":"__ping","ts":7}"#;

/// Frames a subscriber may send that the gateway ignores: the connection goes on and
/// answers the next application ping.
fn tolerated_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut pings = Vec::new();
    for _ in 0..1000 {
        pings.extend(frame(0x89, b"p", false));
    }
    vec![
        ("binary frame", frame(0x82, &[0, 159, 146, 150], false)),
        (
            "text that is no ping",
            frame(0x81, b"{\"type\":\"x\n\"}", false),
        ),
        ("1,000 pings", pings),
        ("unsolicited pong", frame(0x8a, b"pong", false)),
        ("empty text", frame(0x81, b"", false)),
    ]
}

/// The head of a 16 MiB text frame, its payload never sent.
fn announced_16_mib() -> Vec<u8> {
    let mut head = vec![0x81, 0x80 | 127];
    head.extend((16u64 << 20).to_be_bytes());
    head.extend([0, 0, 0, 0]);
    head
}

/// Frames that break the protocol, and the close code the gateway must answer with
/// (`None`: the connection must end, with or without a close frame; tungstenite drops it
/// on a protocol error).
fn hostile_frames() -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    vec![
        ("reserved data opcode", frame(0x83, b"x", false), None),
        ("reserved control opcode", frame(0x8b, b"x", false), None),
        ("RSV1 set", frame(0xc1, PING, false), None),
        ("RSV3 set", frame(0x91, PING, false), None),
        ("unmasked client frame", frame(0x81, PING, true), None),
        (
            "ping over 125 bytes",
            frame(0x89, &[b'p'; 126], false),
            None,
        ),
        ("fragmented ping", frame(0x09, b"p", false), None),
        (
            "continuation without a start",
            frame(0x80, b"x", false),
            None,
        ),
        (
            "invalid UTF-8 text",
            frame(0x81, b"\xff\xfe\xc3\x28", false),
            None,
        ),
        (
            "close with a 1-byte payload",
            frame(0x88, b"\x03", false),
            None,
        ),
        (
            "close with code 999",
            frame(0x88, &999u16.to_be_bytes(), false),
            None,
        ),
        (
            "close with code 1005",
            frame(0x88, &1005u16.to_be_bytes(), false),
            None,
        ),
        (
            "close with code 5000",
            frame(0x88, &5000u16.to_be_bytes(), false),
            None,
        ),
        (
            "close with invalid UTF-8 reason",
            frame(0x88, b"\x03\xe8\xff\xfe", false),
            None,
        ),
        ("a 16 MiB frame announced", announced_16_mib(), Some(1009)),
    ]
}

/// Raw WebSocket frames, tolerated and hostile, on a running gateway: ignored frames
/// leave the connection serving; protocol violations end it (1009 for an oversized
/// frame), and `/live` and an SSE subscriber are served all along.
#[tokio::test]
async fn raw_websocket_frames_never_stop_the_gateway() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    let gateway = Gateway::start(&cluster).await;
    let mut sse = gateway.sse("", None).await;
    assert_eq!(sse.next().await.event, "snapshot");
    let tolerated = tolerated_frames();
    for (what, bytes) in &tolerated {
        let mut ws = raw_ws(gateway.addr).await;
        ws.write_all(bytes).await.unwrap();
        ws.write_all(&frame(0x81, PING, false)).await.unwrap();
        assert!(
            text_arrives(&mut ws, "__pong").await,
            "{what}: no pong after it"
        );
    }
    let hostile = hostile_frames();
    let before = scrape::Scrape::from(&gateway).await;
    for (what, bytes, code) in &hostile {
        let mut ws = raw_ws(gateway.addr).await;
        ws.write_all(bytes).await.unwrap();
        let ended = ending(&mut ws).await;
        if code.is_some() {
            assert_eq!(ended, *code, "{what}");
        }
    }
    // Every kind of bad input is counted.
    let closed = "loco_discovery_connections_closed_total";
    scrape::expect_moved(
        &gateway,
        &before,
        closed,
        &[("reason", "message_too_big")],
        1.0,
    )
    .await;
    let protocol_errors =
        scrape::moved(&gateway, &before, closed, &[("reason", "protocol_error")]).await;
    println!("websocket protocol errors counted: {protocol_errors}");
    assert!(
        protocol_errors >= 10.0,
        "{protocol_errors} protocol errors counted"
    );
    // Everything else is still served.
    assert!(gateway.live("").await["instances"].is_array());
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let event = sse.next().await;
    assert_eq!(event.event, "InstanceAdded", "{}", event.data);
    let mut ws = raw_ws(gateway.addr).await;
    ws.write_all(&frame(0x81, PING, false)).await.unwrap();
    assert!(text_arrives(&mut ws, "__pong").await);
    println!(
        "websocket frames: {} tolerated sequences, {} hostile frames",
        tolerated.len(),
        hostile.len()
    );
}

/// A client's close frame is answered with a close frame: its own code, or 1002 when the
/// code is one a peer may not send (RFC 6455 7.4).
#[tokio::test]
async fn a_close_frame_is_answered_with_a_close_frame() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    for (sent, answer) in [(1000u16, 1000u16), (999, 1002), (1005, 1002), (5000, 1002)] {
        let mut ws = raw_ws(gateway.addr).await;
        ws.write_all(&frame(0x88, &sent.to_be_bytes(), false))
            .await
            .unwrap();
        assert_eq!(ending(&mut ws).await, Some(answer), "close {sent}");
    }
}
