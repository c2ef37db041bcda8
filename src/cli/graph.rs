//! `drover task schedule-batch --file GRAPH.json`: a batch of tasks, some
//! after others, scheduled in one request (one Raft entry).

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use clap::Args;
use serde::Deserialize;
use serde_json::json;

use super::task::{parse_policy, state_name};
use super::{failed, parse_duration, Cli, CliError};
use drover::pb;

pub const GRAPH_HELP: &str = "The file is a JSON array of task specs, scheduled in order in one request. \
A spec has \"callback\" and optionally \"ref\" (a name later items use), \"after\" (refs of earlier \
items and ids of existing tasks), \"after_policy\" (all-succeeded or all-finished), \"payload\" \
(a string is sent as is; any other JSON value as its JSON text), \"priority\", \"delay\" (e.g. 10s), \
\"at\" (RFC 3339), \"key\" and \"collection\".

Example (fetch, then resize and scan in parallel, then publish):
  [
    {\"ref\": \"fetch\", \"callback\": \"fetch\", \"payload\": {\"url\": \"https://example.com/a.png\"}},
    {\"ref\": \"resize\", \"callback\": \"resize\", \"after\": [\"fetch\"]},
    {\"ref\": \"scan\", \"callback\": \"scan\", \"after\": [\"fetch\"]},
    {\"callback\": \"publish\", \"after\": [\"resize\", \"scan\"]}
  ]

  drover task schedule-batch --file graph.json           # prints the 4 ids in order
  drover task schedule-batch --file graph.json --json    # with refs and states";

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// The JSON array of task specs ("-" for stdin).
    #[arg(long, value_name = "GRAPH.json")]
    pub file: PathBuf,
}

/// One item of the file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(rename = "ref")]
    name: Option<String>,
    callback: String,
    payload: Option<serde_json::Value>,
    #[serde(default)]
    priority: u32,
    delay: Option<String>,
    at: Option<String>,
    key: Option<String>,
    collection: Option<String>,
    #[serde(default)]
    after: Vec<ParentRef>,
    after_policy: Option<String>,
}

/// A parent: an existing task's id, or an earlier item's ref.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum ParentRef {
    Id(u64),
    Ref(String),
}

/// The task specs a graph file describes, in order.
fn parse(text: &str) -> Result<Vec<(String, pb::TaskSpec)>, CliError> {
    let items: Vec<Item> = serde_json::from_str(text)
        .map_err(|e| CliError(format!("the graph is not a JSON array of task specs: {e}")))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at_item = |m: String| CliError(format!("item {i}: {m}"));
            let when = match (&item.delay, &item.at) {
                (Some(_), Some(_)) => return Err(at_item("give \"delay\" or \"at\", not both".into())),
                (Some(d), None) => {
                    Some(pb::task_spec::When::DelayMs(parse_duration(d).map_err(at_item)?.as_millis() as u64))
                }
                (None, Some(at)) => {
                    let t = humantime::parse_rfc3339_weak(at)
                        .map_err(|e| at_item(format!("\"at\" {at:?} is not an RFC 3339 time: {e}")))?;
                    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| at_item("\"at\" is before 1970".into()))?;
                    Some(pb::task_spec::When::RunAtUnixMs(ms.as_millis() as u64))
                }
                (None, None) => None,
            };
            let payload = match item.payload {
                None => Vec::new(),
                Some(serde_json::Value::String(s)) => s.into_bytes(),
                Some(v) => v.to_string().into_bytes(),
            };
            let policy = match &item.after_policy {
                None => pb::AfterPolicy::Unspecified,
                Some(p) => parse_policy(p).map_err(at_item)?,
            };
            let (mut after, mut after_refs) = (Vec::new(), Vec::new());
            for p in item.after {
                match p {
                    ParentRef::Id(id) => after.push(id),
                    ParentRef::Ref(r) => after_refs.push(r),
                }
            }
            let name = item.name.clone().unwrap_or_default();
            let spec = pb::TaskSpec {
                callback: item.callback,
                payload,
                priority: item.priority,
                when,
                idempotency_key: item.key.unwrap_or_default(),
                collection: item.collection.unwrap_or_default(),
                after,
                r#ref: name.clone(),
                after_refs,
                after_policy: policy as i32,
                // A traced script's context (TRACEPARENT), for every item.
                trace: super::trace_from_env()?,
            };
            Ok((name, spec))
        })
        .collect()
}

pub async fn schedule_batch(cli: &Cli, args: &BatchArgs) -> Result<(), CliError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| CliError(format!("--file {}: {e}", args.file.display())))?
    };
    let items = parse(&text)?;
    if items.is_empty() {
        return Err(CliError("the graph is empty: give at least one task spec".into()));
    }
    let (names, specs): (Vec<String>, Vec<pb::TaskSpec>) = items.into_iter().unzip();
    let reply = cli.client()?.schedule_batch(0, specs).await.map_err(failed)?;
    for r in reply.results.iter().filter(|r| r.state == pb::TaskState::Cancelled as i32) {
        eprintln!("warning: task {} was cancelled on arrival: {}", r.task_id, r.note);
    }
    if cli.json {
        let tasks: Vec<_> = names
            .iter()
            .zip(&reply.results)
            .map(|(name, r)| {
                json!({
                    "ref": if name.is_empty() { None } else { Some(name) },
                    "task_id": r.task_id,
                    "created": r.created,
                    "state": state_name(r.state),
                    "note": r.note,
                })
            })
            .collect();
        println!("{}", json!({ "tasks": tasks, "replayed": reply.replayed }));
    } else {
        for r in &reply.results {
            println!("{}", r.task_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_file_becomes_specs_with_refs_ids_and_policies() {
        let specs = parse(
            r#"[
                {"ref": "a", "callback": "fetch", "payload": {"url": "x"}},
                {"ref": "b", "callback": "resize", "after": ["a", 7], "delay": "10s"},
                {"callback": "sum", "after": ["a", "b"], "after_policy": "all-finished", "payload": "raw"}
            ]"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].1.payload, br#"{"url":"x"}"#);
        assert_eq!(specs[0].1.r#ref, "a");
        assert_eq!((specs[1].1.after.clone(), specs[1].1.after_refs.clone()), (vec![7], vec!["a".to_string()]));
        assert_eq!(specs[1].1.when, Some(pb::task_spec::When::DelayMs(10_000)));
        assert_eq!(specs[2].1.after_policy, pb::AfterPolicy::AllFinished as i32);
        assert_eq!(specs[2].1.payload, b"raw");
    }

    #[test]
    fn mistakes_in_a_graph_file_name_the_item() {
        let e = parse(r#"[{"callback": "a"}, {"callback": "b", "after_policy": "sometimes"}]"#).unwrap_err();
        assert!(e.0.contains("item 1") && e.0.contains("all-finished"), "{}", e.0);
        let e = parse(r#"[{"callback": "a", "afterr": []}]"#).unwrap_err();
        assert!(e.0.contains("afterr"), "{}", e.0);
        assert!(parse(r#"{"callback": "a"}"#).is_err());
    }
}
