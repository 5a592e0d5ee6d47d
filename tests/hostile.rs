//! Hostile clients: what any client can make the gateway hold must be bounded, and
//! given back.

mod support;

use futures::{SinkExt, StreamExt};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(10);

/// Reads WebSocket messages until a close frame; its code, or `None` when the
/// connection ends (or `LIMIT` passes) without one.
async fn close_code<S>(ws: &mut S) -> Option<u16>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn connect_ws(
    gateway: &Gateway,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/api/instances/ws", gateway.addr);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test]
async fn an_oversized_websocket_message_is_closed_with_1009() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut ws = connect_ws(&gateway).await;
    ws.send(Message::text("x".repeat(64 * 1024))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn an_unfinished_fragmented_websocket_message_is_closed_with_1009() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut ws = connect_ws(&gateway).await;
    // 2 KiB frames of one text message that never ends: the gateway must give up
    // long before the megabytes a default WebSocket would buffer.
    let chunk = vec![b'x'; 2048];
    let first = Frame::message(chunk.clone(), OpCode::Data(Data::Text), false);
    ws.send(Message::Frame(first)).await.unwrap();
    for _ in 0..64 {
        let next = Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false);
        if ws.send(Message::Frame(next)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

/// A gateway whose clients get `header_read_timeout` to send a request head.
async fn gateway_with_header_timeout(cluster: &SimCluster, timeout: Duration) -> Gateway {
    let mut config = loco_discovery::GatewayConfig::new(NS, vec![SVC.into()]);
    config.server.header_read_timeout = timeout;
    Gateway::start_with(cluster, config).await
}

/// Whether the server closes `stream` within `limit` (reads up to EOF or an error).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn silent_partial_and_idle_keep_alive_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let cluster = SimCluster::start().await;
    let gateway = gateway_with_header_timeout(&cluster, Duration::from_secs(1)).await;
    let mut silent = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    partial
        .write_all(b"GET /api/instances/live HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Closed after the timeout (1 s), not before: well-behaved clients keep their time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!closed_within(&mut silent, Duration::from_millis(100)).await);
    assert!(closed_within(&mut silent, LIMIT).await, "silent connection");
    assert!(closed_within(&mut partial, LIMIT).await, "partial header");
    assert!(closed_within(&mut idle, LIMIT).await, "idle keep-alive");
    // The server still serves.
    assert!(gateway.live("").await["instances"].is_array());
}

/// Connections closed for `reason`, from `/metrics`.
async fn closed_for(gateway: &Gateway, reason: &str) -> f64 {
    let name = "loco_discovery_connections_closed_total";
    scrape::Scrape::from(gateway)
        .await
        .get(name, &[("reason", reason)])
}

#[tokio::test]
async fn a_client_closing_mid_request_is_counted_not_an_error() {
    use tokio::io::AsyncWriteExt;
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    for _ in 0..3 {
        let mut gone = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        gone.write_all(b"GET /api/instances/live HTTP/1.1\r\nhost")
            .await
            .unwrap();
        drop(gone);
    }
    let counted = eventually(LIMIT, || async {
        closed_for(&gateway, "client_closed").await >= 1.0
    })
    .await;
    assert!(counted.is_ok(), "no client_closed count in /metrics");
}

#[tokio::test]
async fn the_listen_backlog_is_raised() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    // `ss -ltn`: for a listening socket, Send-Q is the backlog.
    let Ok(out) = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", gateway.addr.port())])
        .output()
    else {
        eprintln!("no ss; skipped");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("ss output {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, 4096.min(somaxconn));
}

/// A subscriber that stops reading (connected by `connect`, on a small receive buffer,
/// holding the only subscriber slot) is closed after the write timeout once churn fills
/// every buffer between the gateway and it, and its slot is freed and counted.
async fn never_reading_subscriber_frees_its_slot<F, Fut>(connect: F)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = tokio::net::TcpStream>,
{
    let cluster = SimCluster::start().await;
    let mut config = loco_discovery::GatewayConfig::new(NS, vec![SVC.into()]);
    config.stream.max_subscribers = 1;
    config.stream.write_timeout = Duration::from_secs(1);
    config.server.write_timeout = Duration::from_secs(1);
    let gateway = Gateway::start_with(&cluster, config).await;
    let _slow = connect(gateway.addr).await;
    let stream_status = || async {
        reqwest::get(gateway.url("/api/instances/stream"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually(LIMIT, || async { stream_status().await == 503 })
        .await
        .expect("the never-reading subscriber holds the only slot");
    // Churn until every buffer between the gateway and the reader is full (the kernel's
    // send buffer grows to megabytes), then the write timeout closes the subscriber.
    let mut freed = Err(String::new());
    for _ in 0..10 {
        churn_100(&cluster, 100);
        freed = eventually(Duration::from_secs(3), || async {
            stream_status().await == 200
        })
        .await;
        if freed.is_ok() {
            break;
        }
    }
    assert!(freed.is_ok(), "the stalled subscriber still holds its slot");
    let stalled = closed_for(&gateway, "write_stalled").await;
    assert!(stalled >= 1.0, "write_stalled counted: {stalled}");
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_closed_and_its_slot_freed() {
    never_reading_subscriber_frees_its_slot(slow_subscriber).await;
}

#[tokio::test]
async fn a_websocket_subscriber_that_never_reads_is_closed_and_its_slot_freed() {
    never_reading_subscriber_frees_its_slot(raw_ws).await;
}

/// The status and JSON body of a GET with `headers`.
async fn get_json(url: String, headers: &[(&str, &[u8])]) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// What the server answers to `request` (sent raw), up to its closing the connection.
async fn raw_answer(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The stream routes read their request head themselves: a malformed or oversized head
/// gets the same JSON error as any other bad request, and the connection is closed.
#[tokio::test]
async fn a_bad_stream_request_head_gets_a_json_error() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let malformed = raw_answer(
        gateway.addr,
        b"GET /api/instances/stream HTTP/1.1\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400 "), "{malformed}");
    assert!(malformed.contains(r#""code":400"#), "{malformed}");
    let mut many = b"GET /api/instances/ws HTTP/1.1\r\n".to_vec();
    for n in 0..100 {
        many.extend(format!("x-header-{n}: {n}\r\n").into_bytes());
    }
    many.extend(b"\r\n");
    let too_many = raw_answer(gateway.addr, &many).await;
    assert!(too_many.starts_with("HTTP/1.1 431 "), "{too_many}");
    assert!(too_many.contains(r#""code":431"#), "{too_many}");
    // Still served.
    assert!(gateway.live("").await["instances"].is_array());
}

#[tokio::test]
async fn bad_requests_get_a_json_sentence_not_debug_text() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let cases = [
        (gateway.url("/api/instances/ws"), vec![]),
        (
            gateway.url("/api/instances/stream"),
            vec![("last-event-id", &b"\xff\xfe"[..])],
        ),
        (gateway.url("/api/instances/live?service=%FF"), vec![]),
        (gateway.url("/api/instances/live?service=a%zz"), vec![]),
        (gateway.url("/api/instances/stream?service=%C3%28"), vec![]),
    ];
    for (url, headers) in cases {
        let (status, body) = get_json(url.clone(), &headers).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["code"], 400, "{url}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            !error.contains("Rejection") && !error.contains('(') && error.contains(' '),
            "{url}: {error}"
        );
    }
}

#[tokio::test]
async fn head_works_on_get_routes() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let client = reqwest::Client::new();
    for path in ["/api/instances/live", "/healthz", "/readyz", "/"] {
        let response = client.head(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.bytes().await.unwrap().is_empty(), "{path}");
    }
}

/// The shipped binary in demo mode (one emulator) on 127.0.0.1, logging with
/// `RUST_LOG=rust_log` to a file, under an open-file limit of `files` when given.
struct Demo {
    _running: support::process::Running,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(files: Option<u32>, rust_log: &str, args: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let limit = files.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        let child = std::process::Command::new("sh")
            .args(["-c", &format!("{limit}exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_loco-discovery"))
            .args(["demo", "--listen", "127.0.0.1:0", "--replicas", "1"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the gateway");
        let mut running = support::process::Running(child);
        let stdout = running.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("the gateway's address").unwrap();
            if let Some(at) = line.find("open http://") {
                let rest = &line[at + "open http://".len()..];
                let end = rest.find(['/', ' ']).unwrap_or(rest.len());
                break rest[..end].to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            _running: running,
            addr,
            log,
            _dir: dir,
        }
    }

    /// What the process has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// A gateway at its open-file limit (here 128, set for the child only), held by twice
/// as many clients that send nothing, with `header_timeout` to send a request head: new
/// clients are served (within 20 s) instead of locked out until the others leave.
async fn served_at_the_file_limit(header_timeout: &str) -> Demo {
    let demo = Demo::start(
        Some(128),
        "info",
        &["--header-read-timeout", header_timeout],
    );
    let addr = demo.addr.clone();
    let url = format!("http://{addr}/healthz");
    eventually(LIMIT, || async { reqwest::get(&url).await.is_ok() })
        .await
        .expect("the gateway serves");
    // Twice the file limit of connections that send nothing.
    let mut hostile = Vec::new();
    for _ in 0..256 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            hostile.push(s);
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let served = eventually(Duration::from_secs(20), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        served.is_ok(),
        "locked out while {} idle connections are held",
        hostile.len()
    );
    demo
}

/// The header timeout closes the silent connections and gives their descriptors back.
#[tokio::test]
async fn a_gateway_at_its_file_limit_serves_again() {
    served_at_the_file_limit("1s").await;
}

/// With a header timeout far away, the connection ceiling (90% of the file limit) closes
/// the oldest silent connections to make room.
#[tokio::test]
async fn a_gateway_near_its_file_limit_sheds_idle_connections_to_serve() {
    let demo = served_at_the_file_limit("120s").await;
    let text = reqwest::get(format!("http://{}/metrics", demo.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shed = scrape::value(
        &text,
        "loco_discovery_connections_closed_total",
        &[("reason", "shed_idle")],
    );
    assert!(shed >= 1.0, "shed_idle counted: {shed}");
}

/// A gateway that takes at most `max` connections, with a short heartbeat so a
/// subscriber that leaves is noticed at once.
async fn gateway_with_max_connections(cluster: &SimCluster, max: usize) -> Gateway {
    let mut config = loco_discovery::GatewayConfig::new(NS, vec![SVC.into()]);
    config.server.max_connections = Some(max);
    config.server.header_read_timeout = Duration::from_secs(60);
    config.stream.heartbeat = Duration::from_millis(200);
    Gateway::start_with(cluster, config).await
}

/// A keep-alive connection that has had one answer and now sits idle.
async fn idle_keep_alive(gateway: &Gateway) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test]
async fn at_the_connection_ceiling_the_oldest_idle_connection_makes_room() {
    let cluster = SimCluster::start().await;
    let gateway = gateway_with_max_connections(&cluster, 20).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(idle_keep_alive(&gateway).await);
    }
    // A new client is served: an idle connection was closed to make room.
    let fresh = reqwest::Client::new();
    let response = fresh.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        closed_within(&mut idle[0], LIMIT).await,
        "the oldest idle connection is still open"
    );
    let shed = closed_for(&gateway, "shed_idle").await;
    assert!(shed >= 1.0, "shed_idle counted: {shed}");
    // A connection that has just been answered is not the one shed.
    assert!(!closed_within(&mut idle[19], Duration::from_millis(200)).await);
}

#[tokio::test]
async fn at_the_connection_ceiling_with_every_connection_busy_a_new_client_gets_503() {
    let cluster = SimCluster::start().await;
    let gateway = gateway_with_max_connections(&cluster, 20).await;
    let mut subscribers = Vec::new();
    for _ in 0..20 {
        subscribers.push(gateway.sse("", None).await);
    }
    let response = reqwest::Client::new()
        .get(gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("connections"));
    // The subscribers are served all along.
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.next().await.event, "snapshot");
        assert_eq!(subscriber.next().await.event, "InstanceAdded");
    }
    subscribers.truncate(15);
    let served = eventually(LIMIT, || async {
        reqwest::Client::new()
            .get(gateway.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served.is_ok(), "not served after subscribers left");
    let rejected = scrape::Scrape::from(&gateway)
        .await
        .get("loco_discovery_connections_rejected_total", &[]);
    assert!(rejected >= 1.0, "rejections counted: {rejected}");
}

/// A WebSocket close frame whose reason holds a forged log line.
fn forged_close() -> Vec<u8> {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(FORGED.as_bytes());
    let mut frame = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend(payload);
    frame
}

const FORGED: &str = "x\n2026-11-29T00:00:00Z ERROR forged\u{2028}";

/// Values from clients that reach a log line (a WebSocket close reason, logged at debug)
/// and values that might (percent-decoded query values, header values with UTF-8 line
/// separators): the log holds them escaped, never a line they start.
#[tokio::test]
async fn client_values_never_forge_a_log_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let demo = Demo::start(None, "debug", &[]);
    let addr: std::net::SocketAddr = demo.addr.parse().unwrap();
    let base = format!("http://{addr}");
    eventually(LIMIT, || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .expect("the gateway is ready");
    let mut ws = raw_ws(addr).await;
    ws.write_all(&forged_close()).await.unwrap();
    let mut sink = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(LIMIT, ws.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
    let separator = "x\u{2028}2026-11-29T00:00:00Z ERROR forged".as_bytes();
    let client = reqwest::Client::new();
    for path in [
        "/api/instances/live?service=%0A2026-11-29T00:00:00Z%20ERROR%20forged",
        "/api/instances/stream?lastEventId=%0A2026-11-29T00:00:00Z%20ERROR%20forged",
        "/api/instances/%0A2026-11-29T00:00:00Z%20ERROR%20forged",
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(separator).unwrap();
        let response = client
            .get(format!("{base}{path}"))
            .header("origin", value.clone())
            .header("user-agent", value.clone())
            .header("last-event-id", value)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        drop(response);
    }
    let log = eventually(LIMIT, || async { demo.log().contains("ERROR forged") }).await;
    let text = demo.log();
    assert!(log.is_ok(), "the close reason reached no log line: {text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-11-29T00:00:00Z")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\u{2028}'), "a raw line separator: {text}");
}

/// Many connections that break HTTP within 10 s: each is counted, one warning is logged.
#[tokio::test]
async fn protocol_errors_are_warned_once_per_ten_seconds() {
    use tokio::io::AsyncWriteExt;
    let demo = Demo::start(None, "info", &[]);
    let base = format!("http://{}", demo.addr);
    eventually(LIMIT, || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await
    .expect("the gateway serves");
    for _ in 0..30 {
        let mut bad = tokio::net::TcpStream::connect(&demo.addr).await.unwrap();
        bad.write_all(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut bad, LIMIT).await);
    }
    let counted = eventually(LIMIT, || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let name = "loco_discovery_connections_closed_total";
        scrape::value(&text, name, &[("reason", "protocol_error")]) >= 30.0
    })
    .await;
    assert!(counted.is_ok(), "30 protocol errors counted");
    let log = demo.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("connection error"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}
