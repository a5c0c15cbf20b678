//! The commands of the `bookstore` binary, as a library so the system tests
//! drive exactly the code users run.

pub mod bench;
pub mod client;
pub mod console;
pub mod fault;
pub mod roles;
pub mod settings;
pub mod status;
pub mod up;
