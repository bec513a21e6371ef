//! PostgreSQL's logical replication messages (the `pgoutput` plugin, protocol version 1), as
//! `pg_logical_slot_peek_binary_changes` returns them: one message a row. Only what a
//! change data capture source needs is read: transactions, relations and their row changes.

use std::fmt;

/// A column's value in a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change (the update does not carry it).
    Unchanged,
    /// The value in PostgreSQL's text form.
    Text(String),
}

/// A column of a relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the key an update or delete names the row by).
    pub key: bool,
}

/// A table as the stream describes it before its first change.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// The row before an update or delete, as the table's replica identity gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum OldRow {
    /// Only the key columns (`REPLICA IDENTITY DEFAULT` or `USING INDEX`); the others null.
    Key(Vec<Datum>),
    /// The whole row (`REPLICA IDENTITY FULL`).
    Full(Vec<Datum>),
}

/// One message of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        /// When the transaction committed: microseconds since 2000-01-01 (PostgreSQL's epoch).
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        /// `None` when the key did not change and the identity is not `FULL`.
        old: Option<OldRow>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: OldRow,
    },
    /// Anything else (types, origins, truncates, logical messages): nothing to a table.
    Other(u8),
}

/// Why a message cannot be read.
#[derive(Debug, PartialEq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                Malformed(format!(
                    "{n} bytes wanted at offset {} of {}",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, Malformed> {
        let rest = &self.bytes[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Malformed("a string without its end".into()))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, Malformed> {
        let n = self.u16()? as usize;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Datum::Text(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                other => {
                    return Err(Malformed(format!(
                        "a column of kind '{}' (only text is asked for)",
                        other as char
                    )))
                }
            });
        }
        Ok(values)
    }
}

/// Reads one message.
pub fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { bytes, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => {
            let final_lsn = r.u64()?;
            let commit_time = r.u64()? as i64;
            let xid = r.u32()?;
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            Message::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _modifier = r.u32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(Malformed(format!("an insert with '{}'", other as char))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                let row = r.tuple()?;
                old = Some(if kind == b'K' {
                    OldRow::Key(row)
                } else {
                    OldRow::Full(row)
                });
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(Malformed(format!("an update with '{}'", kind as char)));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            let row = r.tuple()?;
            Message::Delete {
                relation,
                old: match kind {
                    b'K' => OldRow::Key(row),
                    b'O' => OldRow::Full(row),
                    other => return Err(Malformed(format!("a delete with '{}'", other as char))),
                },
            }
        }
        other => Message::Other(other),
    })
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// An LSN in PostgreSQL's form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A snapshot as `pg_current_snapshot()` writes it (`xmin:xmax:xip,...`): which transactions
/// its reads saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub in_progress: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next() {
            Some(list) if !list.is_empty() => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
            _ => vec![],
        };
        Some(Snapshot {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// True if transaction `xid` (32 bits, as the stream names it) committed before the
    /// snapshot was taken, so that its changes are in what the snapshot read.
    pub fn saw(&self, xid: u32) -> bool {
        // The 64-bit id: the epoch of xmin, or the next one when the 32 bits wrapped.
        let epoch = self.xmin >> 32;
        let mut full = (epoch << 32) | xid as u64;
        if full + (1 << 31) < self.xmin {
            full += 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.in_progress.contains(&full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(t) => {
                    b.push(b't');
                    b.extend((t.len() as u32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn messages_are_read() {
        let mut begin = vec![b'B'];
        begin.extend(0x1_0000_0020u64.to_be_bytes());
        begin.extend(0u64.to_be_bytes());
        begin.extend(745u32.to_be_bytes());
        assert_eq!(
            parse(&begin),
            Ok(Message::Begin {
                final_lsn: 0x1_0000_0020,
                commit_time: 0,
                xid: 745
            })
        );

        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0accounts\0");
        rel.push(b'd');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(23u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"owner\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        let Ok(Message::Relation(r)) = parse(&rel) else {
            panic!("{:?}", parse(&rel))
        };
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("public", "accounts")
        );
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 25);

        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'O');
        update.extend(tuple(&[Some("1"), Some("ann")]));
        update.push(b'N');
        update.extend(tuple(&[Some("1"), None]));
        assert_eq!(
            parse(&update),
            Ok(Message::Update {
                relation: 16384,
                old: Some(OldRow::Full(vec![
                    Datum::Text("1".into()),
                    Datum::Text("ann".into())
                ])),
                new: vec![Datum::Text("1".into()), Datum::Null],
            })
        );
        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("1"), None]));
        assert!(matches!(
            parse(&delete),
            Ok(Message::Delete {
                old: OldRow::Key(_),
                ..
            })
        ));
        // Cut short: said, not a panic.
        assert!(parse(&update[..update.len() - 2]).is_err());
        assert_eq!(parse(b"T\0\0"), Ok(Message::Other(b'T')));
    }

    #[test]
    fn lsns_and_snapshots() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
        let s = Snapshot::parse("100:105:101,103").unwrap();
        assert!(s.saw(99) && s.saw(100) && s.saw(102) && s.saw(104));
        assert!(!s.saw(101) && !s.saw(103) && !s.saw(105) && !s.saw(200));
        // Past the 32 bits: xid 5 of epoch 1 is after xmin near the end of epoch 0.
        let s = Snapshot::parse(&format!("{}:{}:", 0xffff_fff0u64, 0x1_0000_0010u64)).unwrap();
        assert!(s.saw(0xffff_fff5) && s.saw(5) && !s.saw(0x20));
    }
}
