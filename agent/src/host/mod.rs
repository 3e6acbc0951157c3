//! What the host says about tasks and groups outside BPF: /proc (`procinfo`), the cgroup file
//! systems and the names SREs know cgroups by (`cgroups`), what limits a task's CPU (CFS
//! quota, allowed CPUs, nice, policy: `cpulimits`), the one escaping every name shown to
//! people or written into labels goes through (`names`), wall-clock formatting (`clock`), and
//! what was read of tasks kept for a while (`cache`).

pub mod cache;
pub mod cgroups;
pub mod clock;
pub mod cpulimits;
pub mod names;
pub mod procinfo;
