//! Paths and environment expansion for the config file: the config file's own path, `~`
//! and relative paths made absolute, and `$VAR` expansion exactly as Go's `os.ExpandEnv`.

use std::path::PathBuf;

use super::DEFAULT_CONFIG_PATH;
use crate::error::{Error, Result};

/// The config path to use: `-config`, else `LITESTREAM_CONFIG`, else `/etc/litestream.yml`.
pub fn default_config_path(flag: Option<&str>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return absolute_path(p);
    }
    match std::env::var("LITESTREAM_CONFIG") {
        Ok(p) if !p.is_empty() => absolute_path(&p),
        _ => Ok(PathBuf::from(DEFAULT_CONFIG_PATH)),
    }
}

/// Expand `~` and make a path absolute and clean, as Litestream does for database paths.
pub fn absolute_path(p: &str) -> Result<PathBuf> {
    let path = expand_home(p)?;
    let abs = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(path)
    };
    Ok(PathBuf::from(crate::layout::clean(&abs.to_string_lossy())))
}

/// Expand a leading `~` (`~` or `~/...`) to `$HOME`, as Litestream does for paths in the
/// config; any other path is returned as it is. An error when `HOME` is unset and needed.
pub fn expand_home(p: &str) -> Result<PathBuf> {
    if p != "~" && !p.starts_with("~/") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME")
        .map_err(|_| Error::InvalidConfig(format!("cannot expand {p:?}: HOME is not set")))?;
    Ok(PathBuf::from(format!("{home}{}", &p[1..])))
}

/// Expand `$NAME` and `${NAME}` in `text` exactly like Go's `os.ExpandEnv`.
pub fn expand_env_text(text: &str) -> String {
    expand_with(text, |name| std::env::var(name).unwrap_or_default())
}

fn is_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || b.is_ascii_digit()
}

fn is_alnum(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Returns (name, width consumed after the `$`).
fn shell_name(s: &[u8]) -> (Option<&[u8]>, usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_special(s[1]) && s[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for i in 1..s.len() {
            if s[i] == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if is_special(s[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = s.iter().take_while(|b| is_alnum(**b)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// Replace every occurrence of the (non-trivial) `values` in `msg` with `[redacted]`.
pub(super) fn redact_values(msg: &str, values: &[String]) -> String {
    let mut out = msg.to_string();
    let mut values: Vec<&String> = values.iter().filter(|v| v.trim().len() >= 3).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v.as_str(), "[redacted]");
    }
    out
}

/// [`expand_env_text`] with a custom lookup (for tests).
pub fn expand_with(text: &str, lookup: impl Fn(&str) -> String) -> String {
    expand_with_values(text, lookup).0
}

/// [`expand_with`], also returning the values it substituted (to keep them out of errors).
pub fn expand_with_values(text: &str, lookup: impl Fn(&str) -> String) -> (String, Vec<String>) {
    let mut values = Vec::new();
    let s = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    let mut j = 0;
    while j < s.len() {
        if s[j] == b'$' && j + 1 < s.len() {
            out.extend_from_slice(&s[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            match name {
                None if w > 0 => {}
                None => out.push(b'$'),
                Some(n) => {
                    let v = lookup(&String::from_utf8_lossy(n));
                    out.extend_from_slice(v.as_bytes());
                    values.push(v);
                }
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&s[i.min(s.len())..]);
    (String::from_utf8_lossy(&out).into_owned(), values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> String {
        match name {
            "FOO" => "foo".into(),
            "B" => "bee".into(),
            _ => String::new(),
        }
    }

    #[test]
    fn expands_like_go() {
        assert_eq!(expand_with("a $FOO b", env), "a foo b");
        assert_eq!(expand_with("${FOO}x", env), "foox");
        assert_eq!(expand_with("$UNSET.", env), ".");
        assert_eq!(expand_with("$$", env), "");
        assert_eq!(expand_with("x${}y", env), "xy");
        assert_eq!(expand_with("5$%", env), "5$%");
        assert_eq!(expand_with("end$", env), "end$");
        assert_eq!(expand_with("${FOO:-def}", env), "");
        assert_eq!(expand_with("$B$FOO", env), "beefoo");
        assert_eq!(expand_with("${", env), "");
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = std::env::var("HOME").unwrap_or_default();
        if home.is_empty() {
            assert!(expand_home("~/x").is_err());
        } else {
            assert_eq!(
                expand_home("~/x").unwrap(),
                PathBuf::from(format!("{home}/x"))
            );
            assert_eq!(expand_home("~").unwrap(), PathBuf::from(&home));
        }
        assert_eq!(expand_home("/a/~/b").unwrap(), PathBuf::from("/a/~/b"));
        assert_eq!(expand_home("~user/x").unwrap(), PathBuf::from("~user/x"));
    }
}
