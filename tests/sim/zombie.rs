//! A zombie worker: a worker frozen past its lease that then wakes and
//! sends the completion it had ready, under the fencing token it was
//! given. The worker SDK fences itself (it never reports a run whose lease
//! lapsed), so stale completions reach the cluster only from a worker that
//! is not on the SDK, or from one whose message sat in a socket; this host
//! sends them on purpose, so that the cluster's own fencing check (in
//! apply) is what stands between them and the task.
//!
//! Checks `StaleCompletionChangesNothing` on each answer: a completion
//! whose token is older than a run that had already started must not be
//! accepted.

use std::time::Duration;

use drover::pb;
use drover::pb::server_message::Msg as In;
use drover::pb::worker_message::Msg as Out;
use tonic::transport::Endpoint;

use crate::cluster;
use crate::history::{sim_ms, Shared};
use crate::rng::SimRng;

/// The callback the zombie says it serves (no task is scheduled on it, so
/// it is never assigned anything).
pub const CALLBACK: &str = "sim-zombie";

/// A stale completion to send: a run's (task, token), and the newest
/// token any run of the task had started with when it was picked.
fn pick(history: &Shared, rng: &mut SimRng) -> Option<(u64, u64, u64)> {
    let h = history.lock();
    // Best: a task running now under a newer token than an older run's.
    let mut stale = Vec::new();
    let mut any = Vec::new();
    for (task, runs) in &h.runs {
        let newest = runs.iter().map(|r| r.token).max().unwrap_or(0);
        let open = runs.iter().any(|r| r.end_ms.is_none() && r.token == newest);
        for r in runs.iter().filter(|r| r.end_ms.is_some()) {
            any.push((*task, r.token, newest));
            if open && r.token < newest {
                stale.push((*task, r.token, newest));
            }
        }
    }
    let from = if stale.is_empty() { &any } else { &stale };
    from.get(rng.range(0, from.len() as u64) as usize).copied()
}

/// The zombie's software: until `until_ms`, now and then, a stale
/// completion to the node it believes leads.
pub async fn run(nodes: u64, mut rng: SimRng, until_ms: u64, history: Shared) -> turmoil::Result {
    let dial = cluster::dialer();
    let mut target = rng.range(1, nodes + 1);
    while sim_ms() < until_ms {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1_500))).await;
        let Some((task, token, newest)) = pick(&history, &mut rng) else { continue };
        let endpoint = Endpoint::from_shared(cluster::endpoint(target))?;
        let mut client = pb::worker_client::WorkerClient::new(dial(endpoint));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let hello = pb::Hello {
            worker_id: "zombie".into(),
            callbacks: vec![pb::CallbackCredits { callback: CALLBACK.into(), concurrency: 1 }],
            running: Vec::new(),
        };
        let completion = pb::Completion {
            task_id: task,
            fencing_token: token,
            outcome: Some(pb::completion::Outcome::Success(format!("token={token}").into_bytes())),
        };
        let _ = tx.try_send(pb::WorkerMessage { msg: Some(Out::Hello(hello)) });
        let _ = tx.try_send(pb::WorkerMessage { msg: Some(Out::Completion(completion)) });
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            let mut inbound = client.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.ok()?.into_inner();
            while let Ok(Some(m)) = inbound.message().await {
                match m.msg {
                    Some(In::CompletionAck(a)) if a.task_id == task && a.fencing_token == token => {
                        return Some(Ok(a.accepted))
                    }
                    Some(In::Redirect(r)) => return Some(Err(r.leader_addr)),
                    _ => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        match answer {
            Some(Ok(accepted)) => {
                let mut h = history.lock();
                h.trace(&format!("{} zombie task={task} token={token} accepted={accepted}", sim_ms()));
                if accepted && newest > token {
                    h.violation(
                        "StaleCompletionChangesNothing",
                        format!("a completion of task {task} under token {token} was accepted after a run with token {newest} started"),
                    );
                }
            }
            Some(Err(leader)) => {
                target = (1..=nodes).find(|n| leader.starts_with(&cluster::host(*n))).unwrap_or(target % nodes + 1)
            }
            None => target = target % nodes + 1,
        }
    }
    Ok(())
}
