//! Persistence: what a node must not lose in a crash.
//!
//! The node describes changes as [`Op`]s and hands them to a [`Store`] in one
//! batch; a batch is durable when `apply` returns. [`MemoryStore`] serves the
//! simulator and tests, [`RedbStore`] the real node (an embedded, crash-safe
//! database file). Records are protobuf messages from `proto/store.proto`.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

/// Which collection a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Messages held for relaying.
    Held,
    /// Acks routed towards senders.
    Acks,
    /// Acks kept to answer late copies.
    Tombstones,
    /// Messages we sent.
    Outbox,
    /// Ids of messages we received.
    Inbox,
    /// Single-record tables (the routing-table snapshot).
    Meta,
}

impl Table {
    const ALL: [Table; 6] = [
        Table::Held,
        Table::Acks,
        Table::Tombstones,
        Table::Outbox,
        Table::Inbox,
        Table::Meta,
    ];

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Held => "held",
            Table::Acks => "acks",
            Table::Tombstones => "tombstones",
            Table::Outbox => "outbox",
            Table::Inbox => "inbox",
            Table::Meta => "meta",
        })
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace `key` in a table.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove `key` from a table.
    Delete(Table, Vec<u8>),
}

/// Everything stored, by table, key order.
pub type Snapshot = BTreeMap<Table, Vec<(Vec<u8>, Vec<u8>)>>;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("store: {0}")]
    Db(String),
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Db(e.into().to_string())
    }
}

/// Where a node keeps what it must not lose.
pub trait Store: Send {
    /// Apply `ops` atomically and durably.
    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError>;
    /// Everything stored.
    fn load(&self) -> Result<Snapshot, StoreError>;
}

/// A store in memory: for the simulator and tests.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Store for MemoryStore {
    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    self.tables
                        .entry(*t)
                        .or_default()
                        .insert(k.clone(), v.clone());
                }
                Op::Delete(t, k) => {
                    if let Some(table) = self.tables.get_mut(t) {
                        table.remove(k);
                    }
                }
            }
        }
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self
            .tables
            .iter()
            .map(|(t, rows)| {
                let rows = rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (*t, rows)
            })
            .collect())
    }
}

/// A store in a redb database file: each `apply` is one durable
/// transaction, so a crash at any moment keeps every applied batch.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Open (or create) the database at `path`. Fails if another process
    /// has it open.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for t in Table::ALL {
            tx.open_table(t.definition())?;
        }
        tx.commit()?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    tx.open_table(t.definition())?.insert(&k[..], &v[..])?;
                }
                Op::Delete(t, k) => {
                    tx.open_table(t.definition())?.remove(&k[..])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Snapshot::new();
        for t in Table::ALL {
            let table = tx.open_table(t.definition())?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            out.insert(t, rows);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &mut dyn Store) {
        store
            .apply(&[
                Op::Put(Table::Held, vec![1], vec![10]),
                Op::Put(Table::Held, vec![2], vec![20]),
                Op::Put(Table::Meta, b"contacts".to_vec(), vec![7]),
            ])
            .unwrap();
        store
            .apply(&[
                Op::Delete(Table::Held, vec![1]),
                Op::Put(Table::Held, vec![2], vec![21]),
            ])
            .unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap[&Table::Held], vec![(vec![2], vec![21])]);
        assert_eq!(snap[&Table::Meta], vec![(b"contacts".to_vec(), vec![7])]);
    }

    #[test]
    fn memory_store_applies_batches() {
        exercise(&mut MemoryStore::default());
    }

    #[test]
    fn redb_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comm.redb");
        {
            let mut store = RedbStore::open(&path).unwrap();
            exercise(&mut store);
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.load().unwrap()[&Table::Held],
            vec![(vec![2], vec![21])]
        );
    }
}
