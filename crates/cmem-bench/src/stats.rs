//! Shared counters and latency histograms for one run.
//!
//! Latencies go into a few sharded `hdrhistogram`s (one lock per shard, picked by client
//! index) rather than one per client: ten thousand clients must not cost ten thousand
//! histograms.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

const SHARDS: usize = 16;

pub struct Stats {
    delivered: AtomicU64,
    dropped: AtomicU64,
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Stats {
    pub fn new(_clients: usize) -> Stats {
        let shards = (0..SHARDS)
            .map(|_| {
                // 1 µs .. 10 min, 3 significant digits
                Mutex::new(
                    Histogram::new_with_bounds(1, 600_000_000, 3)
                        .unwrap_or_else(|_| Histogram::new(3).expect("histogram")),
                )
            })
            .collect();
        Stats {
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            shards,
        }
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn record_latency(&self, idx: usize, us: u64) {
        if let Ok(mut h) = self.shards[idx % SHARDS].lock() {
            let _ = h.record(us.clamp(1, 600_000_000));
        }
    }

    pub fn latency(&self) -> Latency {
        let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("histogram"));
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        if all.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_ms: all.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: all.max() as f64 / 1000.0,
            samples: all.len(),
        }
    }
}
