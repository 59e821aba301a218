//! Go's time formats in the listing commands' columns: RFC 3339 with whole seconds and
//! `time.Duration.String`.

use time::OffsetDateTime;

/// Format a time as RFC 3339 in UTC with whole seconds (`2006-01-02T15:04:05Z`): Go's
/// RFC 3339 of the whole second, which is the writer-timestamp format without a fraction.
pub(crate) fn rfc3339_seconds(t: OffsetDateTime) -> String {
    litestream_core::format_writer_timestamp(t.replace_nanosecond(0).unwrap_or(t))
}

/// Format a signed duration in nanoseconds like Go's `time.Duration.String`.
pub(crate) fn go_duration(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let total_secs = n / 1_000_000_000;
    let sub = n % 1_000_000_000;
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = total_secs % 60;
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

fn frac(n: u128, unit: u128) -> String {
    let whole = n / unit;
    let rem = n % unit;
    if rem == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_format_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(-663_000_000), "-663ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(60_000_000_000), "1m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
    }

    #[test]
    fn rfc3339_drops_fractions() {
        let t = litestream_core::parse_rfc3339("2024-01-02T03:04:05.123Z").expect("parse");
        assert_eq!(rfc3339_seconds(t), "2024-01-02T03:04:05Z");
    }
}
