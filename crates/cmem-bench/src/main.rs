//! `cmem-bench`: a load generator for cmem and other Socket.IO servers.
//!
//! One process, many connections, tokio tasks (no thread per connection). It speaks Engine.IO 4
//! / Socket.IO 5 over WebSocket itself, so it can drive any Socket.IO server, plus cmem's SSE and
//! poll transports. Targets must be loopback addresses; every run is bounded in count and time.
//! `compare` starts cmem and the peer servers itself and prints the tables of BENCHMARKS.md.

mod client;
mod floor;
mod memory;
mod retrieval;
mod runs;
mod scenario;
mod servers;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use scenario::{Target, Transport};

#[derive(Parser)]
#[command(
    name = "cmem-bench",
    about = "Load generator for cmem and other Socket.IO servers (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8000
    #[arg(long)]
    url: String,
    /// The server is not cmem: publish through --trigger instead of /api/events.
    #[arg(long)]
    peer: bool,
    /// A peer's broadcast trigger (default: <url>/trigger); for cmem, another node's
    /// `/api/events` (delivery latency across a cluster's nodes).
    #[arg(long)]
    trigger: Option<String>,
    /// Server process id, for memory readings.
    #[arg(long)]
    pid: Option<u32>,
    /// With --spread-sources: connect from 127.0.<block>.x (generators side by side take one
    /// block each).
    #[arg(long, default_value_t = 0)]
    source_block: u8,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let name = if self.peer { "peer" } else { "cmem" };
        let mut t = Target::new(name, &self.url, self.trigger.clone(), !self.peer, self.pid)?;
        t.source_block = self.source_block;
        Ok(t)
    }
}

#[derive(Subcommand)]
enum Command {
    /// N idle connections: time to connect all, server RSS per connection.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(short, long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 3)]
        settle_s: u64,
        /// Spread connections over 127.0.0.x source addresses, 5,000 each (needed past ~28k, and
        /// faster past ~15k).
        #[arg(long)]
        spread_sources: bool,
    },
    /// N clients, M events of S bytes: deliveries/s, latency, loss.
    Broadcast {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(short, long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 1000)]
        events: u64,
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Events per second (paced); default: as fast as possible (burst).
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// websocket, sse or poll.
        #[arg(long, default_value = "websocket", value_parser = |s: &str| s.parse::<Transport>())]
        transport: Transport,
        #[arg(long)]
        spread_sources: bool,
    },
    /// Clients leave, K events are published, they come back with cursors (cmem only).
    Resume {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(short, long, default_value_t = 1)]
        n: usize,
        #[arg(long, default_value_t = 10_000)]
        missed: u64,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Durable publish throughput (cmem only).
    Journal {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, default_value_t = 100)]
        batch: u64,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Start cmem on a temporary folder and run every scenario small and fast; fails on any
    /// lost or duplicated event (timings are printed, never judged).
    Smoke {
        /// The cmem binary (default: target/release/cmem, else target/debug/cmem).
        #[arg(long)]
        cmem_bin: Option<PathBuf>,
    },
    /// Start cmem and the peer servers and measure them side by side; prints markdown tables.
    Compare(runs::CompareArgs),
    /// Serve the floor peer (see `floor.rs`): a bare tokio-tungstenite broadcast server that
    /// `compare --only floor` measures beside cmem. On 127.0.0.1, port from `--port` or `PORT`.
    FloorServer {
        #[arg(long, env = "PORT")]
        port: u16,
    },
    /// Ask the judged questions of `data/git-questions.tsv` over the Git documentation in
    /// each search mode (keyword, semantic, hybrid): nDCG@10, recall@5 and search times as a
    /// markdown table. The corpus comes from `scripts/retrieval-corpus.sh`.
    Retrieval {
        #[arg(long)]
        corpus: Option<PathBuf>,
        #[arg(long)]
        questions: Option<PathBuf>,
        /// Times each question is asked per mode (the timings are the median over these).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long)]
        cmem_bin: Option<PathBuf>,
    },
    /// Time the exact vector scan of meaning search at a number of passages, and embedding a
    /// question with the model in `--model-dir` (the build's copy is under target/).
    Vectors {
        #[arg(long, default_value_t = 100_000)]
        passages: usize,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Index a generated corpus with `cmem index`, then time searches in-process, over HTTP
    /// and with ripgrep on the same files; prints a markdown table.
    Memory {
        /// Where the corpus is written (reused when it matches the size and file count).
        #[arg(long, default_value = "target/bench-corpus")]
        corpus: PathBuf,
        #[arg(long, default_value_t = 1024)]
        size_mb: u64,
        #[arg(long, default_value_t = 100_000)]
        files: usize,
        /// Indexing runs to time, by thread count (each starts from an empty index).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Times each query is run (in-process and over HTTP).
        #[arg(long, default_value_t = 200)]
        repeat: usize,
        /// Skip the HTTP measurement (no server is started).
        #[arg(long)]
        no_http: bool,
        /// Keep the corpus's existing index and time only the searches.
        #[arg(long)]
        reuse_index: bool,
        /// The cmem binary (default: target/release/cmem, else target/debug/cmem).
        #[arg(long)]
        cmem_bin: Option<PathBuf>,
    },
}

fn emit<T: Serialize>(r: &T, human: String) {
    println!("{}", serde_json::to_string(r).unwrap_or_default());
    eprintln!("{human}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Idle {
            target,
            n,
            settle_s,
            spread_sources,
        } => {
            let t = target.target()?;
            let r = scenario::idle(&t, n, Duration::from_secs(settle_s), spread_sources).await;
            let h = format!(
                "idle {}: {}/{} connected in {:.2} s, {} KiB per connection",
                r.target,
                r.connected,
                r.clients,
                r.connect_s,
                r.kib_per_conn
                    .map(|k| format!("{k:.1}"))
                    .unwrap_or("?".into())
            );
            emit(&r, h);
        }
        Command::Broadcast {
            target,
            n,
            events,
            size,
            rate,
            batch,
            transport,
            spread_sources,
        } => {
            let t = target.target()?;
            let r =
                scenario::broadcast(&t, n, events, size, rate, batch, transport, spread_sources)
                    .await?;
            let h = r.human();
            emit(&r, h);
        }
        Command::Resume {
            target,
            n,
            missed,
            size,
        } => {
            let t = target.target()?;
            let r = scenario::resume(&t, n, missed, size).await?;
            let h = format!(
                "resume {}: {} clients caught up on {} missed events in {:.1} ms, lost {}, dup {}",
                r.target, r.clients, r.missed_per_client, r.catch_up_ms, r.lost, r.duplicated
            );
            emit(&r, h);
        }
        Command::Journal {
            target,
            events,
            batch,
            publishers,
            size,
        } => {
            let t = target.target()?;
            let r = scenario::journal(&t, events, batch, publishers, size).await?;
            let cpu = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.1}"));
            let h = format!(
                "journal {}: {} events (batch {}, {} publishers) in {:.2} s -> {:.0} events/s; CPU µs/event: server {}, generator {}",
                r.target,
                r.events,
                r.batch,
                r.publishers,
                r.seconds,
                r.events_per_s,
                cpu(r.server_cpu_us_per_event),
                cpu(r.generator_cpu_us_per_event)
            );
            emit(&r, h);
        }
        Command::Smoke { cmem_bin } => runs::smoke(cmem_bin).await?,
        Command::Compare(args) => runs::compare(args).await?,
        Command::FloorServer { port } => floor::serve(port).await?,
        Command::Vectors {
            passages,
            model_dir,
        } => {
            let r = retrieval::vector_scan(passages, model_dir.as_deref())?;
            let h = format!(
                "{} passages ({} documents, {} numbers each): {:.1} MiB of vectors; nearest 50 documents p50 {:.2} ms, p99 {:.2} ms; question embedded p50 {}; model loaded in {}",
                r.passages,
                r.documents,
                r.dim,
                r.vector_mib,
                r.p50_ms,
                r.p99_ms,
                r.question_p50_ms
                    .map_or("-".into(), |t| format!("{t:.2} ms")),
                r.model_load_ms.map_or("-".into(), |t| format!("{t:.0} ms")),
            );
            emit(&r, h);
        }
        Command::Retrieval {
            corpus,
            questions,
            repeat,
            cmem_bin,
        } => {
            let r = retrieval::run(retrieval::RetrievalArgs {
                bin: cmem_bin.unwrap_or_else(servers::default_cmem_bin),
                corpus: corpus.unwrap_or_else(retrieval::default_corpus),
                questions: questions.unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/git-questions.tsv")
                }),
                repeat,
            })
            .await?;
            let table = retrieval::markdown(&r);
            emit(&r, table);
        }
        Command::Memory {
            corpus,
            size_mb,
            files,
            threads,
            repeat,
            no_http,
            reuse_index,
            cmem_bin,
        } => {
            let r = memory::run(memory::MemoryArgs {
                bin: cmem_bin.unwrap_or_else(servers::default_cmem_bin),
                dir: corpus,
                size_mb,
                files,
                threads: if reuse_index { Vec::new() } else { threads },
                repeat,
                http: !no_http,
            })
            .await?;
            let table = memory::markdown(&r);
            emit(&r, table);
        }
    }
    Ok(())
}
