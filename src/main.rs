//! The `drover` binary: server, local dev cluster, client commands,
//! workers, benchmarks and the chaos suite. The server, client and worker
//! logic lives in the library; this crate is the command line (`cli`).

mod cli;
mod testkit;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
