//! The `sluice` command: runs Flink SQL scripts in-process.

mod clients;
mod server;

use clap::{Parser, Subcommand};
use sluice_connectors::BuiltinRegistry;
use sluice_engine::{restore_point, run_job_restarting, JobHandle, RestoreMode};
use sluice_sql::session::execute_script_to_restore;
use sluice_sql::Session;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc, with huge allocations mapped lazily so that hostile length fields in requests
/// cannot abort the broker (see the module).
#[global_allocator]
static ALLOCATOR: sluice_broker::alloc::LazyHugeAllocator<tikv_jemallocator::Jemalloc> =
    sluice_broker::alloc::LazyHugeAllocator(tikv_jemallocator::Jemalloc);

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Stream processing in one binary: Flink SQL on Arrow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a Flink SQL script: its INSERTs and SELECTs run together as one job.
    Run {
        /// The script (`-` reads standard input).
        script: PathBuf,
        /// Overrides `parallelism.default`.
        #[arg(long)]
        parallelism: Option<usize>,
        /// Prints only errors and the job's output.
        #[arg(long, short)]
        quiet: bool,
        /// Starts from this savepoint (or checkpoint) directory instead of the job's latest
        /// checkpoint.
        #[arg(long, value_name = "PATH")]
        from_savepoint: Option<PathBuf>,
        /// On Ctrl-C, takes a savepoint and stops once it is complete (a second Ctrl-C stops
        /// at once).
        #[arg(long)]
        savepoint_on_stop: bool,
        /// Where jobs keep their checkpoints and savepoints (`<dir>/jobs/<pipeline.name>/`).
        #[arg(long, value_name = "DIR", default_value = "sluice-data")]
        data_dir: PathBuf,
        /// Serves the job's metrics for Prometheus at http://ADDR/metrics (e.g.
        /// 127.0.0.1:9249; port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
    },
    /// Runs the event log: a broker that speaks the Apache Kafka protocol.
    Broker(BrokerArgs),
    /// Runs the broker, a job manager and the REST API (jobs are Flink SQL scripts submitted
    /// to POST /jobs) with /metrics, in one process.
    Server(server::ServerArgs),
    /// Lists, creates, describes and deletes topics on any Kafka-protocol broker.
    Topics {
        #[command(subcommand)]
        command: clients::TopicsCommand,
    },
    /// Writes lines (from standard input or a file) to a topic, one record each.
    Produce(clients::ProduceArgs),
    /// Prints a topic's records, one per line.
    Consume(clients::ConsumeArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// A Kafka `server.properties` file (listeners, advertised.listeners, log.dirs,
    /// num.partitions, log.retention.*, log.segment.bytes, ...); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on (loopback unless told otherwise) [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<String>,
    /// Where topics are stored [default: sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serves the broker's metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9249; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// The host:port clients are told to connect to [default: the listen address].
    #[arg(long)]
    advertised_address: Option<String>,
    /// Partitions of topics created without a count (`num.partitions`) [default: 1].
    #[arg(long)]
    default_partitions: Option<i32>,
    /// Create topics when clients ask for unknown ones (`auto.create.topics.enable`)
    /// [default: true].
    #[arg(long)]
    auto_create_topics: Option<bool>,
    /// Segment size in bytes (`log.segment.bytes`) [default: 1073741824].
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Retention in hours (`log.retention.hours`); 0 keeps data forever [default: 168].
    #[arg(long)]
    retention_hours: Option<u64>,
    /// Retention in bytes per partition (`log.retention.bytes`); 0 is no limit.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Acknowledge `acks=all` produces only after fsync (`flush.on.ack`) [default: true].
    #[arg(long)]
    fsync: Option<bool>,
    /// Serves a schema registry (Confluent's REST API, Avro schemas) at http://ADDR, e.g.
    /// 127.0.0.1:8081; it keeps its schemas in `<data dir>/schema-registry/`.
    #[arg(long, value_name = "ADDR")]
    schema_registry: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            script,
            parallelism,
            quiet,
            from_savepoint,
            savepoint_on_stop,
            data_dir,
            metrics_addr,
        } => match run(
            &script,
            RunOptions {
                parallelism,
                quiet,
                from_savepoint,
                savepoint_on_stop,
                data_dir,
                metrics_addr,
            },
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Broker(args) => report(broker(args)),
        Command::Server(args) => report(server::server(args)),
        Command::Topics { command } => report(clients::topics(command)),
        Command::Produce(args) => report(clients::produce(args)),
        Command::Consume(args) => report(clients::consume(args)),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn broker(args: BrokerArgs) -> Result<(), String> {
    use sluice_broker::config::BrokerConfig;
    // Defaults, then the properties file, then flags.
    let mut config = BrokerConfig::new(PathBuf::from("sluice-data"), "127.0.0.1", 9092);
    let mut listen = "127.0.0.1:9092".to_string();
    let mut advertised_set = false;
    if let Some(path) = &args.config {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
        advertised_set = text
            .lines()
            .any(|l| l.trim_start().starts_with("advertised.listeners"));
        if let Some(l) = config.apply_properties(&text, &name)? {
            listen = l;
        }
    }
    if let Some(l) = &args.listen {
        listen = l.clone();
    }
    let advertised = match &args.advertised_address {
        Some(a) => Some(a.clone()),
        None if advertised_set => None,
        None => Some(listen.clone()),
    };
    if let Some(advertised) = advertised {
        let (host, port) = advertised
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)))
            .ok_or_else(|| format!("advertised address '{advertised}': expected host:port"))?;
        config.advertised_host = host;
        config.advertised_port = port;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(p) = args.default_partitions {
        config.default_partitions = p.clamp(1, 10_000);
    }
    if let Some(a) = args.auto_create_topics {
        config.auto_create_topics = a;
    }
    if let Some(b) = args.segment_bytes {
        config.log.segment_bytes = b.max(1024);
    }
    if let Some(h) = args.retention_hours {
        config.log.retention_ms = (h > 0).then(|| std::time::Duration::from_secs(h * 3600));
    }
    if let Some(b) = args.retention_bytes {
        config.log.retention_bytes = (b > 0).then_some(b);
    }
    if let Some(f) = args.fsync {
        config.log.fsync_on_ack = f;
    }
    let data_dir = config.data_dir.clone();
    if let Some(addr) = &args.metrics_addr {
        let at = sluice_server::metrics_endpoint::serve_in_background(addr)
            .map_err(|e| e.to_string())?;
        eprintln!("Metrics for Prometheus at http://{at}/metrics");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let broker = sluice_broker::Broker::open(config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        tracing::info!(%listen, data_dir = %data_dir.display(), "broker started");
        eprintln!(
            "sluice broker listening on {listen} (data in {})",
            data_dir.display()
        );
        if let Some(addr) = &args.schema_registry {
            let registry = sluice_server::schema_registry::SchemaRegistry::open(
                &data_dir.join("schema-registry"),
            )?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--schema-registry {addr}: {e}"))?;
            let at = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!("Schema registry at http://{at}");
            tokio::spawn(sluice_server::schema_registry::serve(
                listener,
                registry,
                std::future::pending::<()>(),
            ));
        }
        let retention = sluice_broker::spawn_retention(broker.clone());
        if args.metrics_addr.is_some() {
            sluice_broker::broker_metrics::spawn_sampler(broker.clone());
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        sluice_broker::serve(broker, listener, shutdown)
            .await
            .map_err(|e| e.to_string())?;
        retention.abort();
        eprintln!("sluice broker stopped");
        Ok(())
    })
}

/// How `sluice run` runs a script.
struct RunOptions {
    parallelism: Option<usize>,
    quiet: bool,
    from_savepoint: Option<PathBuf>,
    savepoint_on_stop: bool,
    data_dir: PathBuf,
    metrics_addr: Option<String>,
}

fn run(script: &PathBuf, opts: RunOptions) -> Result<(), String> {
    let name = script.display().to_string();
    let sql = if name == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("reading standard input: {e}"))?
    } else {
        std::fs::read_to_string(script).map_err(|e| format!("{name}: {e}"))?
    };
    let new_session = |reuse_source: bool| -> sluice_common::Result<Session> {
        let mut session = Session::new(Arc::new(BuiltinRegistry::default()));
        session.set_data_dir(&opts.data_dir);
        if name != "-" {
            // A job is known by its script unless it sets 'pipeline.name'.
            if let Some(stem) = script.file_stem() {
                session.set("pipeline.name", &stem.to_string_lossy())?;
            }
        }
        if let Some(p) = opts.parallelism {
            session.set("parallelism.default", &p.to_string())?;
        }
        if !reuse_source {
            session.set("table.optimizer.reuse-source-enabled", "false")?;
        }
        Ok(session)
    };
    let mode = match &opts.from_savepoint {
        Some(p) => RestoreMode::Savepoint(p.clone()),
        None => RestoreMode::Latest,
    };
    let (outcome, older_plan) =
        execute_script_to_restore(&new_session, &sql, &mode).map_err(|e| format!("{name}: {e}"))?;
    for m in &outcome.messages {
        println!("{m}");
    }
    let Some(job) = outcome.job else {
        return Ok(());
    };
    if older_plan {
        eprintln!(
            "The state to restore was taken by a job that read a table once per reader: the job runs as that one ('table.optimizer.reuse-source-enabled' = 'false'); start it without that state to share its sources"
        );
    }
    let restored = restore_point(&job, &job.checkpoint, &mode)
        .map_err(|e| format!("job '{}': {e}", job.name))?;
    if let Some(r) = &restored {
        let what = if r.metadata.savepoint {
            "savepoint"
        } else {
            "checkpoint"
        };
        eprintln!(
            "Restoring job '{}' from {what} {} ({})",
            job.name,
            r.metadata.id,
            r.path.display()
        );
    }
    if let Some(addr) = &opts.metrics_addr {
        let at = sluice_server::metrics_endpoint::serve_in_background(addr)
            .map_err(|e| e.to_string())?;
        eprintln!("Metrics for Prometheus at http://{at}/metrics");
    }
    let handle = JobHandle::default();
    let on_signal = handle.clone();
    let savepoint_on_stop = opts.savepoint_on_stop;
    let signals = std::sync::atomic::AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        let n = signals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if savepoint_on_stop && n == 0 {
            eprintln!("stopping the job with a savepoint (Ctrl-C again to stop at once)...");
            on_signal.stop_with_savepoint();
        } else {
            eprintln!("stopping the job (Ctrl-C)...");
            on_signal.cancel();
        }
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    let strategy = job.restart.name();
    let mut on_failure = |f: sluice_engine::restart::Failure<'_>| {
        if let Some(delay) = f.restart_in {
            eprintln!(
                "job '{}' failed: {}\n  restarting in {:.1} s from its latest checkpoint (restart {}, restart-strategy '{strategy}')",
                job.name,
                f.error,
                delay.as_secs_f64(),
                f.restarts
            );
        }
    };
    let report = match run_job_restarting(&job, &handle, restored, mode, &mut on_failure) {
        Ok(report) => report,
        Err(e) => {
            // What it counted before it failed (rows written, sink errors) helps to see why,
            // even with --quiet.
            print_counters(&handle.metrics.snapshot());
            return Err(format!("job '{}' failed: {e}", job.name));
        }
    };
    if let Some(path) = &report.savepoint {
        eprintln!(
            "Savepoint written to {}; resume with: sluice run --from-savepoint {} {name}",
            path.display(),
            path.display()
        );
    }
    if !opts.quiet {
        let verb = if report.cancelled {
            "was stopped"
        } else {
            "finished"
        };
        eprintln!(
            "Job '{}' {verb} after {:.3} s.",
            job.name,
            report.elapsed.as_secs_f64()
        );
        print_counters(&report.counters);
    }
    Ok(())
}

/// A job's counters that are not zero, one a line.
fn print_counters(counters: &[(String, u64)]) {
    for (counter, value) in counters {
        if *value > 0 {
            eprintln!("  {counter}: {value}");
        }
    }
}
