//! The `drover` command line. `main` stays thin: parse, pick a runtime, run
//! one command, print one clear line on error.
//!
//! - [`server`]: `drover server`.
//! - [`dev`]: `drover dev`, a local cluster of child processes.
//! - [`task`], [`callback`], [`dlq`], [`gate`], [`gc`], [`schedule`],
//!   [`cluster`]: client commands.
//! - [`worker`]: `drover worker`, the shell worker.
//! - [`bench`]: `drover bench`.
//!
//! `println!` and `print!` here are this module's own (defined below): a
//! closed stdout ends the CLI quietly instead of panicking.

/// `println!` for the CLI's output. When stdout is gone (`drover task list
/// | head`), the CLI exits quietly with 141, as a Unix tool killed by
/// SIGPIPE does, instead of panicking ([`stdout_failed`]).
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(e)
        }
    }};
}

/// `print!`, likewise.
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(e)
        }
    }};
}

pub mod admin;
pub mod auth;
pub mod bench;
pub mod callback;
pub mod chaos;
pub mod cluster;
pub mod config_file;
pub mod dev;
pub mod dlq;
pub mod gate;
pub mod gc;
pub mod graph;
pub mod progress;
pub mod rejoin;
pub mod schedule;
pub mod server;
pub mod task;
pub mod worker;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use drover::client::Client;

/// `drover --version`: the release and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DROVER_COMMIT"), ")");

/// Default endpoints: the `drover dev` cluster.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version = VERSION,
    about = "A Raft-replicated, clustered asynchronous task scheduler",
    long_about = "A Raft-replicated, clustered asynchronous task scheduler.\n\n\
        Start a local 3-node cluster with `drover dev`, then schedule a task with\n\
        `drover task schedule send_email --payload '{\"to\":\"a@b.c\"}'` and read it\n\
        back with `drover task get ID`. Every node accepts every request.",
    after_help = "Environment: DROVER_ENDPOINT (like --endpoint), DROVER_CA, DROVER_CERT, DROVER_KEY (like --ca, --cert, --cert-key), DROVER_TOKEN (like --token), RUST_LOG (log filter, e.g. info or drover=debug)."
)]
pub struct Cli {
    /// Nodes to talk to, tried in turn when one is down.
    #[arg(long, global = true, env = "DROVER_ENDPOINT", default_value = DEFAULT_ENDPOINTS, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub endpoint: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Connect over TLS, trusting the CA certificates in this PEM file (`drover admin certs` writes ca.pem).
    #[arg(long, global = true, env = "DROVER_CA", value_name = "FILE.pem", help_heading = "TLS")]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate to present (mutual TLS), with --cert-key.
    #[arg(
        long,
        global = true,
        env = "DROVER_CERT",
        value_name = "FILE.pem",
        requires = "cert_key",
        help_heading = "TLS"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (`--key` is `task schedule`'s idempotency key).
    #[arg(long, global = true, env = "DROVER_KEY", value_name = "FILE.pem", requires = "cert", help_heading = "TLS")]
    pub cert_key: Option<std::path::PathBuf>,
    /// A bearer token (`drover auth token create` prints one), sent with every call.
    #[arg(
        long,
        global = true,
        env = "DROVER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Auth"
    )]
    pub token: Option<String>,
    /// Log lines (on stderr) as text or as JSON objects, one per line.
    #[arg(long, global = true, env = "DROVER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Export trace spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317): a node's spans of each task (schedule, Raft commit, queue wait, assignments, completions), a worker's handler spans. Off unless given.
    #[arg(long, global = true, env = "DROVER_OTLP_ENDPOINT", value_name = "URL", help_heading = "Traces")]
    pub otlp_endpoint: Option<String>,
    /// With --otlp-endpoint: the share of traces that start here (tasks scheduled without a trace context) that are recorded, 0 to 1. A trace its producer sampled is always recorded.
    #[arg(
        long,
        global = true,
        env = "DROVER_OTLP_SAMPLE_RATIO",
        default_value_t = 1.0,
        value_name = "RATIO",
        help_heading = "Traces"
    )]
    pub otlp_sample_ratio: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one cluster node.
    Server(Box<server::ServerArgs>),
    /// Run a local N-node cluster on 127.0.0.1 (child processes), until Ctrl-C.
    Dev(dev::DevArgs),
    /// Schedule, inspect, list and cancel tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Register callbacks and see their queues.
    #[command(subcommand)]
    Callback(callback::CallbackCommand),
    /// Run tasks of a callback with a command (any language) or a built-in handler.
    Worker(worker::WorkerArgs),
    /// The dead-letter queue: tasks that ran out of attempts.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Pause or drop a callback, or one collection of its tasks, and open it again.
    #[command(subcommand)]
    Gate(gate::GateCommand),
    /// Retention: how many finished tasks were deleted, and what is still kept.
    #[command(subcommand)]
    Gc(gc::GcCommand),
    /// Periodic schedules: a task per slot of a cron pattern or a period, exactly once per slot.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Inspect and resize the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Who may do what: tokens, certificate grants, and turning enforcement on.
    #[command(subcommand, after_help = auth::AFTER_HELP)]
    Auth(auth::AuthCommand),
    /// Backups and restores.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The chaos suite: faults against a Docker cluster, then every guarantee checked.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
    /// Measure a running cluster.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Cli {
    pub fn client(&self) -> Result<Client, CliError> {
        let endpoints = self.endpoint.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let mut client = Client::new(endpoints);
        if let Some(tls) = self.tls() {
            client = client.with_tls(tls.load().map_err(|e| CliError(e.to_string()))?);
        }
        if let Some(token) = &self.token {
            client = client.with_token(token).map_err(|e| CliError(format!("--token: {e}")))?;
        }
        Ok(client)
    }

    /// TLS settings when --ca or --cert is given (or an endpoint is https://).
    pub fn tls(&self) -> Option<drover::tls::ClientTls> {
        let https = self.endpoint.contains("https://");
        (self.ca.is_some() || self.cert.is_some() || https).then(|| drover::tls::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.cert_key.clone(),
        })
    }
}

/// Stdout could not be written: a closed pipe ends the CLI quietly (141,
/// the status of a process killed by SIGPIPE); anything else is an error.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(74);
}

/// A CLI failure: one line for the user.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Turn a gRPC status into a message a person can act on.
pub fn status_message(s: &tonic::Status) -> String {
    use tonic::Code;
    let what = match s.code() {
        Code::InvalidArgument => "invalid request",
        Code::NotFound => "not found",
        Code::FailedPrecondition | Code::PermissionDenied => "refused",
        Code::Unauthenticated => "not authenticated",
        Code::Unavailable => "cluster unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::Internal => "internal error",
        _ => "error",
    };
    // The status's name, so a script can tell refusals apart.
    let code = format!("{:?}", s.code());
    let mut name = String::new();
    for (i, ch) in code.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    let msg = s.message();
    if msg.is_empty() {
        format!("{what} ({name})")
    } else {
        format!("{what} ({name}): {msg}")
    }
}

/// A failed call as the command's error.
pub fn failed(s: tonic::Status) -> CliError {
    CliError(status_message(&s))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 500ms, 10s or 5m: {e}"))
}

/// The W3C trace context in `TRACEPARENT` (and `TRACESTATE`), if set.
pub fn trace_from_env() -> Result<Option<drover::pb::TraceContext>, CliError> {
    let parent = std::env::var("TRACEPARENT").unwrap_or_default();
    let state = std::env::var("TRACESTATE").unwrap_or_default();
    let state = if parent.trim().is_empty() { String::new() } else { state };
    drover::telemetry::parse(&parent, &state).map_err(|e| CliError(format!("TRACEPARENT: {e}")))
}

/// Logs on stderr, filtered by `RUST_LOG` (else `default`), and the spans
/// of `spans` (`--otlp-endpoint`). JSON lines carry the current span's
/// fields: `trace_id` and `span_id` inside a task's spans.
pub fn init_tracing(default: &str, json: bool, spans: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter).with(spans.map(drover::telemetry::layer));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt.with_ansi(std::io::stderr().is_terminal())).try_init()
    };
}

/// Parse the command line, with `drover server --config FILE`'s values as
/// the server flags' defaults.
fn parse() -> Result<(Cli, Option<String>), CliError> {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    let mut from_file = Vec::new();
    if let Some(path) = config_file::config_path(&args) {
        let shown = std::path::Path::new(&path).display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| CliError(format!("--config {shown}: {e}")))?;
        let server = command.find_subcommand("server").cloned().unwrap_or_default();
        let values = config_file::parse(&text, &server, &shown)?;
        command = config_file::apply(command, &values);
        from_file = values.into_iter().map(|(k, _)| k).collect();
    }
    let matches = command.clone().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let printed = match (&cli.command, matches.subcommand_matches("server")) {
        (Command::Server(a), Some(sm)) if a.print_config => {
            let server = command.find_subcommand("server").cloned().unwrap_or_default();
            Some(config_file::print(&server, sm, &from_file))
        }
        _ => None,
    };
    Ok((cli, printed))
}

pub fn main() -> ExitCode {
    let (cli, printed) = match parse() {
        Ok(p) => p,
        Err(CliError(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(config) = printed {
        print!("{config}");
        return ExitCode::SUCCESS;
    }
    let default_log = match cli.command {
        // openraft logs every failed heartbeat to an unreachable peer at warn
        // level, ten times a second: keep its errors only by default.
        Command::Server(_) | Command::Worker(_) => "info,openraft=error",
        _ => "warn",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel needs the runtime.
    let spans = match &cli.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let service = match &cli.command {
                Command::Server(a) => format!("drover-node-{}", a.id),
                Command::Worker(_) => "drover-worker".to_string(),
                _ => "drover-cli".to_string(),
            };
            match runtime.block_on(async { drover::telemetry::start(endpoint, cli.otlp_sample_ratio, &service) }) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    init_tracing(default_log, cli.log_format == "json", spans.as_ref());
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Server(args) => return server::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Task(cmd) => task::run(&cli, cmd).await,
            Command::Callback(cmd) => callback::run(&cli, cmd).await,
            Command::Worker(args) => worker::run(&cli, args).await,
            Command::Dlq(cmd) => dlq::run(&cli, cmd).await,
            Command::Gate(cmd) => gate::run(&cli, cmd).await,
            Command::Gc(cmd) => gc::run(&cli, cmd).await,
            Command::Schedule(cmd) => schedule::run(&cli, cmd).await,
            Command::Cluster(cmd) => cluster::run(&cli, cmd).await,
            Command::Admin(cmd) => admin::run(&cli, cmd).await,
            Command::Auth(cmd) => auth::run(&cli, cmd).await,
            Command::Bench(cmd) => bench::run(&cli, cmd).await,
            Command::Chaos(cmd) => chaos::run(&cli, cmd).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    // The last spans, before the runtime their exporter uses goes.
    if let Some(p) = spans {
        if let Err(e) = p.shutdown() {
            eprintln!("warning: flushing trace spans: {e}");
        }
    }
    // Let blocking work (applies, reads) finish and drop its handles on
    // the database before the process exits: RocksDB must be closed by
    // this thread, not torn down under a running one.
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Resolve on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::status_message;
    use tonic::Status;

    #[test]
    fn a_failed_call_s_line_names_its_status() {
        assert_eq!(
            status_message(&Status::permission_denied("needs operator")),
            "refused (PERMISSION_DENIED): needs operator"
        );
        assert_eq!(
            status_message(&Status::unauthenticated("no token")),
            "not authenticated (UNAUTHENTICATED): no token"
        );
        assert_eq!(status_message(&Status::not_found("")), "not found (NOT_FOUND)");
        assert_eq!(status_message(&Status::resource_exhausted("full")), "error (RESOURCE_EXHAUSTED): full");
    }
}
