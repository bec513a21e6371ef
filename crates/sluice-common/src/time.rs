//! Event time: milliseconds since the epoch, as Flink's `TIMESTAMP(3)` and `TIMESTAMP_LTZ(3)`.

/// Milliseconds since 1970-01-01T00:00:00Z (for `TIMESTAMP(3)`, of the wall clock read as UTC).
pub type EventTime = i64;

/// The watermark before any data: nothing is late yet.
pub const MIN_WATERMARK: EventTime = i64::MIN;

/// The watermark at the end of bounded input: every window fires.
pub const MAX_WATERMARK: EventTime = i64::MAX;

/// Formats epoch milliseconds as Flink prints a `TIMESTAMP(3)`: `2024-01-01 10:00:00.000`.
///
/// ```
/// assert_eq!(sluice_common::time::format_millis(0), "1970-01-01 00:00:00.000");
/// ```
pub fn format_millis(ms: EventTime) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => ms.to_string(),
    }
}
