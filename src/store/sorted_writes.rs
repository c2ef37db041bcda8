//! The rows one applied batch writes, kept in key order until the batch is
//! written.
//!
//! RocksDB inserts a write batch into its memtable (a skip list) in the
//! order the batch holds its rows, and an insert next to the previous one
//! reuses most of that search. Apply produces rows in command order, which
//! interleaves half a dozen key families (task rows, payloads, queue and
//! state index entries, request ids) and so pays a full search per row.
//! Emitting the rows sorted makes consecutive inserts neighbours. The last
//! write of a key wins, as it would in the write batch, so the state written
//! is the same.

use std::collections::BTreeMap;

use rocksdb::{ColumnFamily, WriteBatch};

/// Puts (`Some`) and deletes (`None`) of one column family, by key.
#[derive(Default)]
pub struct SortedWrites {
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl SortedWrites {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.rows.insert(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.rows.insert(key.into(), None);
    }

    /// A put of `value`, or a delete if it is `None`.
    pub fn set(&mut self, key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) {
        self.rows.insert(key.into(), value);
    }

    /// The write batch, rows in key order, all in `cf`.
    pub fn into_write_batch(self, cf: &ColumnFamily) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.rows {
            match value {
                Some(value) => batch.put_cf(cf, key, value),
                None => batch.delete_cf(cf, key),
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last write of a key is the one kept, whatever came before it.
    #[test]
    fn the_last_write_of_a_key_wins() {
        let mut w = SortedWrites::default();
        w.put(b"b".to_vec(), b"1".to_vec());
        w.delete(b"b".to_vec());
        w.put(b"a".to_vec(), b"1".to_vec());
        w.put(b"a".to_vec(), b"2".to_vec());
        w.delete(b"c".to_vec());
        w.set(b"c".to_vec(), Some(b"3".to_vec()));
        let rows: Vec<_> = w.rows.into_iter().collect();
        assert_eq!(
            rows,
            vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None), (b"c".to_vec(), Some(b"3".to_vec())),]
        );
    }
}
