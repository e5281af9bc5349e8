//! The runs: the CI smoke run (tiny counts, fails on lost, duplicated or reordered events,
//! never on timings) and `compare`, which measures cmem and its peers in the same run and
//! prints the tables of BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::scenario::{self, Transport};
use crate::servers::{default_cmem_bin, peers, start_cmem, start_peer};

/// The CI smoke run: tiny counts, every scenario, every cmem transport.
pub async fn smoke(bin: Option<PathBuf>) -> anyhow::Result<()> {
    let bin = bin.unwrap_or_else(default_cmem_bin);
    let s = start_cmem(&bin, &[]).await?;
    let t = &s.target;
    let mut failures = Vec::new();
    let checks = 7; // idle, three transports, paced, resume, memory

    let r = scenario::idle(t, 50, Duration::from_millis(500), false).await;
    println!("{}", serde_json::to_string(&r)?);
    if r.connected != 50 {
        failures.push(format!(
            "idle: {} of 50 connected ({:?})",
            r.connected, r.first_error
        ));
    }
    for (transport, n, events) in [
        (Transport::Websocket, 20, 200),
        (Transport::Sse, 5, 100),
        (Transport::Poll, 5, 100),
    ] {
        let r = scenario::broadcast(t, n, events, 200, None, 50, transport, false).await?;
        println!("{}", serde_json::to_string(&r)?);
        eprintln!("{}", r.human());
        if r.lost > 0 || r.duplicated > 0 || r.out_of_order > 0 || r.connected != n {
            failures.push(format!(
                "broadcast {transport:?}: lost {}, dup {}, out of order {}, connected {}",
                r.lost, r.duplicated, r.out_of_order, r.connected
            ));
        }
    }
    let r =
        scenario::broadcast(t, 10, 100, 200, Some(500), 10, Transport::Websocket, false).await?;
    println!("{}", serde_json::to_string(&r)?);
    if r.lost > 0 || r.duplicated > 0 {
        failures.push(format!(
            "paced broadcast: lost {}, dup {}",
            r.lost, r.duplicated
        ));
    }
    let r = scenario::resume(t, 5, 500, 200).await?;
    println!("{}", serde_json::to_string(&r)?);
    if r.lost > 0 || r.duplicated > 0 || r.out_of_order > 0 {
        failures.push(format!(
            "resume: lost {}, dup {}, out of order {}",
            r.lost, r.duplicated, r.out_of_order
        ));
    }
    let r = scenario::journal(t, 2000, 100, 2, 200).await?;
    println!("{}", serde_json::to_string(&r)?);
    drop(s);

    // memory: a small corpus indexed and searched; cmem and ripgrep must agree on the markers
    let dir = tempfile::tempdir()?;
    let r = crate::memory::run(crate::memory::MemoryArgs {
        bin: bin.clone(),
        dir: dir.path().join("corpus"),
        size_mb: 5,
        files: 500,
        threads: vec![2],
        repeat: 5,
        http: true,
    })
    .await?;
    println!("{}", serde_json::to_string(&r)?);
    if !r.ripgrep {
        failures.push("memory: ripgrep (rg) is not installed; apt-get install ripgrep".into());
    } else if !r.disagreements.is_empty() || r.index_docs != 500 {
        failures.push(format!(
            "memory: {} documents indexed of 500, disagreements with ripgrep: {:?}",
            r.index_docs, r.disagreements
        ));
    }
    println!(
        "smoke: {} passed, {} failed",
        checks - failures.len(),
        failures.len()
    );
    if failures.is_empty() {
        eprintln!("bench smoke: every scenario ran, no event lost or duplicated");
        Ok(())
    } else {
        bail!("bench smoke failed: {}", failures.join("; "))
    }
}

#[derive(clap::Args, Clone)]
pub struct CompareArgs {
    /// The cmem binary (default: target/release/cmem).
    #[arg(long)]
    cmem_bin: Option<PathBuf>,
    /// Where bench/install-peers.sh put the peers.
    #[arg(long, default_value = "target/bench-peers")]
    peers_dir: PathBuf,
    /// Runs per measurement; the tables show the median and the range.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 5000)]
    idle_n: usize,
    #[arg(long, default_value_t = 1000)]
    broadcast_n: usize,
    #[arg(long, default_value_t = 200)]
    broadcast_events: u64,
    /// Clients for the paced run; the rate is per event, deliveries/s = rate x clients.
    #[arg(long, default_value_t = 100)]
    paced_n: usize,
    #[arg(long, default_value_t = 100)]
    paced_rate: u64,
    #[arg(long, default_value_t = 10_000)]
    resume_missed: u64,
    #[arg(long, default_value_t = 100_000)]
    journal_events: u64,
    /// Also write every result as a JSON line here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these targets (cmem, floor, node-socket.io, python-socketio, flask-socketio).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// median, min, max
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn cell(v: &mut [f64], digits: usize) -> String {
    let (m, lo, hi) = summary(v);
    if m.is_nan() {
        return "n/a".into();
    }
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

struct Row {
    name: String,
    cols: Vec<String>,
}

fn table(title: &str, header: &[&str], rows: &[Row]) -> String {
    let mut s = format!(
        "\n### {title}\n\n| target | {} |\n|---|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in rows {
        s.push_str(&format!("| {} | {} |\n", r.name, r.cols.join(" | ")));
    }
    s
}

pub async fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let bin = a.cmem_bin.clone().unwrap_or_else(default_cmem_bin);
    let peers = peers(&a.peers_dir);
    if peers.iter().all(|p| p.name == "floor") {
        eprintln!(
            "no peers found in {} (run bench/install-peers.sh): measuring cmem and the floor",
            a.peers_dir.display()
        );
    }
    let mut names: Vec<&str> = vec!["cmem"];
    names.extend(peers.iter().map(|p| p.name));
    if !a.only.is_empty() {
        names.retain(|n| a.only.iter().any(|o| o == n));
    }
    let mut out_file = match &a.out {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut log = |v: &dyn erased::Json| {
        let line = v.json();
        println!("{line}");
        if let Some(f) = out_file.as_mut() {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
    };
    let start = |name: &str| {
        let name = name.to_string();
        let bin = bin.clone();
        let peer = peers.iter().find(|p| p.name == name);
        async move {
            match peer {
                None => start_cmem(&bin, &[]).await,
                Some(p) => start_peer(p).await,
            }
        }
    };

    let (mut idle_rows, mut burst_rows, mut paced_rows) = (Vec::new(), Vec::new(), Vec::new());
    for name in &names {
        let (mut kib, mut conn_s) = (Vec::new(), Vec::new());
        let (mut dps, mut p50, mut p99, mut lost) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut pdps, mut pp50, mut pp99, mut pmax) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut pcpu, mut pgen) = (Vec::new(), Vec::new());
        for _ in 0..a.runs {
            let s = start(name).await?;
            let r = scenario::idle(
                &s.target,
                a.idle_n,
                Duration::from_secs(3),
                a.idle_n > 20_000,
            )
            .await;
            log(&r);
            if let Some(k) = r.kib_per_conn {
                kib.push(k);
            }
            conn_s.push(r.connect_s);
            drop(s);

            let s = start(name).await?;
            let r = scenario::broadcast(
                &s.target,
                a.broadcast_n,
                a.broadcast_events,
                200,
                None,
                100,
                Transport::Websocket,
                false,
            )
            .await?;
            eprintln!("{}", r.human());
            log(&r);
            dps.push(r.deliveries_per_s);
            p50.push(r.latency.p50_ms);
            p99.push(r.latency.p99_ms);
            lost.push((r.lost + r.duplicated) as f64);
            let r = scenario::broadcast(
                &s.target,
                a.paced_n,
                a.paced_rate * 5,
                200,
                Some(a.paced_rate),
                1,
                Transport::Websocket,
                false,
            )
            .await?;
            eprintln!("{}", r.human());
            log(&r);
            pdps.push(r.deliveries_per_s);
            pp50.push(r.latency.p50_ms);
            pp99.push(r.latency.p99_ms);
            pmax.push(r.latency.max_ms);
            pcpu.extend(r.server_cpu_us_per_delivery);
            pgen.extend(r.generator_cpu_us_per_delivery);
            drop(s);
        }
        idle_rows.push(Row {
            name: name.to_string(),
            cols: vec![
                a.idle_n.to_string(),
                cell(&mut kib, 1),
                cell(&mut conn_s, 2),
            ],
        });
        burst_rows.push(Row {
            name: name.to_string(),
            cols: vec![
                a.broadcast_n.to_string(),
                cell(&mut dps, 0),
                cell(&mut p50, 1),
                cell(&mut p99, 1),
                cell(&mut lost, 0),
            ],
        });
        paced_rows.push(Row {
            name: name.to_string(),
            cols: vec![
                format!("{} x {}/s", a.paced_n, a.paced_rate),
                cell(&mut pdps, 0),
                cell(&mut pp50, 2),
                cell(&mut pp99, 2),
                cell(&mut pmax, 2),
                cell(&mut pcpu, 1),
                cell(&mut pgen, 1),
            ],
        });
    }
    let mut md = String::new();
    md.push_str(&table(
        "idle WebSocket connections",
        &["clients", "server KiB / connection", "connect all (s)"],
        &idle_rows,
    ));
    md.push_str(&table(
        &format!("broadcast, burst ({} events of 200 B)", a.broadcast_events),
        &["clients", "deliveries/s", "p50 ms", "p99 ms", "lost+dup"],
        &burst_rows,
    ));
    md.push_str(&table(
        "broadcast, paced",
        &[
            "clients x events/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU µs / delivery",
            "generator CPU µs / delivery",
        ],
        &paced_rows,
    ));

    if names.contains(&"cmem") {
        let (mut ms, mut lost, mut eps1, mut eps100) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut cpu1, mut gen1) = (Vec::new(), Vec::new());
        for _ in 0..a.runs {
            let s = start("cmem").await?;
            let r = scenario::resume(&s.target, 1, a.resume_missed, 200).await?;
            log(&r);
            ms.push(r.catch_up_ms);
            lost.push((r.lost + r.duplicated) as f64);
            let r = scenario::journal(&s.target, a.journal_events, 100, 4, 200).await?;
            log(&r);
            eps100.push(r.events_per_s);
            // a fifth of the batched count: long enough (about a second) for a steady median
            let r =
                scenario::journal(&s.target, (a.journal_events / 5).max(100), 1, 16, 200).await?;
            log(&r);
            eps1.push(r.events_per_s);
            cpu1.extend(r.server_cpu_us_per_event);
            gen1.extend(r.generator_cpu_us_per_event);
        }
        md.push_str(&table(
            "resume and journal (cmem)",
            &[
                &format!("resume {} missed (ms)", a.resume_missed),
                "lost+dup",
                "publish events/s (batches of 100, 4 publishers)",
                "publish events/s (single events, 16 publishers)",
                "single events: server / generator CPU µs per event",
            ],
            &[Row {
                name: "cmem".into(),
                cols: vec![
                    cell(&mut ms, 1),
                    cell(&mut lost, 0),
                    cell(&mut eps100, 0),
                    cell(&mut eps1, 0),
                    format!("{} / {}", cell(&mut cpu1, 1), cell(&mut gen1, 1)),
                ],
            }],
        ));
    }
    eprintln!("{md}");
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({"markdown": md}))?
    );
    Ok(())
}

/// Lets `compare` log any result type through one closure.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
