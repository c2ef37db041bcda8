//! openraft's storage conformance suite against drover's RocksDB log and
//! state machine.

use openraft::error::ErrorSource;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::TypeConfig;
use crate::store::open_db;

struct RocksBuilder;

fn setup_error(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::read(openraft::impls::BoxedErrorSource::from_string(e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(setup_error)?;
        let db = open_db(&dir.path().join("db")).map_err(setup_error)?;
        let log = LogStore::new(db.clone(), Default::default(), Default::default()).map_err(setup_error)?;
        let identity = super::identity::Identity::detached(1, "", None);
        let (sm, _applied) =
            StateMachine::open(db, dir.path().join("snapshots"), Default::default(), identity).map_err(setup_error)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_storage_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await?;
    Ok(())
}
