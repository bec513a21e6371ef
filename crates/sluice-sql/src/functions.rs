//! The functions queries can call: DataFusion's built-ins, plus Flink's functions that
//! DataFusion lacks or defines differently (`TO_TIMESTAMP_LTZ`, `TO_TIMESTAMP`, `DATE_FORMAT`,
//! `MOD`, `CONCAT`), each registered here as a DataFusion function.

use crate::types::LTZ_ZONE;
use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, TimestampMillisecondBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use chrono::{Datelike, Timelike};
use datafusion_common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion_expr::planner::ExprPlanner;
use datafusion_expr::{
    AggregateUDF, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, WindowUDF,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Scalar, aggregate and window functions by lower-case name.
pub struct FunctionRegistry {
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
    windows: HashMap<String, Arc<WindowUDF>>,
}

impl Default for FunctionRegistry {
    fn default() -> Self {
        let mut scalars = HashMap::new();
        for f in datafusion_functions::all_default_functions() {
            for a in f.aliases() {
                scalars.insert(a.to_ascii_lowercase(), f.clone());
            }
            scalars.insert(f.name().to_ascii_lowercase(), f);
        }
        for f in flink_functions() {
            scalars.insert(f.name().to_ascii_lowercase(), Arc::new(f));
        }
        let proctime = ScalarUDF::new_from_impl(ProcTime::default());
        scalars.insert("proctime".into(), Arc::new(proctime));
        let mut aggregates = HashMap::new();
        for f in datafusion_functions_aggregate::all_default_aggregate_functions() {
            for a in f.aliases() {
                aggregates.insert(a.to_ascii_lowercase(), f.clone());
            }
            aggregates.insert(f.name().to_ascii_lowercase(), f);
        }
        let mut windows = HashMap::new();
        for f in datafusion_functions_window::all_default_window_functions() {
            for a in f.aliases() {
                windows.insert(a.to_ascii_lowercase(), f.clone());
            }
            windows.insert(f.name().to_ascii_lowercase(), f);
        }
        FunctionRegistry {
            scalars,
            aggregates,
            windows,
        }
    }
}

impl FunctionRegistry {
    /// A scalar function.
    pub fn scalar(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalars.get(&name.to_ascii_lowercase()).cloned()
    }

    /// An aggregate function.
    pub fn aggregate(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(&name.to_ascii_lowercase()).cloned()
    }

    /// A window (OVER) function.
    pub fn window(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.windows.get(&name.to_ascii_lowercase()).cloned()
    }

    pub fn scalar_names(&self) -> Vec<String> {
        self.scalars.keys().cloned().collect()
    }

    pub fn aggregate_names(&self) -> Vec<String> {
        self.aggregates.keys().cloned().collect()
    }

    pub fn window_names(&self) -> Vec<String> {
        self.windows.keys().cloned().collect()
    }

    /// DataFusion's planners for SQL syntax that becomes function calls (`EXTRACT`,
    /// `SUBSTRING`, `COUNT(*)`, `ROW_NUMBER() OVER`, ...).
    pub fn expr_planners() -> Vec<Arc<dyn ExprPlanner>> {
        vec![
            Arc::new(FieldNamePlanner),
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            Arc::new(datafusion_functions_aggregate::planner::AggregateFunctionPlanner),
            Arc::new(datafusion_functions_window::planner::WindowFunctionPlanner),
        ]
    }
}

/// A field of a ROW column (`person.id`) is named after the field (`id`), as Flink names it,
/// not after the whole path as DataFusion does: a view `SELECT person.id FROM t` has a
/// column `id`.
#[derive(Debug)]
struct FieldNamePlanner;

impl ExprPlanner for FieldNamePlanner {
    fn plan_compound_identifier(
        &self,
        field: &arrow::datatypes::Field,
        qualifier: Option<&datafusion_common::TableReference>,
        nested_names: &[String],
    ) -> DfResult<datafusion_expr::planner::PlannerResult<Vec<datafusion_expr::Expr>>> {
        use datafusion_expr::planner::PlannerResult;
        let core = datafusion_functions::core::planner::CoreFunctionPlanner::default();
        match core.plan_compound_identifier(field, qualifier, nested_names)? {
            PlannerResult::Planned(e) => match nested_names.last() {
                Some(name) => Ok(PlannerResult::Planned(e.alias(name))),
                None => Ok(PlannerResult::Planned(e)),
            },
            original => Ok(original),
        }
    }
}

/// `PROCTIME()`: the wall-clock time when the row is computed, a `TIMESTAMP_LTZ(3)`. A column
/// `pt AS PROCTIME()` is a processing-time attribute.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProcTime {
    signature: Signature,
}

impl Default for ProcTime {
    fn default() -> Self {
        ProcTime {
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        "PROCTIME"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some(LTZ_ZONE.into()),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let now = wall_clock_ms();
        let array = arrow::array::TimestampMillisecondArray::from(vec![now; args.number_rows])
            .with_timezone(LTZ_ZONE);
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// The wall clock in ms since the epoch (`PROCTIME()`, `MATCH_PROCTIME()`).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether `e` is a call of `PROCTIME()`.
pub fn is_proctime_call(e: &datafusion_expr::Expr) -> bool {
    matches!(e, datafusion_expr::Expr::ScalarFunction(f) if f.func.name().eq_ignore_ascii_case("proctime"))
}

type Body = fn(&[ArrayRef], &[DataType]) -> DfResult<ArrayRef>;
type ReturnType = fn(&[DataType]) -> DfResult<DataType>;

/// A Flink function implemented over whole arrays. Functions are equal when their names are.
#[derive(Debug)]
struct FlinkFunction {
    name: &'static str,
    signature: Signature,
    return_type: ReturnType,
    body: Body,
}

impl PartialEq for FlinkFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for FlinkFunction {}

impl std::hash::Hash for FlinkFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for FlinkFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        (self.return_type)(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(if all_scalar { 1 } else { n }))
            .collect::<DfResult<Vec<_>>>()?;
        let out = (self.body)(&arrays, &types)?;
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn udf(name: &'static str, return_type: ReturnType, body: Body) -> ScalarUDF {
    ScalarUDF::new_from_impl(FlinkFunction {
        name,
        signature: Signature::variadic_any(Volatility::Immutable),
        return_type,
        body,
    })
}

fn plan_err(msg: String) -> DataFusionError {
    DataFusionError::Plan(msg)
}

fn flink_functions() -> Vec<ScalarUDF> {
    vec![
        udf(
            "TO_TIMESTAMP_LTZ",
            |t| match t.len() {
                1 | 2 => Ok(DataType::Timestamp(
                    TimeUnit::Millisecond,
                    Some(LTZ_ZONE.into()),
                )),
                _ => Err(plan_err(
                    "TO_TIMESTAMP_LTZ(numeric, precision) takes one or two arguments".into(),
                )),
            },
            to_timestamp_ltz,
        ),
        udf(
            "TO_TIMESTAMP",
            |t| match t.len() {
                1 | 2 => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
                _ => Err(plan_err(
                    "TO_TIMESTAMP(string[, format]) takes one or two arguments".into(),
                )),
            },
            to_timestamp,
        ),
        udf(
            "DATE_FORMAT",
            |t| match t.len() {
                2 => Ok(DataType::Utf8),
                _ => Err(plan_err(
                    "DATE_FORMAT(timestamp, format) takes two arguments".into(),
                )),
            },
            date_format,
        ),
        udf(
            "MOD",
            |t| match t {
                [a, b] if a.is_integer() && b.is_integer() => Ok(b.clone()),
                [_, _] => Err(plan_err("MOD(a, b) takes two integers".into())),
                _ => Err(plan_err("MOD(a, b) takes two arguments".into())),
            },
            modulo,
        ),
        udf("CONCAT", |_| Ok(DataType::Utf8), concat),
        udf("YEAR", time_unit_type, |a, _| {
            time_unit(a, |t| t.year() as i64)
        }),
        udf("QUARTER", time_unit_type, |a, _| {
            time_unit(a, |t| t.month0() as i64 / 3 + 1)
        }),
        udf("MONTH", time_unit_type, |a, _| {
            time_unit(a, |t| t.month() as i64)
        }),
        udf("WEEK", time_unit_type, |a, _| {
            time_unit(a, |t| t.iso_week().week() as i64)
        }),
        udf("DAYOFYEAR", time_unit_type, |a, _| {
            time_unit(a, |t| t.ordinal() as i64)
        }),
        udf("DAYOFMONTH", time_unit_type, |a, _| {
            time_unit(a, |t| t.day() as i64)
        }),
        udf("DAYOFWEEK", time_unit_type, |a, _| {
            // Sunday is 1, as in Flink.
            time_unit(a, |t| t.weekday().num_days_from_sunday() as i64 + 1)
        }),
        udf(
            "TIMESTAMPDIFF",
            |t| match t.len() {
                3 => Ok(DataType::Int32),
                _ => Err(plan_err(
                    "TIMESTAMPDIFF(unit, t1, t2) takes three arguments".into(),
                )),
            },
            timestampdiff,
        ),
        udf(
            "TIMESTAMPADD",
            |t| match t {
                [_, n, DataType::Timestamp(_, tz)] if n.is_integer() => {
                    Ok(DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
                }
                [_, _, _] => Err(plan_err(
                    "TIMESTAMPADD(unit, n, t) takes an integer n and a timestamp t".into(),
                )),
                _ => Err(plan_err(
                    "TIMESTAMPADD(unit, n, t) takes three arguments".into(),
                )),
            },
            timestampadd,
        ),
        udf("HOUR", time_unit_type, |a, _| {
            time_unit(a, |t| t.hour() as i64)
        }),
        udf("MINUTE", time_unit_type, |a, _| {
            time_unit(a, |t| t.minute() as i64)
        }),
        udf("SECOND", time_unit_type, |a, _| {
            time_unit(a, |t| t.second() as i64)
        }),
        udf(
            "SPLIT_INDEX",
            |t| match t.len() {
                3 => Ok(DataType::Utf8),
                _ => Err(plan_err(
                    "SPLIT_INDEX(string, separator, index) takes three arguments".into(),
                )),
            },
            split_index,
        ),
        udf(
            "REGEXP_EXTRACT",
            |t| match t.len() {
                2 | 3 => Ok(DataType::Utf8),
                _ => Err(plan_err(
                    "REGEXP_EXTRACT(string, regex[, group]) takes two or three arguments".into(),
                )),
            },
            regexp_extract,
        ),
    ]
}

/// `SPLIT_INDEX(s, sep, i)`: the `i`-th (from 0) piece of `s` split at every `sep` (empty
/// pieces kept), as Flink; NULL if an argument is NULL, `i` is negative or past the end. A
/// numeric separator is the character with that code.
fn split_index(args: &[ArrayRef], types: &[DataType]) -> DfResult<ArrayRef> {
    let strings = cast(&args[0], &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let seps = if types.get(1).is_some_and(|t| t.is_integer()) {
        let codes = cast(&args[1], &DataType::Int64)?;
        let codes = codes.as_primitive::<arrow::datatypes::Int64Type>();
        let mut b = StringBuilder::new();
        for c in codes.iter() {
            match c
                .and_then(|c| u32::try_from(c).ok())
                .and_then(char::from_u32)
            {
                Some(ch) => b.append_value(ch.to_string()),
                None => b.append_null(),
            }
        }
        Arc::new(b.finish()) as ArrayRef
    } else {
        cast(&args[1], &DataType::Utf8)?
    };
    let seps = seps.as_string::<i32>();
    let index = cast(&args[2], &DataType::Int64)?;
    let index = index.as_primitive::<arrow::datatypes::Int64Type>();
    let mut b = StringBuilder::new();
    for i in 0..strings.len() {
        if strings.is_null(i) || seps.is_null(i) || index.is_null(i) || index.value(i) < 0 {
            b.append_null();
            continue;
        }
        let (s, sep, at) = (strings.value(i), seps.value(i), index.value(i) as usize);
        let piece = if sep.is_empty() {
            s.split_whitespace().nth(at)
        } else {
            s.split(sep).nth(at)
        };
        b.append_option(piece);
    }
    Ok(Arc::new(b.finish()))
}

/// `REGEXP_EXTRACT(s, regex[, group])`: group `group` (0, the default, is the whole match)
/// of the first match of `regex` in `s`, as Flink; NULL if an argument is NULL, the regex is
/// invalid, nothing matches or the group does not take part.
fn regexp_extract(args: &[ArrayRef], _types: &[DataType]) -> DfResult<ArrayRef> {
    let strings = cast(&args[0], &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let patterns = cast(&args[1], &DataType::Utf8)?;
    let patterns = patterns.as_string::<i32>();
    let groups = match args.get(2) {
        Some(g) => Some(cast(g, &DataType::Int64)?),
        None => None,
    };
    let groups = groups
        .as_ref()
        .map(|g| g.as_primitive::<arrow::datatypes::Int64Type>());
    let mut compiled: Option<(String, Option<regex::Regex>)> = None;
    let mut b = StringBuilder::new();
    for i in 0..strings.len() {
        let group = match groups {
            Some(g) if g.is_null(i) => None,
            Some(g) => usize::try_from(g.value(i)).ok(),
            None => Some(0),
        };
        let (Some(group), false, false) = (group, strings.is_null(i), patterns.is_null(i)) else {
            b.append_null();
            continue;
        };
        let pattern = patterns.value(i);
        if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
            compiled = Some((pattern.to_string(), regex::Regex::new(pattern).ok()));
        }
        let value = compiled
            .as_ref()
            .and_then(|(_, re)| re.as_ref())
            .and_then(|re| re.captures(strings.value(i)))
            .and_then(|c| c.get(group).map(|m| m.as_str().to_string()));
        b.append_option(value);
    }
    Ok(Arc::new(b.finish()))
}

/// `TO_TIMESTAMP_LTZ(n, 0)` (seconds) or `TO_TIMESTAMP_LTZ(n, 3)` (milliseconds, the default).
fn to_timestamp_ltz(args: &[ArrayRef], _types: &[DataType]) -> DfResult<ArrayRef> {
    let precision = if args.len() > 1 {
        let p = cast(&args[1], &DataType::Int64)?;
        let p = p.as_primitive::<Int64Type>();
        if p.is_null(0) {
            3
        } else {
            p.value(0)
        }
    } else {
        3
    };
    let factor = match precision {
        0 => 1000.0,
        3 => 1.0,
        other => {
            return Err(plan_err(format!(
                "TO_TIMESTAMP_LTZ precision must be 0 or 3, got {other}"
            )))
        }
    };
    let ltz = DataType::Timestamp(TimeUnit::Millisecond, Some(LTZ_ZONE.into()));
    if args[0].data_type().is_integer() {
        // Vectorised: milliseconds are the timestamp's own representation.
        let ms = cast(&args[0], &DataType::Int64)?;
        let ms = if precision == 0 {
            let thousand = arrow::array::Int64Array::new_scalar(1000);
            arrow::compute::kernels::numeric::mul_wrapping(&ms, &thousand)?
        } else {
            ms
        };
        return Ok(cast(&ms, &ltz)?);
    }
    let v = cast(&args[0], &DataType::Float64)?;
    let v = v.as_primitive::<arrow::datatypes::Float64Type>();
    let mut b = TimestampMillisecondBuilder::with_capacity(v.len());
    for i in 0..v.len() {
        if v.is_null(i) {
            b.append_null();
        } else {
            b.append_value((v.value(i) * factor).floor() as i64);
        }
    }
    Ok(Arc::new(b.finish().with_timezone(LTZ_ZONE)))
}

/// Translates a Java `SimpleDateFormat` pattern (`yyyy-MM-dd HH:mm:ss.SSS`) to chrono's.
pub fn java_to_chrono_format(java: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = java.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let piece = match (c, n) {
            ('y', 2) => "%y".to_string(),
            ('y', _) => "%Y".to_string(),
            ('M', 1) => "%-m".to_string(),
            ('M', 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', 1) => "%-d".to_string(),
            ('d', _) => "%d".to_string(),
            ('H', 1) => "%-H".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', 1) => "%-M".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', 1) => "%-S".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', k) => format!("%{}f", k.min(9)),
            ('a', _) => "%p".to_string(),
            ('E', _) => "%a".to_string(),
            ('%', _) => "%%".repeat(n),
            (other, k) => other.to_string().repeat(k),
        };
        out.push_str(&piece);
        i += n;
    }
    out
}

fn format_arg(args: &[ArrayRef], i: usize, default: &str) -> DfResult<String> {
    match args.get(i) {
        None => Ok(default.to_string()),
        Some(a) => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            Ok(if s.is_null(0) {
                default.to_string()
            } else {
                s.value(0).to_string()
            })
        }
    }
}

/// `TO_TIMESTAMP(string[, format])`: parses wall-clock time; NULL when it does not parse.
fn to_timestamp(args: &[ArrayRef], _types: &[DataType]) -> DfResult<ArrayRef> {
    let fmt = java_to_chrono_format(&format_arg(args, 1, "yyyy-MM-dd HH:mm:ss")?);
    let s = cast(&args[0], &DataType::Utf8)?;
    let s = s.as_string::<i32>();
    let mut b = TimestampMillisecondBuilder::with_capacity(s.len());
    for i in 0..s.len() {
        if s.is_null(i) {
            b.append_null();
            continue;
        }
        let text = s.value(i).trim();
        let parsed = chrono::NaiveDateTime::parse_from_str(text, &fmt)
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(text, &fmt)
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
            })
            .ok()
            .or_else(|| {
                // Flink also accepts a fraction after the default pattern.
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
            });
        match parsed {
            Some(t) => b.append_value(t.and_utc().timestamp_millis()),
            None => b.append_null(),
        }
    }
    Ok(Arc::new(b.finish()))
}

/// `DATE_FORMAT(timestamp, format)`.
fn date_format(args: &[ArrayRef], types: &[DataType]) -> DfResult<ArrayRef> {
    let fmt = java_to_chrono_format(&format_arg(args, 1, "yyyy-MM-dd HH:mm:ss")?);
    let ts = match &types[0] {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            to_timestamp(&args[..1], &types[..1])?
        }
        _ => cast(&args[0], &DataType::Timestamp(TimeUnit::Millisecond, None))?,
    };
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    let mut b = StringBuilder::new();
    for i in 0..ts.len() {
        match (
            ts.is_null(i),
            chrono::DateTime::from_timestamp_millis(ts.value(i)),
        ) {
            (false, Some(t)) => b.append_value(t.naive_utc().format(&fmt).to_string()),
            _ => b.append_null(),
        }
    }
    Ok(Arc::new(b.finish()))
}

/// `HOUR(t)`, `YEAR(t)`, ...: one argument, a BIGINT result.
fn time_unit_type(t: &[DataType]) -> DfResult<DataType> {
    match t {
        [DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64] => Ok(DataType::Int64),
        [a] => Err(plan_err(format!(
            "this function takes a TIMESTAMP or a DATE, not {a}"
        ))),
        _ => Err(plan_err("this function takes one argument".into())),
    }
}

/// A part of each date or timestamp (the wall-clock time a `TIMESTAMP` holds), as BIGINT.
fn time_unit(args: &[ArrayRef], part: fn(&chrono::NaiveDateTime) -> i64) -> DfResult<ArrayRef> {
    let ts = cast(&args[0], &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    let out: arrow::array::Int64Array = ts
        .iter()
        .map(|v| {
            v.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| part(&t.naive_utc()))
        })
        .collect();
    Ok(Arc::new(out))
}

/// The length of a fixed time unit of TIMESTAMPDIFF and TIMESTAMPADD, in ms (None for the
/// calendar units).
fn unit_ms(unit: &str) -> Option<i64> {
    match unit {
        "SECOND" => Some(1_000),
        "MINUTE" => Some(60_000),
        "HOUR" => Some(3_600_000),
        "DAY" => Some(86_400_000),
        "WEEK" => Some(7 * 86_400_000),
        _ => None,
    }
}

/// The months of a calendar unit (MONTH, QUARTER, YEAR).
fn unit_months(unit: &str) -> i64 {
    match unit {
        "MONTH" => 1,
        "QUARTER" => 3,
        _ => 12,
    }
}

/// `TIMESTAMPDIFF(unit, t1, t2)`: how many whole units (SECOND, MINUTE, HOUR, DAY, WEEK,
/// MONTH, QUARTER, YEAR) from `t1` to `t2`, truncated towards zero, as Flink; months count
/// calendar months (a month is whole once the day and time of `t1` come round again).
fn timestampdiff(args: &[ArrayRef], _types: &[DataType]) -> DfResult<ArrayRef> {
    let units = cast(&args[0], &DataType::Utf8)?;
    let units = units.as_string::<i32>();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let (a, b) = (cast(&args[1], &ts)?, cast(&args[2], &ts)?);
    let (a, b) = (
        a.as_primitive::<TimestampMillisecondType>(),
        b.as_primitive::<TimestampMillisecondType>(),
    );
    let mut out = arrow::array::Int32Builder::with_capacity(a.len());
    for i in 0..a.len() {
        if units.is_null(i) || a.is_null(i) || b.is_null(i) {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        let unit = units.value(i).to_ascii_uppercase();
        let fixed = unit_ms(&unit);
        let n = match (fixed, unit.as_str()) {
            (Some(ms), _) => (y - x) / ms,
            (None, "MONTH" | "QUARTER" | "YEAR") => {
                let months = months_between(x, y).ok_or_else(|| {
                    plan_err("TIMESTAMPDIFF: a timestamp is out of range".into())
                })?;
                months / unit_months(&unit)
            }
            _ => {
                return Err(plan_err(format!(
                    "TIMESTAMPDIFF: unknown unit '{unit}'; units are SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER, YEAR"
                )))
            }
        };
        out.append_value(n as i32);
    }
    Ok(Arc::new(out.finish()))
}

/// `TIMESTAMPADD(unit, n, t)`: `t` plus `n` units (SECOND, MINUTE, HOUR, DAY, WEEK, MONTH,
/// QUARTER, YEAR), as Flink; months are calendar months, a day past the end of the month
/// becomes its last day (January 31 plus a month is February 28 or 29).
fn timestampadd(args: &[ArrayRef], types: &[DataType]) -> DfResult<ArrayRef> {
    let units = cast(&args[0], &DataType::Utf8)?;
    let units = units.as_string::<i32>();
    let n = cast(&args[1], &DataType::Int64)?;
    let n = n.as_primitive::<arrow::datatypes::Int64Type>();
    let t = cast(&args[2], &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let t = t.as_primitive::<TimestampMillisecondType>();
    let mut out = Vec::with_capacity(t.len());
    for i in 0..t.len() {
        if units.is_null(i) || n.is_null(i) || t.is_null(i) {
            out.push(None);
            continue;
        }
        let (k, x) = (n.value(i), t.value(i));
        let unit = units.value(i).to_ascii_uppercase();
        let fixed = unit_ms(&unit);
        let out_of_range = || plan_err("TIMESTAMPADD: the result is out of range".into());
        let value = match (fixed, unit.as_str()) {
            (Some(ms), _) => k
                .checked_mul(ms)
                .and_then(|d| x.checked_add(d))
                .ok_or_else(out_of_range)?,
            (None, "MONTH" | "QUARTER" | "YEAR") => {
                let months = k
                    .checked_mul(unit_months(&unit))
                    .ok_or_else(out_of_range)?;
                let at = chrono::DateTime::from_timestamp_millis(x)
                    .ok_or_else(out_of_range)?
                    .naive_utc();
                let moved = if months >= 0 {
                    u32::try_from(months)
                        .ok()
                        .and_then(|m| at.checked_add_months(chrono::Months::new(m)))
                } else {
                    u32::try_from(-months)
                        .ok()
                        .and_then(|m| at.checked_sub_months(chrono::Months::new(m)))
                };
                moved.ok_or_else(out_of_range)?.and_utc().timestamp_millis()
            }
            _ => {
                return Err(plan_err(format!(
                    "TIMESTAMPADD: unknown unit '{unit}'; units are SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER, YEAR"
                )))
            }
        };
        out.push(Some(value));
    }
    let tz = match types.get(2) {
        Some(DataType::Timestamp(_, tz)) => tz.clone(),
        _ => None,
    };
    Ok(Arc::new(
        arrow::array::TimestampMillisecondArray::from(out).with_timezone_opt(tz),
    ))
}

/// Whole calendar months from `x` to `y` (epoch ms), negative if `y` is before `x`.
fn months_between(x: i64, y: i64) -> Option<i64> {
    let (a, b) = (
        chrono::DateTime::from_timestamp_millis(x)?.naive_utc(),
        chrono::DateTime::from_timestamp_millis(y)?.naive_utc(),
    );
    let index = |t: &chrono::NaiveDateTime| t.year() as i64 * 12 + t.month0() as i64;
    // Where in its month each is: day, then time of day.
    let within = |t: &chrono::NaiveDateTime| (t.day(), t.time());
    let mut months = index(&b) - index(&a);
    if months > 0 && within(&b) < within(&a) {
        months -= 1;
    } else if months < 0 && within(&b) > within(&a) {
        months += 1;
    }
    Some(months)
}

/// `MOD(a, b)`: the remainder with the sign of `a`, NULL when `b` is 0... as Flink, an error.
fn modulo(args: &[ArrayRef], types: &[DataType]) -> DfResult<ArrayRef> {
    let a = cast(&args[0], &DataType::Int64)?;
    let b = cast(&args[1], &DataType::Int64)?;
    let r = arrow::compute::kernels::numeric::rem(&a, &b)?;
    Ok(cast(&r, &types[1])?)
}

/// `CONCAT(a, b, ...)`: NULL if any argument is NULL, as in Flink.
fn concat(args: &[ArrayRef], _types: &[DataType]) -> DfResult<ArrayRef> {
    let strings = args
        .iter()
        .map(|a| cast(a, &DataType::Utf8))
        .collect::<Result<Vec<_>, _>>()?;
    let n = strings.first().map(|s| s.len()).unwrap_or(0);
    let mut b = StringBuilder::new();
    for i in 0..n {
        if strings.iter().any(|s| s.is_null(i)) {
            b.append_null();
            continue;
        }
        let mut s = String::new();
        for a in &strings {
            s.push_str(a.as_string::<i32>().value(i));
        }
        b.append_value(s);
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn java_patterns() {
        assert_eq!(
            java_to_chrono_format("yyyy-MM-dd HH:mm:ss"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(java_to_chrono_format("HH:mm 'h'"), "%H:%M h");
    }

    #[test]
    fn flink_semantics() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("b"), Some("c")]));
        let r = concat(&[a, b], &[]).unwrap();
        assert_eq!(r.as_string::<i32>().value(0), "ab");
        assert!(r.is_null(1));
        let ms: ArrayRef = Arc::new(Int64Array::from(vec![1704103200123]));
        let t = to_timestamp_ltz(&[ms], &[DataType::Int64]).unwrap();
        assert_eq!(
            t.as_primitive::<TimestampMillisecondType>().value(0),
            1704103200123
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec!["2024-01-01 10:00:00"]));
        let t = to_timestamp(&[s], &[DataType::Utf8]).unwrap();
        let f = date_format(
            &[t],
            &[
                DataType::Timestamp(TimeUnit::Millisecond, None),
                DataType::Utf8,
            ],
        )
        .unwrap();
        assert_eq!(f.as_string::<i32>().value(0), "2024-01-01 10:00:00");
    }

    #[test]
    fn timestampadd_moves_by_calendar_months() {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let at = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        let units: ArrayRef = Arc::new(StringArray::from(vec!["MONTH", "YEAR", "DAY", "QUARTER"]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(-1), Some(2), None]));
        let t: ArrayRef = Arc::new(
            arrow::array::TimestampMillisecondArray::from(vec![
                at("2024-01-31 10:00:00"),
                at("2024-02-29 00:00:00"),
                at("2024-12-31 23:00:00"),
                at("2024-01-01 00:00:00"),
            ])
            .with_timezone("UTC"),
        );
        let r = timestampadd(
            &[units, n, t],
            &[DataType::Utf8, DataType::Int64, ts.clone()],
        )
        .unwrap();
        assert_eq!(r.data_type(), &ts);
        let r = r.as_primitive::<TimestampMillisecondType>();
        assert_eq!(r.value(0), at("2024-02-29 10:00:00"));
        assert_eq!(r.value(1), at("2023-02-28 00:00:00"));
        assert_eq!(r.value(2), at("2025-01-02 23:00:00"));
        assert!(r.is_null(3));
        let bad: ArrayRef = Arc::new(StringArray::from(vec!["FORTNIGHT"]));
        let one: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let t: ArrayRef = Arc::new(arrow::array::TimestampMillisecondArray::from(vec![0]));
        let e = timestampadd(&[bad, one, t], &[]).unwrap_err().to_string();
        assert!(e.contains("unknown unit 'FORTNIGHT'"), "{e}");
    }

    #[test]
    fn split_index_and_regexp_extract_as_flink() {
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a,b,,c"),
            Some("a,b,,c"),
            Some("a,b"),
            None,
        ]));
        let sep: ArrayRef = Arc::new(StringArray::from(vec![","; 4]));
        let i: ArrayRef = Arc::new(Int64Array::from(vec![2, 3, 5, 0]));
        let r = split_index(
            &[s, sep, i],
            &[DataType::Utf8, DataType::Utf8, DataType::Int64],
        )
        .unwrap();
        let r = r.as_string::<i32>();
        assert_eq!((r.value(0), r.value(1)), ("", "c"));
        assert!(r.is_null(2) && r.is_null(3));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["foothebar", "foothebar", "x"]));
        let re: ArrayRef = Arc::new(StringArray::from(vec!["foo(.*?)(bar)"; 3]));
        let g: ArrayRef = Arc::new(Int64Array::from(vec![2, 0, 1]));
        let r = regexp_extract(&[s.clone(), re.clone(), g], &[]).unwrap();
        let r = r.as_string::<i32>();
        assert_eq!((r.value(0), r.value(1)), ("bar", "foothebar"));
        assert!(r.is_null(2));
        let r = regexp_extract(&[s, re], &[]).unwrap();
        assert_eq!(r.as_string::<i32>().value(0), "foothebar");
    }
}
