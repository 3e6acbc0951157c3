//! Pure numbers, no I/O: the log-linear histograms and their percentiles (`hist`), and the
//! daemon's windowed, bounded aggregation per process, cgroup and CPU (`aggregate`), and the
//! bounded table of long waits by preemptor (`preemptors`). Fed with
//! plain structs, so everything here is unit-tested on synthetic data.

pub mod aggregate;
pub mod hist;
pub mod preemptors;
pub mod sliding;
