//! Helpers shared by schedlat's integration tests (`tests/`) and the demo (`demo-feed/`), so each
//! exists once and is unit-tested once:
//!
//! - [`cgroup::cgroup2_mount`]: where the cgroup2 file system is mounted, from mountinfo;
//! - [`exposition`]: the Prometheus text exposition format read back into [`Sample`]s;
//! - [`quantile::histogram_quantile`]: `PromQL`'s `histogram_quantile` over `le` buckets;
//! - [`schedstat::Schedstat`]: a task's schedstat (run delay and number of waits).
//!
//! The agent has its own cgroup2 lookup (`agent/src/cgroups.rs`); this crate does not depend on
//! the agent, so that tests check the agent against an independent reading of the same files.

pub mod cgroup;
pub mod exposition;
pub mod quantile;
pub mod schedstat;

pub use cgroup::{cgroup_v1_mount, cgroup2_mount};
pub use exposition::{ParseError, Sample, parse_metrics, sum};
pub use quantile::{Bucket, buckets, histogram_quantile, increase};
pub use schedstat::Schedstat;
