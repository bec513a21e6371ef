//! The `sluice` command: runs Flink SQL scripts in-process.

use clap::{Parser, Subcommand};
use sluice_connectors::BuiltinRegistry;
use sluice_engine::{run_job, JobHandle};
use sluice_sql::Session;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    }
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
