fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // No `connect` constructors: clients are built on shared channels, and the
    // Worker service has an RPC of that name.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_transport(false)
        .file_descriptor_set_path(out.join("drover_descriptor.bin"))
        .compile_protos(&["proto/drover.proto", "proto/raft.proto"], &["proto"])?;
    commit();
    // The deterministic simulation (tests/sim) defines `getrandom` for its
    // process; export it so that lookups with `dlsym` find it too.
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=getrandom");
    Ok(())
}

/// The commit this build is of, for `drover --version` (`DROVER_COMMIT`):
/// from git when the source is a checkout, else `DROVER_COMMIT` as given
/// (a source archive), else "unknown".
fn commit() {
    println!("cargo:rerun-if-env-changed=DROVER_COMMIT");
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if from_git.is_some() {
        // A new commit (or a checkout) changes HEAD or the ref it names.
        for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
            if std::path::Path::new(path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let commit = from_git.or_else(|| std::env::var("DROVER_COMMIT").ok()).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DROVER_COMMIT={commit}");
}
