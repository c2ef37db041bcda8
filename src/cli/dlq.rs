//! `drover dlq ...`: the dead-letter queue (tasks out of attempts).

use clap::{Args, Subcommand};
use serde_json::json;

use super::task::print_tasks;
use super::{status_message, Cli, CliError};
use crate::pb;

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
            };
            let r = client
                .call_idempotent(0, |i| {
                    let req = req.clone();
                    let client = &client;
                    async move { Ok(client.scheduler(i)?.list_tasks(req).await?.into_inner()) }
                })
                .await
                .map_err(|s| CliError(status_message(&s)))?;
            print_tasks(cli.json, &r);
        }
        DlqCommand::Redrive(t) | DlqCommand::Purge(t) => {
            let redrive = matches!(cmd, DlqCommand::Redrive(_));
            let req = t.request();
            let r = client
                .call(0, |i| {
                    let req = req.clone();
                    let client = &client;
                    async move {
                        let mut s = client.scheduler(i)?;
                        let r = if redrive {
                            s.redrive_dead_letters(req).await?
                        } else {
                            s.purge_dead_letters(req).await?
                        };
                        Ok(r.into_inner())
                    }
                })
                .await
                .map_err(|s| CliError(status_message(&s)))?;
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
