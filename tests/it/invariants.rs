//! Thin wrappers over `crate::testkit::invariants` for the tests.

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::testkit::invariants::Run;

pub fn runs(path: &Path) -> BTreeMap<u64, Vec<Run>> {
    crate::testkit::invariants::runs(path).expect("record file")
}

/// Never concurrently: no two runs of one task overlap in time.
pub fn assert_no_overlap(path: &Path) {
    let v = crate::testkit::invariants::overlaps(&runs(path));
    assert!(v.is_empty(), "NEVER-CONCURRENTLY violated: {v:#?}");
}
