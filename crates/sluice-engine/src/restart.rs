//! Restart strategies, Flink's `restart-strategy.*`: a job whose task fails (a lost broker
//! connection, a database that went away) starts again from its latest complete checkpoint
//! after a delay, as long as its strategy allows; then the job fails.
//!
//! As in Flink 2, a job with checkpoints restarts with `exponential-delay` unless told
//! otherwise, and a job without checkpoints does not restart (it has nothing to go back to).

use crate::checkpoint::RestoreMode;
use crate::executor::{restore_point, run_job};
use crate::graph::JobGraph;
use crate::job::{JobHandle, JobReport};
use sluice_common::{Result, SluiceError};
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// What a job does when it fails.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RestartStrategy {
    /// Fails at once (`none`).
    #[default]
    None,
    /// Restarts `attempts` times, `delay` after each failure (`fixed-delay`).
    FixedDelay { attempts: u64, delay: Duration },
    /// Restarts `delay` after a failure unless more than `max_failures` happened in the last
    /// `interval` (`failure-rate`).
    FailureRate {
        max_failures: u64,
        interval: Duration,
        delay: Duration,
    },
    /// Restarts after a delay that starts at `initial` and grows by `multiplier` up to `max`
    /// with each failure, give or take `jitter` of it; it is back to `initial` after
    /// `reset_threshold` without a failure. `attempts` failures in a row (without a reset)
    /// fail the job (`exponential-delay`).
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset_threshold: Duration,
        jitter: f64,
        attempts: u64,
    },
}

/// The `restart-strategy.*` keys, with Flink's defaults for their strategies.
pub const RESTART_KEYS: &[(&str, &str)] = &[
    ("restart-strategy.type", ""),
    ("restart-strategy.fixed-delay.attempts", "1"),
    ("restart-strategy.fixed-delay.delay", "1 s"),
    (
        "restart-strategy.failure-rate.max-failures-per-interval",
        "1",
    ),
    (
        "restart-strategy.failure-rate.failure-rate-interval",
        "1 min",
    ),
    ("restart-strategy.failure-rate.delay", "1 s"),
    ("restart-strategy.exponential-delay.initial-backoff", "1 s"),
    ("restart-strategy.exponential-delay.max-backoff", "1 min"),
    (
        "restart-strategy.exponential-delay.backoff-multiplier",
        "1.5",
    ),
    (
        "restart-strategy.exponential-delay.reset-backoff-threshold",
        "1 h",
    ),
    ("restart-strategy.exponential-delay.jitter-factor", "0.1"),
    (
        "restart-strategy.exponential-delay.attempts-before-reset-backoff",
        "2147483647",
    ),
];

impl RestartStrategy {
    /// The strategy the keys give (`get` returns a key's value, its default when unset);
    /// without `restart-strategy.type`, `exponential-delay` for a job with checkpoints and
    /// `none` for one without.
    pub fn from_config(get: &dyn Fn(&str) -> String, checkpointing: bool) -> Result<Self> {
        let duration = |key: &str| -> Result<Duration> {
            let v = get(key);
            sluice_common::options::parse_duration(&v).ok_or_else(|| {
                SluiceError::Config(format!(
                    "SET '{key}' = '{v}': expected a duration such as '10 s' or '500 ms'"
                ))
            })
        };
        let count = |key: &str| -> Result<u64> {
            let v = get(key);
            v.trim().parse().map_err(|_| {
                SluiceError::Config(format!("SET '{key}' = '{v}': expected a whole number"))
            })
        };
        let number = |key: &str, min: f64, max: f64| -> Result<f64> {
            let v = get(key);
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| (min..=max).contains(x))
                .ok_or_else(|| {
                    SluiceError::Config(format!(
                        "SET '{key}' = '{v}': expected a number from {min} to {max}"
                    ))
                })
        };
        let kind = get("restart-strategy.type").trim().to_ascii_lowercase();
        let kind = match kind.as_str() {
            "" if checkpointing => "exponential-delay",
            "" => "none",
            k => k,
        };
        Ok(match kind {
            "none" | "off" | "disable" => RestartStrategy::None,
            "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay {
                attempts: count("restart-strategy.fixed-delay.attempts")?,
                delay: duration("restart-strategy.fixed-delay.delay")?,
            },
            "failure-rate" | "failurerate" => RestartStrategy::FailureRate {
                max_failures: count("restart-strategy.failure-rate.max-failures-per-interval")?,
                interval: duration("restart-strategy.failure-rate.failure-rate-interval")?,
                delay: duration("restart-strategy.failure-rate.delay")?,
            },
            "exponential-delay" | "exponentialdelay" => RestartStrategy::ExponentialDelay {
                initial: duration("restart-strategy.exponential-delay.initial-backoff")?,
                max: duration("restart-strategy.exponential-delay.max-backoff")?,
                multiplier: number(
                    "restart-strategy.exponential-delay.backoff-multiplier",
                    1.0,
                    f64::MAX,
                )?,
                reset_threshold: duration(
                    "restart-strategy.exponential-delay.reset-backoff-threshold",
                )?,
                jitter: number("restart-strategy.exponential-delay.jitter-factor", 0.0, 1.0)?,
                attempts: count(
                    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
                )?,
            },
            other => {
                return Err(SluiceError::Config(format!(
                    "SET 'restart-strategy.type' = '{other}': expected none, fixed-delay, failure-rate or exponential-delay"
                )))
            }
        })
    }

    /// Its name, as Flink's `restart-strategy.type`.
    pub fn name(&self) -> &'static str {
        match self {
            RestartStrategy::None => "none",
            RestartStrategy::FixedDelay { .. } => "fixed-delay",
            RestartStrategy::FailureRate { .. } => "failure-rate",
            RestartStrategy::ExponentialDelay { .. } => "exponential-delay",
        }
    }
}

/// The failures of one job so far, and when to restart after the next.
#[derive(Debug)]
pub struct Backoff {
    strategy: RestartStrategy,
    /// Failures counted by the strategy (since the last reset, for `exponential-delay`).
    failures: u64,
    /// When the failures of `failure-rate` happened, oldest first.
    times: VecDeque<Instant>,
    last: Option<Instant>,
    /// `exponential-delay`: the delay before the next restart, without jitter.
    current: Duration,
}

impl Backoff {
    pub fn new(strategy: RestartStrategy) -> Self {
        let current = match &strategy {
            RestartStrategy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        Backoff {
            strategy,
            failures: 0,
            times: VecDeque::new(),
            last: None,
            current,
        }
    }

    /// A failure at `now`: how long to wait before restarting, or `None` to fail the job.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let since_last = self.last.map(|l| now.saturating_duration_since(l));
        self.last = Some(now);
        match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                self.failures += 1;
                (self.failures <= *attempts).then_some(*delay)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.times.push_back(now);
                while self
                    .times
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > *interval)
                {
                    self.times.pop_front();
                }
                (self.times.len() as u64 <= *max_failures).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_threshold,
                jitter,
                attempts,
            } => {
                if since_last.is_some_and(|d| d >= *reset_threshold) {
                    self.failures = 0;
                    self.current = *initial;
                }
                self.failures += 1;
                if self.failures > *attempts {
                    return None;
                }
                let base = self.current.min(*max);
                self.current = base.mul_f64(*multiplier).min(*max);
                // Give or take `jitter` of the delay, so that jobs failing together do not
                // come back together.
                let unit = (random_u64() % 2001) as f64 / 1000.0 - 1.0;
                Some(base.mul_f64((1.0 + jitter * unit).max(0.0)))
            }
        }
    }
}

/// A random number (std's per-process random hash keys; no generator needed for jitter).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// What [`run_job_restarting`] tells about a failure.
pub struct Failure<'a> {
    pub error: &'a SluiceError,
    /// The delay before the restart, or `None` when the job fails for good.
    pub restart_in: Option<Duration>,
    /// Restarts so far, this one included.
    pub restarts: u64,
}

/// Runs `graph` (from `restored`, which `mode` found) and restarts it from its latest
/// complete checkpoint, or from where it started if none completed since, after each
/// failure its restart strategy allows. `on_failure` hears of every failure. A job that is
/// cancelled while it waits to restart ends as cancelled.
pub fn run_job_restarting(
    graph: &JobGraph,
    handle: &JobHandle,
    restored: Option<crate::checkpoint::storage::Restored>,
    mode: RestoreMode,
    on_failure: &mut dyn FnMut(Failure<'_>),
) -> Result<JobReport> {
    let mut backoff = Backoff::new(graph.restart.clone());
    let mut restored = restored;
    let mut mode = mode;
    let mut restarts = 0;
    loop {
        let start_id = restored.as_ref().map(|r| r.metadata.id).unwrap_or(0);
        let error = match run_job(graph, handle, restored.take()) {
            Ok(report) => return Ok(report),
            Err(e) => e,
        };
        if handle.cancel_requested() {
            return Err(error);
        }
        let restart_in = backoff.on_failure(Instant::now());
        if restart_in.is_some() {
            restarts += 1;
        }
        on_failure(Failure {
            error: &error,
            restart_in,
            restarts,
        });
        let Some(delay) = restart_in else {
            return Err(error);
        };
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if handle.cancel_requested() {
                return Err(error);
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        // A checkpoint that completed in the run that failed is where the next one starts.
        if handle.checkpoints.completed() > start_id {
            mode = RestoreMode::Latest;
        }
        restored = restore_point(graph, &graph.checkpoint, &mode)?;
        handle.reset_run();
        handle
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> String + 'a {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
                .or_else(|| {
                    RESTART_KEYS
                        .iter()
                        .find(|(key, _)| *key == k)
                        .map(|(_, v)| v.to_string())
                })
                .unwrap_or_default()
        }
    }

    #[test]
    fn the_default_depends_on_checkpoints() {
        let get = config(&[]);
        assert_eq!(
            RestartStrategy::from_config(&get, false).unwrap(),
            RestartStrategy::None
        );
        assert_eq!(
            RestartStrategy::from_config(&get, true).unwrap().name(),
            "exponential-delay"
        );
        let get = config(&[("restart-strategy.type", "bogus")]);
        let err = RestartStrategy::from_config(&get, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fixed-delay"), "{err}");
        let get = config(&[
            ("restart-strategy.type", "exponential-delay"),
            ("restart-strategy.exponential-delay.jitter-factor", "2"),
        ]);
        let err = RestartStrategy::from_config(&get, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("jitter-factor"), "{err}");
    }

    #[test]
    fn fixed_delay_restarts_so_many_times() {
        let get = config(&[
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.attempts", "2"),
            ("restart-strategy.fixed-delay.delay", "3 s"),
        ]);
        let mut b = Backoff::new(RestartStrategy::from_config(&get, false).unwrap());
        let now = Instant::now();
        assert_eq!(b.on_failure(now), Some(Duration::from_secs(3)));
        assert_eq!(b.on_failure(now), Some(Duration::from_secs(3)));
        assert_eq!(b.on_failure(now), None);
    }

    #[test]
    fn failure_rate_counts_the_failures_of_the_interval() {
        let mut b = Backoff::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        assert!(b.on_failure(t0).is_some());
        assert!(b.on_failure(t0 + Duration::from_secs(10)).is_some());
        assert!(b.on_failure(t0 + Duration::from_secs(20)).is_none());
        // A minute later the first two no longer count.
        assert!(b.on_failure(t0 + Duration::from_secs(75)).is_some());
    }

    #[test]
    fn exponential_delay_grows_to_its_maximum_and_resets() {
        let mut b = Backoff::new(RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            reset_threshold: Duration::from_secs(3600),
            jitter: 0.0,
            attempts: 10,
        });
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..5)
            .map(|i| b.on_failure(t0 + Duration::from_secs(i)).unwrap().as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        // An hour without a failure: back to the start.
        assert_eq!(
            b.on_failure(t0 + Duration::from_secs(4 + 3600)),
            Some(Duration::from_secs(1))
        );
        let mut jittered = Backoff::new(RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            reset_threshold: Duration::from_secs(3600),
            jitter: 0.1,
            attempts: 2,
        });
        let d = jittered.on_failure(t0).unwrap();
        assert!(
            d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
            "{d:?}"
        );
        assert!(jittered.on_failure(t0).is_some());
        assert!(jittered.on_failure(t0).is_none());
    }
}
