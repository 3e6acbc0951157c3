//! Incidents: the evidence of a long wait, kept when it happens. `capture` decides when (the
//! triggers, cooldown and rate limit) and assembles a bundle; `snapshot` reads the run-queue
//! state at the trigger; `store` writes bundles safely (private, no symlinks followed, atomic)
//! and applies retention. The `incidents` command reads them back (`cli::incidents`).

pub mod capture;
pub mod snapshot;
pub mod store;
