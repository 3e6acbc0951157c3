//! `schedlat run` configuration: a TOML file, overridden by command-line flags.
//!
//! Unknown keys and bad values are errors that name the key; every setting has a default, so
//! no file is needed. Durations are strings with a unit ("5s", "10ms").

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer};

use crate::cli::units::parse_duration_ns;

/// Default port, on 127.0.0.1 (loopback only). 9747 is not taken by the well-known exporters
/// (`node_exporter` 9100, process-exporter 9256, `ebpf_exporter` 9435, cAdvisor 8080).
const DEFAULT_PORT: u16 = 9747;
/// Default incident directory (used from the incident step on).
pub const DEFAULT_INCIDENT_DIR: &str = "/var/lib/schedlat/incidents";

/// A duration written with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration_ns(&text)
            .map(|ns| Dur(Duration::from_nanos(ns)))
            .map_err(serde::de::Error::custom)
    }
}

const fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

const fn millis(ms: u64) -> Dur {
    Dur(Duration::from_millis(ms))
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server for `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Aggregation window.
    pub window: Dur,
    /// How often the window quantiles (per CPU, node, process and cgroup, over the last
    /// `window`) are refreshed; must divide `window`. Every refresh reads the per-CPU and the
    /// per-process maps (batched: a few ms for thousands of processes).
    pub refresh: Dur,
    /// Processes with the most total wait in the sliding window that keep their own series; the rest
    /// fold into `process="other"` of their cgroup.
    pub top_k: usize,
    /// cgroups with the most total wait in the sliding window that keep their own series; the rest fold
    /// into `cgroup="other"`.
    pub max_cgroups: usize,
    /// Waits at or above this reach user space one by one (for logs and incident triggers);
    /// all waits are counted in the histograms whatever this is.
    pub event_threshold: Dur,
    /// Series not updated for this long are dropped (their processes are gone or quiet).
    pub series_ttl: Dur,
    /// Capacity of the kernel's per-process aggregation map: processes (1.2 KiB each while it
    /// has an entry, not per CPU). Waits of processes that find it full are counted node-wide
    /// in the overflow entry (`schedlat_kernel_map_folded_waits_total`), never dropped.
    pub kernel_map_entries: u32,
    /// Diagnose every wait at or above `event_threshold`: who held the CPU (by share) and the
    /// cause (`schedlat_wait_cause_*`, incident verdicts). Costs a little at every context
    /// switch (the kernel notes who holds each CPU); off: the preemptor is the last task.
    pub diagnosis: bool,
    /// Before Linux 6.8 (no `cfs_rq.throttled_clock_self_time`), observe CPU quota throttling
    /// with fexit/fentry programs on `throttle_cfs_rq`/`unthrottle_cfs_rq`. Experimental and
    /// off: one of about ten qemu boots of Debian's 6.1 hung (soft lockup) while programs were
    /// attached and detached in quick succession; not root-caused.
    pub diagnosis_throttle_probes: bool,
    pub labels: LabelConfig,
    pub incidents: IncidentConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelConfig {
    /// Show cgroups as the unit/container they belong to (`docker:3f2a…`, `foo.service`)
    /// rather than the full cgroup path; the path stays in `schedlat_cgroup_info`.
    pub cgroup_names: bool,
    /// Count kernel threads' own waits (under cgroup "/", process = thread name).
    pub kernel_threads: bool,
    /// Add a `pid` label to the named per-process series (`process="other"` has `pid=""`), so
    /// that processes with the same name in one cgroup are told apart. Still at most `top_k`
    /// named series; but a restarted process starts a new series (the old one expires after
    /// `series_ttl`), so dashboards that sum by process should `sum without (pid)`.
    pub pid: bool,
}

/// Incident capture: evidence bundles when latency crosses a threshold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    pub enabled: bool,
    /// A single wait above this (by a user task) triggers an incident.
    pub threshold: Dur,
    /// Only waits of these processes (names) or cgroups (labels as in the metrics) trigger;
    /// both empty: any user task.
    pub watch_processes: Vec<String>,
    pub watch_cgroups: Vec<String>,
    /// A cgroup whose window p99 is above this triggers an incident ("0": off).
    pub p99_threshold: Dur,
    /// Where bundles go (created 0700).
    pub dir: PathBuf,
    /// At most one incident per victim (process, or cgroup for p99 triggers) this often.
    pub cooldown: Dur,
    /// At most this many incidents per minute on the node.
    pub max_per_minute: u32,
    /// Keep at most this many bundles, and at most this many bytes of them; oldest go first.
    pub max_incidents: usize,
    pub max_bytes: u64,
    /// CPU samples per second per CPU for the flight recorder.
    pub sample_hz: u64,
    /// How much CPU history before the trigger, and after it, goes into the flame graph.
    pub before: Dur,
    pub after: Dur,
    /// Whether a wait diagnosed `self_contention` (the victim's own cgroup held the CPU: it
    /// is the hog itself, or its siblings) triggers an incident.
    pub trigger_on_self_contention: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            window: secs(5),
            refresh: secs(1),
            top_k: 20,
            max_cgroups: 100,
            event_threshold: millis(1),
            series_ttl: secs(120),
            kernel_map_entries: 16384,
            diagnosis: true,
            diagnosis_throttle_probes: false,
            labels: LabelConfig::default(),
            incidents: IncidentConfig::default(),
        }
    }
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            cgroup_names: true,
            kernel_threads: true,
            pid: false,
        }
    }
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: millis(10),
            watch_processes: Vec::new(),
            watch_cgroups: Vec::new(),
            p99_threshold: millis(50),
            dir: PathBuf::from(DEFAULT_INCIDENT_DIR),
            cooldown: secs(60),
            max_per_minute: 6,
            max_incidents: 100,
            max_bytes: 256 << 20,
            sample_hz: 49,
            before: secs(10),
            after: secs(1),
            trigger_on_self_contention: false,
        }
    }
}

/// Flags of `schedlat run` that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub window: Option<Duration>,
    pub top_k: Option<usize>,
    pub event_threshold: Option<Duration>,
    pub threshold: Option<Duration>,
    pub incident_dir: Option<PathBuf>,
}

impl IncidentConfig {
    /// Whether waits of this process (and cgroup label) may trigger an incident.
    #[must_use]
    pub fn watches(&self, process: &str, cgroup: Option<&str>) -> bool {
        if self.watch_processes.is_empty() && self.watch_cgroups.is_empty() {
            return true;
        }
        self.watch_processes.iter().any(|p| p == process)
            || cgroup.is_some_and(|cg| self.watch_cgroups.iter().any(|w| w == cg))
    }
}

impl Config {
    /// Parses and validates a config file's text; errors name the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// The file (if any) with the flags applied on top, validated.
    pub fn load(path: Option<&std::path::Path>, overrides: &Overrides) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                Self::from_toml(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(listen) = o.listen {
            self.listen = listen;
        }
        if let Some(window) = o.window {
            self.window = Dur(window);
        }
        if let Some(top_k) = o.top_k {
            self.top_k = top_k;
        }
        if let Some(t) = o.event_threshold {
            self.event_threshold = Dur(t);
        }
        if let Some(t) = o.threshold {
            self.incidents.threshold = Dur(t);
        }
        if let Some(dir) = &o.incident_dir {
            self.incidents.dir.clone_from(dir);
        }
    }

    /// Refreshes per window (`window / refresh`, validated to divide).
    #[must_use]
    pub fn sub_windows(&self) -> u64 {
        (self.window.0.as_nanos() / self.refresh.0.as_nanos().max(1)).max(1) as u64
    }

    pub fn validate(&self) -> Result<()> {
        let window = self.window.0;
        if window < Duration::from_secs(1) || window > Duration::from_hours(1) {
            bail!("window: must be between 1s and 1h, got {window:?}");
        }
        let refresh = self.refresh.0;
        let sub_windows = window.as_nanos() / refresh.as_nanos().max(1);
        if refresh < Duration::from_secs(1)
            || !window.as_nanos().is_multiple_of(refresh.as_nanos())
            || sub_windows > u128::from(crate::stats::sliding::MAX_SUB_WINDOWS)
        {
            bail!(
                "refresh: must be at least 1s, divide window ({window:?}) and be at least \
                 1/{} of it, got {refresh:?}",
                crate::stats::sliding::MAX_SUB_WINDOWS
            );
        }
        if self.top_k == 0 || self.top_k > 1000 {
            bail!("top_k: must be between 1 and 1000, got {}", self.top_k);
        }
        if self.max_cgroups == 0 || self.max_cgroups > 10_000 {
            bail!(
                "max_cgroups: must be between 1 and 10000, got {}",
                self.max_cgroups
            );
        }
        if self.series_ttl.0 < window {
            bail!(
                "series_ttl: must be at least one window ({window:?}), got {:?}",
                self.series_ttl.0
            );
        }
        if !(1024..=1 << 22).contains(&self.kernel_map_entries) {
            bail!(
                "kernel_map_entries: must be between 1024 and 4194304, got {}",
                self.kernel_map_entries
            );
        }
        if self.event_threshold.0 < Duration::from_micros(10) {
            bail!(
                "event_threshold: below 10us every wait becomes an event and the ring buffer \
                 floods; got {:?}",
                self.event_threshold.0
            );
        }
        let i = &self.incidents;
        if i.threshold.0.is_zero() {
            bail!("incidents.threshold: must be above 0");
        }
        if !(1..=1000).contains(&i.sample_hz) {
            bail!(
                "incidents.sample_hz: must be between 1 and 1000, got {}",
                i.sample_hz
            );
        }
        if i.max_per_minute == 0 {
            bail!(
                "incidents.max_per_minute: must be at least 1 (set enabled = false to turn incidents off)"
            );
        }
        if i.max_incidents == 0 || i.max_bytes < 1 << 20 {
            bail!(
                "incidents.max_incidents / incidents.max_bytes: keep at least one bundle and 1 MiB"
            );
        }
        if i.before.0 > Duration::from_mins(1) || i.after.0 > Duration::from_secs(10) {
            bail!(
                "incidents.before / incidents.after: at most 60s before and 10s after the trigger"
            );
        }
        if self.incidents.dir.as_os_str().is_empty() || self.incidents.dir.is_relative() {
            bail!(
                "incidents.dir: must be an absolute path, got `{}`",
                self.incidents.dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:9999"
            window = "10s"
            top_k = 5
            max_cgroups = 7
            event_threshold = "500us"
            series_ttl = "1m"
            kernel_map_entries = 4096
            [labels]
            cgroup_names = false
            kernel_threads = false
            [incidents]
            enabled = false
            threshold = "25ms"
            dir = "/tmp/x"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9999".parse().unwrap());
        assert_eq!(c.window.0, Duration::from_secs(10));
        assert_eq!(c.top_k, 5);
        assert_eq!(c.event_threshold.0, Duration::from_micros(500));
        assert!(!c.labels.cgroup_names);
        assert_eq!(c.incidents.threshold.0, Duration::from_millis(25));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("windw = \"5s\"").unwrap_err().to_string();
        assert!(err.contains("windw"), "{err}");
        let err = Config::from_toml("[labels]\nfoo = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("foo"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("window = \"5 parsecs\"", "window"),
            ("window = \"0s\"", "window"),
            ("refresh = \"2s\"", "refresh"),
            ("refresh = \"500ms\"", "refresh"),
            ("window = \"1h\"\nrefresh = \"1s\"", "refresh"),
            ("top_k = 0", "top_k"),
            ("top_k = \"many\"", "top_k"),
            ("listen = \"localhost\"", "listen"),
            ("event_threshold = \"1us\"", "event_threshold"),
            ("[incidents]\ndir = \"relative\"", "incidents.dir"),
        ] {
            let err = format!("{:#}", Config::from_toml(text).unwrap_err());
            assert!(
                err.contains(key),
                "{text}: error {err:?} does not name {key}"
            );
        }
    }

    #[test]
    fn watch_lists_select_victims() {
        let mut i = IncidentConfig::default();
        assert!(
            i.watches("anything", None),
            "empty lists watch every user task"
        );
        i.watch_processes = vec!["feed".into()];
        i.watch_cgroups = vec!["api.service".into()];
        assert!(i.watches("feed", None));
        assert!(i.watches("worker", Some("api.service")));
        assert!(!i.watches("worker", Some("batch.service")));
        let c = Config::from_toml("[incidents]\nwatch_processes = [\"feed\"]\n").unwrap();
        assert_eq!(c.incidents.watch_processes, vec!["feed".to_owned()]);
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = Config::from_toml("top_k = 5\nwindow = \"10s\"").unwrap();
        c.apply(&Overrides {
            top_k: Some(3),
            threshold: Some(Duration::from_millis(2)),
            ..Overrides::default()
        });
        assert_eq!(c.top_k, 3);
        assert_eq!(c.window.0, Duration::from_secs(10));
        assert_eq!(c.incidents.threshold.0, Duration::from_millis(2));
    }
}
