//! `loco-loadtest rollout`: a service of `slices` × `per_slice` endpoints is created, then
//! goes through a rolling update, each slice rewritten three times (every endpoint
//! terminating → the new pods' addresses, not ready → ready), the writes sent through
//! the simulated API as fast as it accepts them. Prints how long the gateway's view took
//! to converge after the last write, the slice events per second it absorbed and the CPU
//! it used.

use crate::{cpu_and_rss, Cluster};
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A large service on one gateway: `slices` EndpointSlices of `per_slice` endpoints.
#[derive(clap::Args, Clone)]
pub struct Service {
    #[arg(long, default_value_t = 100)]
    pub slices: usize,
    #[arg(long, default_value_t = 100)]
    pub per_slice: usize,
    #[arg(long, default_value = "target/release/loco-discovery")]
    pub gateway_bin: PathBuf,
}

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    service: Service,
    /// Give up waiting for the view to converge after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy)]
pub enum Phase {
    /// The old pods, ready.
    Old,
    /// The old pods, terminating.
    Terminating,
    /// The new pods, not ready yet.
    NewNotReady,
    /// The new pods, ready.
    NewReady,
}

pub fn slice(s: usize, per_slice: usize, phase: Phase) -> Value {
    let endpoints: Vec<Value> = (0..per_slice)
        .map(|e| {
            let (generation, ready, terminating) = match phase {
                Phase::Old => ("a", true, false),
                Phase::Terminating => ("a", false, true),
                Phase::NewNotReady => ("b", false, false),
                Phase::NewReady => ("b", true, false),
            };
            let net = if generation == "a" { 60 } else { 61 };
            let name = format!("roll-{s}-{e}-{generation}");
            json!({
                "addresses": [format!("10.{net}.{}.{}", s % 250, e % 250 + 1)],
                "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
                "targetRef": {"kind": "Pod", "name": name, "namespace": "loco"},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("emu-roll-{s}"), "namespace": "loco",
                     "labels": {"kubernetes.io/service-name": "emu"}},
        "addressType": "IPv4",
        "ports": [{"name": "vnc", "port": 5901}, {"name": "health", "port": 8080}],
        "endpoints": endpoints,
    })
}

/// (total, ready, new generation) in the gateway's view.
type View = (usize, usize, usize);

/// Follows the gateway's SSE stream (one subscriber: cheap for the gateway, unlike
/// polling a 10,000-instance `/live`) and publishes the view it implies after every chunk.
async fn follow(gateway: String, tx: tokio::sync::watch::Sender<View>) -> Result<()> {
    let mut response = reqwest::Client::new()
        .get(format!("{gateway}/api/instances/stream"))
        .send()
        .await?;
    let mut pending: Vec<u8> = Vec::new();
    // key → (new generation, ready)
    let mut view: HashMap<String, (bool, bool)> = HashMap::new();
    let (mut ready, mut new) = (0i64, 0i64);
    let entry = |instance: &Followed| {
        (
            instance.pod_name.ends_with("-b"),
            instance.status == "ready",
        )
    };
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        let mut at = 0;
        while let Some(len) = pending[at..].iter().position(|&b| b == b'\n') {
            let line = &pending[at..at + len];
            at += len + 1;
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(event) = serde_json::from_slice::<Event>(data) else {
                continue;
            };
            if let Some(instances) = event.instances {
                if event.kind == "reset" {
                    RESETS.fetch_add(1, Ordering::Relaxed);
                }
                view = instances
                    .iter()
                    .map(|i| (i.key.clone(), entry(i)))
                    .collect();
                ready = view.values().filter(|(_, r)| *r).count() as i64;
                new = view.values().filter(|(n, r)| *n && *r).count() as i64;
                continue;
            }
            let Some(key) = event.key else {
                continue;
            };
            let old = if event.kind == "InstanceRemoved" {
                view.remove(&key)
            } else if let Some(instance) = &event.instance {
                view.insert(key.clone(), entry(instance))
            } else {
                None
            };
            let now = view.get(&key).copied();
            // Keep the counts incrementally: the follower must not lag the gateway.
            for (sign, state) in [(-1i64, old), (1, now)] {
                if let Some((new_generation, is_ready)) = state {
                    ready += sign * is_ready as i64;
                    new += sign * (new_generation && is_ready) as i64;
                }
            }
        }
        pending.drain(..at);
        tx.send_replace((view.len(), ready.max(0) as usize, new.max(0) as usize));
    }
    Ok(())
}

/// `reset` events the follower received (it fell behind the gateway's ring).
static RESETS: AtomicU64 = AtomicU64::new(0);

/// The fields of an event the follower reads (serde skips the rest).
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    key: Option<String>,
    instance: Option<Followed>,
    instances: Option<Vec<Followed>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Followed {
    #[serde(default)]
    key: String,
    #[serde(default)]
    pod_name: String,
    #[serde(default)]
    status: String,
}

/// Waits until the followed view satisfies `done`; returns when it first did.
async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<View>,
    timeout: Duration,
    done: impl Fn(View) -> bool,
) -> Result<Instant> {
    let waited = tokio::time::timeout(timeout, rx.wait_for(|v| done(*v)))
        .await
        .map(|r| r.is_ok());
    match waited {
        Ok(true) => Ok(Instant::now()),
        Ok(false) => bail!("the gateway's stream ended"),
        Err(_) => bail!(
            "the gateway's view did not converge within {timeout:?}: last saw (total, ready, new and ready) = {:?}",
            *rx.borrow()
        ),
    }
}

pub fn run(all: Args) -> Result<()> {
    let args = &all.service;
    let cluster = Cluster::start(&args.gateway_bin, 1)?;
    let gateway = cluster.gateways[0].1.clone();
    let pid = cluster.pids()[0];
    let slices_url = cluster.slices_url();
    let total = args.slices * args.per_slice;
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::watch::channel((0, 0, 0));
        let follower = tokio::spawn(follow(gateway.clone(), tx));
        // The stream is open (its first snapshot arrived) before anything is written.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cpu0, _) = cpu_and_rss(pid)?;
        let created = Instant::now();
        for s in 0..args.slices {
            let response = http
                .post(&slices_url)
                .json(&slice(s, args.per_slice, Phase::Old))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("creating slice {s} failed: {}", response.status());
            }
        }
        let created_written = created.elapsed();
        let appeared = wait_for(&mut rx, all.timeout, |(t, r, _)| {
            t == total && r == total
        })
        .await?;
        let (cpu1, _) = cpu_and_rss(pid)?;
        println!("loco-discovery rolling update: {} slices × {} endpoints", args.slices, args.per_slice);
        println!(
            "  initial {total} endpoints     written in {:.2} s, in the gateway's view {:.2} s after the first write; gateway CPU {:.2} s",
            created_written.as_secs_f64(),
            (appeared - created).as_secs_f64(),
            cpu1 - cpu0
        );
        let started = Instant::now();
        let mut writes = 0u32;
        for s in 0..args.slices {
            for phase in [Phase::Terminating, Phase::NewNotReady, Phase::NewReady] {
                let response = http
                    .put(format!("{slices_url}/emu-roll-{s}"))
                    .json(&slice(s, args.per_slice, phase))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("rewriting slice {s} failed: {}", response.status());
                }
                writes += 1;
            }
        }
        let last_write = Instant::now();
        let converged = wait_for(&mut rx, all.timeout, |(t, r, n)| {
            t == total && r == total && n == total
        })
        .await?;
        let (cpu2, rss) = cpu_and_rss(pid)?;
        let absorbed = (converged - started).as_secs_f64();
        println!(
            "  rolling update             {writes} slice writes in {:.2} s through the simulated API",
            (last_write - started).as_secs_f64()
        );
        println!(
            "  converged                  {:.2} s after the last API write (followed on one SSE stream)",
            (converged - last_write).as_secs_f64()
        );
        println!(
            "  slice events absorbed      {:.0}/s ({writes} over {absorbed:.2} s from the first write to convergence)",
            writes as f64 / absorbed
        );
        println!(
            "  gateway CPU                {:.2} s for the update ({:.2} s since start); RSS {:.1} MiB",
            cpu2 - cpu1,
            cpu2 - cpu0,
            rss / 1024.0
        );
        // Confirm with the gateway's own snapshot.
        let live: Value = http
            .get(format!("{gateway}/api/instances/live"))
            .send()
            .await?
            .json()
            .await?;
        println!("  /live stats at the end     {}", live["stats"]);
        println!(
            "  follower resets            {} (the follower fell behind the gateway's ring and got a snapshot)",
            RESETS.load(Ordering::Relaxed)
        );
        follower.abort();
        Ok(())
    })
}
