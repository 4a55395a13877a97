//! Where a node's records become durable: the driver applies the write
//! batches the core emits (see `Node::poll_write`) and hands the stored rows
//! back on start. [`MemoryStore`] serves the simulator and tests,
//! [`RedbStore`] the real node (an embedded, crash-safe database file);
//! [`shown`] is where the front end records what it has shown.

pub mod shown;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::message::MessageId;
use crate::node::Node;
use crate::wire::records::{self, Op, Snapshot, Table, WriteBatch};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("store: {0}")]
    Db(String),
    /// The database file is damaged beyond what it can read.
    #[error(
        "{0} is damaged and cannot be opened; move it aside (the node then starts empty) or restore a copy"
    )]
    Damaged(String),
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Db(e.into().to_string())
    }
}

/// Where a node keeps what it must not lose.
pub trait Store: Send {
    /// Apply `batch` atomically and durably.
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError>;
    /// Everything stored.
    fn load(&self) -> Result<Snapshot, StoreError>;
}

/// Make every pending write batch of `node` durable in `store`, reporting
/// each back. Returns how many batches were written; on a failure the node
/// is told and the error returned (the batch will be emitted again).
pub fn commit(node: &mut Node, store: &mut dyn Store) -> Result<usize, StoreError> {
    let mut n = 0;
    while let Some(batch) = node.poll_write() {
        match store.apply(&batch) {
            Ok(()) => {
                node.handle_written(batch.id);
                n += 1;
            }
            Err(e) => {
                node.handle_write_failed(batch.id);
                return Err(e);
            }
        }
    }
    Ok(n)
}

/// A store in memory: for the simulator and tests.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Batches applied so far.
    pub batches: u64,
}

impl Store for MemoryStore {
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        for op in &batch.ops {
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
        self.batches += 1;
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

fn definition(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

/// A store in a redb database file: each batch is one durable transaction,
/// so a crash at any moment keeps every applied batch.
pub struct RedbStore {
    db: Arc<Database>,
}

fn apply_to(db: &Database, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.ops.is_empty() {
        return Ok(());
    }
    let tx = db.begin_write()?;
    for op in &batch.ops {
        match op {
            Op::Put(t, k, v) => {
                tx.open_table(definition(*t))?.insert(&k[..], &v[..])?;
            }
            Op::Delete(t, k) => {
                tx.open_table(definition(*t))?.remove(&k[..])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

impl RedbStore {
    /// Open (or create) the database at `path`. Fails if another process
    /// has it open, or (with [`StoreError::Damaged`]) if the file is
    /// damaged: redb panics on some truncated or extended files, and that
    /// panic is caught here and reported instead.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let open = || -> Result<Database, StoreError> {
            let db = Database::create(path)?;
            let tx = db.begin_write()?;
            for t in Table::ALL {
                tx.open_table(definition(t))?;
            }
            tx.commit()?;
            Ok(db)
        };
        // The panic is reported as an error, not printed as a crash.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
        std::panic::set_hook(hook);
        match result {
            Ok(db) => Ok(RedbStore { db: Arc::new(db?) }),
            Err(_) => Err(StoreError::Damaged(path.display().to_string())),
        }
    }

    /// Record `ids` as shown (the `Shown` table), durably.
    pub fn mark_shown(&self, ids: &[MessageId]) -> Result<(), StoreError> {
        apply_to(
            &self.db,
            &WriteBatch {
                id: 0,
                ops: records::shown_ops(ids),
            },
        )
    }

    /// Another handle on the same database, for the front end's thread.
    pub fn handle(&self) -> RedbStore {
        RedbStore {
            db: Arc::clone(&self.db),
        }
    }
}

impl Store for RedbStore {
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        apply_to(&self.db, batch)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let read = || -> Result<Snapshot, StoreError> {
            let tx = self.db.begin_read()?;
            let mut out = Snapshot::new();
            for t in Table::ALL {
                let table = tx.open_table(definition(t))?;
                let mut rows = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    rows.push((k.value().to_vec(), v.value().to_vec()));
                }
                out.insert(t, rows);
            }
            Ok(out)
        };
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
        std::panic::set_hook(hook);
        result.unwrap_or_else(|_| Err(StoreError::Damaged("the database".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &mut dyn Store) {
        store
            .apply(&WriteBatch {
                id: 1,
                ops: vec![
                    Op::Put(Table::Held, vec![1], vec![10]),
                    Op::Put(Table::Held, vec![2], vec![20]),
                    Op::Put(Table::Meta, b"contacts".to_vec(), vec![7]),
                ],
            })
            .unwrap();
        store
            .apply(&WriteBatch {
                id: 2,
                ops: vec![
                    Op::Delete(Table::Held, vec![1]),
                    Op::Put(Table::Held, vec![2], vec![21]),
                ],
            })
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
    fn a_damaged_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comm.redb");
        {
            let mut store = RedbStore::open(&path).unwrap();
            exercise(&mut store);
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len.min(4096)).unwrap();
        drop(f);
        assert!(matches!(
            RedbStore::open(&path),
            Err(StoreError::Damaged(_))
        ));
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
