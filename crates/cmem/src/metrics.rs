//! `GET /metrics`: the server's counters in the Prometheus/OpenMetrics text format, encoded by
//! `prometheus-client`.
//!
//! Most figures already live where they are counted (registry, journal, hub, index), so a
//! collector reads them at scrape time instead of keeping a second copy in step. Only search
//! timings, which nothing else keeps, are recorded here as they happen.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::collab::Collab;
use crate::hub::Hub;
use crate::memory::{IndexTotals, Memory};

/// The media type `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry and the metrics recorded as they happen.
pub struct Metrics {
    registry: Registry,
    /// Seconds per completed search.
    pub search_seconds: Histogram,
    /// Searches refused (bad query) or failed.
    pub search_errors: Counter,
}

impl Metrics {
    pub fn new(hub: Arc<Hub>, memory: Arc<Memory>, teams: Arc<Collab>) -> Metrics {
        let mut registry = Registry::default();
        // 0.1 ms to ~3 s
        let search_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let search_errors = Counter::default();
        registry.register(
            "cmem_search_duration_seconds",
            "Time to answer a search, from parse to snippets",
            search_seconds.clone(),
        );
        registry.register(
            "cmem_search_errors",
            "Searches refused (bad query) or failed",
            search_errors.clone(),
        );
        registry.register_collector(Box::new(Live { hub, memory, teams }));
        Metrics {
            registry,
            search_seconds,
            search_errors,
        }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the live figures at scrape time.
struct Live {
    hub: Arc<Hub>,
    memory: Arc<Memory>,
    teams: Arc<Collab>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let hub = &self.hub;
        let reg = &hub.registry;
        {
            let mut m = enc.encode_descriptor(
                "cmem_connections",
                "Open client connections by transport",
                None,
                MetricType::Gauge,
            )?;
            let by = reg.by_transport();
            for t in ["websocket", "polling", "sse", "poll"] {
                let n = by.get(t).copied().unwrap_or(0) as i64;
                ConstGauge::new(n).encode(m.encode_family(&[("transport", t)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "cmem_connection_closes",
                "Connections closed by the server, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in reg.closes_by_reason() {
                ConstCounter::new(n).encode(m.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        let c = &mut enc;
        counter(
            c,
            "cmem_connections_opened",
            "Connections opened since start",
            reg.opened_total(),
        )?;
        gauge(
            c,
            "cmem_tcp_connections",
            "TCP connections open now, every protocol and transport",
            reg.tcp.open() as i64,
        )?;
        counter(
            c,
            "cmem_connections_refused_per_address",
            "Connections closed at accept because their source address held max_connections_per_address",
            reg.tcp.refused(),
        )?;
        counter(
            c,
            "cmem_transport_errors",
            "Transport errors recorded",
            reg.errors_total(),
        )?;
        counter(
            c,
            "cmem_events_published",
            "Events published through the journal since start",
            hub.published_total(),
        )?;
        counter(
            c,
            "cmem_catch_ups",
            "Times a connection fell behind the fan-out and caught up from the journal",
            hub.catch_ups_total(),
        )?;
        let info = hub.journal.info();
        gauge(
            c,
            "cmem_journal_head",
            "Id of the newest event",
            info.head as i64,
        )?;
        gauge(
            c,
            "cmem_journal_oldest",
            "Id of the oldest event kept",
            info.oldest as i64,
        )?;
        if let Some(applied) = self.teams.store().team_log_applied() {
            gauge(
                c,
                "cmem_cluster_nodes",
                "Cluster nodes alive, as their presence announcements say",
                self.teams.cluster_nodes().len() as i64,
            )?;
            gauge(
                c,
                "cmem_team_log_applied",
                "Position of the cluster's team log this node has applied",
                applied as i64,
            )?;
        }
        gauge(
            c,
            "cmem_uptime_seconds",
            "Seconds since start",
            hub.uptime_s() as i64,
        )?;
        let mem = &self.memory;
        gauge(
            c,
            "cmem_index_documents",
            "Documents in the index",
            mem.doc_count() as i64,
        )?;
        gauge(
            c,
            "cmem_index_bytes",
            "Bytes the index takes on disk",
            mem.index_bytes() as i64,
        )?;
        gauge(
            c,
            "cmem_indexing_running",
            "1 while an indexing run is going",
            i64::from(mem.indexing_state().running),
        )?;
        let t = &mem.totals;
        let totals = [
            ("cmem_indexing_runs", "Indexing runs finished", &t.runs),
            (
                "cmem_indexed_files",
                "Files (re)indexed, by runs and by the watcher",
                &t.indexed,
            ),
            (
                "cmem_index_skipped_files",
                "Files skipped (binary or too large)",
                &t.skipped,
            ),
            (
                "cmem_index_removed_files",
                "Files removed from the index",
                &t.removed,
            ),
            (
                "cmem_index_errors",
                "Files that could not be read or indexed",
                &t.errors,
            ),
            (
                "cmem_index_watcher_updates",
                "Batches of changed files the watcher re-indexed",
                &t.watcher_updates,
            ),
        ];
        for (name, help, v) in totals {
            counter(c, name, help, IndexTotals::get(v))?;
        }
        Ok(())
    }
}
