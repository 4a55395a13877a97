//! What the front end has shown, recorded so that a message is shown once
//! even across a crash.
//!
//! The node hands received messages to the front end; the front end must
//! record that it showed them, and the record and the screen cannot change
//! in one step. The order is chosen so that the gap is two consecutive
//! system calls on one thread: the ids are appended to a small log file
//! (one `write`, which a killed process cannot undo, since the page cache
//! outlives it), then the text is written to the terminal, then the ids are
//! made durable in the database and the log is emptied when it grows. On
//! start, ids left in the log are moved into the database before the node
//! is restored. A `kill -9` can therefore cost a message its display only
//! in the microseconds between the two writes (it stays in the inbox), and
//! shows none twice; a power loss before the database commit may show a
//! message again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::{RedbStore, StoreError};
use crate::message::MessageId;

/// Log size beyond which it is emptied (its ids are in the database).
const COMPACT_AT: u64 = 64 << 10;

/// Records what the front end shows.
pub trait ShownLog: Send {
    /// About to show `ids`: record it at once (before the screen changes).
    fn showing(&mut self, ids: &[MessageId]) -> Result<(), StoreError>;
    /// `ids` are on the screen: make the record durable.
    fn shown(&mut self, ids: &[MessageId]) -> Result<(), StoreError>;
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Db(format!("shown log: {e}"))
}

/// The real node's log: an append-only file beside the database.
pub struct FileShownLog {
    file: File,
    db: RedbStore,
}

impl FileShownLog {
    /// Open (or create) the log at `path`, committing to `db`.
    pub fn open(path: &Path, db: RedbStore) -> Result<FileShownLog, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(FileShownLog { file, db })
    }
}

impl ShownLog for FileShownLog {
    fn showing(&mut self, ids: &[MessageId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        // One write: all or (if the process dies first) nothing.
        self.file.write_all(&bytes).map_err(io)
    }

    fn shown(&mut self, ids: &[MessageId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.db.mark_shown(ids)?;
        let len = self.file.metadata().map_err(io)?.len();
        if len >= COMPACT_AT {
            // Everything logged so far was committed by this thread.
            self.file.set_len(0).map_err(io)?;
        }
        Ok(())
    }
}

/// Move the ids left in the log at `path` (if any) into `db`, durably,
/// then empty the log. Call on start, before the node is restored.
pub fn absorb(path: &Path, db: &RedbStore) -> Result<usize, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    }
    // A torn last record (a crash mid-append) is ignored.
    let ids: Vec<MessageId> = bytes
        .chunks_exact(20)
        .filter_map(|c| <[u8; 20]>::try_from(c).ok().map(MessageId))
        .collect();
    db.mark_shown(&ids)?;
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .map_err(io)?;
    Ok(ids.len())
}

impl ShownLog for super::MemoryStore {
    fn showing(&mut self, ids: &[MessageId]) -> Result<(), StoreError> {
        super::Store::apply(
            self,
            &crate::wire::records::WriteBatch {
                id: 0,
                ops: crate::wire::records::shown_ops(ids),
            },
        )
    }

    fn shown(&mut self, _: &[MessageId]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::wire::records::Table;

    #[test]
    fn logged_ids_reach_the_database_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = RedbStore::open(&dir.path().join("comm.redb")).unwrap();
        let path = dir.path().join("shown.log");
        let mut log = FileShownLog::open(&path, db.handle()).unwrap();
        log.showing(&[MessageId([1; 20]), MessageId([2; 20])])
            .unwrap();
        // The process dies here: shown on screen, not yet in the database.
        drop(log);
        assert!(db.load().unwrap()[&Table::Shown].is_empty());
        assert_eq!(absorb(&path, &db).unwrap(), 2);
        assert_eq!(db.load().unwrap()[&Table::Shown].len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(absorb(&path, &db).unwrap(), 0);
    }
}
