//! Typed access to the string options of a `WITH (...)` clause, with errors that name the option
//! and list the valid ones.

use crate::error::{Result, SluiceError};
use std::collections::BTreeMap;
use std::time::Duration;

/// The options of a table (`'connector' = 'filesystem'`, `'path' = ...`), keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// What the options belong to, for error messages (`table 'orders'`).
    pub owner: String,
    values: BTreeMap<String, String>,
}

impl Options {
    /// Options of `owner` from key/value pairs.
    pub fn new(owner: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Options {
            owner: owner.into(),
            values,
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// All keys and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of a required option.
    pub fn required(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| {
            SluiceError::Config(format!("{}: missing required option '{key}'", self.owner))
        })
    }

    /// A string option with a default.
    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A boolean option (`true`/`false`, any case).
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.bad(key, v, "true or false")),
            },
        }
    }

    /// An integer option.
    pub fn i64(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.bad(key, v, "an integer")),
        }
    }

    /// A floating-point option.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| self.bad(key, v, "a number")),
        }
    }

    /// A duration option in Flink's syntax (`200 ms`, `5 s`, `1 min`, `2h`; a bare number is
    /// milliseconds).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "a duration such as '200 ms', '5 s' or '1 min'")),
        }
    }

    /// Fails if any option is not in `known` (exact names) and does not start with one of
    /// `prefixes`, listing the valid options.
    pub fn check_known(&self, known: &[&str], prefixes: &[&str]) -> Result<()> {
        for key in self.values.keys() {
            if known.contains(&key.as_str()) || prefixes.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            let mut valid: Vec<String> = known.iter().map(|s| s.to_string()).collect();
            valid.extend(prefixes.iter().map(|p| format!("{p}*")));
            valid.sort();
            return Err(SluiceError::Config(format!(
                "{}: unknown option '{key}'. Valid options are: {}",
                self.owner,
                valid.join(", ")
            )));
        }
        Ok(())
    }

    fn bad(&self, key: &str, value: &str, expected: &str) -> SluiceError {
        SluiceError::Config(format!(
            "{}: option '{key}' has value '{value}', expected {expected}",
            self.owner
        ))
    }
}

/// Parses a Flink duration: a number and an optional unit (`ms`, `s`, `min`, `h`, `d` and their
/// long forms). A bare number is milliseconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sluice_common::options::parse_duration("5 s"), Some(Duration::from_secs(5)));
/// assert_eq!(sluice_common::options::parse_duration("200"), Some(Duration::from_millis(200)));
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms_per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms_per_unit)?))
}

/// Parses a Flink memory size: a number and an optional unit (`b`, `kb`, `mb`, `gb`, `tb`,
/// also `k`, `m`, `g`, `t` and the long forms; powers of 1024, as Flink's `MemorySize`). A
/// bare number is bytes.
///
/// ```
/// assert_eq!(sluice_common::options::parse_memory_size("256 mb"), Some(256 << 20));
/// assert_eq!(sluice_common::options::parse_memory_size("1g"), Some(1 << 30));
/// ```
pub fn parse_memory_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("512"), Some(512));
        assert_eq!(parse_memory_size("64 kb"), Some(64 * 1024));
        assert_eq!(parse_memory_size("2 GB"), Some(2 << 30));
        assert_eq!(parse_memory_size("lots"), None);
        assert_eq!(parse_memory_size("99999999999 tb"), None);
    }

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(
            "table 't'",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn unknown_option_lists_valid_ones() {
        let o = opts(&[("connector", "x"), ("pathh", "/tmp")]);
        let err = o
            .check_known(&["connector", "path"], &["json."])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown option 'pathh'"), "{msg}");
        assert!(msg.contains("connector, json.*, path"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1 min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("10ms"), Some(Duration::from_millis(10)));
        assert_eq!(parse_duration("ten"), None);
        let o = opts(&[("d", "3 weeks")]);
        assert!(o
            .duration("d")
            .unwrap_err()
            .to_string()
            .contains("option 'd'"));
    }

    #[test]
    fn booleans() {
        let o = opts(&[("a", "TRUE"), ("b", "yes")]);
        assert!(o.bool("a", false).unwrap());
        assert!(o.bool("b", false).is_err());
        assert!(!o.bool("c", false).unwrap());
    }
}
