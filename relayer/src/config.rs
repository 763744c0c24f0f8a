//! The configuration file, read with the `config` crate.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use alloy::primitives::{Address, B256};
use ferry_light_client::{HeaderRules, TimestampRule};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Environment variables with this prefix override file keys:
/// `FERRY__NATS__URL` sets `nats.url`, `FERRY__CHAINS__ALPHA__RPC_URL` sets
/// `chains.alpha.rpc_url`.
pub const ENV_PREFIX: &str = "FERRY";

/// Everything a `ferry` process needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Where the process keeps its redb store.
    pub data_dir: PathBuf,
    /// The HTTP server (metrics, health, message API).
    #[serde(default)]
    pub http: HttpConfig,
    /// The NATS server.
    pub nats: NatsConfig,
    /// The relayer's own key, which pays for deliveries.
    #[serde(default)]
    pub relayer: RelayerConfig,
    /// The validator set and the keys this process signs with.
    pub validators: ValidatorsConfig,
    /// The chains, by name.
    pub chains: BTreeMap<String, ChainConfig>,
    /// The governor's delay for large transfers, per token route:
    /// `[governor.<origin>.<destination>]` (chain names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub governor: BTreeMap<String, BTreeMap<String, GovernorRoute>>,
}

/// The governor's rule for one token route: a transfer of `delay_threshold` or more is
/// held `delay_secs` before this process's validators sign it (an operator may release
/// or cancel it meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernorRoute {
    /// The smallest amount held, in the token's base units (as `ferry bridge` takes
    /// amounts): a decimal or 0x-hex string.
    pub delay_threshold: alloy::primitives::U256,
    /// How long a held transfer waits, in seconds.
    pub delay_secs: u64,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpConfig {
    /// Listen address, `127.0.0.1:9100` by default.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9100)) }
    }
}

/// The NATS server and stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsConfig {
    /// `nats://host:port`: shorthand for one server (empty when `urls` lists them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Servers of a cluster (after `url`, when both are set): the client connects to one
    /// and moves to another when it goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The JetStream stream messages travel on.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Seconds JetStream waits for an ack before handing a message to another consumer
    /// (how long a crashed relayer's messages wait).
    #[serde(default = "default_ack_wait")]
    pub ack_wait_secs: u64,
    /// Copies JetStream keeps of each stream (1, or 3 or 5 on a cluster of at least as
    /// many servers): with R3 a stream survives the loss of one server.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

impl NatsConfig {
    /// One server at `url`, the default stream, ack wait and replicas.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            urls: vec![],
            stream: default_stream(),
            ack_wait_secs: default_ack_wait(),
            replicas: default_replicas(),
        }
    }

    /// Every server: `url`, then `urls`.
    pub fn servers(&self) -> Vec<&str> {
        std::iter::once(self.url.as_str())
            .filter(|u| !u.is_empty())
            .chain(self.urls.iter().map(String::as_str))
            .collect()
    }
}

fn default_replicas() -> usize {
    1
}

fn default_ack_wait() -> u64 {
    30
}

fn default_stream() -> String {
    "FERRY_MESSAGES".into()
}

/// The relayer role: its key (inline from the environment, `FERRY__RELAYER__KEY`, or in
/// a file) and how it batches and submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayerConfig {
    /// The key itself; prefer the environment to the file for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// A file holding the key as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Names this relayer's own JetStream consumer of attestations (several relayers
    /// share the delivery consumers but each collects every signature).
    #[serde(default = "default_relayer_name")]
    pub name: String,
    /// Most messages per `processBatch` transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most `processBatch` transactions in flight (sent, not yet confirmed) per
    /// destination; each round is predicted on top of the ones in flight.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Gas limit = predicted gas plus this many percent.
    #[serde(default = "default_gas_margin")]
    pub gas_margin_percent: u64,
    /// A delivery transaction not mined after this many seconds is replaced with a
    /// higher fee.
    #[serde(default = "default_stuck_after")]
    pub stuck_after_secs: u64,
    /// One parallel batch in this many is re-run sequentially and compared (0: never).
    #[serde(default = "default_sequential_check")]
    pub sequential_check_every: u64,
    /// What this relayer carries: payment for delivery, allowed and denied routes,
    /// senders and recipients.
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// The relayer's policy (`[relayer.policy]`): what it delivers and what it leaves. The
/// validators sign every proven message regardless; policy is the relayer's own choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Deliver only messages paid for at their origin's GasPaymaster (`chains.<origin>.paymaster`);
    /// others wait in `awaiting_payment` until a top-up covers them.
    #[serde(default)]
    pub require_payment: bool,
    /// The gas paid for must cover this many percent of the gas the delivery is
    /// predicted to take (the paymaster's quote priced that gas when it was paid).
    #[serde(default = "default_min_payment_percent")]
    pub min_payment_percent: u64,
    /// Origin chains (names) delivered from; empty: every configured one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Origin chains never delivered from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_origins: Vec<String>,
    /// Destination chains (names) delivered to; empty: every configured one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_destinations: Vec<String>,
    /// Destination chains never delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_destinations: Vec<String>,
    /// Senders (origin contracts) delivered for; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_senders: Vec<Address>,
    /// Senders never delivered for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_senders: Vec<Address>,
    /// Recipients delivered to; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_recipients: Vec<Address>,
    /// Recipients never delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_recipients: Vec<Address>,
}

fn default_min_payment_percent() -> u64 {
    100
}

impl Default for PolicyConfig {
    /// What an empty `[relayer.policy]` gives (serde's defaults, not the types' zeros: a
    /// derived default would ask for 0% of the delivery's gas).
    fn default() -> Self {
        Self {
            require_payment: false,
            min_payment_percent: default_min_payment_percent(),
            allow_origins: Vec::new(),
            deny_origins: Vec::new(),
            allow_destinations: Vec::new(),
            deny_destinations: Vec::new(),
            allow_senders: Vec::new(),
            deny_senders: Vec::new(),
            allow_recipients: Vec::new(),
            deny_recipients: Vec::new(),
        }
    }
}

impl Default for RelayerConfig {
    fn default() -> Self {
        Self {
            key: None,
            key_file: None,
            name: default_relayer_name(),
            batch_size: default_batch_size(),
            max_in_flight: default_max_in_flight(),
            gas_margin_percent: default_gas_margin(),
            stuck_after_secs: default_stuck_after(),
            sequential_check_every: default_sequential_check(),
            policy: PolicyConfig::default(),
        }
    }
}

fn default_relayer_name() -> String {
    "relayer".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_max_in_flight() -> usize {
    6
}
fn default_gas_margin() -> u64 {
    20
}
fn default_stuck_after() -> u64 {
    30
}
fn default_sequential_check() -> u64 {
    20
}

/// The validator set every Mailbox holds, and the keys this process validates with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsConfig {
    /// Distinct signatures needed per message.
    pub threshold: u8,
    /// The validator set's addresses.
    pub set: Vec<Address>,
    /// Files holding the keys of the validators run in this process (none: not a validator).
    #[serde(default)]
    pub key_files: Vec<PathBuf>,
    /// One more validator key, inline: for the environment (`FERRY__VALIDATORS__KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// EIP-155 chain id; also the domain in messages.
    pub chain_id: u64,
    /// HTTP JSON-RPC endpoint: shorthand for a single one (empty when `rpc_urls` lists them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rpc_url: String,
    /// More HTTP JSON-RPC endpoints (after `rpc_url`, when both are set). Reads go to the
    /// healthiest and fall over to the next; signed transactions go to every healthy one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_urls: Vec<String>,
    /// How many endpoints must give the same block hash before the light client takes a
    /// header (1: any one endpoint's word).
    #[serde(default = "default_quorum")]
    pub rpc_quorum: usize,
    /// Blocks an endpoint's head may trail the best endpoint's before it counts as sick.
    #[serde(default = "default_max_head_lag")]
    pub rpc_max_head_lag: u64,
    /// Milliseconds an endpoint has to answer a call before it counts as failed (and the
    /// call goes to the next endpoint).
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_ms: u64,
    /// WebSocket JSON-RPC endpoint for new heads (HTTP polling when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// More WebSocket endpoints: a new head from any of them wakes the watcher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ws_urls: Vec<String>,
    /// The Mailbox.
    pub mailbox: Address,
    /// The TokenBridge, for `ferry bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Address>,
    /// The bridged token (collateral or synthetic), for `ferry bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Address>,
    /// The GasPaymaster messages from this chain pay their delivery at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
    /// Blocks on top of a header before it is final.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// The most a delivery transaction here offers per gas, in gwei (base fee and tip):
    /// while the base fee and tip exceed it, messages wait (stage `waiting`) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas_gwei: Option<u64>,
    /// The most a delivery transaction here tips per gas, in gwei (default tip: 1 gwei).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority_fee_gwei: Option<u64>,
    /// Parallel revm workers for deliveries to this chain (default: one per core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_workers: Option<usize>,
    /// The block the light client trusts when it starts with an empty store (0: genesis).
    #[serde(default)]
    pub start_block: u64,
    /// Milliseconds between polls for new heads (also the fallback when the WebSocket
    /// subscription is down).
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// The header rules to start from.
    #[serde(default)]
    pub rules_preset: RulesPreset,
    /// Individual header rules switched on or off over the preset.
    #[serde(default)]
    pub rules: RuleSwitches,
}

fn default_quorum() -> usize {
    1
}

fn default_max_head_lag() -> u64 {
    3
}

fn default_rpc_timeout() -> u64 {
    30_000
}

fn default_confirmations() -> u64 {
    2
}

fn default_poll_interval() -> u64 {
    1000
}

/// A set of header rules to start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulesPreset {
    /// Every rule, as Ethereum keeps them.
    #[default]
    Ethereum,
    /// Ethereum's rules with anvil's deliberate departures forgiven.
    Anvil,
}

/// Per-rule switches; unset ones keep the preset's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSwitches {
    /// `number == parent.number + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_numbers: Option<bool>,
    /// `gas_used <= gas_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_used_within_limit: Option<bool>,
    /// The gas limit moves within 1/1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_limit_bounds: Option<bool>,
    /// Timestamps strictly increase (false: they may repeat, as under anvil's automine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strictly_increasing_timestamps: Option<bool>,
    /// The base fee follows EIP-1559.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip1559_base_fee: Option<bool>,
    /// Forgive anvil's copied base fees (block 1, first block after a reorg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anvil_base_fee_quirks: Option<bool>,
    /// Blob gas follows EIP-4844.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip4844_blob_gas: Option<bool>,
    /// Proof-of-stake header fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_merge: Option<bool>,
    /// `extra_data` is at most 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_data_limit: Option<bool>,
}

impl ChainConfig {
    /// Every HTTP endpoint: `rpc_url`, then `rpc_urls`.
    pub fn rpc_endpoints(&self) -> Vec<&str> {
        std::iter::once(self.rpc_url.as_str())
            .filter(|u| !u.is_empty())
            .chain(self.rpc_urls.iter().map(String::as_str))
            .collect()
    }

    /// Every WebSocket endpoint: `ws_url`, then `ws_urls`.
    pub fn ws_endpoints(&self) -> Vec<&str> {
        self.ws_url.iter().chain(self.ws_urls.iter()).map(String::as_str).collect()
    }

    /// A chain reached at one endpoint, with everything else at its default.
    pub fn new(chain_id: u64, rpc_url: impl Into<String>, mailbox: Address) -> Self {
        Self {
            chain_id,
            rpc_url: rpc_url.into(),
            rpc_urls: vec![],
            rpc_quorum: default_quorum(),
            rpc_max_head_lag: default_max_head_lag(),
            rpc_timeout_ms: default_rpc_timeout(),
            ws_url: None,
            ws_urls: vec![],
            mailbox,
            bridge: None,
            token: None,
            paymaster: None,
            confirmations: default_confirmations(),
            max_fee_per_gas_gwei: None,
            max_priority_fee_gwei: None,
            executor_workers: None,
            start_block: 0,
            poll_interval_ms: default_poll_interval(),
            rules_preset: RulesPreset::default(),
            rules: RuleSwitches::default(),
        }
    }

    /// The header rules: the preset with the switches applied.
    pub fn header_rules(&self) -> HeaderRules {
        let mut rules = match self.rules_preset {
            RulesPreset::Ethereum => HeaderRules::ethereum(),
            RulesPreset::Anvil => HeaderRules::anvil(),
        };
        let s = self.rules;
        let set = |rule: &mut bool, switch: Option<bool>| *rule = switch.unwrap_or(*rule);
        set(&mut rules.sequential_numbers, s.sequential_numbers);
        set(&mut rules.gas_used_within_limit, s.gas_used_within_limit);
        set(&mut rules.gas_limit_bounds, s.gas_limit_bounds);
        set(&mut rules.eip1559_base_fee, s.eip1559_base_fee);
        set(&mut rules.anvil_base_fee_quirks, s.anvil_base_fee_quirks);
        set(&mut rules.eip4844_blob_gas, s.eip4844_blob_gas);
        set(&mut rules.post_merge, s.post_merge);
        set(&mut rules.extra_data_limit, s.extra_data_limit);
        if let Some(strict) = s.strictly_increasing_timestamps {
            rules.timestamp = if strict { TimestampRule::Increasing } else { TimestampRule::NonDecreasing };
        }
        rules
    }
}

/// A private key that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(B256);

impl Secret {
    /// Wraps a key.
    pub fn new(key: B256) -> Self {
        Self(key)
    }

    /// The key, for the one place that signs with it.
    pub fn expose(&self) -> &B256 {
        &self.0
    }

    /// Reads a key written as hex (with or without `0x`) from `path`; `key` names the
    /// setting in errors.
    pub fn from_file(path: &Path, key: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Secret { key: key.into(), reason: format!("{}: {e}", path.display()) })?;
        text.trim().parse::<B256>().map(Self).map_err(|_| ConfigError::Secret {
            key: key.into(),
            reason: format!("{} does not hold a 32-byte hex key", path.display()),
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Config {
    /// Reads `path` (TOML), then applies `FERRY__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// [`load`](Self::load) with the environment given explicitly (tests), or the
    /// process environment when `None`.
    pub fn load_with_env(path: &Path, env: Option<BTreeMap<String, String>>) -> Result<Self, ConfigError> {
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env.map(|vars| vars.into_iter().collect()));
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|source| ConfigError::Load { path: path.into(), source: Box::new(source) })
    }

    /// Writes the configuration as TOML.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| ConfigError::Write { path: path.into(), reason: e.to_string() })?;
        std::fs::write(path, text).map_err(|e| ConfigError::Write { path: path.into(), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            data_dir: "/var/lib/ferry".into(),
            http: HttpConfig::default(),
            nats: NatsConfig::new("nats://127.0.0.1:4222"),
            relayer: RelayerConfig { key_file: Some("/run/secrets/relayer.key".into()), ..Default::default() },
            validators: ValidatorsConfig {
                threshold: 2,
                set: vec![Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(3)],
                key_files: vec![],
                key: None,
            },
            chains: BTreeMap::from([(
                "alpha".to_string(),
                ChainConfig {
                    ws_url: Some("ws://127.0.0.1:8545".into()),
                    rules_preset: RulesPreset::Anvil,
                    rules: RuleSwitches { eip1559_base_fee: Some(false), ..Default::default() },
                    ..ChainConfig::new(31337, "http://127.0.0.1:8545", Address::repeat_byte(9))
                },
            )]),
            governor: BTreeMap::new(),
        }
    }

    #[test]
    fn written_config_loads_back_and_env_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        let config = sample();
        config.write(&path).unwrap();
        assert_eq!(Config::load_with_env(&path, Some(BTreeMap::new())).unwrap(), config);

        let env = BTreeMap::from([
            ("FERRY__NATS__URL".to_string(), "nats://10.0.0.1:4222".to_string()),
            ("FERRY__CHAINS__ALPHA__CONFIRMATIONS".to_string(), "12".to_string()),
            ("FERRY__RELAYER__KEY".to_string(), format!("{}", B256::repeat_byte(7))),
        ]);
        let overridden = Config::load_with_env(&path, Some(env)).unwrap();
        assert_eq!(overridden.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(overridden.chains["alpha"].confirmations, 12);
        assert_eq!(overridden.relayer.key, Some(Secret::new(B256::repeat_byte(7))));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new(B256::repeat_byte(0xab));
        let shown = format!("{secret:?} {:?}", RelayerConfig { key: Some(secret.clone()), ..Default::default() });
        assert!(!shown.contains("abab"), "{shown}");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        sample().write(&path).unwrap();
        let env = BTreeMap::from([("FERRY__VALIDATORS__THRESHOLD".to_string(), "many".to_string())]);
        let err = Config::load_with_env(&path, Some(env)).unwrap_err().to_string();
        assert!(err.contains("threshold"), "{err}");
    }

    #[test]
    fn policy_defaults_are_the_files_defaults() {
        let empty: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(PolicyConfig::default(), empty);
        assert_eq!(PolicyConfig::default().min_payment_percent, 100);
    }
}
