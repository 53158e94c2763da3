//! When scheduled maintenance runs next (pure): standard 5-field cron (`0 */6 * * *`, minute hour day month
//! weekday, in UTC), or 6 fields with seconds first, parsed by `croner`.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// Checks a schedule; the message says what is wrong with it.
pub fn check(schedule: &str) -> Result<(), String> {
    parse(schedule).map(|_| ())
}

fn parse(schedule: &str) -> Result<croner::Cron, String> {
    // croner also reads a seventh field (years); what is documented, and what other cron readers of the same
    // file would take, is five fields or six with seconds (or an @-nickname).
    let fields = schedule.split_whitespace().count();
    if !schedule.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{schedule:?}: {fields} fields (expected cron, e.g. \"0 */6 * * *\": 5 fields, minute hour day \
             month weekday, or 6 with seconds first)"
        ));
    }
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

/// The gap between the scheduled run before `next` and `next` itself: how old the newest snapshot may be, at most,
/// while the schedule is kept (after Friday's run of a weekday schedule, the weekend; on Tuesday, a day).
pub fn gap_before(schedule: &str, next: SystemTime) -> Result<std::time::Duration, String> {
    let cron = parse(schedule)?;
    let at: DateTime<Utc> = next.into();
    let previous = cron
        .find_previous_occurrence(&at, false)
        .map_err(|e| format!("{schedule:?}: no previous run: {e}"))?;
    Ok((at - previous).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {

    #[test]
    fn five_or_six_fields_only() {
        assert!(check("0 */6 * * *").is_ok());
        assert!(check("30 0 */6 * * *").is_ok());
        assert!(check("@daily").is_ok());
        assert!(check("* * * * * * *").unwrap_err().contains("7 fields"));
        assert!(check("* * * *").is_err());
    }
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

    #[test]
    fn the_gap_is_the_one_before_the_next_run() {
        // Monday 2026-12-07T09:00:00Z follows Friday's run: the gap is the weekend.
        let monday = UNIX_EPOCH + Duration::from_secs(1_796_634_000);
        assert_eq!(
            humantime::format_rfc3339_seconds(monday).to_string(),
            "2026-12-07T09:00:00Z"
        );
        assert_eq!(
            gap_before("0 9 * * 1-5", monday).unwrap(),
            Duration::from_secs(3 * 86_400)
        );
        let tuesday = monday + Duration::from_secs(86_400);
        assert_eq!(
            gap_before("0 9 * * 1-5", tuesday).unwrap(),
            Duration::from_secs(86_400)
        );
        // Twice a day at 9 and 17: before 9, the night.
        assert_eq!(
            gap_before("0 9,17 * * *", monday).unwrap(),
            Duration::from_secs(16 * 3600)
        );
    }
}
