//! Flink's SQL types and the Arrow types that carry them, mapped in this one place.

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use sluice_common::{Result, SluiceError};

/// The time zone Arrow timestamps of `TIMESTAMP_LTZ` carry: the instant is stored in UTC and
/// shown in the session's zone.
pub const LTZ_ZONE: &str = "UTC";

/// The Arrow type of `TIMESTAMP(p)`.
pub fn timestamp_type(precision: u64) -> DataType {
    DataType::Timestamp(unit_of(precision), None)
}

/// The Arrow type of `TIMESTAMP_LTZ(p)`.
pub fn timestamp_ltz_type(precision: u64) -> DataType {
    DataType::Timestamp(unit_of(precision), Some(LTZ_ZONE.into()))
}

fn unit_of(precision: u64) -> TimeUnit {
    match precision {
        0 => TimeUnit::Second,
        1..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    }
}

/// Parses a Flink type name (as written in DDL, already split into words and parenthesised
/// arguments) into an Arrow type.
///
/// ```
/// use arrow::datatypes::DataType;
/// use sluice_sql::types::parse_type;
/// assert_eq!(parse_type("STRING").unwrap(), DataType::Utf8);
/// assert_eq!(parse_type("DECIMAL(10, 2)").unwrap(), DataType::Decimal128(10, 2));
/// ```
pub fn parse_type(text: &str) -> Result<DataType> {
    parse_column_type(text).map(|(t, _)| t)
}

/// A column's type, and true if it is declared `NOT NULL`.
pub fn parse_column_type(text: &str) -> Result<(DataType, bool)> {
    let mut p = TypeParser {
        s: text.as_bytes(),
        pos: 0,
        not_null: false,
    };
    let t = p.parse()?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.error("unexpected text after the type"));
    }
    Ok((t, p.not_null))
}

struct TypeParser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Whether the type parsed last (the outermost, at the end) is `NOT NULL`.
    not_null: bool,
}

impl TypeParser<'_> {
    fn error(&self, what: &str) -> SluiceError {
        SluiceError::Plan(format!(
            "cannot read type '{}': {what} at character {}. Types are STRING, VARCHAR(n), CHAR(n), BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), DATE, TIME, TIMESTAMP(p), TIMESTAMP_LTZ(p), BYTES, ARRAY<t>, MAP<k, v>, ROW<name t, ...>",
            String::from_utf8_lossy(self.s),
            self.pos + 1
        ))
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).to_ascii_uppercase()
    }

    fn peek_word(&mut self) -> String {
        let save = self.pos;
        let w = self.word();
        self.pos = save;
        w
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.pos < self.s.len() && self.s[self.pos] == c {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> Result<u64> {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.error("expected a number"))
    }

    /// `(a)` or `(a, b)` after a type name, if present.
    fn args(&mut self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        if self.eat(b'(') {
            loop {
                out.push(self.number()?);
                if self.eat(b')') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.error("expected ',' or ')'"));
                }
            }
        }
        Ok(out)
    }

    /// A field name of a ROW: a plain word, or quoted in backquotes or double quotes
    /// (a doubled quote stands for itself).
    fn field_name(&mut self) -> Result<String> {
        self.skip_ws();
        let Some(&quote) = self.s.get(self.pos).filter(|c| **c == b'`' || **c == b'"') else {
            let start = self.pos;
            while self.pos < self.s.len()
                && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
            {
                self.pos += 1;
            }
            return Ok(String::from_utf8_lossy(&self.s[start..self.pos]).to_string());
        };
        self.pos += 1;
        let mut name = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err(self.error("the quoted field name does not end")),
                Some(&c) if c == quote => {
                    if self.s.get(self.pos + 1) == Some(&quote) {
                        name.push(quote);
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Ok(String::from_utf8_lossy(&name).to_string());
                    }
                }
                Some(&c) => {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn nullability(&mut self) {
        let save = self.pos;
        self.not_null = false;
        if self.word() == "NOT" && self.word() == "NULL" {
            self.not_null = true;
            return;
        }
        self.pos = save;
        if self.word() != "NULL" {
            self.pos = save;
        }
    }

    fn parse(&mut self) -> Result<DataType> {
        let name = self.word();
        let t = match name.as_str() {
            "STRING" => DataType::Utf8,
            "VARCHAR" | "CHAR" => {
                self.args()?;
                DataType::Utf8
            }
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" => DataType::Int8,
            "SMALLINT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => {
                if self.peek_word() == "PRECISION" {
                    self.word();
                }
                DataType::Float64
            }
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let a = self.args()?;
                let p = *a.first().unwrap_or(&10);
                let s = *a.get(1).unwrap_or(&0);
                if !(1..=38).contains(&p) || s > p {
                    return Err(self.error(
                        "DECIMAL precision must be 1 to 38 and scale at most the precision",
                    ));
                }
                DataType::Decimal128(p as u8, s as i8)
            }
            "DATE" => DataType::Date32,
            "TIME" => {
                self.args()?;
                DataType::Time32(TimeUnit::Millisecond)
            }
            "TIMESTAMP" => {
                let p = self.args()?.first().copied().unwrap_or(6);
                let save = self.pos;
                match self.word().as_str() {
                    "WITH" => {
                        let w: Vec<String> = (0..3).map(|_| self.word()).collect();
                        if w != ["LOCAL", "TIME", "ZONE"] {
                            return Err(self.error("expected WITH LOCAL TIME ZONE"));
                        }
                        timestamp_ltz_type(p)
                    }
                    "WITHOUT" => {
                        let w: Vec<String> = (0..2).map(|_| self.word()).collect();
                        if w != ["TIME", "ZONE"] {
                            return Err(self.error("expected WITHOUT TIME ZONE"));
                        }
                        timestamp_type(p)
                    }
                    _ => {
                        self.pos = save;
                        timestamp_type(p)
                    }
                }
            }
            "TIMESTAMP_LTZ" => timestamp_ltz_type(self.args()?.first().copied().unwrap_or(6)),
            "BYTES" | "BINARY" | "VARBINARY" => {
                self.args()?;
                DataType::Binary
            }
            "ARRAY" => {
                if !self.eat(b'<') {
                    return Err(self.error("expected '<' after ARRAY"));
                }
                let inner = self.parse()?;
                if !self.eat(b'>') {
                    return Err(self.error("expected '>'"));
                }
                DataType::List(Field::new("element", inner, true).into())
            }
            "MAP" => {
                if !self.eat(b'<') {
                    return Err(self.error("expected '<' after MAP"));
                }
                let k = self.parse()?;
                if !self.eat(b',') {
                    return Err(self.error("expected ','"));
                }
                let v = self.parse()?;
                if !self.eat(b'>') {
                    return Err(self.error("expected '>'"));
                }
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", k, false),
                        Field::new("value", v, true),
                    ])),
                    false,
                );
                DataType::Map(entries.into(), false)
            }
            "ROW" => {
                let close = if self.eat(b'<') {
                    b'>'
                } else if self.eat(b'(') {
                    b')'
                } else {
                    return Err(self.error("expected '<' or '(' after ROW"));
                };
                let mut fields = Vec::new();
                loop {
                    let fname = self.field_name()?;
                    if fname.is_empty() {
                        return Err(self.error("expected a field name"));
                    }
                    let ft = self.parse()?;
                    fields.push(Field::new(fname, ft, true));
                    if self.eat(close) {
                        break;
                    }
                    if !self.eat(b',') {
                        return Err(self.error("expected ','"));
                    }
                }
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(self.error("expected a type")),
            other => return Err(self.error(&format!("unknown type {other}"))),
        };
        self.nullability();
        Ok(t)
    }
}

/// The Flink name of an Arrow type, for plans and messages.
pub fn flink_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(u, tz) => {
            let p = match u {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            if tz.is_some() {
                format!("TIMESTAMP_LTZ({p})")
            } else {
                format!("TIMESTAMP({p})")
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_types() {
        assert_eq!(parse_type("TIMESTAMP(3)").unwrap(), timestamp_type(3));
        assert_eq!(
            parse_type("timestamp(3) with local time zone").unwrap(),
            timestamp_ltz_type(3)
        );
        assert_eq!(
            parse_type("TIMESTAMP_LTZ(3)").unwrap(),
            timestamp_ltz_type(3)
        );
        assert_eq!(parse_type("INT NOT NULL").unwrap(), DataType::Int32);
        assert_eq!(
            parse_column_type("INT NOT NULL").unwrap(),
            (DataType::Int32, true)
        );
        assert!(!parse_column_type("ARRAY<INT NOT NULL>").unwrap().1);
        assert!(parse_column_type("ARRAY<INT> NOT NULL").unwrap().1);
        assert!(!parse_column_type("INT NULL").unwrap().1);
        assert!(
            matches!(parse_type("ROW<a INT, b STRING>").unwrap(), DataType::Struct(f) if f.len() == 2)
        );
        assert!(
            matches!(parse_type("ROW<`dateTime` TIMESTAMP(3), `a``b` INT>").unwrap(),
                DataType::Struct(f) if f[0].name() == "dateTime" && f[1].name() == "a`b")
        );
        assert!(parse_type("INTT")
            .unwrap_err()
            .to_string()
            .contains("unknown type INTT"));
    }
}
