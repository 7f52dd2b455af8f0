//! Reading the three sources (flags, `MEDIC_ACTUATOR_*` environment, YAML file) into layers,
//! one setting at a time so that every problem is found in one run and names where it came
//! from, and merging them (flag, then environment, then file) with the origin of each value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::{Map, Value};

use super::layer::Layer;
use super::{Config, ENV_PREFIX};

/// The command line: `--config` and every setting of [`Layer`].
#[derive(Debug, Parser)]
#[command(
    name = "medic-actuator",
    version,
    about = "Alertmanager webhook receiver that scales Kafka consumer Deployments.",
    after_help = "Every setting is also a key of the YAML file given with --config (dotted keys \
are nested sections) and an environment variable MEDIC_ACTUATOR_<KEY> (dots and dashes become \
underscores). Precedence, highest first: flag, environment, file, default."
)]
pub struct Cli {
    /// YAML config file [env: MEDIC_ACTUATOR_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub layer: Layer,
}

/// The environment variable of a key: `audit.max_bytes` -> `MEDIC_ACTUATOR_AUDIT_MAX_BYTES`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace(['.', '-'], "_").to_uppercase()
    )
}

/// The command with each setting's key, environment variable and default in its help.
pub fn command() -> clap::Command {
    let defaults = leaves(&serde_json::to_value(Config::default()).unwrap_or_default());
    Cli::command().mut_args(|a| {
        let key = a.get_id().to_string();
        if matches!(key.as_str(), "config" | "help" | "version") {
            return a;
        }
        let help = a.get_help().map(ToString::to_string).unwrap_or_default();
        let default = match defaults.get(&key) {
            Some(Value::String(s)) => format!(" [default: {s}]"),
            Some(v) => format!(" [default: {v}]"),
            None => String::new(),
        };
        let help = format!("{help} [key: {key}] [env: {}]{default}", env_name(&key));
        a.help(help)
    })
}

/// The settings' keys (dotted), in declaration order.
pub fn keys() -> Vec<String> {
    command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|k| !matches!(k.as_str(), "config" | "help" | "version"))
        .collect()
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// A `MEDIC_ACTUATOR_*` variable.
    Env,
    /// The config file.
    File(PathBuf),
}

impl Origin {
    /// `flag --audit-max-files`, `env MEDIC_ACTUATOR_AUDIT_MAX_FILES` or `c.yaml: key audit.max_files`.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("flag --{}", key.replace(['.', '_'], "-")),
            Origin::Env => format!("env {}", env_name(key)),
            Origin::File(p) => format!("config file {}: key {key}", p.display()),
        }
    }
}

/// Every set value of a layer, by dotted key.
pub type Leaves = BTreeMap<String, Value>;

/// The set (non-null) leaves of a JSON tree, by dotted key.
pub fn leaves(v: &Value) -> Leaves {
    fn walk(v: &Value, prefix: &str, out: &mut Leaves) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &key, out);
                }
            }
            Value::Null => {}
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = Leaves::new();
    walk(v, "", &mut out);
    out
}

/// The JSON tree of dotted leaves (the inverse of [`leaves`]).
pub fn tree(leaves: &Leaves) -> Value {
    let mut root = Map::new();
    for (key, value) in leaves {
        let mut node = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_string(), value.clone());
            } else {
                let next = node
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                match next {
                    Value::Object(m) => node = m,
                    _ => break,
                }
            }
        }
    }
    Value::Object(root)
}

/// The leaves given on the command line (or in one environment variable turned into a flag).
/// An empty value (`--instance=`) is kept as `null`: it unsets what a lower layer set.
fn flag_leaves(cli: &Cli) -> Leaves {
    let mut out = leaves(&serde_json::to_value(&cli.layer).unwrap_or_default());
    for v in out.values_mut() {
        if v.as_str() == Some("") {
            *v = Value::Null;
        }
    }
    out
}

/// Parses one flag (with its value) as a whole command line.
fn parse_one(chunk: &[OsString]) -> Result<Cli, clap::Error> {
    let args = std::iter::once(OsString::from("medic-actuator")).chain(chunk.iter().cloned());
    command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
}

/// A clap error as one line: the flag, the value and why, or clap's own first line.
fn describe_clap(e: &clap::Error, shown: &str) -> String {
    if let Some(why) = std::error::Error::source(e) {
        return format!("{shown}: {why}");
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let tip = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("tip: "))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    format!("{first}{tip}")
}

/// The flags. `Err` is `--help` or `--version` (or a clap failure to show as clap does).
pub fn flags(args: &[OsString]) -> Result<(Option<PathBuf>, Leaves, Vec<String>), clap::Error> {
    let all: Vec<OsString> = std::iter::once(OsString::from("medic-actuator"))
        .chain(args.iter().cloned())
        .collect();
    let whole = command()
        .try_get_matches_from(&all)
        .and_then(|m| Cli::from_arg_matches(&m));
    match whole {
        Ok(cli) => return Ok((cli.config.clone(), flag_leaves(&cli), Vec::new())),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            return Err(e)
        }
        Err(_) => {}
    }
    // Something is wrong: read the flags one by one to report every bad one.
    let cmd = command();
    let takes_value = |long: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .map(|a| !a.is_require_equals_set())
    };
    let (mut config, mut out, mut problems) = (None, Leaves::new(), Vec::new());
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy().to_string();
        let mut chunk = vec![args[i].clone()];
        let mut shown = arg.clone();
        if let Some(name) = arg.strip_prefix("--").filter(|n| !n.contains('=')) {
            let next = args.get(i + 1);
            let next_is_value = next.is_some_and(|n| !n.to_string_lossy().starts_with("--"));
            // A known flag that takes a value, or an unknown flag followed by its value.
            if takes_value(name).unwrap_or(next_is_value) && next.is_some() {
                if let Some(v) = next {
                    shown = format!("{arg}={:?}", v.to_string_lossy());
                    chunk.push(v.clone());
                }
                i += 1;
            }
        } else if let Some((name, value)) = arg.split_once('=') {
            shown = format!("{name}={value:?}");
        }
        i += 1;
        match parse_one(&chunk) {
            Ok(cli) => {
                config = cli.config.clone().or(config);
                out.extend(flag_leaves(&cli));
            }
            Err(e) => problems.push(describe_clap(&e, &shown)),
        }
    }
    Ok((config, out, problems))
}

/// The `MEDIC_ACTUATOR_*` variables, each parsed as its flag. Unknown variables with the
/// prefix are errors: a typo must not pass silently.
pub fn environment(env: &BTreeMap<String, String>) -> (Leaves, Vec<String>) {
    let known: BTreeMap<String, String> = command()
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .filter_map(|a| Some((env_name(a.get_id().as_str()), a.get_long()?.to_string())))
        .collect();
    let config_var = format!("{ENV_PREFIX}CONFIG");
    let (mut out, mut problems) = (Leaves::new(), Vec::new());
    for (name, value) in env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        if *name == config_var {
            continue;
        }
        let Some(long) = known.get(name) else {
            problems.push(format!("{name}: unknown environment variable"));
            continue;
        };
        match parse_one(&[OsString::from(format!("--{long}={value}"))]) {
            Ok(cli) => out.extend(flag_leaves(&cli)),
            Err(e) => problems.push(describe_clap(&e, &format!("{name}={value:?}"))),
        }
    }
    (out, problems)
}

/// The YAML file: every key is checked on its own, so a type error does not hide an unknown
/// key further down. The first problem in the file keeps the parser's line and column.
pub fn file(text: &str, path: &Path) -> (Leaves, Vec<String>) {
    let at = |m: &str| format!("config file {}: {m}", path.display());
    if text.trim().is_empty() {
        return (Leaves::new(), Vec::new());
    }
    let first = match serde_yaml::from_str::<Layer>(text) {
        Ok(layer) => {
            return (
                leaves(&serde_json::to_value(layer).unwrap_or_default()),
                Vec::new(),
            )
        }
        Err(e) => e.to_string(),
    };
    let doc = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Mapping(m)) => m,
        _ => return (Leaves::new(), vec![at(&first)]),
    };
    let (mut out, mut problems) = (Leaves::new(), Vec::new());
    let mut first_reported = false;
    for (key, value) in doc {
        let name = key.as_str().unwrap_or_default().to_string();
        let parts: Vec<(String, serde_yaml::Value)> = match &value {
            serde_yaml::Value::Mapping(inner) if !inner.is_empty() => inner
                .iter()
                .map(|(k, v)| {
                    let mut one = serde_yaml::Mapping::new();
                    one.insert(k.clone(), v.clone());
                    let leaf = format!("{name}.{}", k.as_str().unwrap_or_default());
                    (leaf, serde_yaml::Value::Mapping(one))
                })
                .collect(),
            _ => vec![(name.clone(), value.clone())],
        };
        for (leaf, inner) in parts {
            let mut one = serde_yaml::Mapping::new();
            one.insert(key.clone(), inner);
            match serde_yaml::from_value::<Layer>(serde_yaml::Value::Mapping(one)) {
                Ok(layer) => out.extend(leaves(&serde_json::to_value(layer).unwrap_or_default())),
                Err(e) => {
                    let why = e.to_string();
                    let same_as_first = first.contains(&why)
                        && (first.starts_with(&format!("{leaf}: "))
                            || first.starts_with(&format!("{name}: "))
                            || !first.contains(": "));
                    if same_as_first && !first_reported {
                        first_reported = true;
                        problems.push(at(&first));
                    } else {
                        problems.push(at(&format!("{leaf}: {why}")));
                    }
                }
            }
        }
    }
    if !first_reported {
        problems.insert(0, at(&first));
    }
    problems.dedup();
    (out, problems)
}
