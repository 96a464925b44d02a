//! `spec.schedule`: five-field cron expressions (minute, hour, day of
//! month, month, day of week), evaluated in UTC as Kubernetes CronJobs are by
//! default. Names (`MON`, `JAN`) and the nicknames `@hourly`, `@daily`,
//! `@weekly`, `@monthly` and `@yearly` work; when both day fields are
//! restricted a day matching either runs, as in cron.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// A parsed `spec.schedule`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

/// Why a schedule does not parse, in the cron library's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && fields != 5 {
            return Err(ScheduleError(format!(
                "has {fields} fields; a schedule has five: minute hour day-of-month month \
                 day-of-week (e.g. \"*/30 * * * *\")"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(text)
            .map_err(|e| ScheduleError(e.to_string()))?;
        let schedule = Schedule { cron };
        // "0 0 30 2 *" parses but never comes: say so now, not at the first
        // reconcile.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(ScheduleError("never matches a real date".into()));
        }
        Ok(schedule)
    }

    /// The first time strictly after `after` the schedule fires.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let next = self.cron.find_next_occurrence(&civil(after), false).ok()?;
        utc(next)
    }

    /// The last time at or before `at` the schedule fired, if any came
    /// after `since` (exclusive): the tick a reconcile at `at` owes.
    pub fn latest_between(&self, since: Timestamp, at: Timestamp) -> Option<Timestamp> {
        if at <= since {
            return None;
        }
        let tick = self.cron.find_previous_occurrence(&civil(at), true).ok()?;
        utc(tick).filter(|tick| *tick > since)
    }
}

fn civil(at: Timestamp) -> DateTime {
    // Whole seconds: cron resolves to the minute, and a sub-second rest
    // would make "at or before" miss the tick it sits on.
    let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
    TimeZone::UTC.to_datetime(at)
}

fn utc(at: DateTime) -> Option<Timestamp> {
    TimeZone::UTC.to_timestamp(at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn five_fields_and_nicknames_parse_and_others_are_refused_with_the_reason() {
        for good in [
            "*/30 * * * *",
            "0 3 * * MON-FRI",
            "15 2 1 JAN *",
            "@hourly",
            "@daily",
        ] {
            assert!(Schedule::parse(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("* * * *", "4 fields"),
            ("0 * * * * *", "6 fields"),
            ("61 * * * *", ""),
            ("* * * * FOO", ""),
            ("0 0 30 2 *", "never matches"),
            ("", "0 fields"),
        ] {
            let error = Schedule::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn next_is_strictly_after_and_in_utc() {
        let every_half_hour = Schedule::parse("*/30 * * * *").unwrap();
        assert_eq!(
            every_half_hour.next_after(ts("2026-11-21T10:00:00Z")),
            Some(ts("2026-11-21T10:30:00Z"))
        );
        assert_eq!(
            every_half_hour.next_after(ts("2026-11-21T10:29:59.9Z")),
            Some(ts("2026-11-21T10:30:00Z"))
        );
        let daily = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            daily.next_after(ts("2026-11-21T03:00:00Z")),
            Some(ts("2026-11-22T03:00:00Z"))
        );
    }

    #[test]
    fn the_owed_tick_is_the_latest_one_after_the_last_taken() {
        let schedule = Schedule::parse("*/10 * * * *").unwrap();
        let since = ts("2026-11-21T10:00:00Z");
        assert_eq!(
            schedule.latest_between(since, ts("2026-11-21T10:09:59Z")),
            None
        );
        assert_eq!(
            schedule.latest_between(since, ts("2026-11-21T10:10:00.5Z")),
            Some(ts("2026-11-21T10:10:00Z"))
        );
        // Missed ticks fold into the latest: one run, not a burst.
        assert_eq!(
            schedule.latest_between(since, ts("2026-11-21T10:45:00Z")),
            Some(ts("2026-11-21T10:40:00Z"))
        );
        // The tick already taken is not owed again.
        assert_eq!(schedule.latest_between(since, since), None);
        assert_eq!(
            schedule.latest_between(ts("2026-11-21T10:10:00Z"), ts("2026-11-21T10:10:30Z")),
            None
        );
    }
}
