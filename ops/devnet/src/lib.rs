//! Real processes for ferry's devnet and integration tests.
//!
//! Everything here is the real thing on loopback: [`Anvil`] runs the anvil binary on a
//! port it picks itself, [`NatsServer`] runs nats-server with JetStream on a free port
//! and a temporary store, and both are killed by PID when dropped. [`deploy_pair`]
//! deploys and wires ferry's contracts on two chains in one call, and [`Devnet`] puts
//! it all together: two chains, a NATS server, contracts, validator keys and the
//! [`DevnetInfo`] that `ferry devnet` writes to `devnet.json`.

mod anvil;
mod deploy;
mod devnet;
mod error;
mod nats;
mod process;

pub use anvil::{Anvil, AnvilOptions};
pub use deploy::{ChainDeployment, DeployOptions, GasPayment, RateLimit, deploy_pair, is_deployed, wallet};
pub use devnet::{
    AccountInfo, ChainInfo, DEVNET_RATE_LIMIT, Devnet, DevnetInfo, DevnetOptions, Network, deploy_network,
    devnet_gas_payment, validator_key,
};
pub use error::DevnetError;
pub use nats::{NatsCluster, NatsServer};
pub use process::{child_pids, find_anvil, find_nats_server, free_port, is_running};
