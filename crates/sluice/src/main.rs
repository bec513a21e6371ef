//! The `sluice` command: runs Flink SQL scripts in-process.

use clap::{Parser, Subcommand};
use sluice_connectors::BuiltinRegistry;
use sluice_engine::{run_job, JobHandle};
use sluice_sql::Session;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Keeps hostile length fields in requests from aborting the broker (see the module).
#[global_allocator]
static ALLOCATOR: sluice_broker::alloc::LazyHugeAllocator = sluice_broker::alloc::LazyHugeAllocator;

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
    },
    /// Runs the event log: a broker that speaks the Apache Kafka protocol.
    Broker(BrokerArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// The address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Where topics are stored.
    #[arg(long, default_value = "sluice-data")]
    data_dir: PathBuf,
    /// The host:port clients are told to connect to (default: the listen address).
    #[arg(long)]
    advertised_address: Option<String>,
    /// Partitions of topics created without a count (`num.partitions`).
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Create topics when clients ask for unknown ones (`auto.create.topics.enable`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Segment size in bytes (`segment.bytes`).
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// Retention in hours (`log.retention.hours`); 0 keeps data forever.
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
    /// Retention in bytes per partition (`retention.bytes`); 0 is no limit.
    #[arg(long, default_value_t = 0)]
    retention_bytes: u64,
    /// Acknowledge `acks=all` produces only after fsync (`true`), or from the page cache.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
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
        } => match run(&script, parallelism, quiet) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Broker(args) => match broker(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn broker(args: BrokerArgs) -> Result<(), String> {
    use sluice_broker::config::BrokerConfig;
    let advertised = args
        .advertised_address
        .clone()
        .unwrap_or_else(|| args.listen.clone());
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("--advertised-address '{advertised}': expected host:port"))?;
    let mut config = BrokerConfig::new(args.data_dir.clone(), &host, port);
    config.default_partitions = args.default_partitions.max(1);
    config.auto_create_topics = args.auto_create_topics;
    config.log.segment_bytes = args.segment_bytes.max(1024);
    config.log.retention_ms = (args.retention_hours > 0)
        .then(|| std::time::Duration::from_secs(args.retention_hours * 3600));
    config.log.retention_bytes = (args.retention_bytes > 0).then_some(args.retention_bytes);
    config.log.fsync_on_ack = args.fsync;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let broker = sluice_broker::Broker::open(config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("--listen {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, data_dir = %args.data_dir.display(), "broker started");
        eprintln!("sluice broker listening on {} (data in {})", args.listen, args.data_dir.display());
        let retention = sluice_broker::spawn_retention(broker.clone());
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

fn run(script: &PathBuf, parallelism: Option<usize>, quiet: bool) -> Result<(), String> {
    let name = script.display().to_string();
    let sql = if name == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("reading standard input: {e}"))?
    } else {
        std::fs::read_to_string(script).map_err(|e| format!("{name}: {e}"))?
    };
    let mut session = Session::new(Arc::new(BuiltinRegistry::default()));
    if let Some(p) = parallelism {
        session
            .set("parallelism.default", &p.to_string())
            .map_err(|e| e.to_string())?;
    }
    let outcome = session
        .execute_script(&sql)
        .map_err(|e| format!("{name}: {e}"))?;
    for m in &outcome.messages {
        println!("{m}");
    }
    let Some(job) = outcome.job else {
        return Ok(());
    };
    let handle = JobHandle::default();
    let on_signal = handle.clone();
    ctrlc::set_handler(move || {
        eprintln!("stopping the job (Ctrl-C)...");
        on_signal.cancel();
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    let report = run_job(&job, &handle).map_err(|e| format!("job '{}' failed: {e}", job.name))?;
    if !quiet {
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
        for (counter, value) in &report.counters {
            if *value > 0 {
                eprintln!("  {counter}: {value}");
            }
        }
    }
    Ok(())
}
