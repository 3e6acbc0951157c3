//! Decoding ring-buffer records and rendering them for people (text) and programs (JSON).

use std::fmt::Write as _;

use agent_common::{
    DiagEvent, FLAG_MIGRATED, FLAG_NEW_TASK, FLAG_PREEMPTED, TASK_COMM_LEN, WaitEvent,
};
use anyhow::{Result, ensure};
use serde::Serialize;

/// One long wait from the ring buffer: bare, or with its CPU's history (diagnosis on).
#[derive(Clone, Debug)]
pub enum Record {
    Plain(WaitEvent),
    Diag(Box<DiagEvent>),
}

impl Record {
    #[must_use]
    pub fn event(&self) -> &WaitEvent {
        match self {
            Self::Plain(e) => e,
            Self::Diag(d) => &d.event,
        }
    }

    #[must_use]
    pub fn diag(&self) -> Option<&DiagEvent> {
        match self {
            Self::Plain(_) => None,
            Self::Diag(d) => Some(d),
        }
    }
}

/// Decodes one event record (the two kinds differ in size).
pub fn decode_record(bytes: &[u8]) -> Result<Record> {
    if bytes.len() >= size_of::<DiagEvent>() {
        Ok(Record::Diag(Box::new(decode_as::<DiagEvent>(bytes)?)))
    } else {
        Ok(Record::Plain(decode_as::<WaitEvent>(bytes)?))
    }
}

/// Decodes one ring-buffer record's wait (either kind).
#[cfg(test)]
pub fn decode(bytes: &[u8]) -> Result<WaitEvent> {
    decode_record(bytes).map(|r| *r.event())
}

/// Decodes a ring buffer record of a plain-old-data contract type.
pub fn decode_as<T: aya::Pod>(bytes: &[u8]) -> Result<T> {
    ensure!(
        bytes.len() >= size_of::<T>(),
        "ring buffer record of {} bytes, expected {}",
        bytes.len(),
        size_of::<T>()
    );
    // SAFETY: the length was checked; `aya::Pod` types are plain old data valid for any bit
    // pattern, and read_unaligned copes with the ring buffer's 8-byte (not necessarily
    // 8-aligned) slot.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// `task_struct::comm` up to its NUL, escaped (`names::escape_bytes`: a name is bytes).
#[must_use]
pub fn comm_str(comm: &[u8; TASK_COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN);
    crate::host::names::escape_bytes(&comm[..end])
}

/// The stable JSON form of an event (documented in the README; add fields, never rename).
#[derive(Serialize, Debug, PartialEq)]
pub struct EventJson {
    pub ts_ns: u64,
    /// The same moment in wall-clock time (RFC 3339, UTC, milliseconds).
    pub time: String,
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cpu: u32,
    pub wait_ns: u64,
    pub preemptor_tid: u32,
    pub preemptor_tgid: u32,
    pub preemptor_comm: String,
    pub waker_tid: u32,
    pub waker_tgid: u32,
    /// The waker thread's name, read from /proc when the event is printed (empty when the
    /// task was preempted, the waker is gone, or the producer does not look it up).
    pub waker_comm: String,
    pub migrated: bool,
    /// Queued because it was preempted (then it has no waker).
    pub preempted: bool,
    /// First run of a new task.
    pub new_task: bool,
    /// Why it waited (`unknown` when not diagnosed); see the README.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::diagnosis::Cause>,
    /// Who held the CPU during the wait, largest share first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprits: Option<Vec<crate::diagnosis::engine::Culprit>>,
    /// The diagnosis in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The facts that decided the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<String>>,
}

impl EventJson {
    /// The event for JSON output; `realtime_offset_ns` turns its `CLOCK_MONOTONIC` time into
    /// Unix time.
    #[must_use]
    pub fn new(e: &WaitEvent, realtime_offset_ns: u64) -> Self {
        Self {
            ts_ns: e.ts_ns,
            time: crate::host::clock::rfc3339(e.ts_ns + realtime_offset_ns),
            tid: e.tid,
            tgid: e.tgid,
            comm: comm_str(&e.comm),
            cpu: e.cpu,
            wait_ns: e.wait_ns,
            preemptor_tid: e.preemptor_tid,
            preemptor_tgid: e.preemptor_tgid,
            preemptor_comm: comm_str(&e.preemptor_comm),
            waker_tid: e.waker_tid,
            waker_tgid: e.waker_tgid,
            waker_comm: String::new(),
            migrated: e.flags & FLAG_MIGRATED != 0,
            preempted: e.flags & FLAG_PREEMPTED != 0,
            new_task: e.flags & FLAG_NEW_TASK != 0,
            cause: None,
            culprits: None,
            verdict: None,
            evidence: None,
        }
    }

    /// Adds the diagnosis.
    #[must_use]
    pub fn with_diagnosis(mut self, d: &crate::diagnosis::engine::Diagnosis) -> Self {
        self.cause = Some(d.cause);
        self.culprits = Some(d.culprits.clone());
        self.verdict = Some(d.verdict.clone());
        self.evidence = Some(d.evidence.clone());
        self
    }
}

/// A duration in ns as a short human string ("850ns", "12.3us", "4.56ms", "1.20s").
#[must_use]
pub fn human_ns(ns: u64) -> String {
    let ns_f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns_f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns_f / 1e6)
    } else {
        format!("{:.2}s", ns_f / 1e9)
    }
}

/// `1 wait`, `2 waits`: a count with its noun, singular or plural.
#[must_use]
pub fn count_of(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `HH:MM:SS.mmm` (UTC) of a wall-clock time in ns since the epoch.
#[must_use]
pub fn utc_time_of_day(realtime_ns: u64) -> String {
    let secs = realtime_ns / 1_000_000_000;
    let millis = (realtime_ns / 1_000_000) % 1000;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub const TEXT_HEADER: &str = "TIME(UTC)     TID      COMM             CPU  WAIT       CULPRIT                    CAUSE            PREEMPTOR                  WAKER                      MIGRATED";

/// One text line for an event; `realtime_ns` is its wall-clock time, `waker_comm` the waking
/// thread's name (empty: gone, or preempted).
#[must_use]
pub fn text_line(
    e: &WaitEvent,
    diagnosis: Option<&crate::diagnosis::engine::Diagnosis>,
    realtime_ns: u64,
    waker_comm: &str,
) -> String {
    let mut line = String::new();
    let preemptor = format!("{}/{}", e.preemptor_tid, comm_str(&e.preemptor_comm));
    let waker = if e.flags & FLAG_PREEMPTED != 0 {
        "preempted".to_owned()
    } else if waker_comm.is_empty() {
        e.waker_tid.to_string()
    } else {
        format!("{}/{waker_comm}", e.waker_tid)
    };
    let _ = write!(
        line,
        "{:<13} {:<8} {:<16} {:<4} {:<10} {:<26} {:<16} {:<26} {:<26} {}",
        utc_time_of_day(realtime_ns),
        e.tid,
        comm_str(&e.comm),
        e.cpu,
        human_ns(e.wait_ns),
        diagnosis.map_or_else(
            || "-".to_owned(),
            crate::diagnosis::engine::Diagnosis::culprit_label,
        ),
        diagnosis.map_or("-", |d| d.cause.name()),
        preemptor,
        waker,
        if e.flags & FLAG_MIGRATED != 0 {
            "yes"
        } else {
            "no"
        }
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WaitEvent {
        let mut comm = [0u8; TASK_COMM_LEN];
        comm[..7].copy_from_slice(b"sleeper");
        let mut preemptor_comm = [0u8; TASK_COMM_LEN];
        preemptor_comm.copy_from_slice(b"hog-with-long-nm");
        WaitEvent {
            ts_ns: 123,
            wait_ns: 4_560_000,
            tid: 42,
            tgid: 40,
            cpu: 1,
            waker_tid: 7,
            waker_tgid: 7,
            preemptor_tid: 43,
            preemptor_tgid: 40,
            flags: FLAG_MIGRATED,
            comm,
            preemptor_comm,
        }
    }

    #[test]
    fn decodes_what_the_kernel_writes() {
        let event = sample();
        // SAFETY: WaitEvent is POD without padding, so its bytes are fully initialised.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<WaitEvent>())
        };
        // The ring buffer hands out slices at arbitrary offsets: decode from an odd one.
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(bytes);
        assert_eq!(decode(&shifted[1..]).expect("decode"), event);
        assert!(decode(&bytes[..10]).is_err());
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json = serde_json::to_value(EventJson::new(&sample(), 0)).expect("serialise");
        for key in [
            "ts_ns",
            "time",
            "tid",
            "tgid",
            "comm",
            "cpu",
            "wait_ns",
            "preemptor_tid",
            "preemptor_tgid",
            "preemptor_comm",
            "waker_tid",
            "migrated",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["comm"], "sleeper");
        assert_eq!(
            json["preemptor_comm"], "hog-with-long-nm",
            "16 bytes, no NUL"
        );
        assert_eq!(json["migrated"], true);
        assert_eq!(json["wait_ns"], 4_560_000);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_340), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
        assert_eq!(utc_time_of_day(3_723_004_000_000), "01:02:03.004");
        assert_eq!(count_of(1, "event", "events"), "1 event");
        assert_eq!(count_of(0, "event", "events"), "0 events");
        assert_eq!(count_of(2, "process", "processes"), "2 processes");
    }

    #[test]
    fn names_that_are_not_text_are_escaped_in_text_and_json() {
        let mut event = sample();
        event.comm = [0; TASK_COMM_LEN];
        event.comm[..9].copy_from_slice(b"bad\xff\x1b[31m");
        event.preemptor_comm = [0; TASK_COMM_LEN];
        event.preemptor_comm[..6].copy_from_slice(b"two\nli");
        let line = text_line(&event, None, 0, "");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains(" bad\\xff\\x1b[31m "), "{line}");
        assert!(line.contains("43/two\\x0ali"), "{line}");
        let json = serde_json::to_string(&EventJson::new(&event, 0)).expect("serialise");
        let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
        assert_eq!(value["comm"], "bad\\xff\\x1b[31m");
        assert_eq!(value["preemptor_comm"], "two\\x0ali");
        assert!(!json.contains('\u{1b}'), "{json}");
    }

    #[test]
    fn text_line_shows_preemptor_and_migration() {
        let line = text_line(&sample(), None, 0, "");
        assert!(line.contains("43/hog-with-long-nm"), "{line}");
        assert!(line.contains("4.56ms"), "{line}");
        assert!(line.trim_end().ends_with("yes"), "{line}");
        assert!(
            line.contains(" 7 "),
            "a waker whose name is unknown: its tid: {line}"
        );
        let line = text_line(&sample(), None, 0, "kworker/0:1");
        assert!(
            line.contains(" 7/kworker/0:1 "),
            "the waker's tid and name: {line}"
        );
        let mut preempted = sample();
        preempted.flags |= FLAG_PREEMPTED;
        let line = text_line(&preempted, None, 0, "");
        assert!(line.contains(" preempted "), "{line}");
    }
}
