//! Timestamps in the exact text forms Kubernetes writes.

use chrono::{DateTime, SecondsFormat, Utc};

/// `metadata.creationTimestamp` form: RFC 3339, seconds precision, `Z`.
pub fn rfc3339_seconds(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Go `time.RFC3339Nano` in UTC: the fraction keeps 0–9 digits, trailing zeros dropped (`…:52.1Z`, `…:52Z`).
/// This is the form of `endpoints.kubernetes.io/last-change-trigger-time`.
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos() % 1_000_000_000;
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// Parses an RFC 3339 timestamp into UTC, `None` when malformed.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Go's `duration.HumanDuration`, the `Age` column of kubectl tables.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(nanos: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2018, 10, 22, 19, 32, 52).unwrap()
            + chrono::Duration::nanoseconds(nanos as i64)
    }

    #[test]
    fn rfc3339_nano_drops_trailing_zeros_of_the_fraction() {
        assert_eq!(rfc3339_nano(at(100_000_000)), "2018-10-22T19:32:52.1Z");
        assert_eq!(rfc3339_nano(at(0)), "2018-10-22T19:32:52Z");
        assert_eq!(
            rfc3339_nano(at(123_456_789)),
            "2018-10-22T19:32:52.123456789Z"
        );
        assert_eq!(rfc3339_nano(at(120_000)), "2018-10-22T19:32:52.00012Z");
    }

    #[test]
    fn rfc3339_seconds_has_no_fraction() {
        assert_eq!(rfc3339_seconds(at(999_000_000)), "2018-10-22T19:32:52Z");
    }

    #[test]
    fn human_duration_matches_go() {
        let s = chrono::Duration::seconds;
        assert_eq!(human_duration(s(-5)), "<invalid>");
        assert_eq!(human_duration(s(-1)), "0s");
        assert_eq!(human_duration(s(119)), "119s");
        assert_eq!(human_duration(s(120)), "2m");
        assert_eq!(human_duration(s(125)), "2m5s");
        assert_eq!(human_duration(s(11 * 60 + 5)), "11m");
        assert_eq!(human_duration(s(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(s(9 * 3600)), "9h");
        assert_eq!(human_duration(s(50 * 3600)), "2d2h");
        assert_eq!(human_duration(s(10 * 86400)), "10d");
        assert_eq!(human_duration(s(3 * 365 * 86400 + 86400)), "3y1d");
        assert_eq!(human_duration(s(9 * 365 * 86400)), "9y");
    }
}
