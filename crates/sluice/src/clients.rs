//! `sluice topics`, `sluice produce` and `sluice consume`: small clients of any
//! Kafka-protocol broker (Sluice's own or a Kafka cluster), built on librdkafka.

use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct Connection {
    /// The brokers, host:port[,host:port...].
    #[arg(
        long,
        short = 'b',
        default_value = "127.0.0.1:9092",
        env = "SLUICE_BOOTSTRAP_SERVERS"
    )]
    bootstrap_servers: String,
}

impl Connection {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        c
    }

    /// A client of type `C` (a consumer for metadata, an admin client).
    fn client<C: rdkafka::config::FromClientConfig>(&self) -> Result<C, String> {
        self.config()
            .create()
            .map_err(|e| err("cannot create a client", e))
    }

    /// The message for a request the brokers did not answer.
    fn unreachable(&self, e: KafkaError) -> String {
        err(&format!("cannot reach '{}'", self.bootstrap_servers), e)
    }
}

/// Prints each topic an admin request handled (`verb`: create, delete), or fails with the
/// first it could not.
fn admin_results(
    results: Vec<rdkafka::admin::TopicResult>,
    verb: &str,
    detail: &str,
) -> Result<(), String> {
    for r in results {
        match r {
            Ok(name) => println!("{verb}d topic '{name}'{detail}"),
            Err((name, code)) => return Err(format!("cannot {verb} topic '{name}': {code}")),
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Lists the topics and their partition counts.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Creates a topic.
    Create {
        topic: String,
        /// Partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// A topic config, `key=value` (retention.ms, segment.bytes, ...); repeatable.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Shows a topic's partitions, their leaders and offsets.
    Describe {
        topic: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Deletes a topic.
    Delete {
        topic: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of standard input.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence into key and value (e.g. ':').
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// Write every record to this partition.
    #[arg(long, short)]
    partition: Option<i32>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consume as a member of this group, from its committed offsets, and commit.
    #[arg(long, short)]
    group: Option<String>,
    /// Start at the earliest offset (without a group, the default is the end).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset in every partition read.
    #[arg(long, short)]
    offset: Option<i64>,
    /// Read only this partition.
    #[arg(long, short)]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Stop when every partition is read to its end (as `kcat -e`).
    #[arg(long, short)]
    exit: bool,
    /// Print `key<separator>value`.
    #[arg(long)]
    print_key: bool,
    /// The separator for --print-key.
    #[arg(long, default_value = "\t")]
    key_separator: String,
    #[command(flatten)]
    connection: Connection,
}

fn err(what: &str, e: KafkaError) -> String {
    format!("{what}: {e}")
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

pub fn topics(command: TopicsCommand) -> Result<(), String> {
    match command {
        TopicsCommand::List { connection } => {
            let consumer: BaseConsumer = connection.client()?;
            let metadata = consumer
                .fetch_metadata(None, TIMEOUT)
                .map_err(|e| connection.unreachable(e))?;
            let mut topics: Vec<(String, usize)> = metadata
                .topics()
                .iter()
                .filter(|t| !t.name().starts_with("__"))
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            topics.sort();
            for (name, partitions) in topics {
                println!("{name}\t{partitions} partitions");
            }
            Ok(())
        }
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            connection,
        } => {
            let admin: AdminClient<DefaultClientContext> = connection.client()?;
            let mut pairs = Vec::new();
            for c in &configs {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| format!("--config '{c}' is not key=value"))?;
                pairs.push((k.to_string(), v.to_string()));
            }
            let mut new = NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for (k, v) in &pairs {
                new = new.set(k, v);
            }
            let results = runtime()?
                .block_on(admin.create_topics(
                    &[new],
                    &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
                ))
                .map_err(|e| connection.unreachable(e))?;
            admin_results(results, "create", &format!(" with {partitions} partitions"))
        }
        TopicsCommand::Describe { topic, connection } => {
            let consumer: BaseConsumer = connection.client()?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), TIMEOUT)
                .map_err(|e| connection.unreachable(e))?;
            let t = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| format!("topic '{topic}' does not exist"))?;
            if let Some(e) = t.error() {
                return Err(format!("topic '{topic}': {}", RDKafkaErrorCode::from(e)));
            }
            println!("topic '{topic}': {} partitions", t.partitions().len());
            println!("partition\tleader\tearliest\tlatest");
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p.id(), TIMEOUT)
                    .map_err(|e| err(&format!("partition {}", p.id()), e))?;
                println!("{}\t{}\t{low}\t{high}", p.id(), p.leader());
            }
            Ok(())
        }
        TopicsCommand::Delete { topic, connection } => {
            let admin: AdminClient<DefaultClientContext> = connection.client()?;
            let results = runtime()?
                .block_on(admin.delete_topics(
                    &[topic.as_str()],
                    &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
                ))
                .map_err(|e| connection.unreachable(e))?;
            admin_results(results, "delete", "")
        }
    }
}

pub fn produce(args: ProduceArgs) -> Result<(), String> {
    let mut config = args.connection.config();
    config.set("acks", "all").set("linger.ms", "5");
    let producer: ThreadedProducer<DefaultProducerContext> = config
        .create()
        .map_err(|e| err("cannot create a producer", e))?;
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let source = args
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard input".into());
    let mut count = 0u64;
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("{source}, line {}: {e}", n + 1))?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => {
                    return Err(format!(
                        "{source}, line {}: no key separator '{sep}' in the line",
                        n + 1
                    ))
                }
            },
            None => (None, line),
        };
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(&args.topic).payload(&value);
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("{source}, line {}: {e}", n + 1)),
            }
        }
        count += 1;
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| {
        err(
            &format!("records to '{}' were not all acknowledged", args.topic),
            e,
        )
    })?;
    eprintln!("produced {count} records to '{}'", args.topic);
    Ok(())
}

pub fn consume(args: ConsumeArgs) -> Result<(), String> {
    let mut config = args.connection.config();
    config.set("enable.partition.eof", "true");
    // librdkafka assigns partitions only with a group id; without --group one that never
    // commits.
    config.set("group.id", format!("sluice-consume-{}", std::process::id()));
    if let Some(g) = &args.group {
        config
            .set("group.id", g)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if args.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            );
    }
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| err("cannot create a consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), TIMEOUT)
        .map_err(|e| args.connection.unreachable(e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(format!("topic '{}' does not exist", args.topic));
    }
    let mut reading: Vec<i32> = match args.partition {
        Some(p) if partitions.contains(&p) => vec![p],
        Some(p) => return Err(format!("topic '{}' has no partition {p}", args.topic)),
        None => partitions,
    };
    if args.group.is_some() && args.partition.is_none() && args.offset.is_none() {
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| err("cannot join the group", e))?;
    } else {
        let start = match args.offset {
            Some(o) => Offset::Offset(o),
            None if args.group.is_some() => Offset::Stored,
            None if args.from_beginning => Offset::Beginning,
            None => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        for &p in &reading {
            tpl.add_partition_offset(&args.topic, p, start)
                .map_err(|e| err("cannot assign", e))?;
        }
        consumer.assign(&tpl).map_err(|e| err("cannot assign", e))?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let mut last_commit = Instant::now();
    loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                if args.print_key {
                    out.write_all(m.key().unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                    out.write_all(args.key_separator.as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                out.write_all(m.payload().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
                count += 1;
                if args.group.is_some() {
                    consumer
                        .store_offset_from_message(&m)
                        .map_err(|e| err("cannot store the offset", e))?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) if args.exit => {
                reading.retain(|&x| x != p);
                if reading.is_empty() {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => eprintln!("warning: {e}"),
        }
        if args.group.is_some() && last_commit.elapsed() > Duration::from_secs(1) {
            out.flush().map_err(|e| e.to_string())?;
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    if args.group.is_some() {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .or_else(|e| match e {
                KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset) => Ok(()),
                e => Err(e),
            })
            .map_err(|e| err("cannot commit offsets", e))?;
    }
    Ok(())
}
