//! The configuration of a ferry process on a devnet, with its key files: what
//! `ferry devnet` writes and what the integration tests run from.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write,
    net::SocketAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use alloy::primitives::B256;
use ferry_devnet::{Devnet, DevnetInfo};

use ferry_relayer::{
    ChainConfig, Config, ConfigError, GovernorRoute, HttpConfig, NatsConfig, PolicyConfig, RelayerConfig, RuleSwitches,
    RulesPreset, ValidatorsConfig,
};

/// Writes the relayer's, the user's (first dev account) and every validator's key under
/// `dir/keys` (mode 0600) and returns a configuration running all of them, with its data
/// under `dir/data`.
pub fn devnet_config(
    dir: &Path,
    devnet: &Devnet,
    http_listen: SocketAddr,
    confirmations: u64,
) -> Result<Config, ConfigError> {
    let info = devnet.info();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| write_error(&keys, e))?;
    let missing = || ConfigError::Secret { key: "accounts".into(), reason: "anvil reported no accounts".into() };
    // The relayer pays from the last dev account, leaving the first ones to users.
    let relayer_key = keys.join("relayer.key");
    write_secret(&relayer_key, &info.accounts.last().ok_or_else(missing)?.private_key)?;
    write_secret(&keys.join("user.key"), &info.accounts.first().ok_or_else(missing)?.private_key)?;
    let mut validator_keys = Vec::new();
    for (i, key) in devnet.validator_keys().iter().enumerate() {
        let path = keys.join(format!("validator-{i}.key"));
        write_secret(&path, key)?;
        validator_keys.push(path);
    }
    let mut config = network_config(info, &dir.join("data"), http_listen, confirmations);
    config.relayer.key_file = Some(relayer_key);
    config.validators.key_files = validator_keys;
    Ok(config)
}

/// The configuration of a process on the network `info` describes, with no keys: they
/// come from the environment (`FERRY__RELAYER__KEY`, `FERRY__VALIDATORS__KEY`) or are
/// added by the caller.
pub fn network_config(info: &DevnetInfo, data_dir: &Path, http_listen: SocketAddr, confirmations: u64) -> Config {
    let chains = info
        .chains
        .iter()
        .map(|c| {
            let chain = ChainConfig {
                ws_url: Some(c.ws_url.clone()),
                bridge: Some(c.bridge),
                token: Some(c.token),
                paymaster: c.paymaster,
                confirmations,
                poll_interval_ms: 500,
                rules_preset: RulesPreset::Anvil,
                // anvil's interval miner now and then gives a block a base fee EIP-1559
                // does not (seen under load: block 59 of a 10,000-message fault run at
                // 1766504 where its parent gives 2172297), and the light client would
                // refuse that block and stop following the chain for good.
                rules: RuleSwitches { eip1559_base_fee: Some(false), ..Default::default() },
                ..ChainConfig::new(c.chain_id, c.rpc_url.clone(), c.mailbox)
            };
            (c.name.clone(), chain)
        })
        .collect::<BTreeMap<_, _>>();
    Config {
        data_dir: data_dir.to_path_buf(),
        http: HttpConfig { listen: http_listen },
        nats: NatsConfig::new(info.nats_url.clone()),
        relayer: RelayerConfig {
            // Transfers pay for their delivery on the devnet: deliver only what was paid for.
            policy: PolicyConfig {
                require_payment: info.chains.iter().all(|c| c.paymaster.is_some()),
                ..Default::default()
            },
            ..RelayerConfig::default()
        },
        validators: ValidatorsConfig {
            threshold: info.threshold,
            set: info.validators.clone(),
            key_files: Vec::new(),
            key: None,
        },
        governor: devnet_governor(info),
        chains,
    }
}

fn write_error(path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError::Write { path: path.into(), reason: e.to_string() }
}

/// Writes a key readable by its owner only.
pub fn write_secret(path: &Path, key: &B256) -> Result<(), ConfigError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| write_error(path, e))?;
    // The mode above applies only to a new file; an old one is tightened here.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| write_error(path, e))?;
    writeln!(file, "{key}").map_err(|e| write_error(path, e))
}

/// The devnet's governor: each way, a transfer of a tenth of the bridge's inbound bucket
/// or more waits ten minutes before the validators sign it (`ferry governor` acts on it).
fn devnet_governor(info: &DevnetInfo) -> BTreeMap<String, BTreeMap<String, GovernorRoute>> {
    let mut governor: BTreeMap<String, BTreeMap<String, GovernorRoute>> = BTreeMap::new();
    for origin in &info.chains {
        for destination in info.chains.iter().filter(|c| c.name != origin.name) {
            let threshold = destination.rate_limit.capacity / alloy::primitives::U256::from(10);
            if threshold.is_zero() {
                continue;
            }
            let route = GovernorRoute { delay_threshold: threshold, delay_secs: DEVNET_GOVERNOR_DELAY_SECS };
            governor.entry(origin.name.clone()).or_default().insert(destination.name.clone(), route);
        }
    }
    governor
}

/// How long the devnet's governor holds a large transfer.
pub const DEVNET_GOVERNOR_DELAY_SECS: u64 = 600;
