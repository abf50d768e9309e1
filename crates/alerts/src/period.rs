//! Periods in an organization's time zone: days, ISO weeks, calendar months and hours, as
//! `[from, to)` windows of Unix microseconds, each with a stable key.
//!
//! Boundaries are computed in civil time and then converted, so a day across a DST change is
//! 23 or 25 hours long and a month starts at local midnight of its first day. Keys name the
//! local period (`day:2026-11-25`, `week:2026-W48`, `month:2026-11`); an hour key carries its
//! UTC offset so the repeated hour of a fall-back night gets two keys.

use jiff::tz::TimeZone;
use jiff::{RoundMode, Timestamp, ToSpan, Unit, ZonedDateTime, ZonedDateTimeRound};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid};

/// A calendar period in the organization's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    /// An ISO week: Monday 00:00 to the next Monday 00:00.
    Week,
    /// A calendar month.
    Month,
}

/// A half-open time window `[from, to)` in Unix microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Window {
    pub fn len_micros(&self) -> i64 {
        self.to - self.from
    }
}

/// A period's window and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodWindow {
    /// Stable and unique per period and zone kind: `day:2026-11-25`, `week:2026-W48`,
    /// `month:2026-11`, `hour:2026-11-25T14:00-05:00`, `7d:2026-11-23/2026-11-29`.
    pub key: String,
    /// For people: `2026-11-25`, `2026-W48`, `November 2026`, `2026-11-23 to 2026-11-29`.
    pub label: String,
    pub window: Window,
}

/// The IANA time zone `name` (`Europe/Paris`, `America/New_York`, `UTC`), from the database
/// bundled into the binary.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("time_zone", "must be an IANA time zone name"));
    }
    TimeZone::get(name).map_err(|_| {
        invalid(
            "time_zone",
            format!("'{name}' is not an IANA time zone name (e.g. 'Europe/Paris', 'UTC')"),
        )
    })
}

/// The period of kind `period` that contains `at` (Unix microseconds), in zone `tz`.
pub fn period_window(period: Period, at: i64, tz: &TimeZone) -> Result<PeriodWindow> {
    let z = zoned(at, tz)?;
    match period {
        Period::Day => {
            let start = z.start_of_day()?;
            let end = z.date().tomorrow()?.to_zoned_datetime(tz.clone())?;
            let day = z.date().strftime("%Y-%m-%d").to_string();
            Ok(PeriodWindow {
                key: format!("day:{day}"),
                label: day,
                window: window(&start, &end),
            })
        }
        Period::Week => {
            let back = i64::from(z.weekday().to_monday_zero_offset());
            let monday = z.date().checked_sub(back.days())?;
            let start = monday.to_zoned_datetime(tz.clone())?;
            let end = monday
                .checked_add(7.days())?
                .to_zoned_datetime(tz.clone())?;
            let iso = monday.iso_week_date();
            let week = format!("{:04}-W{:02}", iso.year(), iso.week());
            Ok(PeriodWindow {
                key: format!("week:{week}"),
                label: week,
                window: window(&start, &end),
            })
        }
        Period::Month => {
            let first = z.date().first_of_month();
            let start = first.to_zoned_datetime(tz.clone())?;
            let end = first
                .checked_add(1.month())?
                .to_zoned_datetime(tz.clone())?;
            Ok(PeriodWindow {
                key: format!("month:{}", first.strftime("%Y-%m")),
                label: first.strftime("%B %Y").to_string(),
                window: window(&start, &end),
            })
        }
    }
}

/// The period before `pw` (of the same kind).
pub fn previous_period(period: Period, pw: &PeriodWindow, tz: &TimeZone) -> Result<PeriodWindow> {
    period_window(period, pw.window.from - 1, tz)
}

/// The local clock hour containing `at`.
pub(crate) fn hour_window(at: i64, tz: &TimeZone) -> Result<PeriodWindow> {
    let z = zoned(at, tz)?;
    let start = z.round(
        ZonedDateTimeRound::new()
            .smallest(Unit::Hour)
            .mode(RoundMode::Trunc),
    )?;
    let end = start.checked_add(1.hour())?;
    let stamp = start.strftime("%Y-%m-%dT%H:%M%:z").to_string();
    Ok(PeriodWindow {
        key: format!("hour:{stamp}"),
        label: start.strftime("%Y-%m-%d %H:%M (UTC%:z)").to_string(),
        window: window(&start, &end),
    })
}

/// The `n` local days before the day that starts at `day_start`: `[day_start − n days,
/// day_start)`.
pub(crate) fn days_before(day_start: i64, n: i64, tz: &TimeZone) -> Result<Window> {
    let z = zoned(day_start, tz)?;
    let first = z
        .date()
        .checked_sub(n.days())?
        .to_zoned_datetime(tz.clone())?;
    Ok(Window {
        from: micros(&first),
        to: day_start,
    })
}

/// The seven local days that end where the day containing `at` starts (the period a weekly
/// digest sent that day covers), and the seven days before them.
pub(crate) fn seven_days_before(at: i64, tz: &TimeZone) -> Result<(PeriodWindow, PeriodWindow)> {
    let z = zoned(at, tz)?;
    let today = z.date();
    let make = |end_day: jiff::civil::Date| -> Result<PeriodWindow> {
        let first = end_day.checked_sub(7.days())?;
        let last = end_day.yesterday()?;
        let a = first.strftime("%Y-%m-%d").to_string();
        let b = last.strftime("%Y-%m-%d").to_string();
        Ok(PeriodWindow {
            key: format!("7d:{a}/{b}"),
            label: format!("{a} to {b}"),
            window: window(
                &first.to_zoned_datetime(tz.clone())?,
                &end_day.to_zoned_datetime(tz.clone())?,
            ),
        })
    };
    let current = make(today)?;
    let previous = make(today.checked_sub(7.days())?)?;
    Ok((current, previous))
}

/// Local hour (0–23) and ISO weekday (1 = Monday … 7 = Sunday) at `at`.
pub(crate) fn local_hour_and_weekday(at: i64, tz: &TimeZone) -> Result<(i8, i8)> {
    let z = zoned(at, tz)?;
    Ok((z.hour(), z.weekday().to_monday_one_offset()))
}

/// `at` as an RFC 3339 time in zone `tz`, for messages.
pub(crate) fn local_rfc3339(at: i64, tz: &TimeZone) -> String {
    match zoned(at, tz) {
        Ok(z) => z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        Err(_) => at.to_string(),
    }
}

fn zoned(at: i64, tz: &TimeZone) -> Result<ZonedDateTime> {
    Ok(Timestamp::from_microsecond(at)
        .map_err(|e| Error::Time(e.to_string()))?
        .to_zoned_datetime(tz.clone()))
}

fn micros(z: &ZonedDateTime) -> i64 {
    z.timestamp().as_microsecond()
}

fn window(start: &ZonedDateTime, end: &ZonedDateTime) -> Window {
    Window {
        from: micros(start),
        to: micros(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<ZonedDateTime>()
            .unwrap()
            .timestamp()
            .as_microsecond()
    }

    fn check(period: Period, when: &str, zone: &str, key: &str, from: &str, to: &str) {
        let tz = time_zone(zone).unwrap();
        let pw = period_window(period, at(when), &tz).unwrap();
        assert_eq!(pw.key, key, "{when} {zone}");
        assert_eq!(pw.window.from, at(from), "start of {key}");
        assert_eq!(pw.window.to, at(to), "end of {key}");
    }

    #[test]
    fn periods_in_zones() {
        // A US spring-forward day is 23 hours long.
        check(
            Period::Day,
            "2026-03-08T12:00[America/New_York]",
            "America/New_York",
            "day:2026-03-08",
            "2026-03-08T00:00-05:00[America/New_York]",
            "2026-03-09T00:00-04:00[America/New_York]",
        );
        // The same instant is a different day in Tokyo.
        check(
            Period::Day,
            "2026-03-08T12:00[America/New_York]",
            "Asia/Tokyo",
            "day:2026-03-09",
            "2026-03-09T00:00[Asia/Tokyo]",
            "2026-03-10T00:00[Asia/Tokyo]",
        );
        // ISO week 53 of 2026 runs into 2027.
        check(
            Period::Week,
            "2027-01-02T10:00[Europe/Paris]",
            "Europe/Paris",
            "week:2026-W53",
            "2026-12-28T00:00[Europe/Paris]",
            "2027-01-04T00:00[Europe/Paris]",
        );
        // A month across the European fall-back.
        check(
            Period::Month,
            "2026-10-31T23:59[Europe/Paris]",
            "Europe/Paris",
            "month:2026-10",
            "2026-10-01T00:00+02:00[Europe/Paris]",
            "2026-11-01T00:00+01:00[Europe/Paris]",
        );
        check(
            Period::Month,
            "2026-02-10T00:00[UTC]",
            "UTC",
            "month:2026-02",
            "2026-02-01T00:00[UTC]",
            "2026-03-01T00:00[UTC]",
        );
    }

    #[test]
    fn the_repeated_hour_has_two_keys() {
        let tz = time_zone("America/New_York").unwrap();
        let first = hour_window(at("2026-11-01T01:30-04:00[America/New_York]"), &tz).unwrap();
        let second = hour_window(at("2026-11-01T01:30-05:00[America/New_York]"), &tz).unwrap();
        assert_ne!(first.key, second.key);
        assert_eq!(first.window.len_micros(), 3_600_000_000);
        assert_eq!(first.window.to, second.window.from);
    }

    #[test]
    fn previous_periods_and_windows() {
        let tz = time_zone("Europe/Paris").unwrap();
        let now = at("2026-03-30T10:00[Europe/Paris]");
        let day = period_window(Period::Day, now, &tz).unwrap();
        let prev = previous_period(Period::Day, &day, &tz).unwrap();
        assert_eq!(prev.key, "day:2026-03-29");
        // 2026-03-29 is the spring-forward day in Paris.
        assert_eq!(prev.window.len_micros(), 23 * 3_600_000_000);
        let seven = days_before(day.window.from, 7, &tz).unwrap();
        assert_eq!(seven.from, at("2026-03-23T00:00[Europe/Paris]"));
        let (cur, before) = seven_days_before(now, &tz).unwrap();
        assert_eq!(cur.key, "7d:2026-03-23/2026-03-29");
        assert_eq!(before.window.to, cur.window.from);
        assert_eq!(local_hour_and_weekday(now, &tz).unwrap(), (10, 1));
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(time_zone("Mars/Olympus_Mons").is_err());
        assert!(time_zone("").is_err());
        assert!(time_zone("UTC").is_ok());
    }
}
