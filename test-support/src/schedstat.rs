//! `/proc/<pid>/task/<tid>/schedstat`: the kernel's own scheduler accounting of a task
//! (`CONFIG_SCHED_INFO`), the oracle schedlat's counts are checked against.

use std::path::Path;

/// The three fields of a schedstat file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedstat {
    /// Time spent on a CPU (ns).
    pub run_ns: u64,
    /// Time spent runnable on a run queue (ns): the total of its run-queue waits.
    pub run_delay_ns: u64,
    /// Times it got a CPU after waiting (`sched_info.pcount`): the number of its waits.
    pub pcount: u64,
}

impl Schedstat {
    /// Parses `"<run_ns> <run_delay_ns> <pcount>\n"`; `None` when a field is missing.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        Some(Self {
            run_ns: fields.next()?.ok()?,
            run_delay_ns: fields.next()?.ok()?,
            pcount: fields.next()?.ok()?,
        })
    }

    /// Reads and parses a schedstat file; `None` when it is gone (the task exited) or
    /// malformed.
    #[must_use]
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::Schedstat;

    #[test]
    fn parses_the_three_fields() {
        assert_eq!(
            Schedstat::parse("5000 12345 7\n"),
            Some(Schedstat {
                run_ns: 5000,
                run_delay_ns: 12345,
                pcount: 7
            })
        );
        assert_eq!(Schedstat::parse("5000 12345\n"), None);
        assert_eq!(Schedstat::parse("a b c"), None);
        assert_eq!(Schedstat::parse(""), None);
    }
}
