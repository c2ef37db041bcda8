fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // No `connect` constructors: clients are built on shared channels, and the
    // Worker service has an RPC of that name.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_transport(false)
        .file_descriptor_set_path(out.join("drover_descriptor.bin"))
        .compile_protos(&["proto/drover.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
