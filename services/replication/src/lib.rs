//! Primary-backup replication for the catalog and order tiers.
//!
//! - [`rule`]: the primary rule, a pure function.
//! - [`topology`]: what the coordinator and the members tell each other.
//! - [`coordinator`]: liveness, the in-sync set and epochs, free of I/O.
//! - [`coordinator_server`]: the coordinator served over HTTP (`bookstore up`).
//! - [`switchover`]: the rules of a planned switchover, pure functions.
//! - [`status_table`]: the member table `status` prints and the consoles show.
//! - [`store`]: the embedded database (SQLite in WAL mode) a member keeps.
//! - [`node`]: a replicated member: group commit, replication, resync, fencing.
//! - [`sim`]: a deterministic simulation of a whole tier over the pure cores.

pub mod coordinator;
pub mod coordinator_server;
pub mod directory;
pub mod node;
pub mod rule;
pub mod sim;
pub mod status_table;
pub mod store;
pub mod switchover;
pub mod topology;
