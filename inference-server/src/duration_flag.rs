//! The value parser of every duration flag, shared by the rooms that declare such flags
//! (config, auth, listener), so one format holds everywhere.

use std::time::Duration;

/// A duration flag such as `720h`, `10s`, `250ms` or `1h 30m` (jiff's friendly format), positive.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration = value
        .parse()
        .map_err(|e| format!("{value:?} is not a duration such as 10s or 720h: {e}"))?;
    Duration::try_from(parsed)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{value:?} must be a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_friendly_units() {
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "0s", "-5h", "forever"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
