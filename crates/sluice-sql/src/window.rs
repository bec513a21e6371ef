//! Window kinds and their assignment: which `[start, end)` windows a row with event time `ts`
//! belongs to. Windows are aligned to the epoch plus an offset, as in Flink.

use sluice_common::EventTime;
use sqlparser::ast::{DateTimeField, Expr, Value};

/// A window as Flink defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows.
    Tumble { size: i64, offset: i64 },
    /// Fixed-size windows starting every `slide`.
    Hop { slide: i64, size: i64, offset: i64 },
    /// Windows that grow by `step` from the start of each `size` period.
    Cumulate { step: i64, size: i64, offset: i64 },
    /// Windows per key that close after `gap` without rows.
    Session { gap: i64 },
    /// The windows of a window aggregate's (or window join's) result, which carries each row's
    /// window in its window_start column (`start_index`) and window_end column: a GROUP BY
    /// of those columns aggregates the same windows again (Flink's cascaded window
    /// aggregation).
    Attached { start_index: usize },
}

impl WindowKind {
    /// Checks the sizes as Flink does.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowKind::Tumble { size, .. } if size <= 0 => {
                Err("TUMBLE size must be positive".into())
            }
            WindowKind::Hop { slide, size, .. } if slide <= 0 || size <= 0 => {
                Err("HOP slide and size must be positive".into())
            }
            WindowKind::Hop { slide, size, .. } if size % slide != 0 => Err(format!(
                "HOP size ({size} ms) must be an integral multiple of the slide ({slide} ms)"
            )),
            WindowKind::Cumulate { step, size, .. } if step <= 0 || size <= 0 => {
                Err("CUMULATE step and size must be positive".into())
            }
            WindowKind::Cumulate { step, size, .. } if size % step != 0 => Err(format!(
                "CUMULATE size ({size} ms) must be an integral multiple of the step ({step} ms)"
            )),
            WindowKind::Session { gap } if gap <= 0 => Err("SESSION gap must be positive".into()),
            _ => Ok(()),
        }
    }

    /// A short description for plans.
    pub fn describe(&self) -> String {
        match self {
            WindowKind::Tumble { size, .. } => format!("TUMBLE(size={size}ms)"),
            WindowKind::Hop { slide, size, .. } => format!("HOP(slide={slide}ms, size={size}ms)"),
            WindowKind::Cumulate { step, size, .. } => {
                format!("CUMULATE(step={step}ms, size={size}ms)")
            }
            WindowKind::Session { gap } => format!("SESSION(gap={gap}ms)"),
            WindowKind::Attached { .. } => "the input's windows".into(),
        }
    }

    /// Calls `f(start, end)` for every window `ts` belongs to (not for sessions, which depend
    /// on the other rows).
    pub fn assign(&self, ts: EventTime, mut f: impl FnMut(EventTime, EventTime)) {
        match *self {
            WindowKind::Tumble { size, offset } => {
                let start = window_start(ts, offset, size);
                f(start, start + size);
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => {
                let last = window_start(ts, offset, slide);
                let mut start = last;
                while start > ts - size {
                    f(start, start + size);
                    start -= slide;
                }
            }
            WindowKind::Cumulate { step, size, offset } => {
                let start = window_start(ts, offset, size);
                let mut end = window_start(ts, offset, step) + step;
                while end <= start + size {
                    f(start, end);
                    end += step;
                }
            }
            WindowKind::Session { gap } => f(ts, ts + gap),
            // The row carries its window; `ts` is its end.
            WindowKind::Attached { .. } => {}
        }
    }
}

/// The start of the window of `size` (aligned to `offset`) that holds `ts`.
pub fn window_start(ts: EventTime, offset: i64, size: i64) -> EventTime {
    ts - (ts - offset).rem_euclid(size)
}

/// The length of an `INTERVAL` literal in milliseconds (`INTERVAL '10' SECOND`,
/// `INTERVAL '1' MINUTE`, `INTERVAL '1:30' MINUTE TO SECOND`, `INTERVAL '2' HOUR`).
pub fn interval_millis(e: &Expr) -> Result<i64, String> {
    let Expr::Interval(iv) = e else {
        return Err(format!(
            "expected an INTERVAL such as INTERVAL '10' SECOND, found {e}"
        ));
    };
    let text = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
            other => return Err(format!("unexpected interval value {other}")),
        },
        other => return Err(format!("unexpected interval value {other}")),
    };
    let unit_ms = |f: &DateTimeField| -> Result<f64, String> {
        Ok(match f {
            DateTimeField::Millisecond | DateTimeField::Milliseconds => 1.0,
            DateTimeField::Second | DateTimeField::Seconds => 1_000.0,
            DateTimeField::Minute | DateTimeField::Minutes => 60_000.0,
            DateTimeField::Hour | DateTimeField::Hours => 3_600_000.0,
            DateTimeField::Day | DateTimeField::Days => 86_400_000.0,
            DateTimeField::Week(_) | DateTimeField::Weeks => 7.0 * 86_400_000.0,
            other => return Err(format!("intervals of {other} are not supported in windows")),
        })
    };
    let Some(leading) = &iv.leading_field else {
        // DataFusion style: INTERVAL '10 seconds'.
        let mut parts = text.split_whitespace();
        let n: f64 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad interval")?;
        let unit = parts.next().unwrap_or("ms").to_ascii_lowercase();
        let ms = match unit.trim_end_matches('s') {
            "millisecond" | "m" => 1.0,
            "second" | "sec" => 1_000.0,
            "minute" | "min" => 60_000.0,
            "hour" => 3_600_000.0,
            "day" => 86_400_000.0,
            _ => return Err(format!("unknown interval unit '{unit}'")),
        };
        return Ok((n * ms).round() as i64);
    };
    let negative = text.trim_start().starts_with('-');
    let body = text.trim().trim_start_matches('-');
    let total = match &iv.last_field {
        None => {
            let n: f64 = body
                .parse()
                .map_err(|_| format!("bad interval value '{text}'"))?;
            n * unit_ms(leading)?
        }
        Some(last) => {
            // 'd hh:mm:ss.fff' style: split on space and colon, align from the leading field.
            let fields = [
                DateTimeField::Day,
                DateTimeField::Hour,
                DateTimeField::Minute,
                DateTimeField::Second,
            ];
            let from = fields
                .iter()
                .position(|f| f == leading)
                .ok_or("bad interval range")?;
            let to = fields
                .iter()
                .position(|f| f == last)
                .ok_or("bad interval range")?;
            let parts: Vec<&str> = body.split([' ', ':']).collect();
            if parts.len() != to - from + 1 {
                return Err(format!(
                    "interval value '{text}' does not match {leading} TO {last}"
                ));
            }
            let mut total = 0.0;
            for (k, p) in parts.iter().enumerate() {
                let n: f64 = p
                    .parse()
                    .map_err(|_| format!("bad interval value '{text}'"))?;
                total += n * unit_ms(&fields[from + k])?;
            }
            total
        }
    };
    let ms = total.round() as i64;
    Ok(if negative { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn windows(k: &WindowKind, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        k.assign(ts, |s, e| v.push((s, e)));
        v.sort();
        v
    }

    #[test]
    fn tumble_hop_cumulate() {
        let t = WindowKind::Tumble {
            size: 10,
            offset: 0,
        };
        assert_eq!(windows(&t, 15), vec![(10, 20)]);
        assert_eq!(windows(&t, -1), vec![(-10, 0)]);
        let h = WindowKind::Hop {
            slide: 5,
            size: 10,
            offset: 0,
        };
        assert_eq!(windows(&h, 12), vec![(5, 15), (10, 20)]);
        let c = WindowKind::Cumulate {
            step: 2,
            size: 6,
            offset: 0,
        };
        assert_eq!(windows(&c, 3), vec![(0, 4), (0, 6)]);
        assert_eq!(windows(&c, 0), vec![(0, 2), (0, 4), (0, 6)]);
    }

    proptest! {
        // Against a naive model: every aligned candidate window that contains ts.
        #[test]
        fn assignment_matches_naive_model(ts in -100_000i64..100_000, slide in 1i64..50, k in 1i64..6, offset in 0i64..20) {
            let size = slide * k;
            let hop = WindowKind::Hop { slide, size, offset };
            let mut naive = Vec::new();
            let mut start = window_start(ts - size * 2, offset, slide);
            while start <= ts {
                if start <= ts && ts < start + size { naive.push((start, start + size)); }
                start += slide;
            }
            prop_assert_eq!(windows(&hop, ts), naive);
            let cum = WindowKind::Cumulate { step: slide, size, offset };
            let base = window_start(ts, offset, size);
            let naive_c: Vec<_> = (1..=k).map(|i| (base, base + i * slide)).filter(|&(_, e)| ts < e).collect();
            prop_assert_eq!(windows(&cum, ts), naive_c);
        }
    }

    #[test]
    fn intervals() {
        let parse = |s: &str| {
            let e = sqlparser::parser::Parser::new(&sqlparser::dialect::GenericDialect {})
                .try_with_sql(s)
                .unwrap()
                .parse_expr()
                .unwrap();
            interval_millis(&e)
        };
        assert_eq!(parse("INTERVAL '10' SECOND"), Ok(10_000));
        assert_eq!(parse("INTERVAL '1' MINUTE"), Ok(60_000));
        assert_eq!(parse("INTERVAL '1:30' MINUTE TO SECOND"), Ok(90_000));
        assert_eq!(parse("INTERVAL '0.5' SECOND"), Ok(500));
        assert!(parse("5").is_err());
    }
}
