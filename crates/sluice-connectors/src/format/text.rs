//! Values as text, the way Flink writes them.
//!
//! Flink has two styles: the `print` connector uses Java's `toString` (`2024-01-01T10:00:01`,
//! `1.0E10`, `null`), while the `csv` and `json` formats use SQL's timestamp layout with the
//! fraction trimmed (`2024-01-01 10:00:02.5`) and plain decimals.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDateTime, Timelike};

/// Which of Flink's text styles to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Java `toString`: what the `print` connector shows.
    Print,
    /// SQL layout: what the `csv` and `json` formats write.
    Sql,
}

/// Formats `f64` as Java's `Double.toString` does (`101.5`, `1.0E10`, `1.0E-5`).
///
/// ```
/// use sluice_connectors::format::text::java_double;
/// assert_eq!(java_double(101.0), "101.0");
/// assert_eq!(java_double(1e10), "1.0E10");
/// assert_eq!(java_double(0.0001), "1.0E-4");
/// ```
pub fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let a = v.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{v}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exp}")
    }
}

/// Formats `f32` as Java's `Float.toString` does.
pub fn java_float(v: f32) -> String {
    if v.is_finite() && v != 0.0 {
        let a = v.abs();
        if (1e-3..1e7).contains(&a) {
            let s = format!("{v}");
            return if s.contains('.') { s } else { format!("{s}.0") };
        }
    }
    java_double(v as f64)
}

/// Wall-clock time of `ms` (UTC) as Java's `LocalDateTime.toString`: seconds only when not
/// zero, the fraction in groups of three digits.
fn java_local_date_time(t: NaiveDateTime) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M").to_string();
    let nanos = t.nanosecond();
    if t.second() != 0 || nanos != 0 {
        s.push_str(&format!(":{:02}", t.second()));
    }
    s.push_str(&java_fraction(nanos));
    s
}

fn java_fraction(nanos: u32) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos.is_multiple_of(1_000_000) {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// SQL layout: `2024-01-01 10:00:02.5` (fraction without trailing zeros, none if zero).
fn sql_date_time(t: NaiveDateTime) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s
}

fn timestamp_at(array: &ArrayRef, unit: &TimeUnit, row: usize) -> Option<NaiveDateTime> {
    let t = match unit {
        TimeUnit::Second => {
            DateTime::from_timestamp(array.as_primitive::<TimestampSecondType>().value(row), 0)
        }
        TimeUnit::Millisecond => DateTime::from_timestamp_millis(
            array.as_primitive::<TimestampMillisecondType>().value(row),
        ),
        TimeUnit::Microsecond => DateTime::from_timestamp_micros(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
        ),
        TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(
            array.as_primitive::<TimestampNanosecondType>().value(row),
        )),
    };
    t.map(|t| t.naive_utc())
}

/// Strips trailing zeros of a plain decimal string (`101.50` to `101.5`, `3.00` to `3`).
fn strip_decimal_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Formats row `row` of `array`, or `None` for SQL NULL. `time_zone` is unused for now:
/// `TIMESTAMP_LTZ` is written in UTC with a `Z`, as Flink's formats do.
pub fn format_value(array: &ArrayRef, row: usize, style: Style) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    let s = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Float64 => java_double(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => java_float(array.as_primitive::<Float32Type>().value(row)),
        DataType::Timestamp(unit, tz) => {
            let t = timestamp_at(array, unit, row)?;
            match (style, tz.is_some()) {
                (Style::Print, false) => java_local_date_time(t),
                (Style::Print, true) => {
                    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
                    s.push_str(&java_fraction(t.nanosecond()));
                    s.push('Z');
                    s
                }
                (Style::Sql, false) => sql_date_time(t),
                (Style::Sql, true) => format!("{}Z", sql_date_time(t)),
            }
        }
        _ => {
            let options = FormatOptions::default();
            let f = ArrayFormatter::try_new(array.as_ref(), &options).ok()?;
            let s = f.value(row).to_string();
            match (style, array.data_type()) {
                (Style::Sql, DataType::Decimal128(_, _)) => strip_decimal_zeros(s),
                _ => s,
            }
        }
    };
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, TimestampMillisecondArray};
    use std::sync::Arc;

    #[test]
    fn timestamps_as_flink_prints_them() {
        let a: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            1704103201000,
            1704103202500,
            1704103200000,
        ]));
        assert_eq!(
            format_value(&a, 0, Style::Print).unwrap(),
            "2024-01-01T10:00:01"
        );
        assert_eq!(
            format_value(&a, 1, Style::Print).unwrap(),
            "2024-01-01T10:00:02.500"
        );
        assert_eq!(
            format_value(&a, 2, Style::Print).unwrap(),
            "2024-01-01T10:00"
        );
        assert_eq!(
            format_value(&a, 1, Style::Sql).unwrap(),
            "2024-01-01 10:00:02.5"
        );
        assert_eq!(
            format_value(&a, 2, Style::Sql).unwrap(),
            "2024-01-01 10:00:00"
        );
        let ltz: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![1704103200123]).with_timezone("UTC"));
        assert_eq!(
            format_value(&ltz, 0, Style::Print).unwrap(),
            "2024-01-01T10:00:00.123Z"
        );
        assert_eq!(
            format_value(&ltz, 0, Style::Sql).unwrap(),
            "2024-01-01 10:00:00.123Z"
        );
    }

    #[test]
    fn decimals_keep_scale_when_printed() {
        let a: ArrayRef = Arc::new(
            Decimal128Array::from(vec![10150, 10])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        assert_eq!(format_value(&a, 0, Style::Print).unwrap(), "101.50");
        assert_eq!(format_value(&a, 0, Style::Sql).unwrap(), "101.5");
        assert_eq!(format_value(&a, 1, Style::Sql).unwrap(), "0.1");
    }

    #[test]
    fn doubles_as_java() {
        assert_eq!(java_double(0.1), "0.1");
        assert_eq!(java_double(-2.5e-7), "-2.5E-7");
        assert_eq!(java_double(12345678.0), "1.2345678E7");
    }
}
