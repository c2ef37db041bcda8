//! `drover worker`: run a command (or a built-in handler) per task.

use std::time::Duration;

use clap::Args;

use super::{parse_duration, shutdown_signal, Cli, CliError};
use drover::worker::builtin::Builtin;
use drover::worker::shell::ShellHandler;
use drover::worker::{TaskContext, Worker};

#[derive(Args, Debug)]
#[command(after_help = "The command gets the payload on stdin and DROVER_TASK_ID, DROVER_ATTEMPT,\n\
    DROVER_FENCING_TOKEN and DROVER_CALLBACK in its environment. Its stdout (up to\n\
    --max-output) is the result. Exit 0: success; exit 75: retry later; any other\n\
    exit: fatal failure. On timeout or cancel its whole process group is killed.\n\n\
    Examples:\n  \
    drover worker --callback send_email --concurrency 4 -- python3 send_email.py\n  \
    drover worker --callback resize -- sh -c 'convert - -resize 50% png:-'")]
pub struct WorkerArgs {
    /// The callback to serve.
    #[arg(long)]
    pub callback: String,
    /// Tasks run at once by this worker.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Worker id (default: hostname-pid-random). A stable id re-attaches running tasks after a restart of the connection.
    #[arg(long)]
    pub id: Option<String>,
    /// Most stdout bytes kept as the task's result.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_output: usize,
    /// On SIGTERM/Ctrl-C, how long running tasks may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Run a built-in handler instead of a command: noop, or record:FILE.
    #[arg(long, conflicts_with = "command")]
    pub builtin: Option<Builtin>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(cli: &Cli, args: &WorkerArgs) -> Result<(), CliError> {
    drover::api::validate::callback_name(&args.callback, &drover::config::Limits::default())?;
    if args.concurrency == 0 {
        return Err(CliError("--concurrency must be at least 1".into()));
    }
    let endpoints = cli.client()?.endpoints().to_vec();
    let mut builder = Worker::builder(endpoints).shutdown_grace(args.shutdown_grace);
    if let Some(tls) = cli.tls() {
        builder = builder.tls(tls);
    }
    if let Some(token) = &cli.token {
        builder = builder.token(token.clone());
    }
    if let Some(id) = &args.id {
        builder = builder.id(id.clone());
    }
    builder = match (&args.builtin, args.command.split_first()) {
        (Some(b), _) => {
            let b = b.clone();
            builder.handle(args.callback.clone(), args.concurrency, move |ctx: TaskContext| {
                let b = b.clone();
                async move { b.run(ctx).await }
            })
        }
        (None, Some((program, rest))) => {
            let shell = ShellHandler {
                program: program.clone(),
                args: rest.to_vec(),
                max_output: args.max_output,
                kill_grace: Duration::from_secs(5),
            };
            builder.handle(args.callback.clone(), args.concurrency, move |ctx: TaskContext| {
                let shell = shell.clone();
                async move { shell.run(ctx).await }
            })
        }
        (None, None) => {
            return Err(CliError(
                "give the command to run after `--`, e.g. `drover worker --callback x -- ./handle.sh`".into(),
            ))
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    let stats = builder.run(shutdown).await?;
    eprintln!(
        "worker stopped: {} started, {} succeeded, {} failed, {} fenced, {} rejected",
        stats.started, stats.succeeded, stats.failed, stats.fenced, stats.rejected
    );
    Ok(())
}
