//! `ferry`, the command line around the relayer service (`ferry-relayer`): `run` starts
//! the service; `bridge`, `status`, `messages`, `retry`, `accountant` and `governor` talk
//! to a running one; `devnet`
//! and `deploy` set up local chains with ferry's contracts; `bench` measures.
//!
//! The service library knows nothing of devnets or of this crate: what is only for
//! operators and developers at a terminal lives here.

pub mod bench;
mod bench_relay;
pub mod bridge;
pub mod commands;
pub mod deploy;
pub mod devnet;
mod devnet_config;
pub mod fees;
pub mod report;
pub mod value;

pub use devnet_config::{devnet_config, network_config, write_secret};
