//! Fan-out load test of loco-discovery, side by side with nginx + nchan.
//!
//! `loco-loadtest run` starts the simulated API and one or more gateways as separate
//! processes (the release binaries) and, in the same run, nginx + nchan; it opens the same
//! raw SSE or WebSocket subscribers against each (spread over child processes: a process
//! may hold at most 20,000 open files), writes EndpointSlices through the simulated API
//! (and publishes a delta of the same size to nchan at the same pace), and prints what it
//! measured with the gateway/nchan ratios. `--targets poll` adds clients polling `/live`.
//! `loco-loadtest rollout` measures a 10,000-endpoint rolling update, `loco-loadtest memory`
//! what 10,000-instance snapshots cost in memory.
//! Everything stays on 127.0.0.1 and every loop is bounded in time.

mod memory;
mod nchan;
mod rollout;
mod sub;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use sub::{now_us, Mode, Report};

#[derive(Parser)]
#[command(name = "loco-loadtest", about = "Fan-out load test of loco-discovery")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the side-by-side load test and print its figures.
    Run(RunArgs),
    /// The 10,000-endpoint rolling update: time to converge, events/s, CPU.
    Rollout(rollout::Args),
    /// Gateway memory with a 10,000-instance view: never-reading clients, concurrent
    /// `/live`, and after every client left.
    Memory(memory::Args),
    /// (Internal) hold `count` subscribers (or pollers) and report as JSON.
    Subscribe(sub::Settings),
}

/// Write `k` adds the endpoint of pod `emu-w<k>`: its appearance in a
/// frame (or a `/live` answer) marks write `k` as received.
pub const MARKER: &str = "emu-w";

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Target {
    Gateway,
    Nchan,
    Poll,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Subscribers per case (per transport and target).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Child processes the subscribers are spread over (0: one per 5,000, at least one
    /// per replica).
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Transports measured (for the gateway and for nchan).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sse,ws")]
    transports: Vec<Mode>,
    /// What is measured: the gateway, nginx + nchan, and clients polling `/live`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "gateway,nchan"
    )]
    targets: Vec<Target>,
    /// nchan worker counts, one nginx run each (default: one worker per 18,000 subscribers).
    #[arg(long, value_delimiter = ',')]
    nchan_workers: Vec<usize>,
    /// Gateways on the one simulated API; subscribers are spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Writes (each one delta to every subscriber).
    #[arg(long, default_value_t = 20)]
    writes: u32,
    /// Pause between writes.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Endpoints in the written EndpointSlice besides the `emu-w<k>` ones (one per write).
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// nchan payload size (0: the gateway's measured delta size in this run, else 1,200).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Pollers for `--targets poll` (default: the subscriber count).
    #[arg(long)]
    poll_clients: Option<usize>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_every: Duration,
    /// How long subscribers wait for the last deliveries after the last write.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Extra subscribers that connect and never read (in each SSE/WebSocket case): the
    /// server must neither slow down for them nor buffer their backlog.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// The gateway binary (a release build gives meaningful figures).
    #[arg(long, default_value = "target/release/loco-discovery")]
    gateway_bin: PathBuf,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(args) => run(args),
        Cmd::Rollout(args) => rollout::run(args),
        Cmd::Memory(args) => memory::run(args),
        Cmd::Subscribe(settings) => {
            let report = tokio::runtime::Runtime::new()?.block_on(sub::child(settings));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// A child process, killed by its own PID when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin args…` and returns it with the first `http://` URL it prints.
pub fn start(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Result<(Running, String)> {
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

/// User + system CPU seconds and resident KiB of a process, from /proc.
pub fn cpu_and_rss(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / ticks;
    let rss_pages: f64 = fields[21].parse()?;
    Ok((cpu, rss_pages * 4.0))
}

/// Summed over processes.
pub fn cpu_and_rss_of(pids: &[u32]) -> Result<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for pid in pids {
        let (cpu, rss) = cpu_and_rss(*pid)?;
        total.0 += cpu;
        total.1 += rss;
    }
    Ok(total)
}

/// The simulated API and `replicas` gateways watching service `emu` on it.
pub struct Cluster {
    _sim: Running,
    pub sim_url: String,
    pub gateways: Vec<(Running, String)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(bin: &PathBuf, replicas: usize) -> Result<Cluster> {
        if !bin.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p loco-discovery -p loco-loadtest)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let kubeconfig_str = kubeconfig.to_str().context("path")?;
        let (sim, sim_url) = start(
            bin,
            &[
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--write-kubeconfig",
                kubeconfig_str,
            ],
            &[],
        )?;
        let mut gateways = Vec::new();
        for _ in 0..replicas.max(1) {
            gateways.push(start(
                bin,
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
            )?);
        }
        Ok(Cluster {
            _sim: sim,
            sim_url,
            gateways,
            _dir: dir,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.gateways.iter().map(|(g, _)| g.0.id()).collect()
    }

    pub fn slices_url(&self) -> String {
        format!(
            "{}/apis/discovery.k8s.io/v1/namespaces/loco/endpointslices",
            self.sim_url
        )
    }
}

/// The written slice's endpoints after write `k`: `count` fixed ones and `emu-w0` ..
/// `emu-w<k>`, so write `k` adds exactly one instance (one `InstanceAdded` delta).
fn endpoints_json(count: usize, k: u32) -> serde_json::Value {
    let endpoint = |name: String, address: String| {
        json!({
            "addresses": [address],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "hostname": name,
            "targetRef": {"kind": "Pod", "name": name, "namespace": "loco"},
        })
    };
    let mut endpoints: Vec<_> = (0..count)
        .map(|n| {
            endpoint(
                format!("emu-{n}"),
                format!("10.250.{}.{}", n / 250, n % 250 + 1),
            )
        })
        .collect();
    endpoints.extend((0..=k).map(|w| {
        endpoint(
            format!("{MARKER}{w}"),
            format!("10.{}.{}.{}", 100 + w / 62500, (w / 250) % 250, w % 250 + 1),
        )
    }));
    json!(endpoints)
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

/// Subscriber child processes, each reporting `ready` then its JSON.
struct Children {
    children: Vec<(Child, BufReader<ChildStdout>)>,
}

impl Children {
    fn spawn(
        batches: &[(String, usize)],
        path: &str,
        mode: Mode,
        args: &RunArgs,
        no_read: bool,
        await_initial: bool,
    ) -> Result<Self> {
        let me = std::env::current_exe()?;
        let mut children = Vec::new();
        for (n, (addr, count)) in batches.iter().enumerate() {
            // Each child connects from its own loopback address: one source address
            // has only ~28,000 ephemeral ports towards one server port.
            let source = format!("127.0.{}.{}", 1 + n / 250, 1 + n % 250);
            let mut child = Command::new(&me)
                .args([
                    "subscribe",
                    "--addr",
                    addr,
                    "--path",
                    path,
                    "--count",
                    &count.to_string(),
                    "--mode",
                    mode.to_possible_value().context("mode")?.get_name(),
                    "--poll-every",
                    &humantime::format_duration(args.poll_every).to_string(),
                    "--settle",
                    &humantime::format_duration(args.settle).to_string(),
                    "--source",
                    &source,
                ])
                .args(no_read.then_some("--no-read"))
                .args(await_initial.then_some("--await-initial"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdout = BufReader::new(child.stdout.take().context("stdout")?);
            children.push((child, stdout));
        }
        Ok(Children { children })
    }

    /// Waits for every child's `ready` line: (connected, errors).
    fn ready(&mut self) -> Result<(usize, usize)> {
        let (mut connected, mut errors) = (0, 0);
        for (_, stdout) in &mut self.children {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            let mut words = line.split_whitespace();
            if words.next() != Some("ready") {
                bail!("a subscriber process did not report ready: {line:?}");
            }
            connected += words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            errors += words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        }
        Ok((connected, errors))
    }

    fn finish(self, writes: u32) -> Result<Report> {
        let mut children = self.children;
        for (child, _) in &mut children {
            if let Some(stdin) = child.stdin.as_mut() {
                let _ = writeln!(stdin, "done {writes}");
            }
        }
        let mut total = Report::default();
        for (mut child, mut stdout) in children {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            drop(child.stdin.take());
            let _ = child.wait();
            let report: Report = serde_json::from_str(&line)
                .map_err(|e| anyhow!("a subscriber process reported nothing usable: {e}"))?;
            total.merge(report);
        }
        Ok(total)
    }
}

/// One measured case.
struct Case {
    label: String,
    /// The write's own round trip (the simulated API's or nchan's answer), p50 and max,
    /// in ms: the part of the latency spent before the server under test saw the change.
    ack_p50: f64,
    ack_max: f64,
    target: Target,
    mode: Mode,
    subscribers: usize,
    connected: usize,
    connect_p50: f64,
    connect_p99: f64,
    /// Connect → the initial snapshot read (gateway only).
    initial_p50: f64,
    initial_p99: f64,
    expected: u64,
    delivered: u64,
    per_second: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    kib_per_sub: f64,
    cpu_us_per_delivery: f64,
    cpu_s: f64,
    frame_bytes: f64,
    resets: u64,
    errors: u64,
    /// Subscribers connected that never read.
    stalled: usize,
    /// Poll: bytes per client-second and CPU µs per client-second.
    poll_bytes_per_client_s: f64,
    poll_cpu_us_per_client_s: f64,
}

impl Case {
    fn ok(&self) -> bool {
        self.target == Target::Poll
            || (self.connected == self.subscribers && self.delivered == self.expected)
    }

    fn print(&self) {
        println!("== {}", self.label);
        println!(
            "  connected                  {} of {} (connect → response head p50 {:.1} ms, p99 {:.1} ms); errors {}",
            self.connected, self.subscribers, self.connect_p50, self.connect_p99, self.errors
        );
        if self.initial_p50.is_finite() {
            println!(
                "  initial snapshot read      p50 {:.1} ms, p99 {:.1} ms after connecting (writes start once all have it)",
                self.initial_p50, self.initial_p99
            );
        }
        if self.target == Target::Poll {
            println!(
                "  staleness (write → first poll showing it)  p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                self.p50, self.p90, self.p99, self.max
            );
            println!(
                "  per client-second          {:.0} bytes, {:.1} µs gateway CPU ({:.2} s in all)",
                self.poll_bytes_per_client_s, self.poll_cpu_us_per_client_s, self.cpu_s
            );
            println!("  idle RSS per client        {:.1} KiB", self.kib_per_sub);
            return;
        }
        println!(
            "  deliveries                 {} of {} expected (writes × connected){} — {:.0}/s over the time they took",
            self.delivered,
            self.expected,
            if self.delivered == self.expected { "" } else { "  MISMATCH" },
            self.per_second
        );
        println!(
            "  write → receipt latency    p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p90, self.p99, self.max
        );
        println!(
            "  write acknowledged         p50 {:.1} ms, max {:.1} ms (the write request's own round trip)",
            self.ack_p50, self.ack_max
        );
        println!("  RSS per idle subscriber    {:.1} KiB", self.kib_per_sub);
        println!(
            "  CPU                        {:.2} s, {:.1} µs per delivery",
            self.cpu_s, self.cpu_us_per_delivery
        );
        println!(
            "  payload                    {:.0} bytes per frame; resets {}",
            self.frame_bytes, self.resets
        );
        if self.stalled > 0 {
            println!(
                "  stalled subscribers        {} connected, never reading",
                self.stalled
            );
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let nginx_bin = if args.targets.contains(&Target::Nchan) {
        Some(nchan::ensure_installed()?)
    } else {
        None
    };
    let workers_list = if args.nchan_workers.is_empty() {
        vec![args.subscribers.div_ceil(18_000).max(1)]
    } else {
        args.nchan_workers.clone()
    };
    eprintln!(
        "loadtest: {} subscribers per case, {} writes {:?} apart, transports {:?}, targets {:?}, {} gateway replica(s), nchan workers {:?}",
        args.subscribers, args.writes, args.interval, args.transports, args.targets, args.replicas, workers_list
    );
    let mut cases: Vec<Case> = Vec::new();
    let mut gateway_bytes: Option<f64> = None;
    for &mode in &args.transports {
        if mode == Mode::Poll {
            bail!("poll is a target (--targets poll), not a transport");
        }
        for &target in &args.targets {
            match target {
                Target::Gateway => {
                    let case = gateway_case(&runtime, &args, mode)?;
                    if case.frame_bytes > 0.0 {
                        gateway_bytes = Some(case.frame_bytes);
                    }
                    case.print();
                    cases.push(case);
                }
                Target::Nchan => {
                    let bytes = if args.payload_bytes > 0 {
                        args.payload_bytes
                    } else {
                        gateway_bytes.map(|b| b.round() as usize).unwrap_or(1200)
                    };
                    for &workers in &workers_list {
                        let case = nchan_case(
                            &runtime,
                            &args,
                            mode,
                            nginx_bin.as_ref().context("nginx")?,
                            workers,
                            bytes,
                        )?;
                        case.print();
                        cases.push(case);
                    }
                }
                Target::Poll => {}
            }
        }
    }
    if args.targets.contains(&Target::Poll) {
        let case = gateway_case(&runtime, &args, Mode::Poll)?;
        case.print();
        cases.push(case);
    }
    summary(&args, &cases);
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("expected deliveries missing (or subscribers not connected) in: {failed:?}");
    }
    Ok(())
}

fn batches(addrs: &[String], subscribers: usize, processes: usize) -> Vec<(String, usize)> {
    let processes = if processes == 0 {
        subscribers.div_ceil(5000).max(addrs.len()).max(1)
    } else {
        processes.max(addrs.len())
    };
    let per = subscribers.div_ceil(processes);
    let mut left = subscribers;
    let mut out = Vec::new();
    let mut n = 0;
    while left > 0 {
        let count = per.min(left);
        left -= count;
        out.push((addrs[n % addrs.len()].clone(), count));
        n += 1;
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn measure(
    runtime: &tokio::runtime::Runtime,
    args: &RunArgs,
    label: String,
    target: Target,
    mode: Mode,
    addrs: &[String],
    path: &str,
    pids: &[u32],
    subscribers: usize,
    mut write: impl FnMut(u32) -> Result<()>,
) -> Result<Case> {
    let (_, rss_base) = cpu_and_rss_of(pids)?;
    let mut children = Children::spawn(
        &batches(addrs, subscribers, args.processes),
        path,
        mode,
        args,
        false,
        target == Target::Gateway,
    )?;
    let (connected, errors) = children.ready()?;
    let (mut stalled, mut stalled_connected) = (None, 0);
    if args.stalled > 0 && mode != Mode::Poll {
        let mut more = Children::spawn(
            &batches(addrs, args.stalled, args.processes),
            path,
            mode,
            args,
            true,
            false,
        )?;
        stalled_connected = more.ready()?.0;
        stalled = Some(more);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (cpu_before, rss_idle) = cpu_and_rss_of(pids)?;
    let mut sent = vec![0u64; args.writes as usize + 1];
    let mut acked: Vec<u64> = Vec::with_capacity(args.writes as usize);
    let started = now_us();
    let mut next = Instant::now();
    for k in 1..=args.writes {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += args.interval;
        sent[k as usize] = now_us();
        write(k)?;
        acked.push(now_us().saturating_sub(sent[k as usize]));
    }
    acked.sort_unstable();
    if mode == Mode::Poll {
        // Every poller polls at least once more after the last write.
        std::thread::sleep(args.poll_every + Duration::from_millis(500));
    }
    let window_s = (now_us() - started) as f64 / 1e6;
    let report = children.finish(args.writes)?;
    if let Some(stalled) = stalled {
        stalled.finish(0)?;
    }
    let (cpu_after, _) = cpu_and_rss_of(pids)?;
    let _ = runtime;
    let mut latencies: Vec<u64> = report
        .receipts
        .iter()
        .filter(|(k, _)| *k >= 1 && *k <= args.writes)
        .map(|(k, at)| at.saturating_sub(sent[*k as usize]))
        .collect();
    latencies.sort_unstable();
    let last = report
        .receipts
        .iter()
        .filter(|(k, _)| *k >= 1)
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(started);
    let delivered = latencies.len() as u64;
    let mut connect = report.connect_us.clone();
    connect.sort_unstable();
    let mut initial = report.initial_us.clone();
    initial.sort_unstable();
    let cpu = cpu_after - cpu_before;
    let client_seconds = connected as f64 * window_s;
    Ok(Case {
        label,
        ack_p50: percentile(&acked, 50.0),
        ack_max: percentile(&acked, 100.0),
        target,
        mode,
        subscribers,
        connected,
        connect_p50: percentile(&connect, 50.0),
        connect_p99: percentile(&connect, 99.0),
        initial_p50: percentile(&initial, 50.0),
        initial_p99: percentile(&initial, 99.0),
        expected: args.writes as u64 * connected as u64,
        delivered,
        per_second: delivered as f64 / ((last.saturating_sub(sent[1])) as f64 / 1e6).max(1e-6),
        p50: percentile(&latencies, 50.0),
        p90: percentile(&latencies, 90.0),
        p99: percentile(&latencies, 99.0),
        max: percentile(&latencies, 100.0),
        kib_per_sub: (rss_idle - rss_base) / (connected + stalled_connected).max(1) as f64,
        stalled: stalled_connected,
        cpu_us_per_delivery: cpu * 1e6 / (delivered.max(1) as f64),
        cpu_s: cpu,
        frame_bytes: report.frame_bytes as f64 / report.frames.max(1) as f64,
        resets: report.resets,
        errors: errors as u64 + report.errors,
        poll_bytes_per_client_s: report.poll_bytes as f64 / client_seconds.max(1e-6),
        poll_cpu_us_per_client_s: cpu * 1e6 / client_seconds.max(1e-6),
    })
}

fn gateway_case(runtime: &tokio::runtime::Runtime, args: &RunArgs, mode: Mode) -> Result<Case> {
    let cluster = Cluster::start(&args.gateway_bin, args.replicas)?;
    let http = reqwest::Client::new();
    let slices = cluster.slices_url();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "emu-load", "namespace": "loco",
                     "labels": {"kubernetes.io/service-name": "emu"}},
        "addressType": "IPv4",
        "ports": [{"name": "vnc", "port": 5901}, {"name": "health", "port": 8080}],
        "endpoints": endpoints_json(args.endpoints, 0),
    });
    runtime.block_on(async {
        let response = http.post(&slices).json(&slice).send().await?;
        if !response.status().is_success() {
            bail!("creating the slice failed: {}", response.status());
        }
        // Wait until every gateway shows the slice.
        for (_, url) in &cluster.gateways {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let body = http
                    .get(format!("{url}/api/instances/live"))
                    .send()
                    .await?
                    .text()
                    .await?;
                if body.contains(&format!("{MARKER}0")) {
                    break;
                }
                if Instant::now() > until {
                    bail!("gateway {url} never showed the slice");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    })?;
    let addrs: Vec<String> = cluster
        .gateways
        .iter()
        .map(|(_, url)| url.trim_start_matches("http://").to_owned())
        .collect();
    let (path, subscribers, label) = match mode {
        Mode::Sse => (
            "/api/instances/stream",
            args.subscribers,
            format!("gateway SSE ({} replica(s))", args.replicas),
        ),
        Mode::Ws => (
            "/api/instances/ws",
            args.subscribers,
            format!("gateway WebSocket ({} replica(s))", args.replicas),
        ),
        Mode::Poll => {
            let clients = args.poll_clients.unwrap_or(args.subscribers);
            (
                "/api/instances/live",
                clients,
                format!(
                    "poll baseline: {clients} clients polling /api/instances/live every {:?}",
                    args.poll_every
                ),
            )
        }
    };
    let target = if mode == Mode::Poll {
        Target::Poll
    } else {
        Target::Gateway
    };
    let pids = cluster.pids();
    let write_url = format!("{slices}/emu-load");
    measure(
        runtime,
        args,
        label,
        target,
        mode,
        &addrs,
        path,
        &pids,
        subscribers,
        |k| {
            let patch = json!({"endpoints": endpoints_json(args.endpoints, k)});
            runtime.block_on(async {
                let response = http
                    .patch(&write_url)
                    .header("content-type", "application/merge-patch+json")
                    .body(patch.to_string())
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("slice write {k} failed: {}", response.status());
                }
                Ok(())
            })
        },
    )
}

fn nchan_case(
    runtime: &tokio::runtime::Runtime,
    args: &RunArgs,
    mode: Mode,
    bin: &Path,
    workers: usize,
    bytes: usize,
) -> Result<Case> {
    let nginx = nchan::start(bin, workers, args.subscribers + 100)?;
    let addr = format!("127.0.0.1:{}", nginx.port);
    let http = reqwest::Client::new();
    let publish = format!("http://{addr}/pub");
    let label = format!(
        "nginx + nchan {} ({workers} worker(s), {bytes}-byte payload)",
        if mode == Mode::Ws { "WebSocket" } else { "SSE" }
    );
    let pids = nginx.pids();
    measure(
        runtime,
        args,
        label,
        Target::Nchan,
        mode,
        std::slice::from_ref(&addr),
        "/sub",
        &pids,
        args.subscribers,
        |k| {
            let body = nchan::payload(&format!("{MARKER}{k}"), bytes);
            runtime.block_on(async {
                let response = http
                    .post(&publish)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("nchan publish {k} failed: {}", response.status());
                }
                Ok(())
            })
        },
    )
}

fn summary(args: &RunArgs, cases: &[Case]) {
    println!();
    println!(
        "summary ({} subscribers, {} writes {:?} apart; latency from just before the API write / the publish POST)",
        args.subscribers, args.writes, args.interval
    );
    println!("| case | connected | connect p50 / p99 | delivered / expected | deliveries/s | latency p50 / p99 / max | KiB RSS / sub | CPU µs / delivery |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for c in cases {
        if c.target == Target::Poll {
            println!(
                "| {} | {} | — | staleness | — | {:.0} / {:.0} / {:.0} ms | {:.1} | {:.1} µs and {:.0} bytes per client-second |",
                c.label, c.connected, c.p50, c.p99, c.max, c.kib_per_sub, c.poll_cpu_us_per_client_s, c.poll_bytes_per_client_s
            );
            continue;
        }
        println!(
            "| {} | {} | {:.1} / {:.1} ms | {} / {} | {:.0} | {:.1} / {:.1} / {:.1} ms | {:.1} | {:.1} |",
            c.label,
            c.connected,
            c.connect_p50,
            c.connect_p99,
            c.delivered,
            c.expected,
            c.per_second,
            c.p50,
            c.p99,
            c.max,
            c.kib_per_sub,
            c.cpu_us_per_delivery
        );
    }
    for gw in cases.iter().filter(|c| c.target == Target::Gateway) {
        for nc in cases
            .iter()
            .filter(|c| c.target == Target::Nchan && c.mode == gw.mode)
        {
            let ratio = |a: f64, b: f64| {
                if b > 0.0 && a.is_finite() {
                    format!("{:.2}", a / b)
                } else {
                    "n/a (too little to measure)".to_owned()
                }
            };
            println!(
                "ratio {} / {}: p50 {}, p99 {}, KiB per subscriber {}, CPU per delivery {}",
                gw.label,
                nc.label,
                ratio(gw.p50, nc.p50),
                ratio(gw.p99, nc.p99),
                ratio(gw.kib_per_sub, nc.kib_per_sub),
                ratio(gw.cpu_us_per_delivery, nc.cpu_us_per_delivery)
            );
        }
    }
}
