//! The plugin audit trail's file format, shared by the daemon (which
//! writes it) and the CLI (`taskrush plugin audit`, which reads it): one
//! JSON object per line, in [`DaemonPaths::audit`](crate::paths::DaemonPaths::audit)
//! and its rotated copies `.1` (newer) and `.2` (older).
//!
//! Every record has `time` (RFC 3339 UTC, fixed width, so that times
//! compare as strings), `kind`, `plugin` and `root` (the project root);
//! the rest depends on the kind (see `docs/plugins.md`).

/// Rotated copies kept beside the current file (as the daemon log).
pub const KEPT: usize = 2;

/// `secs` since the Unix epoch (and `millis`) as RFC 3339 UTC:
/// `2024-02-29T12:34:56.007Z`.
pub fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs() as i64, since.subsec_millis())
}

/// `--since`: `90s`, `30m`, `3h`, `2d` (a bare number is seconds), as
/// the time that long ago, in [`rfc3339`].
pub fn since(text: &str) -> Result<String, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let bad = || format!("invalid duration `{text}`: try `90s`, `30m`, `3h` or `2d`");
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(rfc3339(
        (now.as_secs() as i64).saturating_sub(secs),
        now.subsec_millis(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_210_096, 7), "2024-02-29T12:34:56.007Z");
    }

    #[test]
    fn since_takes_seconds_minutes_hours_and_days() {
        assert!(since("2d").is_ok_and(|t| t < now()));
        assert_eq!(
            since("2w").unwrap_err(), // not a unit on purpose
            "invalid duration `2w`: try `90s`, `30m`, `3h` or `2d`"
        );
    }
}
