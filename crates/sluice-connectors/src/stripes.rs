//! A generated sequence of rows (`datagen`, `nexmark`) divided among the subtasks of a source
//! in stripes, with the positions that checkpoints keep and the dealing a restore at another
//! parallelism does.
//!
//! Row `k` of the whole sequence is a function of `k` (and the options), so a subtask only has
//! to know which indexes are its own: subtask `i` of `p` starts with the stripe `(i, p)`, rows
//! `i`, `i + p`, `i + 2p`, ...; after a rescale, the old stripes are dealt to the new subtasks.

use sluice_common::{Result, SluiceError};
use sluice_engine::{StateReader, StateWriter};

/// A split of the generated sequence: rows `offset`, `offset + stride`, `offset + 2 *
/// stride`, ... of the whole sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stripe {
    offset: u64,
    stride: u64,
    /// Rows of the stripe produced so far.
    produced: u64,
    /// Rows of the stripe still to produce (`None`: unbounded).
    remaining: Option<u64>,
}

impl Stripe {
    /// The whole stripe `(offset, stride)` of a sequence of `rows` rows (`None`: unbounded).
    fn new(offset: u64, stride: u64, rows: Option<u64>) -> Self {
        let len = rows.map(|n| n / stride + u64::from(offset < n % stride));
        Stripe {
            offset,
            stride,
            produced: 0,
            remaining: len,
        }
    }

    /// The index in the whole sequence of the next row.
    fn next_index(&self) -> u64 {
        self.offset + self.produced * self.stride
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    fn take(&mut self, n: u64) {
        self.produced += n;
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
        }
    }
}

/// The first field of a position that lists its stripes (Sluice 0.1's datagen wrote only the
/// number of rows produced).
const STRIPES_MAGIC: &str = "datagen-stripes-1";

/// The stripes one subtask produces.
#[derive(Debug, Clone)]
pub struct Stripes {
    stripes: Vec<Stripe>,
    /// Rows of the whole sequence (`None`: unbounded).
    rows: Option<u64>,
    subtask: u64,
    parallelism: u64,
}

impl Stripes {
    /// Subtask `subtask` of `parallelism`'s share of a sequence of `rows` rows.
    pub fn new(subtask: usize, parallelism: usize, rows: Option<u64>) -> Self {
        let (subtask, parallelism) = (subtask as u64, parallelism.max(1) as u64);
        Stripes {
            stripes: vec![Stripe::new(subtask, parallelism, rows)],
            rows,
            subtask,
            parallelism,
        }
    }

    /// True once every row of every stripe has been produced.
    pub fn done(&self) -> bool {
        self.stripes.iter().all(Stripe::done)
    }

    /// Rows produced so far by this subtask.
    pub fn produced(&self) -> u64 {
        self.stripes.iter().map(|s| s.produced).sum()
    }

    /// Takes the next `n` rows (fewer if the stripes end first) of this subtask's stripes,
    /// merged in the order of the whole sequence: after a restore at a lower parallelism, the
    /// rows of several stripes come out as the one sequence they are part of.
    pub fn next_indexes(&mut self, n: usize) -> Vec<u64> {
        if let [s] = self.stripes.as_mut_slice() {
            // One stripe (the usual case): a run of its indexes.
            let take = s.remaining.map_or(n as u64, |r| r.min(n as u64));
            let seq = (0..take).map(|k| s.next_index() + k * s.stride).collect();
            s.take(take);
            return seq;
        }
        let mut seq = Vec::with_capacity(n);
        while seq.len() < n {
            let Some(s) = self
                .stripes
                .iter_mut()
                .filter(|s| !s.done())
                .min_by_key(|s| s.next_index())
            else {
                break;
            };
            seq.push(s.next_index());
            s.take(1);
        }
        seq
    }

    /// Writes the position: each stripe's rows produced so far.
    pub fn write(&self, state: &mut StateWriter) {
        state.put_str(STRIPES_MAGIC);
        state.put_u64(self.stripes.len() as u64);
        for s in &self.stripes {
            state.put_u64(s.offset);
            state.put_u64(s.stride);
            state.put_u64(s.produced);
            state.put_u64(s.remaining.unwrap_or(u64::MAX));
        }
    }

    /// Goes on from a position this subtask wrote.
    pub fn restore(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.stripes = self.read(state, self.subtask, self.parallelism)?;
        Ok(())
    }

    /// Goes on from the positions of a run at another parallelism (`old` subtasks; `states`
    /// by old subtask index): every old subtask's unfinished stripes, in order of their
    /// offset, are dealt to the new subtasks in turn (a new subtask may get none, or several).
    pub fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let mut all = Vec::new();
        for (j, state) in states.iter_mut() {
            all.extend(self.read(state, *j as u64, old as u64)?);
        }
        all.retain(|s| !s.done());
        all.sort_by_key(|s| (s.offset, s.stride));
        self.stripes = all
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k as u64 % self.parallelism == self.subtask)
            .map(|(_, s)| s)
            .collect();
        Ok(())
    }

    /// The stripes a position lists; `subtask` and `parallelism` are those of the subtask
    /// that wrote it (a position of Sluice 0.1 is its one stripe's row count).
    fn read(
        &self,
        state: &mut StateReader<'_>,
        subtask: u64,
        parallelism: u64,
    ) -> Result<Vec<Stripe>> {
        if state.clone().str().ok() != Some(STRIPES_MAGIC) {
            let mut stripe = Stripe::new(subtask, parallelism, self.rows);
            stripe.produced = state.u64()?;
            stripe.remaining = stripe.remaining.map(|r| r.saturating_sub(stripe.produced));
            return Ok(vec![stripe]);
        }
        state.str()?;
        let mut out = Vec::new();
        for _ in 0..state.count()? {
            let (offset, stride, produced, remaining) =
                (state.u64()?, state.u64()?, state.u64()?, state.u64()?);
            if stride == 0 {
                return Err(SluiceError::Runtime(
                    "a generator position with a stride of 0 is corrupt".into(),
                ));
            }
            out.push(Stripe {
                offset,
                stride,
                produced,
                remaining: (remaining != u64::MAX).then_some(remaining),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index a set of stripes still produces.
    fn indexes(stripes: &[Stripe]) -> Vec<u64> {
        let mut out: Vec<u64> = stripes
            .iter()
            .flat_map(|s| {
                (0..s.remaining.unwrap_or(0)).map(move |k| s.offset + (s.produced + k) * s.stride)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn stripes_cover_the_sequence_once() {
        for p in 1..5 {
            let stripes: Vec<Stripe> = (0..p).map(|i| Stripe::new(i, p, Some(10))).collect();
            assert_eq!(indexes(&stripes), (0..10).collect::<Vec<_>>(), "p = {p}");
        }
        let mut s = Stripe::new(1, 3, Some(10));
        assert_eq!(s.remaining, Some(3));
        s.take(2);
        assert_eq!(s.remaining, Some(1));
        assert_eq!(s.next_index(), 7);
        assert_eq!(Stripe::new(0, 2, None).remaining, None);
    }

    #[test]
    fn several_stripes_come_out_as_one_sequence() {
        let mut g = Stripes::new(0, 1, Some(10));
        g.stripes = vec![Stripe::new(1, 2, Some(10)), Stripe::new(0, 2, Some(10))];
        g.stripes[1].take(2);
        assert_eq!(g.next_indexes(3), vec![1, 3, 4]);
        assert_eq!(g.next_indexes(100), vec![5, 6, 7, 8, 9]);
        assert!(g.done());
        g.stripes = vec![Stripe::new(1, 3, Some(10))];
        assert_eq!(g.next_indexes(2), vec![1, 4]);
        assert_eq!(g.next_indexes(5), vec![7]);
        assert!(g.done());
    }

    #[test]
    fn positions_restore_at_the_same_and_at_other_parallelisms() {
        // Two subtasks of 10 rows; the first produced 2 rows, the second 4.
        let mut a = Stripes::new(0, 2, Some(10));
        let mut b = Stripes::new(1, 2, Some(10));
        assert_eq!(a.next_indexes(2), vec![0, 2]);
        assert_eq!(b.next_indexes(4), vec![1, 3, 5, 7]);
        let (mut wa, mut wb) = (StateWriter::default(), StateWriter::default());
        a.write(&mut wa);
        b.write(&mut wb);
        let (da, db) = (wa.finish(), wb.finish());
        let mut same = Stripes::new(1, 2, Some(10));
        same.restore(&mut StateReader::new(&db, "test")).unwrap();
        assert_eq!(same.next_indexes(10), vec![9]);
        // At parallelism 1, one subtask goes on with both.
        let mut one = Stripes::new(0, 1, Some(10));
        let mut states = vec![
            (0, StateReader::new(&da, "test")),
            (1, StateReader::new(&db, "test")),
        ];
        one.restore_rescaled(2, &mut states).unwrap();
        assert_eq!(one.next_indexes(10), vec![4, 6, 8, 9]);
        // At parallelism 3, the third subtask gets nothing.
        let mut third = Stripes::new(2, 3, Some(10));
        let mut states = vec![
            (0, StateReader::new(&da, "test")),
            (1, StateReader::new(&db, "test")),
        ];
        third.restore_rescaled(2, &mut states).unwrap();
        assert!(third.done());
    }
}
