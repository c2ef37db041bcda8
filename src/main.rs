//! The `drover` binary: server, local dev cluster, client commands and
//! benchmarks. All logic lives in the library; see `drover --help`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    drover::cli::main()
}
