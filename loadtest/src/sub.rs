//! The subscriber side: raw SSE and WebSocket clients (the same code against the gateway
//! and against nchan) and `/live` pollers, held in a child process.
//!
//! Protocol with the parent: the child prints `ready <connected> <errors>` once every
//! subscriber has its response head (or failed), then waits for a line `done <writes>` on
//! stdin, keeps reading until every subscriber has received every write (or `settle`
//! passes), and prints its [`Report`] as one JSON line.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one subscriber process saw. Times are wall-clock microseconds since the Unix
/// epoch, so the parent can subtract the instant it wrote write `k`.
#[derive(Serialize, Deserialize, Default)]
pub struct Report {
    pub connected: usize,
    pub errors: u64,
    /// Connect → response head (or the WebSocket handshake), per connected subscriber.
    pub connect_us: Vec<u64>,
    /// Connect → the first event carrying `<marker>0` (the gateway's initial snapshot),
    /// with `--await-initial`.
    pub initial_us: Vec<u64>,
    /// `(k, received at)` for the first frame that carried write `k`'s marker.
    pub receipts: Vec<(u32, u64)>,
    /// Frames that first carried a write's marker, and their payload bytes (to compare
    /// payload sizes).
    pub frames: u64,
    pub frame_bytes: u64,
    /// `reset` events (a subscriber fell behind the gateway's ring).
    pub resets: u64,
    /// Poll mode: requests made and bytes received (head + body).
    pub polls: u64,
    pub poll_bytes: u64,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.connected += other.connected;
        self.errors += other.errors;
        self.connect_us.extend(other.connect_us);
        self.initial_us.extend(other.initial_us);
        self.receipts.extend(other.receipts);
        self.frames += other.frames;
        self.frame_bytes += other.frame_bytes;
        self.resets += other.resets;
        self.polls += other.polls;
        self.poll_bytes += other.poll_bytes;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Mode {
    Sse,
    Ws,
    Poll,
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The highest write number `k` whose marker `<prefix>k` occurs in `text`.
pub fn max_marker(text: &str, prefix: &str) -> Option<u32> {
    let mut best = None;
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        if let Ok(k) = digits.parse::<u32>() {
            best = best.max(Some(k));
        }
    }
    best
}

#[derive(clap::Args)]
pub struct Settings {
    #[arg(long)]
    pub addr: String,
    #[arg(long)]
    pub path: String,
    #[arg(long)]
    pub count: usize,
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[arg(long, default_value = crate::MARKER)]
    pub marker: String,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll_every: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Connect and never read (slow subscribers).
    #[arg(long)]
    pub no_read: bool,
    /// Report ready only once the initial snapshot (an event carrying `<marker>0`) has
    /// been read, so the writes do not queue behind the connection storm's snapshots.
    #[arg(long)]
    pub await_initial: bool,
    /// The loopback address to connect from.
    #[arg(long, default_value = "127.0.0.1")]
    pub source: std::net::IpAddr,
}

/// A connection to `addr` from `source` (any port).
async fn connect(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

pub async fn child(settings: Settings) -> Report {
    let settings = Arc::new(settings);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(settings.count.max(1));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(settings.count);
    for n in 0..settings.count {
        let settings = settings.clone();
        let stop = stop_rx.clone();
        let ready = ready_tx.clone();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            match settings.mode {
                Mode::Poll => poller(&settings, n, stop, ready).await,
                _ => subscriber(&settings, stop, ready, received).await,
            }
        }));
    }
    drop(ready_tx);
    let (mut connected, mut errors) = (0u64, 0u64);
    while let Some(ok) = ready_rx.recv().await {
        if ok {
            connected += 1;
        } else {
            errors += 1;
        }
    }
    println!("ready {connected} {errors}");
    // Wait for `done <writes>`.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut writes = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(w) = line.strip_prefix("done ") {
            writes = w.trim().parse().unwrap_or(0);
            break;
        }
    }
    if settings.mode != Mode::Poll {
        let until = tokio::time::Instant::now() + settings.settle;
        while received.load(Ordering::Relaxed) < connected * writes
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop_tx.send(true);
    let mut total = Report::default();
    for task in tasks {
        if let Ok(r) = task.await {
            total.merge(r);
        }
    }
    total
}

fn ws_key() -> String {
    // Any 16 bytes, base64: the gateway and nchan only echo its hash.
    "dGhlIHNhbXBsZSBub25jZQ==".to_owned()
}

async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
}

async fn subscriber(
    settings: &Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<bool>,
    received: Arc<AtomicU64>,
) -> Report {
    let mut report = Report::default();
    let started = now_us();
    let fail = |mut report: Report| async {
        report.errors += 1;
        let _ = ready.send(false).await;
        report
    };
    let request = match settings.mode {
        Mode::Ws => format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: {}\r\nsec-websocket-version: 13\r\n\r\n",
            settings.path,
            settings.addr,
            ws_key()
        ),
        _ => format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
            settings.path, settings.addr
        ),
    };
    let opened = tokio::time::timeout(Duration::from_secs(120), async {
        let mut socket = connect(settings.source, &settings.addr).await.ok()?;
        let _ = socket.set_nodelay(true);
        socket.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(8192);
        let head_end = read_head(&mut socket, &mut buf).await?;
        Some((socket, buf, head_end))
    })
    .await;
    let Ok(Some((mut socket, mut buf, head_end))) = opened else {
        return fail(report).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let expected = if settings.mode == Mode::Ws {
        " 101 "
    } else {
        " 200 "
    };
    if !head.lines().next().unwrap_or("").contains(expected) {
        return fail(report).await;
    }
    report.connect_us.push(now_us().saturating_sub(started));
    report.connected = 1;
    // Idle (ready for the writes) at the head, or, with `--await-initial`, once the first
    // event carrying `<marker>0` (the gateway's snapshot) has been read.
    let mut ready = Some(ready);
    let initial_deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    if !settings.await_initial || settings.no_read {
        if let Some(ready) = ready.take() {
            let _ = ready.send(true).await;
        }
    }
    if settings.no_read {
        let _ = stop.wait_for(|s| *s).await;
        return report;
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut raw: Vec<u8> = buf.drain(head_end..).collect();
    buf.clear();
    let mut dechunk = chunked.then(Dechunk::default);
    let mut message: Vec<u8> = Vec::new();
    let mut seen: HashSet<u32> = HashSet::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Process what is buffered.
        match dechunk.as_mut() {
            Some(dechunk) => dechunk.feed(&mut raw, &mut buf),
            None => buf.append(&mut raw),
        }
        let now = now_us();
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        match settings.mode {
            Mode::Ws => {
                while let Some((fin, opcode, payload, used)) = ws_frame(&buf) {
                    if opcode == 9 {
                        // Ping: answer with a masked pong (mask key 0).
                        let mut pong = vec![0x8A, 0x80 | payload.len().min(125) as u8];
                        pong.extend_from_slice(&[0, 0, 0, 0]);
                        pong.extend_from_slice(&payload[..payload.len().min(125)]);
                        let _ = socket.write_all(&pong).await;
                    } else if opcode == 8 {
                        return report;
                    } else {
                        // A message may come in fragments (a large snapshot does).
                        message.extend_from_slice(&payload);
                        if fin {
                            payloads.push(std::mem::take(&mut message));
                        }
                    }
                    buf.drain(..used);
                }
            }
            _ => {
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if line.starts_with(b"event:reset") || line.starts_with(b"event: reset") {
                        report.resets += 1;
                    }
                    if let Some(data) = line.strip_prefix(b"data:") {
                        payloads.push(data.to_vec());
                    }
                }
            }
        }
        for payload in payloads {
            let text = String::from_utf8_lossy(&payload);
            if let Some(k) = max_marker(&text, &settings.marker) {
                if seen.insert(k) {
                    report.receipts.push((k, now));
                    if k > 0 {
                        report.frames += 1;
                        report.frame_bytes += payload.len() as u64;
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if ready.is_some() && seen.contains(&0) {
            report.initial_us.push(now_us().saturating_sub(started));
            if let Some(ready) = ready.take() {
                let _ = ready.send(true).await;
            }
        }
        let read = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(initial_deadline), if ready.is_some() => None,
            read = socket.read(&mut chunk) => Some(read),
        };
        let Some(read) = read else {
            // No initial event in time: let the run go on; the accounting shows it.
            if let Some(ready) = ready.take() {
                let _ = ready.send(true).await;
            }
            continue;
        };
        match read {
            Ok(0) => break,
            Err(_) => {
                report.errors += 1;
                break;
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    report
}

/// Decodes a chunked transfer-encoded body as it arrives (a server may split one event
/// over several chunks).
#[derive(Default)]
struct Dechunk {
    /// Bytes left in the current chunk, then its CRLF; `None` while reading a size line.
    left: Option<(usize, bool)>,
}

impl Dechunk {
    /// Moves the body bytes of `raw` to `body`, keeping an incomplete size line in `raw`.
    fn feed(&mut self, raw: &mut Vec<u8>, body: &mut Vec<u8>) {
        let mut at = 0;
        loop {
            match self.left {
                None => match httparse::parse_chunk_size(&raw[at..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.left = Some((size as usize, true));
                    }
                    _ => break,
                },
                Some((0, true)) => {
                    if raw.len() - at < 2 {
                        break;
                    }
                    at += 2;
                    self.left = None;
                }
                Some((n, crlf)) => {
                    let take = n.min(raw.len() - at);
                    if take == 0 {
                        break;
                    }
                    body.extend_from_slice(&raw[at..at + take]);
                    at += take;
                    self.left = Some((n - take, crlf));
                }
            }
        }
        raw.drain(..at);
    }
}

/// One unmasked server frame: (final, opcode, payload, bytes used), or `None` when
/// incomplete.
fn ws_frame(buf: &[u8]) -> Option<(bool, u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if masked {
        at += 4;
    }
    if buf.len() < at + len {
        return None;
    }
    Some((fin, opcode, buf[at..at + len].to_vec(), at + len))
}

/// Polls `/live` every `poll_every` (the first poll staggered by `n`), recording the first
/// poll that showed each write.
async fn poller(
    settings: &Settings,
    n: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<bool>,
) -> Report {
    let mut report = Report::default();
    let Ok(mut socket) = connect(settings.source, &settings.addr).await else {
        report.errors += 1;
        let _ = ready.send(false).await;
        return report;
    };
    report.connected = 1;
    let _ = ready.send(true).await;
    drop(ready);
    let every = settings.poll_every;
    let offset = every.mul_f64((n % 1000) as f64 / 1000.0);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    let mut shown: Option<u32> = None;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\n\r\n",
        settings.path, settings.addr
    );
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = ticker.tick() => {}
        }
        if socket.write_all(request.as_bytes()).await.is_err() {
            report.errors += 1;
            break;
        }
        // Read one response (content-length framed).
        let mut buf: Vec<u8> = Vec::new();
        let Some(head_end) = read_head(&mut socket, &mut buf).await else {
            report.errors += 1;
            break;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(got) => buf.extend_from_slice(&chunk[..got]),
            }
        }
        let now = now_us();
        report.polls += 1;
        report.poll_bytes += buf.len() as u64;
        let body = String::from_utf8_lossy(&buf[head_end..]);
        if let Some(k) = max_marker(&body, &settings.marker) {
            let from = shown.map(|s| s + 1).unwrap_or(k);
            for seen in from..=k {
                report.receipts.push((seen, now));
            }
            shown = Some(shown.map_or(k, |s| s.max(k)));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_frames() {
        assert_eq!(max_marker("a emu-w3 b emu-w12\"", "emu-w"), Some(12));
        assert_eq!(max_marker("nothing", "emu-w"), None);
        let frame = [0x81u8, 3, b'a', b'b', b'c', 0x81];
        assert_eq!(ws_frame(&frame), Some((true, 1, b"abc".to_vec(), 5)));
        assert_eq!(ws_frame(&frame[..4]), None);
    }

    #[test]
    fn a_chunked_body_is_decoded_whatever_the_reads_split() {
        let wire = b"6\r\nevent:\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let (mut dechunk, mut raw, mut body) = (Dechunk::default(), Vec::new(), Vec::new());
            for part in [&wire[..split], &wire[split..]] {
                raw.extend_from_slice(part);
                dechunk.feed(&mut raw, &mut body);
            }
            assert_eq!(body, b"event:abc", "split at {split}");
        }
    }
}
