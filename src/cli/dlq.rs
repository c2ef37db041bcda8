//! `drover dlq ...`: the dead-letter queue (tasks out of attempts).

use clap::{Args, Subcommand};
use serde_json::json;

use super::task::print_tasks;
use super::{failed, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead tasks, oldest first.
    List {
        #[arg(long)]
        callback: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send dead tasks back to ready with their attempts reset. Their waiting dependents wait for them again.
    #[command(after_help = "Examples:\n  \
        drover dlq redrive 42\n  \
        drover dlq redrive 42 --with-dependents   # also re-arm the tasks its failure cancelled\n  \
        drover dlq redrive --callback send_email")]
    Redrive {
        #[command(flatten)]
        target: TargetArgs,
        /// Also re-arm the dependents (tasks scheduled --after it) that its failure cancelled: they wait for it again.
        #[arg(long)]
        with_dependents: bool,
    },
    /// Delete dead tasks for good.
    Purge(TargetArgs),
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// One dead task.
    pub id: Option<u64>,
    /// Every dead task of a callback.
    #[arg(long)]
    pub callback: Option<String>,
}

impl TargetArgs {
    fn request(&self) -> pb::DeadLetterRequest {
        use pb::dead_letter_request::Target;
        let target = match (&self.id, &self.callback) {
            (Some(id), _) => Some(Target::TaskId(*id)),
            (None, Some(c)) => Some(Target::Callback(c.clone())),
            (None, None) => None,
        };
        pb::DeadLetterRequest { target, with_dependents: false }
    }
}

pub async fn run(cli: &Cli, cmd: &DlqCommand) -> Result<(), CliError> {
    let client = cli.client()?;
    match cmd {
        DlqCommand::List { callback, limit } => {
            let req = pb::ListTasksRequest {
                callback: callback.clone().unwrap_or_default(),
                state: pb::TaskState::Dead as i32,
                limit: *limit,
                after_id: 0,
                allow_stale: false,
                collection: String::new(),
            };
            let r = client.list_tasks(req).await.map_err(failed)?;
            print_tasks(cli.json, &r);
        }
        DlqCommand::Redrive { target: t, .. } | DlqCommand::Purge(t) => {
            let with_dependents = matches!(cmd, DlqCommand::Redrive { with_dependents: true, .. });
            let redrive = matches!(cmd, DlqCommand::Redrive { .. });
            let req = pb::DeadLetterRequest { with_dependents, ..t.request() };
            let what = if redrive { "redriving dead tasks" } else { "purging dead tasks" };
            let progress = super::progress::Progress::new(what, None, "tasks", cli.json);
            let r = client.dead_letters(0, req, !redrive).await.map_err(failed);
            progress.finish();
            let r = r?;
            let verb = if redrive { "redriven" } else { "purged" };
            if cli.json {
                println!("{}", json!({ verb: r.count }));
            } else {
                println!("{} dead task(s) {verb}", r.count);
            }
        }
    }
    Ok(())
}
