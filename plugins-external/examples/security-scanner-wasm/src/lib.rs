//! security-scanner: vetoes tasks whose command matches a rule at or above
//! the configured severity threshold (RFC 0001's example `wasm` plugin).
//!
//! Config (the global `config` merged with the task's
//! `plugins.security-scanner`):
//!
//! ```yaml
//! severity_threshold: medium        # low | medium | high | critical
//! rules:                            # replaces the default rules
//!   - pattern: "curl\\s.*\\|\\s*sh"   # a regular expression (Rust syntax)
//!     severity: high
//!     description: pipes a download into a shell
//! deny: ["^sudo "]                  # shorthand: rules of severity high
//! ```
//!
//! A match below the threshold is logged as a warning. A pattern or
//! severity that does not parse fails the plugin's start (global config)
//! or the task (per-task config): a scanner that cannot scan must not let
//! tasks through. `taskrush scan "CMD" …` checks commands by hand;
//! `taskrush scan` alone checks every task of the project, read through the
//! `task_graph` host call.

use std::collections::HashMap;

use regex_lite::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use taskrush_plugin::{
    CommandResult, Error, Hook, Host, InitializeParams, PluginCommand, Result, TaskContext,
    TaskRushPlugin, export_plugin,
};

/// How bad a match is; a rule vetoes at or above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A rule as the config writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub pattern: String,
    #[serde(default = "high")]
    pub severity: Severity,
    #[serde(default)]
    pub description: String,
}

fn high() -> Severity {
    Severity::High
}

/// The keys of the config this plugin reads (others are ignored).
#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(default)]
    severity_threshold: Option<Severity>,
    #[serde(default)]
    rules: Option<Vec<RuleConfig>>,
    #[serde(default)]
    deny: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What applies to one command: the rules and the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub threshold: Severity,
    pub rules: Vec<RuleConfig>,
}

/// The threshold when the config names none (the RFC's example value).
pub const DEFAULT_THRESHOLD: Severity = Severity::Medium;

/// The rules when the config has neither `rules` nor `deny`.
pub fn default_rules() -> Vec<RuleConfig> {
    let rule = |pattern: &str, severity, description: &str| RuleConfig {
        pattern: pattern.into(),
        severity,
        description: description.into(),
    };
    vec![
        rule(
            r"rm\s+-[a-zA-Z]*r[a-zA-Z]*f?\s+/(\s|$|\*)",
            Severity::Critical,
            "deletes the root directory",
        ),
        rule(
            r"(curl|wget)\s.*\|\s*(sudo\s+)?(ba|z|da)?sh\b",
            Severity::High,
            "pipes a download into a shell",
        ),
        rule(
            r"chmod\s+(-R\s+)?0?777\b",
            Severity::Medium,
            "makes files writable by everyone",
        ),
        rule(r"(^|[;&|]\s*)sudo\s", Severity::Low, "runs as root"),
    ]
}

impl Policy {
    /// The policy a config value describes (`null`: the defaults).
    pub fn from_config(config: &Value) -> Result<Policy, String> {
        let config: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config.clone())
                .map_err(|e| format!("invalid security-scanner config: {e}"))?
        };
        let mut rules = config.rules.unwrap_or_default();
        match config.deny {
            Some(OneOrMany::One(p)) => rules.push(deny_rule(p)),
            Some(OneOrMany::Many(ps)) => rules.extend(ps.into_iter().map(deny_rule)),
            None => {}
        }
        if rules.is_empty() {
            rules = default_rules();
        }
        Ok(Policy {
            threshold: config.severity_threshold.unwrap_or(DEFAULT_THRESHOLD),
            rules,
        })
    }
}

fn deny_rule(pattern: String) -> RuleConfig {
    RuleConfig {
        pattern,
        severity: Severity::High,
        description: String::new(),
    }
}

/// A rule a command matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleConfig,
    /// At or above the threshold: the task does not run.
    pub vetoes: bool,
}

impl Finding {
    fn describe(&self) -> String {
        let mut s = format!(
            "the {}-severity rule `{}`",
            self.rule.severity.as_str(),
            self.rule.pattern
        );
        if !self.rule.description.is_empty() {
            s.push_str(&format!(" ({})", self.rule.description));
        }
        s
    }
}

/// Compiled patterns, kept across calls.
#[derive(Default)]
pub struct Scanner {
    compiled: HashMap<String, Regex>,
}

impl Scanner {
    fn regex(&mut self, pattern: &str) -> Result<&Regex, String> {
        if !self.compiled.contains_key(pattern) {
            let re =
                Regex::new(pattern).map_err(|e| format!("invalid pattern `{pattern}`: {e}"))?;
            self.compiled.insert(pattern.to_owned(), re);
        }
        Ok(&self.compiled[pattern])
    }

    /// Compiles every pattern of `policy` (the first that does not compile
    /// is an error).
    pub fn check(&mut self, policy: &Policy) -> Result<(), String> {
        for rule in &policy.rules {
            self.regex(&rule.pattern)?;
        }
        Ok(())
    }

    /// Every rule `command` matches, the most severe first.
    pub fn scan(&mut self, command: &str, policy: &Policy) -> Result<Vec<Finding>, String> {
        let mut found = Vec::new();
        for rule in &policy.rules {
            if self.regex(&rule.pattern)?.is_match(command) {
                found.push(Finding {
                    rule: rule.clone(),
                    vetoes: rule.severity >= policy.threshold,
                });
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.rule.severity));
        Ok(found)
    }
}

/// The plugin: the global policy from `initialize`, the compiled patterns.
#[derive(Default)]
pub struct SecurityScanner {
    policy: Option<Policy>,
    scanner: Scanner,
}

impl TaskRushPlugin for SecurityScanner {
    fn name(&self) -> &str {
        "security-scanner"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::BeforeTask]
    }

    fn initialize(&mut self, params: &InitializeParams, host: &mut Host) -> Result {
        let policy = Policy::from_config(&params.config)?;
        self.scanner.check(&policy)?;
        host.debug(format!(
            "{} rule(s), vetoing at {} and above",
            policy.rules.len(),
            policy.threshold.as_str()
        ));
        self.policy = Some(policy);
        Ok(())
    }

    fn before_task(&mut self, ctx: &TaskContext, host: &mut Host) -> Result {
        let policy = Policy::from_config(&ctx.config)?;
        let findings = self.scanner.scan(&ctx.command, &policy)?;
        for finding in findings.iter().filter(|f| !f.vetoes) {
            host.warn(format!(
                "the command of task `{}` matches {}, below the threshold `{}`",
                ctx.task_name,
                finding.describe(),
                policy.threshold.as_str()
            ));
        }
        if let Some(worst) = findings.iter().find(|f| f.vetoes) {
            return Err(Error::veto(format!(
                "the command of task `{}` matches {}",
                ctx.task_name,
                worst.describe()
            ))
            .with_data(json!({
                "pattern": worst.rule.pattern,
                "severity": worst.rule.severity.as_str(),
                "threshold": policy.threshold.as_str(),
            })));
        }
        Ok(())
    }

    fn commands(&self) -> Vec<PluginCommand> {
        vec![PluginCommand {
            name: "scan".into(),
            description:
                "Check commands against the rules: taskrush scan \"CMD\" ... (no CMD: every task's)"
                    .into(),
        }]
    }

    fn command(
        &mut self,
        _name: &str,
        args: &[String],
        _cwd: &str,
        host: &mut Host,
    ) -> Result<CommandResult> {
        let policy = match &self.policy {
            Some(p) => p.clone(),
            None => Policy::from_config(&Value::Null)?,
        };
        // Without arguments: the command of every task of the project, as
        // written (the `task_graph` host call).
        let commands: Vec<(String, String)> = if args.is_empty() {
            let graph = host.task_graph()?;
            graph
                .tasks
                .into_iter()
                .filter_map(|(name, t)| Some((format!("task `{name}`: "), t.command?)))
                .collect()
        } else {
            args.iter().map(|a| (String::new(), a.clone())).collect()
        };
        let mut out = String::new();
        let mut denied = false;
        for (label, command) in &commands {
            let findings = self.scanner.scan(command, &policy)?;
            match findings.first() {
                None => out.push_str(&format!("ok: {label}{command}\n")),
                Some(f) => {
                    denied |= f.vetoes;
                    let verdict = if f.vetoes { "denied" } else { "warning" };
                    out.push_str(&format!(
                        "{verdict}: {label}{command} (matches {})\n",
                        f.describe()
                    ));
                }
            }
        }
        Ok(CommandResult {
            exit_code: i32::from(denied),
            stdout: out,
            stderr: String::new(),
        })
    }
}

export_plugin!(SecurityScanner);

#[cfg(test)]
mod tests;
