//! Bringing a state machine written by an earlier build up to this build's
//! derived rows.
//!
//! Layout 2 added two indexes that apply keeps: finished tasks by
//! (callback, state, finish time), and request ids by time. Data written
//! before them (layout 1, no [`keys::SM_LAYOUT`]) gets them here, once,
//! at open and after a snapshot install, before anything is applied. They
//! are derived from replicated rows only, so every replica derives the
//! same rows and digests stay equal.

use rocksdb::{WriteBatch, WriteOptions, DB};

use super::{cf, get_u64, keys, StoreError};
use crate::domain::{RequestRecord, Task};
use crate::encoding;

/// Add what layout 2 derives, if this state machine lacks it. Returns how
/// many index rows were written.
pub fn ensure(db: &DB) -> Result<u64, StoreError> {
    if get_u64(db, keys::SM_LAYOUT)? >= keys::LAYOUT {
        return Ok(0);
    }
    let sm = cf(db, keys::CF_SM)?;
    let mut batch = WriteBatch::default();
    let mut written = 0;
    for item in db.prefix_iterator_cf(sm, keys::TASK_PREFIX) {
        let (k, v) = item?;
        if !k.starts_with(&keys::TASK_PREFIX) {
            break;
        }
        let t: Task = encoding::decode(&v)?;
        if let Some(at) = t.finished_at_ms() {
            batch.put_cf(sm, keys::finished(&t.callback, t.state.code(), at, t.id), []);
            written += 1;
        }
    }
    for item in db.prefix_iterator_cf(sm, keys::REQUEST_PREFIX) {
        let (k, v) = item?;
        if !keys::is_request(&k) {
            break;
        }
        let record: RequestRecord = encoding::decode(&v)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[1..]);
        batch.put_cf(sm, keys::request_by_time(record.at_ms, &id), []);
        written += 1;
    }
    batch.put_cf(sm, keys::SM_LAYOUT, encoding::encode(&keys::LAYOUT));
    // Durable here: the derived rows and the layout mark, in one synced
    // write, before the state machine serves.
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)?;
    if written > 0 {
        tracing::info!(rows = written, "derived the finished and request-by-time indexes of an earlier build's data");
    }
    Ok(written)
}
