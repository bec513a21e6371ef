//! `sluice server`: the broker, the job manager, the REST API and `/metrics` in one process.
//! Jobs are Flink SQL scripts submitted to `POST /jobs`; they run until they end, are
//! cancelled or stopped with a savepoint, and start again from their checkpoints when the
//! server does.

use sluice_connectors::BuiltinRegistry;
use sluice_server::job_manager::JobManager;
use sluice_server::rest::Api;
use sluice_sql::Session;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// The address of the REST API and /metrics (Flink's port by default). Anything but
    /// loopback needs --token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    http: String,
    /// A bearer token every request but /healthz and /readyz must carry
    /// (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "SLUICE_TOKEN", value_name = "TOKEN")]
    token: Option<String>,
    /// Where jobs keep their checkpoints and savepoints, the server its job records and the
    /// broker its topics (in `broker/`).
    #[arg(long, value_name = "DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// The address of the broker (the Kafka protocol).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9092")]
    broker_listen: String,
    /// Runs without the broker.
    #[arg(long)]
    no_broker: bool,
}

/// Plans a script as `sluice run` does (built-in connectors, the server's data directory),
/// as job `name` unless it sets 'pipeline.name'.
fn plan(
    sql: &str,
    data_dir: &Path,
    name: &str,
) -> sluice_common::Result<Option<sluice_engine::JobGraph>> {
    let new_session = |reuse_source: bool| -> sluice_common::Result<Session> {
        let mut session = Session::new(Arc::new(BuiltinRegistry::default()));
        session.set_data_dir(data_dir);
        session.set("pipeline.name", name)?;
        if !reuse_source {
            session.set("table.optimizer.reuse-source-enabled", "false")?;
        }
        Ok(session)
    };
    // A restarted server restores its jobs from their latest checkpoints, which an earlier
    // version may have taken with a source per reader.
    let (outcome, _) = sluice_sql::session::execute_script_to_restore(
        &new_session,
        sql,
        &sluice_engine::RestoreMode::Latest,
    )?;
    Ok(outcome.job)
}

pub fn server(args: ServerArgs) -> Result<(), String> {
    let http: SocketAddr = args
        .http
        .parse()
        .map_err(|e| format!("--http '{}': {e} (expected host:port)", args.http))?;
    if !http.ip().is_loopback() && args.token.is_none() {
        return Err(format!(
            "--http {http} is not a loopback address: give --token so that only holders of it can submit and stop jobs"
        ));
    }
    let metrics = sluice_server::metrics_endpoint::install_recorder().map_err(|e| e.to_string())?;
    let jobs = JobManager::open(&args.data_dir, Box::new(plan)).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let mut api = Api {
        jobs: jobs.clone(),
        metrics,
        token: args.token.clone(),
        broker: None,
        registry: Some(sluice_server::schema_registry::SchemaRegistry::open(
            &args.data_dir.join("schema-registry"),
        )?),
    };
    let result = runtime.block_on(async move {
        let mut broker_task = None;
        if !args.no_broker {
            let (host, port) = args
                .broker_listen
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    format!(
                        "--broker-listen '{}': expected host:port",
                        args.broker_listen
                    )
                })?;
            let config =
                sluice_broker::config::BrokerConfig::new(args.data_dir.join("broker"), &host, port);
            let broker = sluice_broker::Broker::open(config).map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(&args.broker_listen)
                .await
                .map_err(|e| format!("--broker-listen {}: {e}", args.broker_listen))?;
            sluice_broker::spawn_retention(broker.clone());
            sluice_broker::broker_metrics::spawn_sampler(broker.clone());
            api.broker = Some(broker.clone());
            broker_task = Some(tokio::spawn(sluice_broker::serve(
                broker,
                listener,
                std::future::pending::<()>(),
            )));
        }
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .map_err(|e| format!("--http {http}: {e}"))?;
        let at = listener.local_addr().map_err(|e| e.to_string())?;
        eprintln!(
            "sluice server: REST API at http://{at} (jobs in {}){}",
            args.data_dir.display(),
            if args.no_broker {
                String::new()
            } else {
                format!("; broker on {}", args.broker_listen)
            }
        );
        sluice_server::rest::serve(listener, api, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("the REST API stopped: {e}"))?;
        if let Some(t) = broker_task {
            t.abort();
        }
        Ok::<(), String>(())
    });
    // Running jobs stop but stay running in their records: they start again with the server.
    eprintln!("sluice server: stopping its jobs...");
    if !jobs.shutdown() {
        eprintln!("sluice server: some jobs did not stop in time; they resume from their latest checkpoints");
    }
    eprintln!("sluice server stopped");
    result
}
