//! `drover auth`: tokens, certificate grants, and the switch that enforces
//! them.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use drover::client::Client;
use drover::domain::auth::{new_token, token_hash};
use drover::net::AuthedChannel;
use drover::pb;
use drover::pb::auth_client::AuthClient;

use super::{failed, parse_duration, Cli, CliError};

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Bearer tokens: create one (printed once), list grants, revoke one.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Client certificates: grant a role to a certificate's subject common name.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Enforce grants. Refused unless you call it as an admin for every callback (so you cannot lock yourself out) and the nodes authenticate their peers with TLS.
    Enable,
    /// Stop enforcing grants: anyone who reaches a node may do anything again.
    Disable,
    /// Who the cluster thinks you are, and whether auth is on.
    Whoami,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token with a role and print it. Only its SHA-256 is sent to the cluster: the token is shown once.
    Create(GrantArgs),
    /// Every grant: tokens (by id, never the token) and certificate subjects.
    List,
    /// Remove a grant (a token's `t-...` id or a certificate's `c-...` id); calls with it are refused at once.
    Revoke {
        /// The grant id, as `auth token list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Grant a role to client certificates whose subject common name is SUBJECT.
    Grant {
        /// The certificate's subject common name (`drover admin certs` makes `drover-client`).
        #[arg(long)]
        subject: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// reader, producer, worker, operator or admin.
    #[arg(long)]
    pub role: String,
    /// Only these callbacks (globs, comma-separated: 'email.*,sms'); default: every callback.
    #[arg(long, value_delimiter = ',', value_name = "GLOB[,GLOB...]")]
    pub callbacks: Vec<String>,
    /// The grant ends this long after it is created (90d, 12h); default: never.
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
    /// Who or what it is for.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `drover auth --help`'s epilogue.
pub const AFTER_HELP: &str =
    "Roles, each including the ones before it: reader (get, list, status), producer (schedule, \
    cancel, register callbacks), worker (run tasks), operator (gates, dead letters, periodic schedules, leader \
    transfer), admin (membership, backup, grants).\n\n\
    Start: export DROVER_TOKEN=$(drover auth token create --role admin --note me) && drover auth enable";

/// Run one Auth call, at any node, retried on any failure that may
/// not have applied: every Auth call is idempotent (the same token hash is
/// the same grant; revoke and enable are states, not increments).
async fn idempotent<T, F, Fut>(client: &Client, call: F) -> Result<T, CliError>
where
    F: Fn(AuthClient<AuthedChannel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    client
        .call_idempotent(0, |i| {
            let auth = client.auth(i).map(&call);
            async move { Ok(auth?.await?.into_inner()) }
        })
        .await
        .map_err(failed)
}

impl GrantArgs {
    fn expires_in_ms(&self) -> u64 {
        self.expires.map_or(0, |d| d.as_millis() as u64)
    }
}

fn when(ms: u64) -> String {
    match ms {
        0 => "never".into(),
        ms => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    }
}

fn grant_json(g: &pb::GrantInfo) -> serde_json::Value {
    json!({
        "id": g.id, "kind": g.kind, "subject": g.subject, "role": g.role, "callbacks": g.callbacks,
        "created_unix_ms": g.created_unix_ms, "expires_unix_ms": (g.expires_unix_ms > 0).then_some(g.expires_unix_ms),
        "expired": g.expired, "note": g.note,
    })
}

fn status_json(s: &pb::AuthStatus) -> serde_json::Value {
    json!({"enabled": s.enabled, "principal": s.principal, "role": s.role, "callbacks": s.callbacks, "changed": s.changed})
}

fn scope(callbacks: &[String]) -> String {
    if callbacks.is_empty() {
        "every callback".into()
    } else {
        callbacks.join(",")
    }
}

fn print_status(cli: &Cli, s: &pb::AuthStatus) {
    if cli.json {
        println!("{}", status_json(s));
        return;
    }
    println!("auth:      {}", if s.enabled { "on (grants enforced)" } else { "off (anyone may do anything)" });
    match s.principal.as_str() {
        "" => println!("you:       anonymous"),
        p => println!("you:       {p}, role {} for {}", s.role, scope(&s.callbacks)),
    }
}

pub async fn run(cli: &Cli, cmd: &AuthCommand) -> Result<(), CliError> {
    let client = cli.client()?;
    match cmd {
        AuthCommand::Token(TokenCommand::Create(g)) => {
            let token = new_token();
            let req = pb::CreateTokenRequest {
                token_sha256: token_hash(&token).to_vec(),
                role: g.role.clone(),
                callbacks: g.callbacks.clone(),
                expires_in_ms: g.expires_in_ms(),
                note: g.note.clone(),
            };
            // The same hash is the same grant: a retry after an unknown
            // outcome finds it (created: false) and creates nothing.
            let info = idempotent(&client, |mut c| {
                let req = req.clone();
                async move { c.create_token(req).await }
            })
            .await?;
            if cli.json {
                let mut v = grant_json(&info);
                v["token"] = json!(token);
                println!("{v}");
            } else {
                println!("{token}");
                eprintln!(
                    "token {} created: role {} for {}, expires {}. It is shown only this once: keep it (DROVER_TOKEN or --token).",
                    info.id,
                    info.role,
                    scope(&info.callbacks),
                    when(info.expires_unix_ms)
                );
            }
            Ok(())
        }
        AuthCommand::Cert(CertCommand::Grant { subject, grant: g }) => {
            let req = pb::GrantSubjectRequest {
                subject: subject.clone(),
                role: g.role.clone(),
                callbacks: g.callbacks.clone(),
                expires_in_ms: g.expires_in_ms(),
                note: g.note.clone(),
            };
            let info = idempotent(&client, |mut c| {
                let req = req.clone();
                async move { c.grant_subject(req).await }
            })
            .await?;
            if cli.json {
                println!("{}", grant_json(&info));
            } else {
                println!(
                    "{}: role {} for {}, expires {}",
                    info.id,
                    info.role,
                    scope(&info.callbacks),
                    when(info.expires_unix_ms)
                );
            }
            Ok(())
        }
        AuthCommand::Token(TokenCommand::List) => {
            let r = idempotent(&client, |mut c| async move { c.list_grants(pb::ListGrantsRequest {}).await }).await?;
            if cli.json {
                let grants: Vec<_> = r.grants.iter().map(grant_json).collect();
                println!("{}", json!({"enabled": r.enabled, "grants": grants}));
                return Ok(());
            }
            println!("auth is {}", if r.enabled { "on" } else { "off" });
            println!("{:<20} {:<12} {:<9} {:<20} {:<21} NOTE", "ID", "KIND", "ROLE", "CALLBACKS", "EXPIRES");
            for g in &r.grants {
                let expires = if g.expired { "expired".to_string() } else { when(g.expires_unix_ms) };
                println!(
                    "{:<20} {:<12} {:<9} {:<20} {:<21} {}",
                    g.id,
                    g.kind,
                    g.role,
                    scope(&g.callbacks),
                    expires,
                    g.note
                );
            }
            Ok(())
        }
        AuthCommand::Token(TokenCommand::Revoke { id }) => {
            let r = idempotent(&client, |mut c| {
                let id = id.clone();
                async move { c.revoke(pb::RevokeRequest { id }).await }
            })
            .await?;
            if cli.json {
                println!("{}", json!({"id": id, "existed": r.existed}));
            } else if r.existed {
                println!("revoked {id}");
            } else {
                println!("{id} did not exist (nothing to revoke)");
            }
            Ok(())
        }
        AuthCommand::Enable | AuthCommand::Disable => {
            let enabled = matches!(cmd, AuthCommand::Enable);
            let s =
                idempotent(&client, |mut c| async move { c.set_enabled(pb::SetAuthRequest { enabled }).await }).await?;
            print_status(cli, &s);
            Ok(())
        }
        AuthCommand::Whoami => {
            let s = idempotent(&client, |mut c| async move { c.who_am_i(pb::WhoAmIRequest {}).await }).await?;
            print_status(cli, &s);
            Ok(())
        }
    }
}
