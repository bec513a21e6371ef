//! Producer ids for idempotent producers: unique across restarts, handed out from blocks
//! reserved durably in `<data_dir>/producer-ids` (the next free id is written, fsynced, before
//! any id of a block is given out).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

const BLOCK: i64 = 1000;

/// Hands out producer ids.
pub struct ProducerIds {
    path: PathBuf,
    /// (next id to give, first id not reserved).
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Opens the id file in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<ProducerIds> {
        let path = data_dir.join("producer-ids");
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIds {
            path,
            state: Mutex::new((next, next)),
        })
    }

    /// A new producer id.
    pub fn next(&self) -> std::io::Result<i64> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.0 >= st.1 {
            let reserved = st.1 + BLOCK;
            let tmp = self.path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(reserved.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            st.1 = reserved;
        }
        let id = st.0;
        st.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.next().unwrap()).collect();
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        let second = b.next().unwrap();
        assert_eq!(first, vec![0, 1, 2]);
        assert!(second > 2);
    }
}
