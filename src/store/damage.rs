//! The damage alarm: set the first time this node's storage reports
//! damaged data while it runs (a RocksDB block or WAL checksum, a record
//! that fails drover's seal or does not decode), wherever it was read: the
//! Raft log, the vote, the state machine, a client's read. The node then
//! stops (fail-stop, exit code 65): it must not go on voting or
//! acknowledging from storage that lost data. Never skipped, never retried.

use std::sync::Arc;

use tokio::sync::watch;

use super::StoreError;

/// Cheap to clone; every clone sees the same alarm.
#[derive(Clone)]
pub struct Damage {
    /// The first damage seen, with where it was read.
    found: Arc<watch::Sender<Option<String>>>,
}

impl Default for Damage {
    fn default() -> Self {
        Damage { found: Arc::new(watch::channel(None).0) }
    }
}

impl std::fmt::Debug for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Damage").field(&*self.found.borrow()).finish()
    }
}

impl Damage {
    /// Raise the alarm if `e` says the data is damaged; `what` says where.
    pub fn note(&self, what: &str, e: &StoreError) {
        if e.is_damage() {
            self.raise(format!("{what}: {e}"));
        }
    }

    /// [`Damage::note`] for errors already converted to `io::Error` (the
    /// Raft storage traits): damage is `InvalidData` there.
    pub fn note_io(&self, what: &str, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::InvalidData {
            self.raise(format!("{what}: {e}"));
        }
    }

    fn raise(&self, cause: String) {
        let first = self.found.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(cause.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::error!(cause = %cause, "damaged data found while running: this node stops");
        }
    }

    /// The first damage seen, if any.
    pub fn found(&self) -> Option<String> {
        self.found.borrow().clone()
    }

    /// Resolves once damage is seen.
    pub async fn wait(&self) -> String {
        let mut rx = self.found.subscribe();
        loop {
            if let Some(cause) = rx.borrow_and_update().clone() {
                return cause;
            }
            // The sender lives as long as `self`: this cannot end.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn damage_raises_the_alarm_once_and_io_failures_do_not() {
        let d = Damage::default();
        d.note("reading", &StoreError::Io(std::io::Error::other("disk full")));
        assert_eq!(d.found(), None);
        let checksum = StoreError::Codec(crate::encoding::CodecError::Checksum { stored: 1, computed: 2 });
        // The waiter is polled first (and waits), then the alarm is raised.
        let (cause, ()) = tokio::join!(d.wait(), async {
            d.note("log entry 7", &checksum);
            d.note("later", &StoreError::Damaged("x".into()));
        });
        assert!(cause.starts_with("log entry 7"), "{cause}");
        assert_eq!(d.found(), Some(cause));
    }
}
