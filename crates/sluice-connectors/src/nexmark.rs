//! The `nexmark` connector: the Nexmark benchmark's online auction events (people, auctions
//! and bids) with the options and the event model of the Nexmark project's Flink source
//! (`nexmark-flink`), so that its `ddl_gen.sql`, views and queries run unchanged.
//!
//! The events form one sequence: event `k` has the event number `k + 1`, the id `k + 2`, the
//! time `base-time + (k + 1) / first-event.rate` and its kind from the id and the proportions
//! (by default 1 person, 3 auctions and 46 bids in every 50 events); ids of people and
//! auctions grow with the sequence, sellers and bidders are mostly "hot" ones and bids go
//! mostly to hot auctions, as in the Nexmark generator. Unlike Flink's source, whose random
//! fields differ from run to run, event `k` is a function of the options, `seed` and `k`
//! alone: every run, every parallelism and every restore gives the same events (the subtasks
//! of a source take the sequence in stripes). Set `base-time` too for the same timestamps.

use crate::stripes::Stripes;
use crate::Connector;
use arrow::array::{
    Array, ArrayRef, Int32Builder, Int64Builder, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_common::{ChangeBatch, Options, Result, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events in one batch at most.
const MAX_BATCH_EVENTS: usize = 4096;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// Every 100th person is a hot seller or bidder, every 100th auction a hot auction.
const HOT_RATIO: u64 = 100;
/// People of whom sellers and bidders are drawn, the newest ones.
const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// Auctions open at once.
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const CHANNELS: usize = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// Length of the text the `extra` columns are cut from.
const EXTRA_TEXT_LEN: usize = 1 << 20;

/// The options the Nexmark project's Flink source takes.
const OPTIONS: &[&str] = &[
    "connector",
    "rate.shape",
    "rate.period",
    "rate.limited",
    "first-event.rate",
    "next-event.rate",
    "person.avg-size",
    "auction.avg-size",
    "bid.avg-size",
    "person.proportion",
    "auction.proportion",
    "bid.proportion",
    "bid.hot-ratio.auctions",
    "bid.hot-ratio.bidders",
    "auction.hot-ratio.sellers",
    "events.num",
    "keep-alive",
    "stop-at",
    "max-emit-speed",
    // Sluice's own: the first event's time and the seed of the random fields.
    "base-time",
    "seed",
    "scan.parallelism",
];

/// The `nexmark` connector.
pub struct NexmarkConnector;

impl Connector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), &[])?;
        let o = &spec.options;
        o.check_known(OPTIONS, &[])?;
        let model = Arc::new(Model::from_options(o)?);
        let columns = spec
            .schema
            .fields()
            .iter()
            .map(|f| OutputColumn::plan(&spec.table, f))
            .collect::<Result<Vec<_>>>()?;
        let events = o.i64("events.num")?.unwrap_or(0);
        let stop_at = o.i64("stop-at")?.unwrap_or(-1);
        if events < 0 {
            return Err(SluiceError::Config(format!(
                "{}: 'events.num' is {events}; it must be 0 (no end) or more",
                o.owner
            )));
        }
        let events = match (events, stop_at) {
            (0, s) if s < 0 => None,
            (0, s) => Some(s as u64),
            (n, s) if s < 0 => Some(n as u64),
            (n, s) => Some((n as u64).min(s as u64)),
        };
        let base_time = match o.get("base-time") {
            Some(text) => parse_base_time(text).ok_or_else(|| {
                SluiceError::Config(format!(
                    "{}: option 'base-time' has value '{text}', expected milliseconds since the epoch or a time like '2026-01-01 00:00:00' (UTC)",
                    o.owner
                ))
            })?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        Ok(Arc::new(NexmarkFactory {
            schema: spec.schema.clone(),
            columns,
            model,
            events,
            base_time,
            keep_alive: o.bool("keep-alive", false)?,
            max_emit_speed: o.bool("max-emit-speed", true)?,
        }))
    }
}

/// `base-time`: epoch milliseconds or a UTC date and time.
fn parse_base_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })
        .map(|t| t.and_utc().timestamp_millis())
}

/// An option that must be a positive integer.
fn positive(o: &Options, key: &str, default: i64) -> Result<u64> {
    let v = o.i64(key)?.unwrap_or(default);
    if v <= 0 {
        return Err(SluiceError::Config(format!(
            "{}: option '{key}' is {v}; it must be at least 1",
            o.owner
        )));
    }
    Ok(v as u64)
}

/// A size option (`200b`, `1kb`).
fn size(o: &Options, key: &str, default: u64) -> Result<u64> {
    match o.get(key) {
        None => Ok(default),
        Some(text) => sluice_common::options::parse_memory_size(text).ok_or_else(|| {
            SluiceError::Config(format!(
                "{}: option '{key}' has value '{text}', expected a size such as '200b' or '1kb'",
                o.owner
            ))
        }),
    }
}

/// What the generator needs to make event `k`: the proportions, sizes and ratios, and the
/// texts every event draws from.
struct Model {
    person_proportion: u64,
    auction_proportion: u64,
    total_proportion: u64,
    /// Microseconds of event time between two events.
    inter_event_delay_us: f64,
    avg_person_size: usize,
    avg_auction_size: usize,
    avg_bid_size: usize,
    hot_auction_ratio: u64,
    hot_bidders_ratio: u64,
    hot_sellers_ratio: u64,
    seed: u64,
    /// Lower-case letters the `extra` columns are cut from.
    extra_text: String,
    /// The URLs of the hot channels.
    hot_urls: Vec<String>,
    /// The other channels' names and URLs.
    channels: Vec<(String, String)>,
}

impl Model {
    fn from_options(o: &Options) -> Result<Self> {
        // The shape of the rate (`rate.shape`, `rate.period`, `next-event.rate`) is accepted
        // and, as in nexmark-flink's generator, has no effect: events are spaced by
        // `first-event.rate` alone.
        for key in ["rate.period"] {
            if let Some(v) = o.get(key) {
                if sluice_common::options::parse_duration(v).is_none() {
                    return Err(SluiceError::Config(format!(
                        "{}: option '{key}' has value '{v}', expected a duration such as '600 s'",
                        o.owner
                    )));
                }
            }
        }
        if let Some(v) = o.get("rate.shape") {
            if !["SQUARE", "SINE"].contains(&v.to_ascii_uppercase().as_str()) {
                return Err(SluiceError::Config(format!(
                    "{}: option 'rate.shape' has value '{v}', expected SQUARE or SINE",
                    o.owner
                )));
            }
        }
        positive(o, "next-event.rate", 10_000)?;
        o.bool("rate.limited", false)?;
        let person_proportion = positive(o, "person.proportion", 1)?;
        let auction_proportion = positive(o, "auction.proportion", 3)?;
        let bid_proportion = positive(o, "bid.proportion", 46)?;
        let seed = o.i64("seed")?.unwrap_or(0) as u64;
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x6E65_786D_6172_6B00);
        let extra_text: String = (0..EXTRA_TEXT_LEN)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        let hot_urls = (0..HOT_CHANNELS.len())
            .map(|_| base_url(&mut rng))
            .collect();
        let channels = (0..CHANNELS)
            .map(|i| {
                let mut url = base_url(&mut rng);
                if rng.random_range(0..10) > 0 {
                    let id = (i as i32).reverse_bits().unsigned_abs();
                    url.push_str(&format!("&channel_id={id}"));
                }
                (format!("channel-{i}"), url)
            })
            .collect();
        Ok(Model {
            person_proportion,
            auction_proportion,
            total_proportion: person_proportion + auction_proportion + bid_proportion,
            inter_event_delay_us: 1_000_000.0 / positive(o, "first-event.rate", 10_000)? as f64,
            avg_person_size: size(o, "person.avg-size", 200)? as usize,
            avg_auction_size: size(o, "auction.avg-size", 500)? as usize,
            avg_bid_size: size(o, "bid.avg-size", 100)? as usize,
            hot_auction_ratio: positive(o, "bid.hot-ratio.auctions", 2)?,
            hot_bidders_ratio: positive(o, "bid.hot-ratio.bidders", 4)?,
            hot_sellers_ratio: positive(o, "auction.hot-ratio.sellers", 4)?,
            seed,
            extra_text,
            hot_urls,
            channels,
        })
    }

    /// Event time of the event numbered `number`, in milliseconds after the base time.
    fn offset_ms(&self, number: u64) -> i64 {
        (number as f64 * self.inter_event_delay_us) as i64 / 1000
    }

    /// The newest person (0-based) when event `id` is made.
    fn last_person(&self, id: u64) -> u64 {
        let epoch = id / self.total_proportion;
        let offset = (id % self.total_proportion).min(self.person_proportion - 1);
        epoch * self.person_proportion + offset
    }

    /// The newest auction (0-based) when event `id` is made.
    fn last_auction(&self, id: u64) -> u64 {
        let mut epoch = id / self.total_proportion;
        let mut offset = id % self.total_proportion;
        if offset < self.person_proportion {
            // Before the first auction there is none: the arithmetic wraps as in Java, and
            // the callers only use it once an auction exists.
            epoch = epoch.wrapping_sub(1);
            offset = self.auction_proportion - 1;
        } else if offset >= self.person_proportion + self.auction_proportion {
            offset = self.auction_proportion - 1;
        } else {
            offset -= self.person_proportion;
        }
        epoch
            .wrapping_mul(self.auction_proportion)
            .wrapping_add(offset)
    }

    /// One of the active people, a little beyond the newest too.
    fn some_person(&self, id: u64, rng: &mut SmallRng) -> u64 {
        let people = self.last_person(id) + 1;
        let active = people.min(NUM_ACTIVE_PEOPLE);
        people - active + rng.random_range(0..active + PERSON_ID_LEAD)
    }

    /// One of the auctions in flight, a little beyond the newest too.
    fn some_auction(&self, id: u64, rng: &mut SmallRng) -> u64 {
        let last = self.last_auction(id) as i64;
        let min = (last - NUM_IN_FLIGHT_AUCTIONS as i64).max(0);
        let span = (last - min + 1 + AUCTION_ID_LEAD as i64).max(1) as u64;
        min as u64 + rng.random_range(0..span)
    }

    /// `extra`: filler text that brings an event to about its average size.
    fn extra<'a>(&'a self, rng: &mut SmallRng, current: usize, average: usize) -> &'a str {
        if current > average {
            return "";
        }
        let want = average - current;
        let delta = (want as f64 * 0.2).round() as usize;
        let len = want - delta
            + if delta == 0 {
                0
            } else {
                rng.random_range(0..2 * delta)
            };
        let len = len.min(EXTRA_TEXT_LEN / 2);
        let start = rng.random_range(0..EXTRA_TEXT_LEN - len);
        &self.extra_text[start..start + len]
    }
}

/// A URL of a bid's channel.
fn base_url(rng: &mut SmallRng) -> String {
    let mut url = String::from("https://www.nexmark.com/");
    for _ in 0..3 {
        url.push_str(&random_string(rng, 5, '_'));
        url.push('/');
    }
    url.push_str("item.htm?query=1");
    url
}

/// Lower-case letters with the odd `special` character, 3 to `max_len - 1` long, trimmed of
/// spaces.
fn random_string(rng: &mut SmallRng, max_len: usize, special: char) -> String {
    let len = 3 + rng.random_range(0..max_len - 3);
    let s: String = (0..len)
        .map(|_| {
            if rng.random_range(0..13) == 0 {
                special
            } else {
                char::from(b'a' + rng.random_range(0..26u8))
            }
        })
        .collect();
    if special == ' ' {
        s.trim().to_string()
    } else {
        s
    }
}

/// A price in cents: 1 to 100,000,000, logarithmically distributed.
fn price(rng: &mut SmallRng) -> i64 {
    (10f64.powf(rng.random::<f64>() * 6.0) * 100.0).round() as i64
}

/// The columns of the `datagen` table of nexmark-flink's `ddl_gen.sql`, in its order: which
/// event it is (0 person, 1 auction, 2 bid) and a row per kind, null for the other kinds.
fn event_fields() -> Fields {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let f = |name: &str, t: DataType| Field::new(name, t, true);
    let person = Fields::from(vec![
        f("id", DataType::Int64),
        f("name", DataType::Utf8),
        f("emailAddress", DataType::Utf8),
        f("creditCard", DataType::Utf8),
        f("city", DataType::Utf8),
        f("state", DataType::Utf8),
        f("dateTime", ts()),
        f("extra", DataType::Utf8),
    ]);
    let auction = Fields::from(vec![
        f("id", DataType::Int64),
        f("itemName", DataType::Utf8),
        f("description", DataType::Utf8),
        f("initialBid", DataType::Int64),
        f("reserve", DataType::Int64),
        f("dateTime", ts()),
        f("expires", ts()),
        f("seller", DataType::Int64),
        f("category", DataType::Int64),
        f("extra", DataType::Utf8),
    ]);
    let bid = Fields::from(vec![
        f("auction", DataType::Int64),
        f("bidder", DataType::Int64),
        f("price", DataType::Int64),
        f("channel", DataType::Utf8),
        f("url", DataType::Utf8),
        f("dateTime", ts()),
        f("extra", DataType::Utf8),
    ]);
    Fields::from(vec![
        f("event_type", DataType::Int32),
        f("person", DataType::Struct(person)),
        f("auction", DataType::Struct(auction)),
        f("bid", DataType::Struct(bid)),
    ])
}

/// Where a declared column's values come from: a column of [`event_fields`], and for a row,
/// which of its fields make the declared fields (by name, in the declared order).
#[derive(Debug, Clone)]
struct OutputColumn {
    source: usize,
    fields: Option<Vec<usize>>,
    data_type: DataType,
}

impl OutputColumn {
    fn plan(table: &str, declared: &Field) -> Result<Self> {
        let all = event_fields();
        let find = |fields: &Fields, name: &str| {
            fields
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(name))
        };
        let names = |fields: &Fields| {
            fields
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let source = find(&all, declared.name()).ok_or_else(|| {
            SluiceError::Config(format!(
                "table '{table}': connector 'nexmark' has no column '{}'; its columns are: {}",
                declared.name(),
                names(&all)
            ))
        })?;
        let fields = match (declared.data_type(), all[source].data_type()) {
            (DataType::Struct(want), DataType::Struct(have)) => Some(
                want.iter()
                    .map(|w| {
                        find(have, w.name()).ok_or_else(|| {
                            SluiceError::Config(format!(
                                "table '{table}': column '{}' of connector 'nexmark' has no field '{}'; its fields are: {}",
                                declared.name(),
                                w.name(),
                                names(have)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            (DataType::Struct(_), _) | (_, DataType::Struct(_)) => {
                return Err(SluiceError::Config(format!(
                    "table '{table}': column '{}' of connector 'nexmark' is {}, not {}",
                    declared.name(),
                    all[source].data_type(),
                    declared.data_type()
                )))
            }
            _ => None,
        };
        Ok(OutputColumn {
            source,
            fields,
            data_type: declared.data_type().clone(),
        })
    }

    /// The declared column from the generated ones.
    fn build(&self, generated: &[ArrayRef]) -> Result<ArrayRef> {
        let column = &generated[self.source];
        let (Some(pick), DataType::Struct(want)) = (&self.fields, &self.data_type) else {
            return Ok(arrow::compute::cast(column, &self.data_type)?);
        };
        let Some(row) = column.as_any().downcast_ref::<StructArray>() else {
            return Err(SluiceError::Runtime(
                "nexmark: a row column is not a row".into(),
            ));
        };
        let children = pick
            .iter()
            .zip(want.iter())
            .map(|(&i, f)| arrow::compute::cast(row.column(i), f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Arc::new(StructArray::try_new(
            want.clone(),
            children,
            row.nulls().cloned(),
        )?))
    }
}

struct NexmarkFactory {
    schema: SchemaRef,
    columns: Vec<OutputColumn>,
    model: Arc<Model>,
    events: Option<u64>,
    base_time: i64,
    keep_alive: bool,
    max_emit_speed: bool,
}

impl SourceFactory for NexmarkFactory {
    fn name(&self) -> String {
        "nexmark".into()
    }

    fn is_bounded(&self) -> bool {
        self.events.is_some() && !self.keep_alive
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Nexmark {
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            model: self.model.clone(),
            stripes: Stripes::new(ctx.subtask_index, ctx.parallelism, self.events),
            base_time: self.base_time,
            keep_alive: self.keep_alive,
            max_emit_speed: self.max_emit_speed,
            wallclock_base: None,
            parallelism: ctx.parallelism.max(1),
        }))
    }
}

/// One subtask's generator.
struct Nexmark {
    schema: SchemaRef,
    columns: Vec<OutputColumn>,
    model: Arc<Model>,
    stripes: Stripes,
    base_time: i64,
    keep_alive: bool,
    max_emit_speed: bool,
    /// When the first event was (or would have been) emitted, with `max-emit-speed` off.
    wallclock_base: Option<Instant>,
    parallelism: usize,
}

/// The columns of a batch of events, built a row at a time.
struct EventColumns {
    kind: Int32Builder,
    person: Vec<Box<dyn arrow::array::ArrayBuilder>>,
    auction: Vec<Box<dyn arrow::array::ArrayBuilder>>,
    bid: Vec<Box<dyn arrow::array::ArrayBuilder>>,
    valid: [Vec<bool>; 3],
}

fn builders(fields: &Fields, n: usize) -> Vec<Box<dyn arrow::array::ArrayBuilder>> {
    fields
        .iter()
        .map(|f| arrow::array::make_builder(f.data_type(), n))
        .collect()
}

/// Appends to builder `i` of `b`, whose type the event model fixes.
macro_rules! put {
    ($b:expr, $i:expr, $ty:ty, $v:expr) => {
        match $b[$i].as_any_mut().downcast_mut::<$ty>() {
            Some(builder) => builder.append_option($v),
            None => unreachable!("the nexmark event model fixes the builder types"),
        }
    };
}

impl EventColumns {
    fn new(n: usize) -> Self {
        let all = event_fields();
        let sub = |i: usize| match all[i].data_type() {
            DataType::Struct(f) => builders(f, n),
            _ => Vec::new(),
        };
        EventColumns {
            kind: Int32Builder::with_capacity(n),
            person: sub(1),
            auction: sub(2),
            bid: sub(3),
            valid: [
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            ],
        }
    }

    /// Appends event `k` of the sequence.
    fn push(&mut self, m: &Model, base_time: i64, k: u64) {
        let number = k + 1;
        let id = k + 2;
        let time = base_time + m.offset_ms(number);
        let mut rng = SmallRng::seed_from_u64(m.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rem = id % m.total_proportion;
        let kind = if rem < m.person_proportion {
            self.person(m, &mut rng, id, time);
            0
        } else if rem < m.person_proportion + m.auction_proportion {
            self.auction(m, &mut rng, k, id, time);
            1
        } else {
            self.bid(m, &mut rng, id, time);
            2
        };
        self.kind.append_value(kind);
        for (i, v) in self.valid.iter_mut().enumerate() {
            v.push(i == kind as usize);
        }
        for (i, b) in [&mut self.person, &mut self.auction, &mut self.bid]
            .into_iter()
            .enumerate()
        {
            if i != kind as usize {
                for builder in b.iter_mut() {
                    append_null(builder.as_mut());
                }
            }
        }
    }

    fn person(&mut self, m: &Model, rng: &mut SmallRng, id: u64, time: i64) {
        let b = &mut self.person;
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
        );
        let email = format!(
            "{}@{}.com",
            random_string(rng, 7, ' '),
            random_string(rng, 5, ' ')
        );
        let card = (0..4)
            .map(|_| format!("{:04}", rng.random_range(0..10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = US_CITIES[rng.random_range(0..US_CITIES.len())];
        let state = US_STATES[rng.random_range(0..US_STATES.len())];
        let current = 8 + name.len() + email.len() + card.len() + city.len() + state.len();
        let extra = m.extra(rng, current, m.avg_person_size);
        put!(
            b,
            0,
            Int64Builder,
            Some((m.last_person(id) + FIRST_PERSON_ID) as i64)
        );
        put!(b, 1, StringBuilder, Some(name));
        put!(b, 2, StringBuilder, Some(email));
        put!(b, 3, StringBuilder, Some(card));
        put!(b, 4, StringBuilder, Some(city));
        put!(b, 5, StringBuilder, Some(state));
        put!(b, 6, TimestampMillisecondBuilder, Some(time));
        put!(b, 7, StringBuilder, Some(extra));
    }

    fn auction(&mut self, m: &Model, rng: &mut SmallRng, k: u64, id: u64, time: i64) {
        let b = &mut self.auction;
        let seller = if rng.random_range(0..m.hot_sellers_ratio) > 0 {
            (m.last_person(id) / HOT_RATIO) * HOT_RATIO
        } else {
            m.some_person(id, rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.random_range(0..NUM_CATEGORIES);
        let initial_bid = price(rng);
        // An auction lasts up to twice the time until 100 more auctions have started.
        let events_for_auctions =
            NUM_IN_FLIGHT_AUCTIONS * m.total_proportion / m.auction_proportion;
        let horizon = m.offset_ms(k + 1 + events_for_auctions) - m.offset_ms(k + 1);
        let expires = time + 1 + rng.random_range(0..(horizon * 2).max(1));
        let name = random_string(rng, 20, ' ');
        let description = random_string(rng, 100, ' ');
        let reserve = initial_bid + price(rng);
        let current = 8 + name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = m.extra(rng, current, m.avg_auction_size);
        put!(
            b,
            0,
            Int64Builder,
            Some((m.last_auction(id) + FIRST_AUCTION_ID) as i64)
        );
        put!(b, 1, StringBuilder, Some(name));
        put!(b, 2, StringBuilder, Some(description));
        put!(b, 3, Int64Builder, Some(initial_bid));
        put!(b, 4, Int64Builder, Some(reserve));
        put!(b, 5, TimestampMillisecondBuilder, Some(time));
        put!(b, 6, TimestampMillisecondBuilder, Some(expires));
        put!(b, 7, Int64Builder, Some(seller as i64));
        put!(b, 8, Int64Builder, Some(category as i64));
        put!(b, 9, StringBuilder, Some(extra));
    }

    fn bid(&mut self, m: &Model, rng: &mut SmallRng, id: u64, time: i64) {
        let b = &mut self.bid;
        let auction = if rng.random_range(0..m.hot_auction_ratio) > 0 {
            (m.last_auction(id) / HOT_RATIO) * HOT_RATIO
        } else {
            m.some_auction(id, rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.random_range(0..m.hot_bidders_ratio) > 0 {
            (m.last_person(id) / HOT_RATIO) * HOT_RATIO + 1
        } else {
            m.some_person(id, rng)
        };
        // nexmark-flink adds the first person id to bidders twice; its queries' figures (and
        // any comparison with them) assume it, so Sluice does the same.
        let bidder = bidder + 2 * FIRST_PERSON_ID;
        let price = price(rng);
        let (channel, url) = if rng.random_range(0..2) > 0 {
            let i = rng.random_range(0..HOT_CHANNELS.len());
            (HOT_CHANNELS[i], m.hot_urls[i].as_str())
        } else {
            let (c, u) = &m.channels[rng.random_range(0..CHANNELS)];
            (c.as_str(), u.as_str())
        };
        let extra = m.extra(rng, 32, m.avg_bid_size);
        put!(b, 0, Int64Builder, Some(auction as i64));
        put!(b, 1, Int64Builder, Some(bidder as i64));
        put!(b, 2, Int64Builder, Some(price));
        put!(b, 3, StringBuilder, Some(channel));
        put!(b, 4, StringBuilder, Some(url));
        put!(b, 5, TimestampMillisecondBuilder, Some(time));
        put!(b, 6, StringBuilder, Some(extra));
    }

    /// The generated columns, in the order of [`event_fields`].
    fn finish(mut self) -> Result<Vec<ArrayRef>> {
        let all = event_fields();
        let mut out: Vec<ArrayRef> = vec![Arc::new(self.kind.finish())];
        for (i, b) in [self.person, self.auction, self.bid]
            .into_iter()
            .enumerate()
        {
            let DataType::Struct(fields) = all[i + 1].data_type() else {
                unreachable!("the nexmark event model's rows are structs");
            };
            let children = b.into_iter().map(|mut b| b.finish()).collect();
            let valid = NullBuffer::from(std::mem::take(&mut self.valid[i]));
            out.push(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                Some(valid),
            )?));
        }
        Ok(out)
    }
}

/// Appends a null to a builder of the event model.
fn append_null(b: &mut dyn arrow::array::ArrayBuilder) {
    let any = b.as_any_mut();
    if let Some(b) = any.downcast_mut::<Int64Builder>() {
        b.append_null();
    } else if let Some(b) = any.downcast_mut::<StringBuilder>() {
        b.append_null();
    } else if let Some(b) = any.downcast_mut::<TimestampMillisecondBuilder>() {
        b.append_null();
    } else {
        unreachable!("the nexmark event model has only BIGINT, STRING and TIMESTAMP fields");
    }
}

impl Nexmark {
    /// The events `indexes` as a batch of the declared columns.
    fn batch(&self, indexes: &[u64]) -> Result<RecordBatch> {
        let mut cols = EventColumns::new(indexes.len());
        for &k in indexes {
            cols.push(&self.model, self.base_time, k);
        }
        let generated = cols.finish()?;
        let out = self
            .columns
            .iter()
            .map(|c| c.build(&generated))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), out)?)
    }

    /// How many events may go out now with `max-emit-speed` off: those whose time, counted
    /// from the first event's wall-clock time, has come.
    fn due(&mut self) -> usize {
        if self.max_emit_speed {
            return MAX_BATCH_EVENTS;
        }
        let start = *self.wallclock_base.get_or_insert_with(Instant::now);
        let elapsed_us = start.elapsed().as_micros() as f64;
        let allowed = (elapsed_us / self.per_event_us()) as u64 + 1;
        allowed
            .saturating_sub(self.stripes.produced())
            .min(MAX_BATCH_EVENTS as u64) as usize
    }

    /// Wall-clock microseconds between two events of this subtask: it makes one event in
    /// `parallelism` of the sequence.
    fn per_event_us(&self) -> f64 {
        self.model.inter_event_delay_us * self.parallelism as f64
    }

    /// After a restore, keeps the pace: as if the events so far had been emitted at it.
    fn resume(&mut self) {
        let behind =
            Duration::from_micros((self.stripes.produced() as f64 * self.per_event_us()) as u64);
        self.wallclock_base = Some(
            Instant::now()
                .checked_sub(behind)
                .unwrap_or_else(Instant::now),
        );
    }
}

impl SourceReader for Nexmark {
    fn has_nothing_to_read(&self) -> bool {
        self.stripes.done() && !self.keep_alive
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if self.stripes.done() {
            if self.keep_alive {
                std::thread::sleep(Duration::from_millis(50));
                return Ok(SourcePoll::Idle);
            }
            return Ok(SourcePoll::End);
        }
        let n = self.due();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
            return Ok(SourcePoll::Idle);
        }
        let indexes = self.stripes.next_indexes(n);
        Ok(SourcePoll::Batch(ChangeBatch::inserts(
            self.batch(&indexes)?,
        )))
    }

    /// The base time (so that a restore makes the same events even where `base-time` was
    /// not set) and each stripe's events produced so far.
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.base_time);
        self.stripes.write(state);
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.base_time = state.i64()?;
        self.stripes.restore(state)?;
        self.resume();
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        for (_, state) in states.iter_mut() {
            self.base_time = state.i64()?;
        }
        self.stripes.restore_rescaled(old, states)?;
        self.resume();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Int32Type, Int64Type, Schema, TimestampMillisecondType};
    use std::collections::BTreeMap;

    fn model(options: &[(&str, &str)]) -> Model {
        let map: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Model::from_options(&Options::new("table 'nexmark'", map)).unwrap()
    }

    fn reader(m: Model, subtask: usize, parallelism: usize, events: u64) -> Nexmark {
        let schema = Arc::new(Schema::new(event_fields()));
        let columns = schema
            .fields()
            .iter()
            .map(|f| OutputColumn::plan("t", f).unwrap())
            .collect();
        Nexmark {
            schema,
            columns,
            model: Arc::new(m),
            stripes: Stripes::new(subtask, parallelism, Some(events)),
            base_time: 1_000_000,
            keep_alive: false,
            max_emit_speed: true,
            wallclock_base: None,
            parallelism,
        }
    }

    fn drain(r: &mut Nexmark) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        while let SourcePoll::Batch(b) = r.poll().unwrap() {
            out.push(b.data);
        }
        out
    }

    #[test]
    fn events_follow_the_nexmark_model() {
        let mut r = reader(model(&[]), 0, 1, 5000);
        let batches = drain(&mut r);
        let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(b.num_rows(), 5000);
        let kinds = b.column(0).as_primitive::<Int32Type>();
        // Event k has the id k + 2: 1 person, 3 auctions, 46 bids in every 50 ids.
        assert_eq!(kinds.value(0), 1, "id 2 is an auction");
        assert_eq!(kinds.value(48), 0, "id 50 is a person");
        assert_eq!(kinds.values().iter().filter(|k| **k == 0).count(), 100);
        assert_eq!(kinds.values().iter().filter(|k| **k == 1).count(), 300);
        let person = b.column(1).as_struct();
        let auction = b.column(2).as_struct();
        let bid = b.column(3).as_struct();
        assert!(person.is_null(0) && auction.is_valid(0) && bid.is_null(0));
        // People and auctions are numbered from 1000 in order.
        // (The first event has the id 2, so the first auction is 1001, as in nexmark-flink.)
        assert_eq!(person.column(0).as_primitive::<Int64Type>().value(48), 1001);
        let auction_ids = auction.column(0).as_primitive::<Int64Type>();
        let ids: Vec<i64> = (0..b.num_rows())
            .filter(|i| auction.is_valid(*i))
            .map(|i| auction_ids.value(i))
            .collect();
        assert_eq!(&ids[0..4], &[1001, 1002, 1003, 1004]);
        assert_eq!(ids.len(), 300);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        // Event times: 10,000 events a second from the base time.
        // (Event 4999 has the id 5001: an auction.)
        let times = auction.column(5).as_primitive::<TimestampMillisecondType>();
        assert_eq!(times.value(4999), 1_000_000 + 500);
        // Bids go to auctions that exist (or are about to), prices are positive.
        let prices = bid.column(2).as_primitive::<Int64Type>();
        let bid_auctions = bid.column(0).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if bid.is_valid(i) {
                assert!(prices.value(i) >= 100 && prices.value(i) <= 100_000_000);
                assert!(bid_auctions.value(i) >= 1000 && bid_auctions.value(i) < 1000 + 300 + 10);
            }
        }
        // Auctions expire after they start.
        let starts = auction.column(5).as_primitive::<TimestampMillisecondType>();
        let ends = auction.column(6).as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            if auction.is_valid(i) {
                assert!(ends.value(i) > starts.value(i));
            }
        }
        // The average bid is about 100 bytes.
        let extra = bid.column(6).as_string::<i32>();
        let len: usize = (0..b.num_rows())
            .filter(|i| bid.is_valid(*i))
            .map(|i| extra.value(i).len() + 32)
            .sum();
        let avg = len / 4600;
        assert!((90..=110).contains(&avg), "average bid size {avg}");
    }

    #[test]
    fn the_events_do_not_depend_on_the_parallelism_or_the_run() {
        let one = drain(&mut reader(model(&[]), 0, 1, 1000));
        let one = arrow::compute::concat_batches(&one[0].schema(), &one).unwrap();
        let mut parts = Vec::new();
        for i in 0..3 {
            parts.extend(drain(&mut reader(model(&[]), i, 3, 1000)));
        }
        let three = arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap();
        // Same events, in stripes: sort both by event time and id to compare.
        let key = |b: &RecordBatch| {
            let mut rows: Vec<String> = (0..b.num_rows())
                .map(|i| format!("{:?}", b.slice(i, 1).columns()))
                .collect();
            rows.sort();
            rows
        };
        assert_eq!(key(&one), key(&three));
        let again = drain(&mut reader(model(&[]), 0, 1, 1000));
        let again = arrow::compute::concat_batches(&again[0].schema(), &again).unwrap();
        assert_eq!(one, again);
        let other_seed = drain(&mut reader(model(&[("seed", "7")]), 0, 1, 1000));
        let other_seed =
            arrow::compute::concat_batches(&other_seed[0].schema(), &other_seed).unwrap();
        assert_ne!(one, other_seed);
    }

    #[test]
    fn a_restore_goes_on_with_the_same_events() {
        let whole = drain(&mut reader(model(&[]), 0, 1, 10_000));
        let mut r = reader(model(&[]), 0, 1, 10_000);
        let first = match r.poll().unwrap() {
            SourcePoll::Batch(b) => b.data,
            other => panic!("{other:?}"),
        };
        let mut w = StateWriter::default();
        r.snapshot_position(1, &mut w).unwrap();
        let bytes = w.finish();
        let mut again = reader(model(&[]), 0, 1, 10_000);
        again.base_time = 0;
        again
            .restore_position(&mut StateReader::new(&bytes, "test"))
            .unwrap();
        let mut rest = vec![first];
        rest.extend(drain(&mut again));
        let a = arrow::compute::concat_batches(&whole[0].schema(), &whole).unwrap();
        let b = arrow::compute::concat_batches(&rest[0].schema(), &rest).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn declared_columns_are_taken_by_name() {
        let schema = Schema::new(vec![
            Field::new(
                "bid",
                DataType::Struct(Fields::from(vec![
                    Field::new("price", DataType::Int64, true),
                    Field::new("auction", DataType::Int64, true),
                ])),
                true,
            ),
            Field::new("event_type", DataType::Int64, true),
        ]);
        let cols: Vec<OutputColumn> = schema
            .fields()
            .iter()
            .map(|f| OutputColumn::plan("t", f).unwrap())
            .collect();
        let mut r = reader(model(&[]), 0, 1, 100);
        r.schema = Arc::new(schema);
        r.columns = cols;
        let b = drain(&mut r).remove(0);
        let bid = b.column(0).as_struct();
        assert_eq!(bid.fields()[0].name(), "price");
        assert!(b.column(1).as_any().downcast_ref::<Int64Array>().is_some());
        let bad = Field::new(
            "bid",
            DataType::Struct(Fields::from(vec![Field::new(
                "cost",
                DataType::Int64,
                true,
            )])),
            true,
        );
        let err = OutputColumn::plan("t", &bad).unwrap_err().to_string();
        assert!(
            err.contains("no field 'cost'") && err.contains("price"),
            "{err}"
        );
        let err = OutputColumn::plan("t", &Field::new("x", DataType::Int64, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column 'x'"), "{err}");
    }

    #[test]
    fn bad_options_are_named() {
        let map: BTreeMap<String, String> = [("person.proportion", "0")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = Model::from_options(&Options::new("table 'n'", map))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'person.proportion'"), "{err}");
        assert_eq!(
            parse_base_time("2026-01-01 00:00:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_base_time("12"), Some(12));
        assert_eq!(parse_base_time("soon"), None);
    }
}
