fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // No `connect` constructors: clients are built on shared channels, and the
    // Worker service has an RPC of that name.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_protos(&["proto/drover.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
