//! `loco-loadtest memory`: what large snapshots cost the gateway in memory. A service of
//! `slices` × `per_slice` endpoints (10,000 by default, a `/live` of ~10 MB) is created;
//! then `never_reading` SSE clients connect and read nothing (each is owed the whole
//! snapshot), then `live` clients fetch `/live` at once; then every client leaves and every
//! slice is deleted. Prints the gateway's RSS at each step (and its peak, sampled every
//! 5 ms), so the memory that stays after clients leave is seen too.

use crate::{cpu_and_rss, rollout, Cluster};
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    service: rollout::Service,
    /// SSE clients that connect and never read.
    #[arg(long, default_value_t = 40)]
    never_reading: usize,
    /// Concurrent `/live` requests.
    #[arg(long, default_value_t = 50)]
    live: usize,
    /// Keep the gateway running this long at the end (to inspect it, e.g. with `perf`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

/// The gateway's RSS in MiB.
fn rss_mib(pid: u32) -> f64 {
    cpu_and_rss(pid).map(|(_, kib)| kib / 1024.0).unwrap_or(0.0)
}

/// Samples the RSS every 5 ms until dropped; `peak()` is the highest seen.
struct PeakRss {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, done) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let kib = (rss_mib(pid) * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { peak_kib, stop }
    }

    fn peak(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Polls `/live` until its total is `total`.
async fn wait_for_total(http: &reqwest::Client, gateway: &str, total: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let live: serde_json::Value = http
            .get(format!("{gateway}/api/instances/live"))
            .send()
            .await?
            .json()
            .await?;
        if live["stats"]["total"].as_u64() == Some(total as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gateway's view did not reach {total} instances");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An SSE client with a 4 KiB receive buffer that sends its request and reads nothing.
async fn never_reading(addr: &str) -> Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr.parse()?).await?;
    stream
        .write_all(b"GET /api/instances/stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    Ok(stream)
}

pub fn run(args: Args) -> Result<()> {
    let cluster = Cluster::start(&args.service.gateway_bin, 1)?;
    let gateway = cluster.gateways[0].1.clone();
    let addr = gateway.trim_start_matches("http://").to_owned();
    let pid = cluster.pids()[0];
    let slices_url = cluster.slices_url();
    let total = args.service.slices * args.service.per_slice;
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let empty = rss_mib(pid);
        for s in 0..args.service.slices {
            let slice = rollout::slice(s, args.service.per_slice, rollout::Phase::Old);
            let response = http.post(&slices_url).json(&slice).send().await?;
            if !response.status().is_success() {
                bail!("creating slice {s} failed: {}", response.status());
            }
        }
        wait_for_total(&http, &gateway, total).await?;
        let live_bytes = http
            .get(format!("{gateway}/api/instances/live"))
            .send()
            .await?
            .bytes()
            .await?
            .len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let loaded = rss_mib(pid);
        println!(
            "loco-discovery snapshot memory: {total} instances, /live {:.1} MB",
            live_bytes as f64 / 1e6
        );
        println!("  RSS with no cluster data        {empty:.1} MiB");
        println!("  RSS with {total} instances      {loaded:.1} MiB");

        let peak = PeakRss::start(pid);
        let mut stalled = Vec::new();
        for _ in 0..args.never_reading {
            stalled.push(
                never_reading(&addr)
                    .await
                    .context("a never-reading client")?,
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "  {} never-reading SSE clients   {:.1} MiB (peak {:.1} MiB)",
            args.never_reading,
            rss_mib(pid),
            peak.peak()
        );
        drop(peak);

        let peak = PeakRss::start(pid);
        let started = Instant::now();
        let fetches = (0..args.live).map(|_| {
            let (http, url) = (http.clone(), format!("{gateway}/api/instances/live"));
            tokio::spawn(async move { http.get(url).send().await?.bytes().await })
        });
        let mut fetched = 0usize;
        for fetch in fetches.collect::<Vec<_>>() {
            fetched += fetch.await??.len();
        }
        println!(
            "  {} concurrent /live           peak {:.1} MiB, {:.1} MB answered in {:.2} s",
            args.live,
            peak.peak(),
            fetched as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        drop(peak);

        drop(stalled);
        for s in 0..args.service.slices {
            http.delete(format!("{slices_url}/emu-roll-{s}"))
                .send()
                .await?
                .error_for_status()?;
        }
        wait_for_total(&http, &gateway, 0).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "  every client gone, every slice deleted: {:.1} MiB (gateway pid {pid})",
            rss_mib(pid)
        );
        tokio::time::sleep(args.hold).await;
        Ok(())
    })
}
