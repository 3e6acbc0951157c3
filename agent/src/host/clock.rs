//! Wall-clock times for people and files: RFC 3339 UTC and calendar fields, without a time
//! zone database (the agent only writes UTC).

/// RFC 3339 UTC with milliseconds.
#[must_use]
pub fn rfc3339(unix_ns: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ns / 1_000_000_000);
    let ms = (unix_ns / 1_000_000) % 1000;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Unix seconds to (year, month, day, hour, minute, second), proleptic Gregorian, UTC.
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 { y + 1 } else { y },
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(1_795_645_473_123_000_000),
            "2026-11-25T22:24:33.123Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}
