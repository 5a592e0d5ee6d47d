//! Micro-benchmark of the index alone: a 10,000-endpoint service (100 slices of 100)
//! created, then each slice rewritten three times as a rolling update does it (all
//! terminating → new addresses not serving → serving). Prints the figures; asserts none.
//!
//! `cargo run --release -p loco-discovery-core --example rollout`

use chrono::Utc;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use loco_discovery_core::index::{EndpointIndex, IndexConfig};
use loco_discovery_core::slices::{mk_endpoint, mk_slice};
use std::time::Instant;

const SLICES: usize = 100;
const PER_SLICE: usize = 100;

fn slice(s: usize, generation: u8, serving: bool, terminating: bool) -> EndpointSlice {
    let endpoints = (0..PER_SLICE)
        .map(|e| {
            let n = s * PER_SLICE + e;
            let ip = format!("10.{generation}.{}.{}", n / 250, n % 250 + 1);
            mk_endpoint(
                &format!("loco-loco-emulator-{n}"),
                &ip,
                serving,
                terminating,
            )
        })
        .collect();
    mk_slice(
        "loco",
        &format!("loco-loco-emulator-{s:03}"),
        "loco-loco-emulator",
        endpoints,
    )
}

fn main() {
    let mut index = EndpointIndex::new(IndexConfig::default());
    let mut deltas = 0usize;
    let start = Instant::now();
    for s in 0..SLICES {
        deltas += index
            .apply(&slice(s, 1, true, false), Utc::now())
            .deltas
            .len();
    }
    let created = start.elapsed();
    let rollout = Instant::now();
    let mut events = 0usize;
    for s in 0..SLICES {
        for (generation, serving, terminating) in
            [(1, false, true), (2, false, false), (2, true, false)]
        {
            let next = slice(s, generation, serving, terminating);
            deltas += index.apply(&next, Utc::now()).deltas.len();
            events += 1;
        }
    }
    let rolled = rollout.elapsed();
    let total = start.elapsed();
    assert_eq!(index.instances().len(), SLICES * PER_SLICE);
    println!(
        "create {SLICES} slices x {PER_SLICE}: {:.1} ms ({:.1} us/event)",
        created.as_secs_f64() * 1e3,
        created.as_secs_f64() * 1e6 / SLICES as f64
    );
    println!(
        "rollout {events} slice events: {:.1} ms ({:.1} us/event)",
        rolled.as_secs_f64() * 1e3,
        rolled.as_secs_f64() * 1e6 / events as f64
    );
    println!(
        "total {} events: {:.1} ms, {deltas} deltas",
        SLICES + events,
        total.as_secs_f64() * 1e3
    );
}
