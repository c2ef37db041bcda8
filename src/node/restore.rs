//! Restoring a backup into a brand-new cluster.
//!
//! 1. `drover admin restore --in FILE --data-dir DIR` checks the backup and
//!    places it in `DIR/restore/backup.snap` (refusing a used data dir).
//! 2. `drover server --id N --data-dir DIR --bootstrap` (alone) starts a
//!    one-node cluster which, once leader, imports the backup through Raft
//!    in ~1 MiB `Import` entries, then renames the file `.imported`. Client
//!    writes get `UNAVAILABLE` until the import is done.
//! 3. More nodes join with `drover cluster add-node`; they catch up from the
//!    log or a snapshot like any new node, so every replica holds the data.
//!
//! Importing through the log (rather than copying files into every data
//! dir) keeps one rule true: a replica's state is what its log says.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::consensus::clock::ProposerClock;
use crate::consensus::Consensus;
use crate::domain::{Command, Operation};
use crate::raft::snapshot;
use crate::store::keys;

const PENDING: &str = "restore/backup.snap";
/// Bytes of records per `Import` entry.
const CHUNK_BYTES: usize = 1 << 20;

/// The backup waiting to be imported into this data dir, if any.
pub fn pending(data_dir: &Path) -> Option<PathBuf> {
    let p = data_dir.join(PENDING);
    p.exists().then_some(p)
}

/// Step 1: check `backup` and place it in a fresh `data_dir`. `progress`
/// hears `(phase, bytes done, bytes in all)` as it goes: "checking" reads
/// every record, "copying" writes the file (then fsyncs it).
pub fn prepare(backup: &Path, data_dir: &Path, progress: &mut dyn FnMut(&'static str, u64, u64)) -> Result<(), String> {
    use std::io::{Read, Write};
    let size = std::fs::metadata(backup).map_err(|e| format!("{}: {e}", backup.display()))?.len();
    let mut checked = 0u64;
    snapshot::read_records(backup, |k, v| {
        checked += (k.len() + v.len()) as u64;
        progress("checking", checked.min(size), size);
        Ok(())
    })
    .map_err(|e| format!("{}: not a valid drover backup: {e}", backup.display()))?;
    if data_dir.exists() && std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(format!("{} is not empty: restore into a new, empty data dir", data_dir.display()));
    }
    let target = data_dir.join(PENDING);
    let parent = target.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let mut copy = || -> std::io::Result<()> {
        let mut from = std::fs::File::open(backup)?;
        let mut to = std::fs::File::create(&target)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
            copied += n as u64;
            progress("copying", copied, size);
        }
        to.sync_all()?;
        std::fs::File::open(parent)?.sync_all()
    };
    copy().map_err(|e| format!("copying to {}: {e}", target.display()))
}

/// Step 2, on the node: import once this node leads.
pub struct Importer {
    pub consensus: Consensus,
    pub clock: ProposerClock,
}

impl Importer {
    pub async fn run(self, path: PathBuf, stop: CancellationToken) {
        let mut leadership = self.consensus.watch();
        while !leadership.current().ready {
            tokio::select! {
                _ = stop.cancelled() => return,
                alive = leadership.changed() => if !alive { return },
            }
        }
        tracing::info!(path = %path.display(), "importing the backup");
        match self.import_file(&path).await {
            Ok(records) => {
                let done = path.with_extension("snap.imported");
                if let Err(e) = std::fs::rename(&path, &done) {
                    tracing::error!(error = %e, "renaming the imported backup; it would be imported again on restart");
                }
                self.consensus.finish_restore();
                tracing::info!(records, "backup imported; accepting writes");
            }
            Err(e) => tracing::error!(error = %e, "importing the backup failed; restart the node to retry"),
        }
    }

    async fn import_file(&self, path: &Path) -> Result<usize, String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>>(2);
        let p = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let (mut chunk, mut bytes) = (Vec::new(), 0usize);
            snapshot::read_records(&p, |k, v| {
                if keys::is_raft_state(k) {
                    return Ok(());
                }
                bytes += k.len() + v.len();
                chunk.push((serde_bytes::ByteBuf::from(k.to_vec()), serde_bytes::ByteBuf::from(v.to_vec())));
                if bytes >= CHUNK_BYTES {
                    bytes = 0;
                    let _ = tx.blocking_send(std::mem::take(&mut chunk));
                }
                Ok(())
            })?;
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
            Ok::<_, crate::store::StoreError>(())
        });
        let mut total = 0;
        while let Some(records) = rx.recv().await {
            total += records.len();
            let cmd = Command { stamped_at_ms: self.clock.stamp(), operation: Operation::Import { records } };
            self.consensus.propose(cmd).await.map_err(|e| e.to_string())?;
        }
        reader.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Ok(total)
    }
}
