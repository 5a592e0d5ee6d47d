//! Reading the gateway's `/metrics`: one series' value, and waiting for a series to move.

use super::{eventually, Gateway};
use std::time::Duration;

pub const LIMIT: Duration = Duration::from_secs(10);

/// The value of one series in a Prometheus text exposition (0 when absent).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all).then(|| number.parse::<f64>().ok())?
        })
        .sum()
}

pub struct Scrape(pub String);

impl Scrape {
    pub async fn from(gateway: &Gateway) -> Self {
        Scrape(
            reqwest::get(gateway.url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        value(&self.0, name, labels)
    }
}

pub async fn moved(gateway: &Gateway, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    Scrape::from(gateway).await.get(name, labels) - before.get(name, labels)
}

/// Waits until the series moved by `expected` since `before`.
pub async fn expect_moved(
    gateway: &Gateway,
    before: &Scrape,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) {
    let result = eventually(LIMIT, || async {
        moved(gateway, before, name, labels).await == expected
    })
    .await;
    assert!(
        result.is_ok(),
        "{name}{labels:?} moved by {} instead of {expected}",
        moved(gateway, before, name, labels).await
    );
}
