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
    /// Send dead tasks back to ready with their attempts reset.
    Redrive(TargetArgs),
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
        pb::DeadLetterRequest { target }
    }
}

pub async fn run(cli: &Cli, cmd: &DlqCommand) -> Result<(), CliError> {
    let client = cli.client();
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
        DlqCommand::Redrive(t) | DlqCommand::Purge(t) => {
            let redrive = matches!(cmd, DlqCommand::Redrive(_));
            let req = t.request();
            let r = client.dead_letters(0, req, !redrive).await.map_err(failed)?;
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
