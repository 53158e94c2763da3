//! When scheduled maintenance runs next (pure): standard 5-field cron (`0 */6 * * *`, minute hour day month
//! weekday, in UTC), or 6 fields with seconds first, parsed by `croner`.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// Checks a schedule; the message says what is wrong with it.
pub fn check(schedule: &str) -> Result<(), String> {
    parse(schedule).map(|_| ())
}

fn parse(schedule: &str) -> Result<croner::Cron, String> {
    schedule
        .trim()
        .parse::<croner::Cron>()
        .map_err(|e| format!("{schedule:?}: {e} (expected cron, e.g. \"0 */6 * * *\")"))
}

/// The first time after `after` the schedule names (UTC).
pub fn next_run(schedule: &str, after: SystemTime) -> Result<SystemTime, String> {
    let cron = parse(schedule)?;
    let after: DateTime<Utc> = after.into();
    cron.find_next_occurrence(&after, false)
        .map(SystemTime::from)
        .map_err(|e| format!("{schedule:?}: no next run: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn five_fields_in_utc_and_six_with_seconds() {
        // 2026-12-01T20:07:46Z
        let t = UNIX_EPOCH + Duration::from_secs(1_796_155_666);
        let next = next_run("0 */6 * * *", t).unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(next).to_string(),
            "2026-12-02T00:00:00Z"
        );
        let next = next_run("*/2 * * * * *", t).unwrap();
        assert_eq!(next.duration_since(t).unwrap(), Duration::from_secs(2));
        let e = check("every hour").unwrap_err();
        assert!(
            e.contains("\"every hour\"") && e.contains("expected cron"),
            "{e}"
        );
        assert!(check("61 * * * *").is_err());
    }
}
