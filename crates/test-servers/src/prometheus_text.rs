//! A strict parser of the Prometheus text exposition format (version 0.0.4), for the tests
//! that check what `/metrics` and the metrics registry render: any deviation from the format
//! (spacing, escapes, duplicate series, a family split in two, a second TYPE) is an error
//! naming the line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a text is not valid exposition format, naming the line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The sample named `name` whose labels are exactly `labels`, in any family.
pub fn find<'a>(exp: &'a Exposition, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    exp.values().flat_map(|(_, samples)| samples).find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The type (`counter`, `gauge`, …) of the family `name`.
pub fn kind<'a>(exp: &'a Exposition, name: &str) -> Option<&'a str> {
    exp.get(name).map(|(kind, _)| kind.as_str())
}

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (a histogram's `_bucket`/`_sum`/`_count` child keeps its suffix).
    pub name: String,
    /// The labels by name.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` and `±Inf` included).
    pub value: f64,
}

/// Families by name: (type, samples).
pub type Exposition = BTreeMap<String, (String, Vec<Sample>)>;

fn is_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_prom_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
            && !s.is_empty() =>
        {
            s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// Parse `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let consumed;
        loop {
            // label name
            let mut lname = String::new();
            match chars.peek() {
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                lname.push(c);
                chars.next();
            }
            if !is_label_name(&lname) {
                return Err(format!("bad label name {lname:?}"));
            }
            if chars.next().map(|x| x.1) != Some('=') || chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("label {lname}: expected =\""));
            }
            let mut val = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => val.push('\\'),
                        Some((_, '"')) => val.push('"'),
                        Some((_, 'n')) => val.push('\n'),
                        other => return Err(format!("bad escape in label value: {other:?}")),
                    },
                    Some((_, '\n')) => return Err("raw newline in label value".into()),
                    Some((_, c)) => val.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.insert(lname.clone(), val).is_some() {
                return Err(format!("duplicate label {lname}"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                other => return Err(format!("expected , or }} after label, got {other:?}")),
            }
        }
        rest = &r[consumed..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_prom_value(parts.next().ok_or("missing value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields after timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parse a whole exposition; any deviation is an error naming the line.
pub fn parse_exposition(text: &str) -> Result<Exposition, ParseError> {
    parse_families(text).map_err(ParseError)
}

/// Whether a HELP text escapes only `\\` and `\n`.
fn help_escapes_ok(help: &str) -> bool {
    let mut it = help.chars();
    while let Some(ch) = it.next() {
        if ch == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
            return false;
        }
    }
    true
}

fn parse_families(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("exposition does not end with a newline".into());
    }
    let mut fams: Exposition = BTreeMap::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut w = c.trim_start().splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(err("bad HELP name".into()));
                    }
                    if !helped.insert(name.to_string()) {
                        return Err(err("second HELP for the family".into()));
                    }
                    if !help_escapes_ok(help.unwrap_or("")) {
                        return Err(err("bad escape in HELP".into()));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(err("bad TYPE name".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("bad type {kind:?}")));
                    }
                    if fams.contains_key(name) {
                        return Err(err("TYPE after samples or second TYPE".into()));
                    }
                    if let Some(prev) = current.replace(name.to_string()) {
                        closed.insert(prev);
                    }
                    fams.insert(name.to_string(), (kind.to_string(), Vec::new()));
                }
                (Some("TYPE"), _, _) => return Err(err("TYPE without a type".into())),
                _ => {} // a plain comment
            }
            continue;
        }
        let s = parse_sample(line).map_err(err)?;
        let family = match fams.get(&s.name) {
            Some((kind, _)) if kind == "counter" || kind == "gauge" || kind == "untyped" => {
                s.name.clone()
            }
            _ => {
                // histogram/summary children, or an untyped family.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suf| s.name.strip_suffix(suf))
                    .filter(|b| {
                        fams.get(*b)
                            .is_some_and(|(k, _)| k == "histogram" || k == "summary")
                    })
                    .map(str::to_string);
                match base {
                    Some(b) => b,
                    None => {
                        fams.insert(s.name.clone(), ("untyped".into(), Vec::new()));
                        if let Some(prev) = current.replace(s.name.clone()) {
                            closed.insert(prev);
                        }
                        s.name.clone()
                    }
                }
            }
        };
        if closed.contains(&family) || current.as_deref() != Some(family.as_str()) {
            return Err(err("samples of a family are not contiguous".into()));
        }
        let key = (
            s.name.clone(),
            s.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        if !series.insert(key) {
            return Err(err("duplicate series".into()));
        }
        fams.get_mut(&family).unwrap().1.push(s);
    }
    for h in &helped {
        if !fams.contains_key(h) {
            return Err(format!("HELP for {h} without TYPE or samples"));
        }
    }
    Ok(fams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_parser_is_strict() {
        let good =
            "# HELP a_total A thing.\n# TYPE a_total counter\na_total{db=\"/x \\\"y\\\"\"} 3\n\
                    # TYPE g gauge\ng 1.5e3 1700000000000\ng{k=\"v\"} NaN\n";
        let f = parse_exposition(good).unwrap();
        assert_eq!(f["a_total"].1[0].labels["db"], "/x \"y\"");
        assert_eq!(f["g"].1.len(), 2);
        for bad in [
            "a 1",                                                        // no trailing newline
            "a{b=\"c\"}  1\n",                                            // two spaces
            "a{b=c} 1\n",                                                 // unquoted label
            "a{b=\"c\",b=\"d\"} 1\n",                                     // duplicate label
            "a 1\na 2\n",                                                 // duplicate series
            "# TYPE a counter\na 1\n# TYPE a counter\n",                  // second TYPE
            "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n", // not contiguous
            "# TYPE a widget\n",                                          // bad type
            "1a 1\n",                                                     // bad name
            "a one\n",                                                    // bad value
            "a{b=\"\\q\"} 1\n",                                           // bad escape
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad:?}");
        }
    }
}
