//! Layered configuration: defaults < TOML file < environment < flags, validated at start.
//!
//! Every layer is merged into one TOML table and deserialized once into the keeper's typed
//! settings (`deny_unknown_fields` everywhere), so an unknown key, a wrong type and a bad value
//! are all reported the same way: one line naming the setting (and its env variable).

mod sections;
pub mod validate;

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use sections::*;

/// Exit code for invalid configuration or usage.
pub const EXIT_CONFIG: i32 = 2;

/// A setting that could not be accepted: which one, and why (never its value if it is secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {problem}")]
pub struct ConfigError {
    /// The setting's dotted path in the TOML file, with its env name when it has one.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// Builds an error for a dotted setting path.
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// Text that is not the value it should be (an amount, an address, a number): the text, shortened,
/// and what is wrong with it. Never built from a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct BadInput {
    /// The offending text, at most 64 characters.
    pub input: String,
    /// What is wrong, naming the text.
    pub problem: String,
}

impl BadInput {
    /// `problem` (which quotes the text where useful) about `input`.
    pub fn new(input: &str, problem: impl Into<String>) -> Self {
        Self {
            input: input.chars().take(64).collect(),
            problem: problem.into(),
        }
    }
}

impl From<BadInput> for String {
    fn from(e: BadInput) -> Self {
        e.problem
    }
}

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kept as a string.
    Str,
    /// A whole number.
    Int,
    /// A number with a fraction, kept as a string so it stays exact (amounts of TON).
    Decimal,
    /// `true`/`false`/`1`/`0`/`yes`/`no`.
    Bool,
    /// A comma-separated list of strings.
    List,
}

/// Maps one environment variable onto one dotted path of the settings.
#[derive(Debug, Clone, Copy)]
pub struct EnvBinding {
    /// The environment variable, e.g. `TON_RPC_URL`.
    pub env: &'static str,
    /// The dotted TOML path, e.g. `ton.rpc_url`.
    pub path: &'static str,
    /// How to convert the text.
    pub kind: Kind,
    /// A secret: also read from the file named by `NAME_FILE` or from systemd's
    /// `$CREDENTIALS_DIRECTORY`, and wiped from the environment once read.
    pub secret: bool,
}

/// Shorthand constructor for [`EnvBinding`] tables.
pub const fn bind(env: &'static str, path: &'static str, kind: Kind) -> EnvBinding {
    EnvBinding {
        env,
        path,
        kind,
        secret: false,
    }
}

/// Shorthand constructor for a secret's [`EnvBinding`]: `NAME`, else the file `NAME_FILE` names,
/// else the systemd credential `$CREDENTIALS_DIRECTORY/<name>` (lower case, `_` as `-`).
pub const fn bind_secret(env: &'static str, path: &'static str, kind: Kind) -> EnvBinding {
    EnvBinding {
        env,
        path,
        kind,
        secret: true,
    }
}

/// The environment variables of `bindings` that hold secrets, to scrub once configuration is read.
pub fn secret_env_names(bindings: &[EnvBinding]) -> Vec<&'static str> {
    bindings
        .iter()
        .filter(|b| b.secret)
        .map(|b| b.env)
        .collect()
}

/// Wipes the secret variables of `bindings` (and `extra`) from this process's environment, so
/// children and `/proc/<pid>/environ` never see them. Call it once settings are loaded and before
/// any thread or child starts. A failure is returned for the caller to log (the keeper still runs:
/// secrets given as files, the recommended way, never were in the environment).
pub fn scrub_secret_env(
    bindings: &[EnvBinding],
    extra: &[&str],
) -> Result<usize, crate::secret::ScrubError> {
    let mut names = secret_env_names(bindings);
    names.extend_from_slice(extra);
    crate::secret::scrub_environment(&names)
}

/// Reads environment variables; production uses the process environment, tests a map.
pub trait Env {
    /// The variable's value; an empty value counts as unset (systemd env files often carry `X=`).
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// Everything that feeds the settings, lowest precedence first.
pub struct Layers<'a> {
    /// The binary's shipped example file, compiled in: the built-in defaults. A file, the
    /// environment and flags override it key by key; a list (`[[assets]]`) is replaced whole.
    pub defaults: &'a str,
    /// The `--config` file, if any.
    pub file: Option<&'a Path>,
    /// Where environment variables come from.
    pub env: &'a dyn Env,
    /// Which environment variables bind to which settings.
    pub bindings: &'a [EnvBinding],
    /// Values from command-line flags (dotted path → value), highest precedence.
    pub flags: Vec<(&'static str, toml::Value)>,
}

impl<'a> Layers<'a> {
    /// The layers of a binary: its compiled-in defaults, the `--config` file, the environment;
    /// no flags.
    pub fn new(
        defaults: &'a str,
        file: Option<&'a Path>,
        env: &'a dyn Env,
        bindings: &'a [EnvBinding],
    ) -> Self {
        Self {
            defaults,
            file,
            env,
            bindings,
            flags: Vec::new(),
        }
    }

    /// Merges the layers and deserializes them into `T`, naming the setting on any error.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut table = parse_toml(self.defaults, "built-in defaults")?;
        if let Some(path) = self.file {
            merge(&mut table, read_file(path)?);
        }
        for b in self.bindings {
            if let Some(text) = self.env_text(b)? {
                let value = env_value(b, &text)?;
                set_path(&mut table, b.path, value)
                    .map_err(|p| ConfigError::new(describe(b.path, self.bindings), p))?;
            }
        }
        for (path, value) in &self.flags {
            set_path(&mut table, path, value.clone())
                .map_err(|p| ConfigError::new(describe(path, self.bindings), p))?;
        }
        // Deserializing moves each string into its setting: a secret's text is not copied.
        deserialize(table, self.bindings)
    }

    /// The text of a binding: its variable; for a secret, else the file `NAME_FILE` names, else
    /// the systemd credential.
    fn env_text(&self, b: &EnvBinding) -> Result<Option<Zeroizing<String>>, ConfigError> {
        if let Some(text) = self.env.var(b.env) {
            return Ok(Some(Zeroizing::new(text)));
        }
        if !b.secret {
            return Ok(None);
        }
        let file_var = format!("{}_FILE", b.env);
        if let Some(path) = self.env.var(&file_var) {
            return read_secret_file(Path::new(&path), b.path, &file_var).map(Some);
        }
        let Some(dir) = self.env.var("CREDENTIALS_DIRECTORY") else {
            return Ok(None);
        };
        let credential = Path::new(&dir).join(credential_name(b.env));
        if credential.exists() {
            let origin = format!("$CREDENTIALS_DIRECTORY/{}", credential_name(b.env));
            return read_secret_file(&credential, b.path, &origin).map(Some);
        }
        Ok(None)
    }
}

/// The systemd credential a secret variable may come from: `TON_API_KEY` → `ton-api-key`.
pub fn credential_name(env: &str) -> String {
    env.to_ascii_lowercase().replace('_', "-")
}

/// Reads a secret from a file, trimming the trailing newline editors leave; an unreadable or empty
/// file names the setting, where it came from and the path, never the content.
fn read_secret_file(
    path: &Path,
    setting: &str,
    origin: &str,
) -> Result<Zeroizing<String>, ConfigError> {
    let fail = |problem: String| ConfigError::new(format!("{setting} ({origin})"), problem);
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {}", path.display(), e.kind())))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(fail(format!("{} is empty", path.display())));
    }
    Ok(trimmed)
}

/// Lays `over` onto `base`: tables merge key by key, anything else (lists included) replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    // The file may hold secrets: its text is wiped once parsed.
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
    })?);
    parse_toml(&text, &format!("--config {}", path.display()))
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let msg = e.message().to_owned();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        ConfigError::new(origin, format!("line {line}: {msg}"))
    })
}

fn env_value(b: &EnvBinding, text: &str) -> Result<toml::Value, ConfigError> {
    let bad = |why: &str| ConfigError::new(format!("{} ({})", b.path, b.env), why.to_owned());
    let text = text.trim();
    Ok(match b.kind {
        Kind::Str | Kind::Decimal => toml::Value::String(text.to_owned()),
        Kind::Int => toml::Value::Integer(
            text.parse::<i64>()
                .map_err(|_| bad("expected a whole number"))?,
        ),
        Kind::Bool => toml::Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(bad("expected true or false")),
        }),
        Kind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().ok_or_else(|| "empty setting path".to_owned())?;
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("[{part}] in the config file must be a table"))?;
    }
    cur.insert(last.to_owned(), value);
    Ok(())
}

/// A dotted path with its env name, as error messages show it.
pub fn describe(path: &str, bindings: &[EnvBinding]) -> String {
    match bindings.iter().find(|b| b.path == path) {
        Some(b) => format!("{path} ({})", b.env),
        None => path.to_owned(),
    }
}

fn deserialize<T: DeserializeOwned>(
    table: toml::Table,
    bindings: &[EnvBinding],
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's message names the field for unknown keys; keep only its first line.
        let problem = inner.lines().next().unwrap_or("invalid value").to_owned();
        let setting = if path == "." {
            "config".to_owned()
        } else {
            describe(&path, bindings)
        };
        ConfigError::new(setting, problem)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        a: DemoA,
    }
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct DemoA {
        n: u64,
        s: String,
        l: Vec<String>,
    }

    const B: &[EnvBinding] = &[
        bind("DEMO_N", "a.n", Kind::Int),
        bind_secret("DEMO_S", "a.s", Kind::Str),
        bind("DEMO_L", "a.l", Kind::List),
    ];

    fn load_env(pairs: &[(&str, &str)]) -> Result<Demo, ConfigError> {
        let e = env(pairs);
        Layers::new("", None, &e, B).load()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn precedence_is_default_file_env_flag() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[a]\nn = 5\ns = \"file\"\n").unwrap();
        let e = env(&[("DEMO_S", "env"), ("DEMO_L", "x, y")]);
        let layers = Layers {
            defaults: "",
            file: Some(&f),
            env: &e,
            bindings: B,
            flags: vec![("a.n", toml::Value::Integer(9))],
        };
        let d: Demo = layers.load().unwrap();
        assert_eq!((d.a.n, d.a.s.as_str(), d.a.l.len()), (9, "env", 2));
    }

    #[test]
    fn unknown_key_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[a]\nnn = 5\n").unwrap();
        let e = env(&[]);
        let err = Layers {
            defaults: "",
            file: Some(&f),
            env: &e,
            bindings: B,
            flags: vec![],
        }
        .load::<Demo>()
        .unwrap_err();
        assert!(err.to_string().contains("nn"), "{err}");
    }

    #[test]
    fn a_secret_comes_from_its_variable_then_its_file_then_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::write(dir.path().join("demo-s"), "from-credential\n").unwrap();
        let f = file.display().to_string();
        let d = dir.path().display().to_string();
        let with_all = [
            ("DEMO_S", "from-env"),
            ("DEMO_S_FILE", f.as_str()),
            ("CREDENTIALS_DIRECTORY", d.as_str()),
        ];
        assert_eq!(load_env(&with_all).unwrap().a.s, "from-env");
        assert_eq!(load_env(&with_all[1..]).unwrap().a.s, "from-file");
        assert_eq!(load_env(&with_all[2..]).unwrap().a.s, "from-credential");
        // A setting that is not secret reads no file.
        let plain = load_env(&[("DEMO_N_FILE", f.as_str())]).unwrap();
        assert_eq!(plain.a.n, 0);
    }

    #[test]
    fn a_bad_secret_file_names_the_variable_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = empty.display().to_string();
        let err = load_env(&[("DEMO_S_FILE", e.as_str())]).unwrap_err();
        assert_eq!(err.setting, "a.s (DEMO_S_FILE)");
        assert!(err.problem.ends_with("is empty"), "{err}");
        let err = load_env(&[("DEMO_S_FILE", "/nonexistent/demo")]).unwrap_err();
        assert!(
            err.problem.contains("cannot read /nonexistent/demo"),
            "{err}"
        );
    }

    #[test]
    fn credential_names_are_lower_case_with_dashes() {
        assert_eq!(credential_name("TON_API_KEY"), "ton-api-key");
        assert_eq!(credential_name("KEEPER_MNEMONIC"), "keeper-mnemonic");
        assert_eq!(
            secret_env_names(B),
            vec!["DEMO_S"],
            "only secrets are scrubbed"
        );
    }

    #[test]
    fn bad_env_number_names_the_variable() {
        let e = env(&[("DEMO_N", "ten")]);
        let err = Layers {
            defaults: "",
            file: None,
            env: &e,
            bindings: B,
            flags: vec![],
        }
        .load::<Demo>()
        .unwrap_err();
        assert_eq!(err.setting, "a.n (DEMO_N)");
    }
}
