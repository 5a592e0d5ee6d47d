//! Fan-out load test of loco-discovery.
//!
//! `loco-loadtest run` starts the simulated API and a gateway as separate processes
//! (the release binaries), opens many SSE subscribers spread over several child
//! processes (a process may hold at most 20,000 open files), drives churn through the
//! simulated API, and prints what it measured: deliveries per second, publish → receive
//! latency percentiles, the gateway's CPU time per delivery and its memory.
//! Everything stays on 127.0.0.1 and every loop is bounded in time.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(name = "loco-loadtest", about = "Fan-out load test of loco-discovery")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole load test and print its figures.
    Run(RunArgs),
    /// (Internal) hold `count` SSE subscribers and report what they received as JSON.
    Subscribe {
        #[arg(long)]
        url: String,
        #[arg(long)]
        count: usize,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Connect and never read (slow subscribers).
        #[arg(long)]
        no_read: bool,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// SSE subscribers in all.
    #[arg(long, default_value_t = 2000)]
    subscribers: usize,
    /// Child processes the subscribers are spread over.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Endpoints in the churned EndpointSlice.
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// EndpointSlice writes per second (each flips one endpoint: one delta).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// How long the churn lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Extra subscribers that connect and never read: the gateway must not buffer for them.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// The gateway binary (a release build gives meaningful figures).
    #[arg(long, default_value = "target/release/loco-discovery")]
    gateway_bin: PathBuf,
}

/// What one subscriber process saw.
#[derive(Serialize, Deserialize, Default)]
struct SubscriberReport {
    connected: usize,
    events: u64,
    /// publish → receive latencies in microseconds, of every delta received.
    latencies_us: Vec<u64>,
    /// `reset` events: the subscriber fell behind and got a snapshot instead.
    resets: u64,
    errors: u64,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(args) => run(args),
        Cmd::Subscribe {
            url,
            count,
            duration,
            no_read,
        } => {
            let report =
                tokio::runtime::Runtime::new()?.block_on(subscribe(&url, count, duration, no_read));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// A child process, killed by its own PID when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin args…` and returns it with the first `http://` URL it prints.
fn start(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Result<(Running, String)> {
    let mut command = Command::new(bin);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let running = Running(child);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(at) = line.find("http://") {
            return Ok((running, line[at..].trim().to_owned()));
        }
    }
    bail!("{} printed no address", bin.display())
}

/// User + system CPU seconds and resident memory (MiB) of a process, from /proc.
fn cpu_and_rss(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / ticks;
    let rss_pages: f64 = fields[21].parse()?;
    Ok((cpu, rss_pages * 4096.0 / (1024.0 * 1024.0)))
}

fn endpoints_json(count: usize, flipped: Option<(usize, bool)>) -> serde_json::Value {
    let endpoints: Vec<_> = (0..count)
        .map(|n| {
            let serving = match flipped {
                Some((f, s)) if f == n => s,
                _ => true,
            };
            json!({
                "addresses": [format!("10.250.{}.{}", n / 250, n % 250 + 1)],
                "conditions": {"ready": serving, "serving": serving, "terminating": false},
                "hostname": format!("emu-{n}"),
                "targetRef": {"kind": "Pod", "name": format!("emu-{n}"), "namespace": "loco"},
            })
        })
        .collect();
    json!(endpoints)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

fn run(args: RunArgs) -> Result<()> {
    if !args.gateway_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            args.gateway_bin.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let kubeconfig_str = kubeconfig.to_str().context("path")?;
    let (_sim, sim_url) = start(
        &args.gateway_bin,
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--write-kubeconfig",
            kubeconfig_str,
        ],
        &[],
    )?;
    let (gateway, gw_url) = start(
        &args.gateway_bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--service",
            "emu",
            "--max-subscribers",
            "100000",
        ],
        &[("KUBECONFIG", kubeconfig_str), ("RUST_LOG", "warn")],
    )?;
    let http = reqwest::Client::new();
    let slices = format!("{sim_url}/apis/discovery.k8s.io/v1/namespaces/loco/endpointslices");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "emu-load", "namespace": "loco",
                     "labels": {"kubernetes.io/service-name": "emu"}},
        "addressType": "IPv4",
        "ports": [{"name": "vnc", "port": 5901}, {"name": "health", "port": 8080}],
        "endpoints": endpoints_json(args.endpoints, None),
    });
    runtime.block_on(async {
        let response = http.post(&slices).json(&slice).send().await?;
        if !response.status().is_success() {
            bail!("creating the slice failed: {}", response.status());
        }
        Ok(())
    })?;
    eprintln!(
        "loadtest: {} subscribers over {} processes, {} endpoints, {} writes/s for {:?}",
        args.subscribers, args.processes, args.endpoints, args.rate, args.duration
    );

    // Subscribers, spread over child processes.
    let me = std::env::current_exe()?;
    let per = args.subscribers.div_ceil(args.processes.max(1));
    // An upper bound only: subscribers stop when their stdin closes (after the churn).
    let hold = args.duration + Duration::from_secs(120);
    let mut children = Vec::new();
    let mut left = args.subscribers;
    let mut batches: Vec<(usize, bool)> = Vec::new();
    while left > 0 {
        let count = per.min(left);
        left -= count;
        batches.push((count, false));
    }
    if args.stalled > 0 {
        batches.push((args.stalled, true));
    }
    for (count, stalled) in batches {
        let mut command = Command::new(&me);
        command.args([
            "subscribe",
            "--url",
            &gw_url,
            "--count",
            &count.to_string(),
            "--duration",
            &format!("{}s", hold.as_secs()),
        ]);
        if stalled {
            command.arg("--no-read");
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    // Wait until every subscriber is connected (the gateway's own gauge says so).
    let connected_by = Instant::now() + Duration::from_secs(60);
    runtime.block_on(async {
        loop {
            let text = http
                .get(format!("{gw_url}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let connected: f64 = text
                .lines()
                .filter(|l| l.starts_with("loco_discovery_subscribers{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            if connected as usize >= args.subscribers + args.stalled {
                return Ok::<_, anyhow::Error>(());
            }
            if Instant::now() > connected_by {
                bail!(
                    "only {connected} of {} subscribers connected",
                    args.subscribers
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;

    let (cpu_before, rss_before) = cpu_and_rss(gateway.0.id())?;
    let started = Instant::now();
    let writes = runtime.block_on(async {
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
        let mut writes = 0u64;
        let mut serving = false;
        while started.elapsed() < args.duration {
            ticker.tick().await;
            let which = rand::random_range(0..args.endpoints);
            let patch =
                json!({"endpoints": endpoints_json(args.endpoints, Some((which, serving)))});
            serving = !serving;
            let response = http
                .patch(format!("{slices}/emu-load"))
                .header("content-type", "application/merge-patch+json")
                .body(patch.to_string())
                .send()
                .await?;
            if response.status().is_success() {
                writes += 1;
            }
        }
        Ok::<_, anyhow::Error>(writes)
    })?;
    // Let the last deliveries land: wait until the gateway has written nothing new to
    // any subscriber for two seconds (at most a minute), then read its cost.
    runtime.block_on(async {
        let written = || async {
            let text = http
                .get(format!("{gw_url}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            Ok::<f64, anyhow::Error>(
                text.lines()
                    .filter(|l| l.starts_with("loco_discovery_published_to_socket_seconds_count"))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum(),
            )
        };
        let until = Instant::now() + Duration::from_secs(60);
        let mut last = written().await?;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = written().await?;
            if now == last {
                break;
            }
            last = now;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let (cpu_after, rss_after) = cpu_and_rss(gateway.0.id())?;
    let elapsed = args.duration.as_secs_f64();

    let mut total = SubscriberReport::default();
    for child in &mut children {
        drop(child.stdin.take());
    }
    let mut stalled_report = SubscriberReport::default();
    let count = children.len();
    for (n, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output()?;
        let report: SubscriberReport = serde_json::from_slice(&output.stdout)
            .map_err(|e| anyhow!("a subscriber process reported nothing usable: {e}"))?;
        if args.stalled > 0 && n + 1 == count {
            stalled_report = report;
            continue;
        }
        total.connected += report.connected;
        total.events += report.events;
        total.errors += report.errors;
        total.resets += report.resets;
        total.latencies_us.extend(report.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let deliveries = total.latencies_us.len() as f64;
    let cpu = cpu_after - cpu_before;
    println!("loco-discovery fan-out load test");
    println!("  subscribers connected      {}", total.connected);
    println!(
        "  slice writes               {writes} ({:.0}/s over the churn)",
        writes as f64 / elapsed
    );
    println!(
        "  deltas delivered           {deliveries:.0} ({:.0}/s over the churn)",
        deliveries / elapsed
    );
    println!(
        "  publish → receive latency  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&total.latencies_us, 50.0),
        percentile(&total.latencies_us, 90.0),
        percentile(&total.latencies_us, 99.0),
        percentile(&total.latencies_us, 100.0)
    );
    println!(
        "  gateway CPU                {cpu:.2} s ({:.1} µs per delivery)",
        cpu * 1e6 / deliveries.max(1.0)
    );
    println!(
        "  gateway memory (RSS)       {rss_before:.1} MiB with subscribers idle, {rss_after:.1} MiB after"
    );
    println!(
        "  expected deliveries        {} (writes × subscribers); resets instead: {}",
        writes as usize * total.connected,
        total.resets
    );
    println!("  subscriber errors          {}", total.errors);
    if args.stalled > 0 {
        println!(
            "  stalled subscribers        {} connected, never reading",
            stalled_report.connected
        );
    }
    drop(gateway);
    Ok(())
}

/// Holds `count` raw SSE connections for `duration`, recording each delta's latency from
/// its `ts` (when the gateway published it) to now.
async fn subscribe(url: &str, count: usize, duration: Duration, no_read: bool) -> SubscriberReport {
    let addr = url.trim_start_matches("http://").to_owned();
    let deadline = tokio::time::Instant::now() + duration;
    // The parent closes our stdin when the measurement is over.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        let _ = stop_tx.send(true);
    });
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let addr = addr.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut report = SubscriberReport::default();
            let Ok(mut socket) = tokio::net::TcpStream::connect(&addr).await else {
                report.errors += 1;
                return report;
            };
            let request = format!("GET /api/instances/stream HTTP/1.1\r\nhost: {addr}\r\n\r\n");
            if socket.write_all(request.as_bytes()).await.is_err() {
                report.errors += 1;
                return report;
            }
            report.connected = 1;
            if no_read {
                let _ = stop.wait_for(|stopped| *stopped).await;
                return report;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = String::new();
            loop {
                let read = tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    read = tokio::time::timeout_at(deadline, socket.read(&mut buf)) => read,
                };
                let n = match read {
                    Err(_) | Ok(Ok(0)) => break,
                    Ok(Err(_)) => {
                        report.errors += 1;
                        break;
                    }
                    Ok(Ok(n)) => n,
                };
                let now = chrono::Utc::now();
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if line.starts_with("event:reset") {
                        report.resets += 1;
                    }
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    report.events += 1;
                    if let Some(at) = data.find("\"ts\":\"") {
                        let rest = &data[at + 6..];
                        if let Some(ts) = rest.split('"').next() {
                            if let Ok(ts) = chrono::DateTime::parse_from_rfc3339(ts) {
                                let us = (now - ts.with_timezone(&chrono::Utc))
                                    .num_microseconds()
                                    .unwrap_or(0)
                                    .max(0);
                                report.latencies_us.push(us as u64);
                            }
                        }
                    }
                }
            }
            report
        }));
    }
    let mut total = SubscriberReport::default();
    for task in tasks {
        if let Ok(r) = task.await {
            total.connected += r.connected;
            total.events += r.events;
            total.errors += r.errors;
            total.resets += r.resets;
            total.latencies_us.extend(r.latencies_us);
        }
    }
    total
}
