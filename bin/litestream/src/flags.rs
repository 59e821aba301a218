//! A command-line flag parser with Go's `flag` package rules, so every Litestream invocation
//! keeps working: `-name`, `--name`, `-name=value`, `-name value`; boolean flags take no
//! separate value (`-flag=false` works); parsing stops at the first positional or at `--`.
//!
//! Self-contained (std only): `fuzz/fuzz_targets/flags.rs` compiles this file as its own
//! module to fuzz it, so it must not use other modules of the binary.

use std::collections::HashMap;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Value,
}

/// One flag a command accepts: its name (without the dash), whether it takes a value, and
/// its usage line. Commands declare their flags as constants and read them back from
/// [`Parsed`] by the same constant, so each name is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag {
    name: &'static str,
    kind: Kind,
    usage: &'static str,
}

impl Flag {
    /// A flag that takes a value (`-name value` or `-name=value`).
    pub(crate) const fn value(name: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Value,
            usage,
        }
    }

    /// A boolean flag (`-name`, `-name=false`).
    pub(crate) const fn bool(name: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Bool,
            usage,
        }
    }
}

/// The flags one command accepts.
#[derive(Debug, Clone)]
pub(crate) struct FlagSet {
    command: &'static str,
    synopsis: &'static str,
    defs: Vec<Flag>,
}

/// Parsed flags and the remaining positional arguments.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    values: HashMap<&'static str, String>,
    /// Positional arguments.
    pub(crate) args: Vec<String>,
}

/// Why parsing stopped.
#[derive(Debug)]
pub(crate) enum FlagError {
    /// `-h` or `-help`: print usage and exit 1.
    Help(String),
    /// A usage error: the message, then the usage text.
    Usage(String, String),
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagError::Help(_) => f.write_str("help requested"),
            FlagError::Usage(msg, _) => f.write_str(msg),
        }
    }
}

impl std::error::Error for FlagError {}

impl FlagSet {
    /// The flag set of `command`; `synopsis` follows the command's name in the usage text.
    pub(crate) fn new(command: &'static str, synopsis: &'static str, flags: &[Flag]) -> Self {
        FlagSet {
            command,
            synopsis,
            defs: flags.to_vec(),
        }
    }

    /// Usage text for this command.
    pub(crate) fn usage(&self) -> String {
        let mut s = format!(
            "The {} command.\n\nUsage:\n\n\tlitestream {} {}\n\nArguments:\n\n",
            self.command, self.command, self.synopsis
        );
        for d in &self.defs {
            let arg = if d.kind == Kind::Value { " VALUE" } else { "" };
            s.push_str(&format!("\t-{}{}\n\t    {}\n\n", d.name, arg, d.usage));
        }
        s
    }

    fn usage_err(&self, msg: String) -> FlagError {
        FlagError::Usage(msg, self.usage())
    }

    pub(crate) fn parse(&self, args: &[String]) -> Result<Parsed, FlagError> {
        let mut parsed = Parsed::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg == "--" {
                i += 1;
                break;
            }
            if arg.len() < 2 || !arg.starts_with('-') {
                break;
            }
            let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(self.usage_err(format!("bad flag syntax: {arg}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if (name == "h" || name == "help") && !self.defs.iter().any(|d| d.name == name) {
                return Err(FlagError::Help(self.usage()));
            }
            let Some(def) = self.defs.iter().find(|d| d.name == name) else {
                return Err(self.usage_err(format!("flag provided but not defined: -{name}")));
            };
            match def.kind {
                Kind::Bool => {
                    let v = inline.unwrap_or_else(|| "true".to_string());
                    let b = match v.as_str() {
                        "1" | "t" | "T" | "true" | "TRUE" | "True" => "true",
                        "0" | "f" | "F" | "false" | "FALSE" | "False" => "false",
                        _ => {
                            return Err(self.usage_err(format!(
                                "invalid boolean value {v:?} for -{name}: parse error"
                            )))
                        }
                    };
                    parsed.values.insert(def.name, b.to_string());
                }
                Kind::Value => {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            match args.get(i) {
                                Some(v) => v.clone(),
                                None => {
                                    return Err(
                                        self.usage_err(format!("flag needs an argument: -{name}"))
                                    )
                                }
                            }
                        }
                    };
                    parsed.values.insert(def.name, v);
                }
            }
            i += 1;
        }
        parsed.args = args[i..].to_vec();
        Ok(parsed)
    }
}

/// An argument that is not valid UTF-8 (Litestream's flags, paths and URLs are all handled as
/// text).
#[derive(Debug)]
pub(crate) struct NonUtf8Arg {
    /// 1-based position among the arguments after the program name.
    position: usize,
    /// The argument with invalid bytes replaced.
    lossy: String,
}

impl std::fmt::Display for NonUtf8Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "argument {} is not valid UTF-8: {:?}",
            self.position, self.lossy
        )
    }
}

impl std::error::Error for NonUtf8Arg {}

/// The arguments as UTF-8, or an error naming the first one that is not.
pub(crate) fn utf8_args(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Result<Vec<String>, NonUtf8Arg> {
    args.enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| NonUtf8Arg {
                position: i + 1,
                lossy: a.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

impl Parsed {
    /// The value of a value flag, if given.
    pub(crate) fn value(&self, flag: &Flag) -> Option<&str> {
        self.values.get(flag.name).map(String::as_str)
    }

    /// The value of a value flag, if given and not empty (Go's `-flag ""` is "unset").
    pub(crate) fn non_empty(&self, flag: &Flag) -> Option<&str> {
        self.value(flag).filter(|v| !v.is_empty())
    }

    /// True if a boolean flag was set to true.
    pub(crate) fn is_set(&self, flag: &Flag) -> bool {
        self.values.get(flag.name).is_some_and(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: Flag = Flag::value("o", "output");
    const IF_DB_NOT_EXISTS: Flag = Flag::bool("if-db-not-exists", "skip");
    const INDEX: Flag = Flag::value("index", "index");

    fn set() -> FlagSet {
        FlagSet::new(
            "restore",
            "[arguments] DB_PATH",
            &[O, IF_DB_NOT_EXISTS, INDEX],
        )
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_go_style_flags() {
        let p = set()
            .parse(&args(&[
                "-o",
                "out.db",
                "--if-db-not-exists",
                "-index=0a",
                "s3://b/p",
                "-x",
            ]))
            .expect("parse");
        assert_eq!(p.value(&O), Some("out.db"));
        assert!(p.is_set(&IF_DB_NOT_EXISTS));
        assert_eq!(p.value(&INDEX), Some("0a"));
        assert_eq!(p.args, args(&["s3://b/p", "-x"]));
    }

    #[test]
    fn unknown_flags_and_help() {
        let e = set().parse(&args(&["-v"])).unwrap_err();
        assert_eq!(e.to_string(), "flag provided but not defined: -v");
        assert!(matches!(
            set().parse(&args(&["-h"])),
            Err(FlagError::Help(_))
        ));
        let p = set()
            .parse(&args(&["-if-db-not-exists=false", "--", "-o"]))
            .expect("parse");
        assert!(!p.is_set(&IF_DB_NOT_EXISTS));
        assert_eq!(p.args, args(&["-o"]));
        assert!(set().parse(&args(&["-o"])).is_err());
    }
}

#[cfg(test)]
mod utf8_tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::utf8_args;

    #[test]
    fn a_non_utf8_argument_is_named_by_position() {
        let args = vec![
            OsString::from("restore"),
            OsString::from_vec(b"\xffout.db".to_vec()),
        ];
        let e = utf8_args(args.into_iter()).expect_err("not UTF-8");
        assert_eq!(
            e.to_string(),
            "argument 2 is not valid UTF-8: \"\u{fffd}out.db\""
        );
        let ok = utf8_args([OsString::from("wal")].into_iter()).expect("UTF-8");
        assert_eq!(ok, ["wal"]);
    }
}
