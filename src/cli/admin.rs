//! `drover admin ...`: backup, restore, an offline data dir check, and
//! rejoining a node whose data is damaged.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use futures::StreamExt;
use serde_json::json;

use super::{failed, status_message, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Write a consistent copy of the state machine (from the leader) to FILE.
    Backup {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Prepare an empty data dir to seed a brand-new cluster from a backup.
    #[command(after_help = "Then start that node alone, as the first node of the new cluster:\\n  \\
        drover server --id 1 --listen HOST:PORT --data-dir DIR --bootstrap\\n\\
        It imports the backup before taking writes. Add more nodes with\\n\\
        `drover cluster add-node`.")]
    Restore {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Make a throwaway CA and certificates for a cluster, for those without their own PKI.
    #[command(
        after_help = "Writes ca.pem (and ca-key.pem, keep it safe or delete it), node-I.pem and node-I-key.pem for \
        each node I (server and peer certificates naming node-I.drover and the hosts), and client.pem/client-key.pem.\n\
        Then run each node with:\n  \
        drover server ... --tls-cert node-I.pem --tls-key node-I-key.pem --client-ca ca.pem \\\n    \
        --peer-ca ca.pem --peer-cert node-I.pem --peer-key node-I-key.pem\n\
        and point the CLI at them with --ca ca.pem (and --cert client.pem --cert-key client-key.pem), or DROVER_CA, ..."
    )]
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node ids 1..=N.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Host names or IP addresses clients and peers use to reach the nodes (repeat the flag); default localhost and 127.0.0.1.
        #[arg(long = "host", value_name = "NAME_OR_IP")]
        hosts: Vec<String>,
        /// How long the node and client certificates are valid.
        #[arg(long, default_value = "365d", value_parser = super::parse_duration)]
        valid: std::time::Duration,
    },
    /// Verify a stopped node's data dir (its write-ahead log record by
    /// record, every RocksDB block's checksum, every Raft record's own
    /// checksum and the log's continuity, the snapshot's CRC) and say
    /// whether it is safe to start. Exits 1 if it is not.
    #[command(
        after_help = "A node runs the same check when it starts, and refuses to start from damaged files (exit code 65).\n\
        Run this on a stopped node only: nothing is changed (a torn last WAL record, which the node drops when\n\
        it starts, is reported and left in place)."
    )]
    Check {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Bring back a node whose data is damaged: the damaged files move aside,
    /// and the node comes back empty under a new id, catches up from the
    /// others, and becomes a voter in the old id's place.
    #[command(
        after_help = "Run it on the damaged node's host, with the node stopped and the rest of the cluster up\n\
        (--endpoint names any live node). Then start the node again with its usual command; it may keep its\n\
        old --id: the data dir says which id it runs as now. The old id is retired at once: it never votes again.\n\
        The damaged files stay in DIR/damaged-TIME/ for a post-mortem; delete them when done."
    )]
    Rejoin {
        /// The damaged node's data dir (the node stopped).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The damaged node's id, if DIR/node_id is lost.
        #[arg(long)]
        id: Option<u64>,
        /// Rebuild the node even though `admin check` finds no damage.
        #[arg(long)]
        force: bool,
        /// Then wait until the node (started again) is a voter in the old id's place.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
        timeout: std::time::Duration,
    },
}

pub async fn run(cli: &Cli, cmd: &AdminCommand) -> Result<(), CliError> {
    match cmd {
        AdminCommand::Backup { out } => backup(cli, out).await,
        AdminCommand::Check { data_dir } => check(cli, data_dir),
        AdminCommand::Rejoin { data_dir, id, force, wait, timeout } => {
            super::rejoin::run(cli, data_dir, *id, *force, wait.then_some(*timeout)).await
        }
        AdminCommand::Certs { out, nodes, hosts, valid } => {
            if !(1..=99).contains(nodes) {
                return Err(CliError("--nodes must be between 1 and 99".into()));
            }
            let ids: Vec<u64> = (1..=*nodes).collect();
            let b = drover::tls::certs::write_bundle(out, &ids, hosts, *valid).map_err(|e| CliError(e.to_string()))?;
            if cli.json {
                let nodes: Vec<_> = b.nodes.iter().map(|(id, c, k)| json!({ "id": id, "cert": c, "key": k })).collect();
                println!(
                    "{}",
                    json!({ "ca": b.ca, "nodes": nodes, "client_cert": b.client_cert, "client_key": b.client_key })
                );
            } else {
                println!(
                    "wrote {} (CA), {} node pair(s) and a client pair into {}",
                    b.ca.display(),
                    ids.len(),
                    out.display()
                );
                println!("node I: drover server ... --tls-cert {0}/node-I.pem --tls-key {0}/node-I-key.pem --client-ca {1} --peer-ca {1} --peer-cert {0}/node-I.pem --peer-key {0}/node-I-key.pem", out.display(), b.ca.display());
                println!(
                    "CLI:    export DROVER_CA={} DROVER_CERT={} DROVER_KEY={}",
                    b.ca.display(),
                    b.client_cert.display(),
                    b.client_key.display()
                );
            }
            Ok(())
        }
        AdminCommand::Restore { input, data_dir } => {
            let mut bar: Option<(&str, super::progress::Progress)> = None;
            drover::node::restore::prepare(input, data_dir, &mut |phase, done, total| {
                if bar.as_ref().is_none_or(|(p, _)| *p != phase) {
                    if let Some((_, old)) = bar.take() {
                        old.finish();
                    }
                    bar = Some((phase, super::progress::Progress::new(phase, Some(total), "bytes", cli.json)));
                }
                if let Some((_, b)) = bar.as_mut() {
                    b.set(done, None);
                }
            })
            .map_err(CliError)?;
            if let Some((_, b)) = bar {
                b.finish();
            }
            if cli.json {
                println!("{}", json!({ "data_dir": data_dir, "ready": true }));
            } else {
                println!("{} is ready; start it with:", data_dir.display());
                println!("  drover server --id 1 --listen HOST:PORT --data-dir {} --bootstrap", data_dir.display());
            }
            Ok(())
        }
    }
}

fn check(cli: &Cli, data_dir: &std::path::Path) -> Result<(), CliError> {
    match drover::raft::check::verify_offline(data_dir) {
        Ok(report) => {
            let records: u64 = report.records.iter().map(|(_, n)| n).sum();
            if cli.json {
                let per_cf: serde_json::Map<String, serde_json::Value> =
                    report.records.iter().map(|(cf, n)| (cf.to_string(), json!(n))).collect();
                let torn =
                    report.torn_tail.as_ref().map(|t| json!({ "file": t.file, "offset": t.offset, "bytes": t.bytes }));
                let cluster_id = report.cluster_id.map(|id| id.to_string());
                println!(
                    "{}",
                    json!({ "data_dir": data_dir, "ok": true, "records": per_cf, "snapshot": report.snapshot, "torn_tail": torn, "cluster_id": cluster_id })
                );
            } else {
                let snapshot = report.snapshot.map(|s| format!(", and snapshot {}", s.display())).unwrap_or_default();
                println!("{}: ok, safe to start ({records} records verified{snapshot})", data_dir.display());
                if let Some(torn) = &report.torn_tail {
                    println!("note: {torn}; it was never acknowledged, and the node drops it when it starts");
                }
                match report.cluster_id {
                    Some(id) => println!("cluster ID: {id}"),
                    None => println!("cluster ID: none yet (a new node, or a data dir written before cluster IDs: its cluster's leader writes one)"),
                }
            }
            Ok(())
        }
        Err(e) => {
            if cli.json {
                println!("{}", json!({ "data_dir": data_dir, "ok": false, "error": e.what }));
            }
            Err(CliError(format!(
                "{}: NOT safe to start: {}. Run `drover admin rejoin --data-dir {}` with the rest of the cluster up: the node comes back empty under a new id and catches up (README, \"When a disk fills or fails\")",
                data_dir.display(),
                e.what,
                data_dir.display()
            )))
        }
    }
}

async fn backup(cli: &Cli, out: &PathBuf) -> Result<(), CliError> {
    // Take it from the leader: its state machine holds every acknowledged write.
    let status = cli.client()?.cluster_status().await.map_err(failed)?;
    let leader = status
        .members
        .iter()
        .find(|m| m.id == status.leader_id)
        .map(|m| m.addr.clone())
        .ok_or_else(|| CliError("the cluster reports no leader address".into()))?;
    let leader_client = drover::client::Client::new(vec![leader.clone()]);
    let mut stream =
        leader_client.cluster(0).map_err(failed)?.backup(pb::BackupRequest {}).await.map_err(failed)?.into_inner();
    let tmp = out.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).map_err(|e| CliError(format!("{}: {e}", tmp.display())))?;
    let (mut bytes, mut applied) = (0u64, 0u64);
    let mut progress = super::progress::Progress::new("backup", None, "bytes", cli.json);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| CliError(format!("backup broke off: {}", status_message(&s))))?;
        if chunk.applied_index > 0 {
            applied = chunk.applied_index;
        }
        bytes += chunk.data.len() as u64;
        file.write_all(&chunk.data).map_err(|e| CliError(e.to_string()))?;
        progress.set(bytes, None);
    }
    progress.finish();
    file.sync_all().map_err(|e| CliError(e.to_string()))?;
    drop(file);
    drover::raft::snapshot::verify(&tmp).map_err(|e| CliError(format!("the received backup is corrupt: {e}")))?;
    std::fs::rename(&tmp, out).map_err(|e| CliError(e.to_string()))?;
    if cli.json {
        println!("{}", json!({ "out": out, "bytes": bytes, "applied_index": applied, "from": leader }));
    } else {
        println!("backup of {leader} at applied index {applied}: {} ({bytes} bytes)", out.display());
    }
    Ok(())
}
