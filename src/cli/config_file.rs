//! `drover server --config FILE.toml`: every server flag can be set in a
//! TOML file under its long name (`max-payload = 524288`, `http-listen =
//! "127.0.0.1:8001"`, `bootstrap = true`). The file's values become the
//! flags' defaults, so the precedence is flag > environment (`DROVER_*`) >
//! file > built-in default; a key that is not a server flag is an error
//! that names it. `--print-config` prints the effective configuration.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use super::CliError;

/// Flags that cannot be set from the file.
const NOT_IN_FILE: [&str; 3] = ["config", "print-config", "help"];

/// The `--config` path among the server's arguments, if any.
pub fn config_path(args: &[OsString]) -> Option<OsString> {
    if args.get(1).is_none_or(|a| a != "server") {
        return None;
    }
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
        if a == "--" {
            break;
        }
    }
    std::env::var_os("DROVER_CONFIG")
}

/// `(flag, value)` pairs from a TOML file's text, checked against the
/// server's flags.
pub fn parse(text: &str, server: &Command, source: &str) -> Result<Vec<(String, String)>, CliError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| CliError(format!("{source} is not valid TOML: {e}")))?;
    let known: Vec<String> = server
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l))
        .map(String::from)
        .collect();
    let mut out = Vec::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(CliError(format!(
                "{source}: unknown key {key:?}: keys are the long names of `drover server`'s flags (see --help), e.g. listen, data-dir, http-listen, max-payload"
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(CliError(format!("{source}: {key} = {other}: give a string, a number or a boolean"))),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Make the file's values the server flags' defaults.
pub fn apply(cli: Command, values: &[(String, String)]) -> Command {
    cli.mut_subcommand("server", |mut server| {
        for (key, value) in values.iter().cloned() {
            let id = server.get_arguments().find(|a| a.get_long() == Some(key.as_str())).map(|a| a.get_id().clone());
            if let Some(id) = id {
                server = server.mut_arg(id, |a| a.default_value(value).required(false));
            }
        }
        server
    })
}

/// The effective configuration as TOML, each value with where it came
/// from.
pub fn print(server: &Command, matches: &ArgMatches, from_file: &[String]) -> String {
    let mut out = String::from("# effective configuration of `drover server` (flag > environment > file > default)\n");
    for arg in server.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if from_file.iter().any(|k| k == long) => "file",
            Some(ValueSource::DefaultValue) => "default",
            _ => continue,
        };
        let values: Vec<String> =
            matches.get_raw(id).map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect()).unwrap_or_default();
        let value = values.join(",");
        let rendered = match value.as_str() {
            "true" | "false" => value.clone(),
            v if v.parse::<i64>().is_ok() => value.clone(),
            _ => format!("{value:?}"),
        };
        out.push_str(&format!("{long} = {rendered}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    fn server() -> Command {
        Cli::command().find_subcommand("server").cloned().unwrap()
    }

    #[test]
    fn keys_are_long_flag_names_and_unknown_ones_are_named() {
        let v = parse("listen = \"127.0.0.1:7001\"\nmax-payload = 524288\nbootstrap = true\n", &server(), "f.toml")
            .unwrap();
        assert!(v.contains(&("max-payload".into(), "524288".into())));
        assert!(v.contains(&("bootstrap".into(), "true".into())));
        let e = parse("max_payload = 1\n", &server(), "f.toml").unwrap_err();
        assert!(e.0.contains("\"max_payload\""), "{}", e.0);
        assert!(parse("listen = [", &server(), "f.toml").unwrap_err().0.contains("not valid TOML"));
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let file = parse(
            "id = 3\nlisten = \"127.0.0.1:7003\"\ndata-dir = \"d3\"\nmax-payload = 1000\nmax-batch = 7\n",
            &server(),
            "f.toml",
        )
        .unwrap();
        let cmd = apply(Cli::command(), &file);
        let m = cmd.clone().try_get_matches_from(["drover", "server", "--max-batch", "9"]).unwrap();
        let (_, sm) = m.subcommand().unwrap();
        assert_eq!(sm.get_one::<usize>("max_payload"), Some(&1000), "from the file");
        assert_eq!(sm.get_one::<usize>("max_batch"), Some(&9), "the flag wins");
        assert_eq!(sm.get_one::<u64>("id"), Some(&3), "a required flag may come from the file");
        let printed = print(cmd.find_subcommand("server").unwrap(), sm, &["max-payload".into(), "max-batch".into()]);
        assert!(printed.contains("max-batch = 9  # flag"), "{printed}");
        assert!(printed.contains("max-payload = 1000  # file"), "{printed}");
        assert!(printed.contains("heartbeat = \"100ms\"  # default"), "{printed}");
    }

    #[test]
    fn the_config_path_is_found_among_the_server_flags() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&args(&["drover", "server", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path(&args(&["drover", "server", "--config=b.toml", "--id", "1"])), Some("b.toml".into()));
        assert_eq!(config_path(&args(&["drover", "task", "get", "1"])), None);
    }
}
