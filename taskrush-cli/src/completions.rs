//! `taskrush --completions SHELL` (bash, zsh, fish) and the man page.
//!
//! The scripts are generated from the CLI definition (`Cli::command()`):
//! built-in words, subcommands and flags, each with its help line. Task
//! names and plugin commands change with the project, so the scripts call
//! back `taskrush --complete-names`, which asks the daemon (starting it if
//! needed) for the project's tasks and plugin commands: `list_tasks`
//! without `env`, which starts no plugin (commands come from running
//! plugins and the daemon's cache of their last handshakes).
//!
//! No completion crate: `clap_complete`'s static scripts cannot ask for
//! the names, and its dynamic engine is unstable; these are a few dozen
//! lines per shell and keep the CLI light.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::CommandFactory;

use crate::args::{Cli, RunArgs};
use crate::error::CliError;

pub const SHELLS: &[&str] = &["bash", "zsh", "fish"];

/// The man page, generated from the CLI definition by the test
/// `the_checked_in_man_page_is_current` (`TASKRUSH_BLESS=1` rewrites it).
pub const MAN_PAGE: &str = include_str!("../../docs/taskrush.1");

/// One place of the command line: `""` (top level, where `run` is
/// implied), `run`, `daemon`, `daemon logs`, …
struct Node {
    path: String,
    /// Subcommands: name and help line.
    subs: Vec<(String, String)>,
    flags: Vec<Flag>,
}

struct Flag {
    long: Option<String>,
    short: Option<char>,
    help: String,
    takes_value: bool,
    values: Vec<String>,
}

/// A help text's first sentence, for a completion menu.
fn first_line(s: Option<&clap::builder::StyledStr>) -> String {
    let text = s.map(|s| s.to_string()).unwrap_or_default();
    let line = text.lines().next().unwrap_or("");
    let sentence = line.split(". ").next().unwrap_or(line);
    sentence.trim_end_matches('.').to_owned()
}

fn flags(cmd: &clap::Command) -> Vec<Flag> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .map(|a| Flag {
            long: a.get_long().map(str::to_owned),
            short: a.get_short(),
            help: first_line(a.get_help()),
            takes_value: a.get_action().takes_values(),
            values: a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect(),
        })
        .collect()
}

fn nodes() -> Vec<Node> {
    let mut root = Cli::command();
    root.build();
    let mut out = Vec::new();
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<Node>) {
        let subs = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| (s.get_name().to_owned(), first_line(s.get_about())))
            .collect();
        out.push(Node {
            path: path.clone(),
            subs,
            flags: flags(cmd),
        });
        // `help`'s own tree only repeats the others.
        for s in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let p = if path.is_empty() {
                s.get_name().to_owned()
            } else {
                format!("{path} {}", s.get_name())
            };
            walk(s, p, out);
        }
    }
    walk(&root, String::new(), &mut out);
    // `taskrush -j build` is `taskrush run -j build`: the top level
    // offers `run`'s flags too.
    let mut run = <RunArgs as clap::Args>::augment_args(clap::Command::new("run"));
    run.build();
    let run_flags = flags(&run);
    if let Some(top) = out.iter_mut().find(|n| n.path.is_empty()) {
        for f in run_flags {
            if !top.flags.iter().any(|t| t.long == f.long) {
                top.flags.push(f);
            }
        }
    }
    out
}

/// Options whose next word is their value, for every path.
fn value_options(nodes: &[Node]) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.flags.iter())
        .filter(|f| f.takes_value)
        .flat_map(|f| {
            f.long
                .iter()
                .map(|l| format!("--{l}"))
                .chain(f.short.iter().map(|s| format!("-{s}")))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn words(n: &Node) -> Vec<String> {
    let mut w: Vec<String> = n.subs.iter().map(|(s, _)| s.clone()).collect();
    for f in &n.flags {
        w.extend(f.long.iter().map(|l| format!("--{l}")));
        w.extend(f.short.iter().map(|s| format!("-{s}")));
    }
    w
}

/// The values an option takes, when they are a fixed list (or files).
fn value_cases(nodes: &[Node]) -> Vec<(Vec<String>, Option<Vec<String>>)> {
    let mut out: Vec<(Vec<String>, Option<Vec<String>>)> = Vec::new();
    for f in nodes.iter().flat_map(|n| n.flags.iter()) {
        if !f.takes_value {
            continue;
        }
        let names: Vec<String> = f
            .long
            .iter()
            .map(|l| format!("--{l}"))
            .chain(f.short.iter().map(|s| format!("-{s}")))
            .collect();
        if out.iter().any(|(n, _)| n == &names) {
            continue;
        }
        let values = match f.long.as_deref() {
            Some("completions") => Some(SHELLS.iter().map(|s| s.to_string()).collect()),
            Some("file") => None,
            _ if !f.values.is_empty() => Some(f.values.clone()),
            _ => Some(Vec::new()),
        };
        out.push((names, values));
    }
    out
}

pub fn bash() -> String {
    let nodes = nodes();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# bash completion for taskrush (generated by `taskrush --completions bash`)\n\
         # Install: taskrush --completions bash > ~/.local/share/bash-completion/completions/taskrush\n\
         _taskrush() {{\n    \
         # bash splits words at the characters of COMP_WORDBREAKS, `:` among them\n    \
         # (`web:b` is `web`, `:`, `b`): the words are rebuilt from the line up to\n    \
         # the cursor, split at blanks only.\n    \
         local words cword\n    \
         if [[ -n \"${{COMP_LINE-}}\" ]]; then\n        \
         local line=\"${{COMP_LINE:0:${{COMP_POINT:-${{#COMP_LINE}}}}}}\"\n        \
         read -ra words <<< \"$line\"\n        \
         if [[ ${{#words[@]}} == 0 || \"$line\" == *[[:blank:]] ]]; then words+=(\"\"); fi\n        \
         cword=$((${{#words[@]}} - 1))\n    \
         else\n        \
         words=(\"${{COMP_WORDS[@]}}\"); cword=$COMP_CWORD\n    \
         fi\n    \
         local cur=\"${{words[cword]}}\" prev=\"\"\n    \
         ((cword > 0)) && prev=\"${{words[cword-1]}}\"\n    \
         COMPREPLY=()\n    \
         case \"$prev\" in"
    );
    for (names, values) in value_cases(&nodes) {
        let body = match values {
            None => "COMPREPLY=($(compgen -f -- \"$cur\")); return 0".to_owned(),
            Some(v) if v.is_empty() => "return 0".to_owned(),
            Some(v) => format!(
                "COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); return 0",
                v.join(" ")
            ),
        };
        let _ = writeln!(s, "        {}) {body} ;;", names.join("|"));
    }
    let _ = writeln!(
        s,
        "    esac\n    \
         local path=\"\" positional=0 i w\n    \
         for ((i = 1; i < cword; i++)); do\n        \
         w=\"${{words[i]}}\"\n        \
         case \"$w\" in\n            \
         {}) ((i++)) ;;\n            \
         -*) ;;\n            \
         *)\n                \
         case \"${{path:+$path }}$w\" in\n                    \
         {}) path=\"${{path:+$path }}$w\" ;;\n                    \
         *) positional=1; break ;;\n                \
         esac ;;\n        \
         esac\n    \
         done\n    \
         local cands=\"\"\n    \
         case \"$path\" in",
        value_options(&nodes).join("|"),
        nodes
            .iter()
            .filter(|n| !n.path.is_empty())
            .map(|n| format!("\"{}\"", n.path))
            .collect::<Vec<_>>()
            .join("|"),
    );
    for n in &nodes {
        let w = words(n);
        let _ = writeln!(s, "        \"{}\") cands=\"{}\" ;;", n.path, w.join(" "));
    }
    let _ = writeln!(
        s,
        "    esac\n    \
         if [[ \"$path\" == \"\" || \"$path\" == \"run\" ]] && [[ \"$cur\" != -* ]]; then\n        \
         # Tasks and plugin commands of the project: from the daemon, no plugin started.\n        \
         local names\n        \
         names=$(\"${{words[0]}}\" --complete-names 2>/dev/null | cut -f1)\n        \
         if [[ \"$path\" == \"\" && $positional == 1 ]]; then cands=\"\"; fi\n        \
         cands=\"$cands $names\"\n    \
         fi\n    \
         local IFS=$'\\n'\n    \
         COMPREPLY=($(IFS=$' \\t\\n'; compgen -W \"$cands\" -- \"$cur\"))\n    \
         # bash replaces only the text after the last `:` (as bash-completion's\n    \
         # __ltrim_colon_completions does, without needing it).\n    \
         if [[ \"$cur\" == *:* && \"${{COMP_WORDBREAKS-:}}\" == *:* && -n \"${{COMP_LINE-}}\" ]]; then\n        \
         local colon=\"${{cur%\"${{cur##*:}}\"}}\"\n        \
         for i in \"${{!COMPREPLY[@]}}\"; do COMPREPLY[i]=\"${{COMPREPLY[i]#\"$colon\"}}\"; done\n    \
         fi\n    \
         return 0\n\
         }}\n\
         complete -o default -F _taskrush taskrush"
    );
    s
}

/// zsh's `_describe` takes `NAME:DESCRIPTION`; colons in names escaped.
fn zsh_item(name: &str, desc: &str) -> String {
    let q = |t: &str| t.replace('\\', "\\\\").replace('\'', "'\\''");
    format!("'{}:{}'", q(&name.replace(':', "\\:")), q(desc))
}

pub fn zsh() -> String {
    let nodes = nodes();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#compdef taskrush\n\
         # zsh completion for taskrush (generated by `taskrush --completions zsh`)\n\
         # Install: taskrush --completions zsh > \"${{fpath[1]}}/_taskrush\" (or a directory of your $fpath)\n\
         _taskrush() {{\n  \
         local path_=\"\" positional=0 i w\n  \
         local -a cands names\n  \
         for ((i = 2; i < CURRENT; i++)); do\n    \
         w=${{words[i]}}\n    \
         case $w in\n      \
         {}) ((i++)) ;;\n      \
         -*) ;;\n      \
         *)\n        \
         case \"${{path_:+$path_ }}$w\" in\n          \
         {}) path_=\"${{path_:+$path_ }}$w\" ;;\n          \
         *) positional=1; break ;;\n        \
         esac ;;\n    \
         esac\n  \
         done\n  \
         case ${{words[CURRENT-1]}} in",
        value_options(&nodes).join("|"),
        nodes
            .iter()
            .filter(|n| !n.path.is_empty())
            .map(|n| format!("\"{}\"", n.path))
            .collect::<Vec<_>>()
            .join("|"),
    );
    for (names, values) in value_cases(&nodes) {
        let body = match values {
            None => "_files; return".to_owned(),
            Some(v) if v.is_empty() => "return 1".to_owned(),
            Some(v) => format!("compadd -- {}; return", v.join(" ")),
        };
        let _ = writeln!(s, "    {}) {body} ;;", names.join("|"));
    }
    let _ = writeln!(s, "  esac\n  case $path_ in");
    for n in &nodes {
        let mut items: Vec<String> = n
            .subs
            .iter()
            .map(|(name, help)| zsh_item(name, help))
            .collect();
        for f in &n.flags {
            for name in f
                .long
                .iter()
                .map(|l| format!("--{l}"))
                .chain(f.short.iter().map(|c| format!("-{c}")))
            {
                items.push(zsh_item(&name, &f.help));
            }
        }
        let _ = writeln!(s, "    \"{}\") cands=({}) ;;", n.path, items.join(" "));
    }
    let _ = writeln!(
        s,
        "  esac\n  \
         if [[ $path_ == \"\" && $positional == 1 ]]; then cands=(${{(M)cands:#-*}}); fi\n  \
         if [[ ( $path_ == \"\" || $path_ == run ) && $PREFIX != -* ]]; then\n    \
         # Tasks and plugin commands of the project: from the daemon, no plugin started.\n    \
         local line\n    \
         for line in ${{(f)\"$(${{words[1]}} --complete-names 2>/dev/null)\"}}; do\n      \
         names+=(\"${{${{line%%$'\\t'*}}//:/\\\\:}}:${{line#*$'\\t'}}\")\n    \
         done\n    \
         _describe -t tasks 'task or plugin command' names\n  \
         fi\n  \
         _describe -t commands 'taskrush' cands\n\
         }}\n\
         if [[ $zsh_eval_context[-1] == loadautofunc ]]; then\n  \
         _taskrush \"$@\"\n\
         else\n  \
         compdef _taskrush taskrush\n\
         fi"
    );
    s
}

pub fn fish() -> String {
    let nodes = nodes();
    let fq = |t: &str| format!("'{}'", t.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# fish completion for taskrush (generated by `taskrush --completions fish`)\n\
         # Install: taskrush --completions fish > ~/.config/fish/completions/taskrush.fish\n\
         function __taskrush_path\n    \
         set -l path ''\n    \
         set -l skip 0\n    \
         for w in (commandline -opc)[2..-1]\n        \
         if test $skip = 1\n            \
         set skip 0\n            \
         continue\n        \
         end\n        \
         switch $w\n            \
         case {}\n                \
         set skip 1\n            \
         case '-*'\n            \
         case '*'\n                \
         set -l next (string trim -- \"$path $w\")\n                \
         if contains -- $next {}\n                    \
         set path $next\n                \
         else\n                    \
         set path \"$path+\"\n                    \
         break\n                \
         end\n        \
         end\n    \
         end\n    \
         echo $path\n\
         end\n\
         function __taskrush_at\n    \
         test (__taskrush_path) = \"$argv[1]\"\n\
         end\n\
         complete -c taskrush -f",
        value_options(&nodes).join(" "),
        nodes
            .iter()
            .filter(|n| !n.path.is_empty())
            .map(|n| fq(&n.path))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let _ = writeln!(
        s,
        "# Tasks and plugin commands of the project: from the daemon, no plugin started.\n\
         complete -c taskrush -n '__taskrush_at \"\"; or __taskrush_at +; or __taskrush_at run; or __taskrush_at run+' -a '(taskrush --complete-names 2>/dev/null)'"
    );
    for n in &nodes {
        let cond = if n.path.is_empty() {
            "__taskrush_at \"\"".to_owned()
        } else {
            format!("__taskrush_at {}", fq(&n.path))
        };
        for (name, help) in &n.subs {
            let _ = writeln!(
                s,
                "complete -c taskrush -n {} -a {} -d {}",
                fq(&cond),
                fq(name),
                fq(help)
            );
        }
        for f in &n.flags {
            let mut line = format!("complete -c taskrush -n {}", fq(&cond));
            if let Some(l) = &f.long {
                let _ = write!(line, " -l {l}");
            }
            if let Some(c) = f.short {
                let _ = write!(line, " -s {c}");
            }
            if f.takes_value {
                line.push_str(" -r");
                if f.long.as_deref() == Some("file") {
                    line.push_str(" -F");
                } else if f.long.as_deref() == Some("completions") {
                    let _ = write!(line, " -a {}", fq(&SHELLS.join(" ")));
                } else if !f.values.is_empty() {
                    let _ = write!(line, " -a {}", fq(&f.values.join(" ")));
                }
            }
            let _ = writeln!(line, " -d {}", fq(&f.help));
            s.push_str(&line);
        }
    }
    s
}

/// `taskrush --completions SHELL`.
pub fn print(shell: &str) -> Result<i32, CliError> {
    let script = match shell {
        "bash" => bash(),
        "zsh" => zsh(),
        "fish" => fish(),
        other => {
            return Err(CliError::Usage {
                message: format!("no completions for shell `{other}`"),
                hint: Some(format!("one of {}", SHELLS.join(", "))),
            });
        }
    };
    let _ = std::io::stdout().write_all(script.as_bytes());
    Ok(0)
}

/// `taskrush --complete-names`: the project's tasks, then its plugin
/// commands, one `NAME<TAB>DESCRIPTION` a line, for the completion
/// scripts. Starts the daemon if needed, never a plugin; prints nothing
/// (and exits 0) when there is no project.
pub fn names(args: &RunArgs) -> Result<i32, CliError> {
    let Ok(list) = crate::list::fetch(args) else {
        return Ok(0);
    };
    let clean = |s: &str| {
        crate::render::printable(s)
            .replace(['\t', '\n'], " ")
            .trim()
            .to_owned()
    };
    let mut out = std::io::stdout().lock();
    for t in &list.tasks {
        let desc = t.description.as_deref().unwrap_or("");
        let _ = writeln!(out, "{}\t{}", clean(&t.name), clean(desc));
    }
    for c in &list.commands {
        let _ = writeln!(
            out,
            "{}\t{} (plugin `{}`)",
            clean(&c.name),
            clean(&c.description),
            clean(&c.plugin)
        );
    }
    Ok(0)
}

/// The man page of `taskrush`, rendered from the CLI definition: the
/// top-level page, then one section per subcommand (`TASKRUSH RUN`,
/// `TASKRUSH DAEMON LOGS`, …) with its synopsis and options.
#[cfg(test)]
pub fn render_man_page() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out).expect("render");
    man.render_name_section(&mut out).expect("render");
    man.render_synopsis_section(&mut out).expect("render");
    man.render_description_section(&mut out).expect("render");
    man.render_options_section(&mut out).expect("render");
    man.render_subcommands_section(&mut out).expect("render");
    fn sub_sections(cmd: &clap::Command, path: &str, out: &mut Vec<u8>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            let mut part = Vec::new();
            let sub_man = clap_mangen::Man::new(sub.clone().bin_name(&path));
            sub_man.render_synopsis_section(&mut part).expect("render");
            sub_man
                .render_description_section(&mut part)
                .expect("render");
            if sub.get_arguments().any(|a| !a.is_hide_set()) {
                sub_man.render_options_section(&mut part).expect("render");
            }
            let part = String::from_utf8_lossy(&part).replace("\n.SH ", "\n.SS ");
            let part = part
                .strip_prefix(".SH ")
                .map(|p| format!(".SS {p}"))
                .unwrap_or(part);
            out.extend_from_slice(format!(".SH \"{}\"\n", path.to_uppercase()).as_bytes());
            out.extend_from_slice(part.as_bytes());
            sub_sections(sub, &path, out);
        }
    }
    sub_sections(&cmd, "taskrush", &mut out);
    out.extend_from_slice(
        b".SH \"SEE ALSO\"\nCompletion scripts: \\fBtaskrush \\-\\-completions bash|zsh|fish\\fR. \
          Documentation: README.md and docs/ of the TaskRush repository.\n",
    );
    man.render_version_section(&mut out).expect("render");
    String::from_utf8(out).expect("UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/taskrush.1` is what `taskrush --man` prints; it must match
    /// the CLI definition. `TASKRUSH_BLESS=1 cargo test -p taskrush-cli`
    /// rewrites it.
    #[test]
    fn the_checked_in_man_page_is_current() {
        let page = render_man_page();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/taskrush.1");
        if std::env::var_os("TASKRUSH_BLESS").is_some() {
            std::fs::write(path, &page).expect("write docs/taskrush.1");
            return;
        }
        assert!(
            page == MAN_PAGE,
            "docs/taskrush.1 is out of date: run `TASKRUSH_BLESS=1 cargo test -p taskrush-cli`"
        );
    }

    #[test]
    fn the_scripts_name_every_built_in_word() {
        for script in [bash(), zsh(), fish()] {
            for w in taskrush_protocol::RESERVED_WORDS {
                assert!(script.contains(w), "`{w}` missing from:\n{script}");
            }
            assert!(script.contains("--complete-names"));
        }
    }
}
