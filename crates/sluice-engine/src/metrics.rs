//! Counters of a running job (rows dropped as late, records skipped as malformed, rows written),
//! shared by all its subtasks and reported when the job ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The named counters of one job.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Metrics {
    /// The counter called `name`, created at zero on first use.
    pub fn counter(&self, name: &str) -> Arc<AtomicU64> {
        let mut map = match self.counters.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    /// The current value of every counter, by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let map = match self.counters.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_by_name() {
        let m = Metrics::default();
        m.counter("late").fetch_add(2, Ordering::Relaxed);
        m.counter("late").fetch_add(1, Ordering::Relaxed);
        assert_eq!(m.snapshot(), vec![("late".to_string(), 3)]);
    }
}
