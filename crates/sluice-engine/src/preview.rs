//! The newest rows each sink of a job received, for the dashboard's live preview: every sink
//! subtask keeps its last [`PREVIEW_ROWS`] rows as text. Taking them costs a few rows'
//! formatting at most every [`PREVIEW_EVERY`], whatever the rate.

use crate::operator::{Operator, OperatorFactory, SubtaskContext};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sluice_common::{ChangeBatch, Result};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows kept per sink subtask.
pub const PREVIEW_ROWS: usize = 20;

/// How often a sink subtask takes rows.
pub const PREVIEW_EVERY: Duration = Duration::from_millis(100);

/// A sink's newest rows: its columns, and rows (kind, values) oldest first.
#[derive(Debug, Clone, Default)]
pub struct SinkPreview {
    pub columns: Vec<String>,
    pub rows: VecDeque<(String, Vec<String>)>,
}

/// The previews of a job's sinks, by node and subtask.
#[derive(Debug, Default)]
pub struct Previews {
    sinks: Mutex<BTreeMap<(usize, usize), SinkPreview>>,
}

impl Previews {
    /// Every sink subtask's preview: (node, subtask, preview).
    pub fn snapshot(&self) -> Vec<(usize, usize, SinkPreview)> {
        let map = match self.sinks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|(&(node, subtask), p)| (node, subtask, p.clone()))
            .collect()
    }

    fn record(&self, key: (usize, usize), columns: Option<&[String]>, batch: &ChangeBatch) {
        let n = batch.num_rows();
        if n == 0 {
            return;
        }
        let data = &batch.data;
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<ArrayFormatter<'_>> = match data
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect()
        {
            Ok(f) => f,
            Err(_) => return,
        };
        let mut map = match self.sinks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let preview = map.entry(key).or_default();
        if preview.columns.is_empty() {
            preview.columns = match columns {
                Some(c) if c.len() == data.num_columns() => c.to_vec(),
                _ => data
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            };
        }
        for row in n.saturating_sub(PREVIEW_ROWS)..n {
            let values = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            preview
                .rows
                .push_back((batch.kind(row).short_string().to_string(), values));
            if preview.rows.len() > PREVIEW_ROWS {
                preview.rows.pop_front();
            }
        }
    }
}

/// What one sink subtask feeds into [`Previews`].
pub(crate) struct PreviewTap {
    previews: Arc<Previews>,
    key: (usize, usize),
    /// The sink's column names (see [`OperatorFactory::input_column_names`]).
    columns: Option<Vec<String>>,
    last: Option<Instant>,
}

impl PreviewTap {
    pub fn new(
        previews: Arc<Previews>,
        node: usize,
        subtask: usize,
        columns: Option<Vec<String>>,
    ) -> Self {
        PreviewTap {
            previews,
            key: (node, subtask),
            columns,
            last: None,
        }
    }

    /// Takes the newest rows of `batch`, unless rows were taken less than
    /// [`PREVIEW_EVERY`] ago.
    pub fn offer(&mut self, batch: &ChangeBatch) {
        if self.last.is_some_and(|t| t.elapsed() < PREVIEW_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.previews
            .record(self.key, self.columns.as_deref(), batch);
    }
}

/// `factory`, telling the names of the columns it receives (a sink: its table's).
pub fn with_column_names(
    factory: Arc<dyn OperatorFactory>,
    columns: Vec<String>,
) -> Arc<dyn OperatorFactory> {
    struct Named {
        inner: Arc<dyn OperatorFactory>,
        columns: Vec<String>,
    }
    impl OperatorFactory for Named {
        fn name(&self) -> String {
            self.inner.name()
        }
        fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
            self.inner.create(ctx)
        }
        fn input_column_names(&self) -> Option<Vec<String>> {
            Some(self.columns.clone())
        }
    }
    Arc::new(Named {
        inner: factory,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn a_sink_keeps_its_newest_rows_as_text() {
        // The batches' own names are the planner's, not the table's.
        let schema = Arc::new(Schema::new(vec![
            Field::new("src.k", DataType::Utf8, true),
            Field::new("count(*)", DataType::Int64, false),
        ]));
        let k: Vec<Option<String>> = (0..30)
            .map(|i| (i % 7 != 0).then(|| format!("k{i}")))
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(k)),
                Arc::new(Int64Array::from_iter_values(0..30)),
            ],
        )
        .unwrap();
        let previews = Arc::new(Previews::default());
        let mut tap = PreviewTap::new(previews.clone(), 4, 0, Some(vec!["k".into(), "n".into()]));
        tap.offer(&ChangeBatch::inserts(batch.clone()));
        // Too soon: not taken.
        tap.offer(&ChangeBatch::inserts(batch.slice(0, 1)));
        let all = previews.snapshot();
        assert_eq!(all.len(), 1);
        let (node, subtask, p) = &all[0];
        assert_eq!((*node, *subtask), (4, 0));
        assert_eq!(p.columns, vec!["k", "n"]);
        assert_eq!(p.rows.len(), PREVIEW_ROWS);
        assert_eq!(
            p.rows[0],
            ("+I".to_string(), vec!["k10".into(), "10".into()])
        );
        assert_eq!(p.rows[4].1, vec!["NULL".to_string(), "14".into()]);
        assert_eq!(p.rows[PREVIEW_ROWS - 1].1[1], "29");
    }
}
