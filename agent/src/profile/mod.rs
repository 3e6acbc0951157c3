//! What the CPUs were doing: the flight recorder's samples kept for the last seconds
//! (`recorder`), addresses turned into names (`symbolize`), and flame graphs from them, both
//! for incidents and for `schedlat flamegraph` (`flamegraph`).

pub mod flamegraph;
pub mod recorder;
pub mod symbolize;
