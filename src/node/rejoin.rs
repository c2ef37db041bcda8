//! A node whose data was damaged comes back empty, under a new node id.
//!
//! `drover admin rejoin --data-dir DIR` (the operator's one command) asks
//! the cluster to replace the damaged node (`Cluster.ReplaceNode`: its id is
//! retired, a new id is allocated and added as a learner at the same
//! address; the leader makes it a voter in the old one's place once it has
//! caught up), then calls [`prepare`] here: the damaged files move aside
//! into `DIR/damaged-<unix time>/`, and the data dir is claimed by the new
//! id, with a marker ([`MARKER`]) saying which id it replaces.
//!
//! The node is then started again with its usual command, even one that
//! still says `--id OLD` (a supervisor's unit, a container's command):
//! [`identity`] runs it as the new id, and never lets it bootstrap a
//! cluster. It starts empty, so it cannot vote or acknowledge from state it
//! lost; it learns everything from the others (by snapshot when the log
//! it needs was purged).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NodeError;
use crate::config::NodeConfig;

/// The file in a data dir rebuilt by `drover admin rejoin`.
pub const MARKER: &str = "rejoin.json";

/// What the marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejoined {
    /// The damaged node's id (retired).
    pub replaces: u64,
    /// The id this data dir belongs to now.
    pub id: u64,
    /// Ids this data dir had before `replaces` (rejoined more than once):
    /// a node started with any of them runs as `id`.
    #[serde(default)]
    pub former: Vec<u64>,
}

fn data_dir_error(dir: &Path, message: String) -> NodeError {
    NodeError::DataDir { path: dir.display().to_string(), message }
}

/// The marker of `dir`, if it was rebuilt by `drover admin rejoin`.
pub fn marker(dir: &Path) -> Result<Option<Rejoined>, NodeError> {
    let path = dir.join(MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| data_dir_error(dir, format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(data_dir_error(dir, format!("{}: {e}", path.display()))),
    }
}

/// The configuration to run: a rebuilt data dir runs under its new id
/// (whether `--id` names the old id or the new one), and never bootstraps.
pub fn identity(mut config: NodeConfig) -> Result<NodeConfig, NodeError> {
    let Some(r) = marker(&config.data_dir)? else { return Ok(config) };
    if config.id == r.replaces || r.former.contains(&config.id) {
        tracing::info!(
            replaces = r.replaces,
            id = r.id,
            "this data dir was rebuilt by `drover admin rejoin`: node {} runs as node {}",
            r.replaces,
            r.id
        );
        config.id = r.id;
    } else if config.id != r.id {
        return Err(data_dir_error(
            &config.data_dir,
            format!(
                "it was node {}'s and was rebuilt by `drover admin rejoin` for node {}; start it with --id {} (or --id {})",
                r.replaces, r.id, r.id, r.replaces
            ),
        ));
    }
    if config.bootstrap {
        tracing::info!("--bootstrap ignored: this data dir rejoins an existing cluster");
        config.bootstrap = false;
    }
    Ok(config)
}

/// Move everything in `dir` (but earlier `damaged-*` dirs) into
/// `dir/damaged-<unix time>/`, then claim `dir` for node `id`, which
/// replaces node `replaces`. Each step is durable before the next; run
/// again after a crash, it finishes the job. Returns where the damaged
/// files went (`None` if there were none).
pub fn prepare(dir: &Path, replaces: u64, id: u64) -> std::io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // The marker is written last: if it is there, this was done already.
    let earlier = marker(dir).ok().flatten();
    if earlier.as_ref().is_some_and(|m| m.replaces == replaces && m.id == id) {
        return Ok(None);
    }
    let mut former = earlier.map(|m| [m.former, vec![m.replaces]].concat()).unwrap_or_default();
    former.retain(|f| *f != replaces);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut aside = dir.join(format!("damaged-{stamp}"));
    for n in 1.. {
        if !aside.exists() {
            break;
        }
        aside = dir.join(format!("damaged-{stamp}-{n}"));
    }
    let mut moved = false;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("damaged-") {
            continue;
        }
        if !moved {
            std::fs::create_dir_all(&aside)?;
            moved = true;
        }
        std::fs::rename(&path, aside.join(name))?;
    }
    sync_dir(dir)?;
    let marker = serde_json::to_vec(&Rejoined { replaces, id, former }).map_err(std::io::Error::other)?;
    write_durably(&dir.join(MARKER), &marker)?;
    write_durably(&dir.join("node_id"), format!("{id}\n").as_bytes())?;
    sync_dir(dir)?;
    Ok(moved.then_some(aside))
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether a process holds `dir`'s database open: RocksDB holds a POSIX
/// lock on `db/LOCK` while it runs.
pub fn in_use(dir: &Path) -> std::io::Result<bool> {
    use nix::fcntl::{fcntl, FcntlArg};
    let lock = dir.join("db").join("LOCK");
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut probe = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_GETLK(&mut probe)).map_err(std::io::Error::from)?;
    Ok(probe.l_type != nix::libc::F_UNLCK as i16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_moves_the_damaged_files_aside_and_the_old_id_runs_as_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::write(dir.join("db/000004.log"), b"damaged").unwrap();
        std::fs::write(dir.join("node_id"), b"3\n").unwrap();
        let aside = prepare(&dir, 3, 7).unwrap().expect("moved aside");
        assert_eq!(std::fs::read(aside.join("db/000004.log")).unwrap(), b"damaged");
        assert_eq!(std::fs::read_to_string(dir.join("node_id")).unwrap(), "7\n");
        assert!(!dir.join("db").exists());

        let mut config = NodeConfig::new(3, "127.0.0.1:1", dir.clone());
        config.bootstrap = true;
        let config = identity(config).unwrap();
        assert_eq!((config.id, config.bootstrap), (7, false));
        assert_eq!(identity(NodeConfig::new(7, "127.0.0.1:1", dir.clone())).unwrap().id, 7);
        let wrong = identity(NodeConfig::new(5, "127.0.0.1:1", dir.clone())).unwrap_err();
        assert!(wrong.to_string().contains("--id 7"), "{wrong}");
        // Run again (the command retried): nothing moves.
        assert_eq!(prepare(&dir, 3, 7).unwrap(), None);
        assert_eq!(std::fs::read(aside.join("node_id")).unwrap(), b"3\n");
        // Damaged again later: node 7 rejoins as 9; `--id 3` still works.
        prepare(&dir, 7, 9).unwrap();
        for old in [3, 7, 9] {
            assert_eq!(identity(NodeConfig::new(old, "127.0.0.1:1", dir.clone())).unwrap().id, 9, "--id {old}");
        }
        assert!(!in_use(&dir).unwrap());
    }
}
