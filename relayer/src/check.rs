//! `ferry config check`: every problem of a configuration, each with its key path.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::Address;
use ferry_light_client::ValidatorKey;

use crate::{Config, Secret};

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, as in the file (`chains.alpha.rpc_url`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl Config {
    /// Every problem found, without stopping at the first; empty when the configuration
    /// can run every role.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |key: String, problem: String| problems.push(Problem { key, problem });

        let servers = self.nats.servers();
        if servers.is_empty() {
            report("nats.url".into(), "no NATS server: set nats.url or nats.urls".into());
        }
        for (i, url) in servers.iter().enumerate() {
            let key =
                if !self.nats.url.is_empty() && i == 0 { "nats.url".to_string() } else { "nats.urls".to_string() };
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                report(key.clone(), format!("{url:?} is not a nats:// or tls:// URL"));
            }
            if servers[..i].contains(url) {
                report(key, format!("{url:?} is listed twice"));
            }
        }
        if !matches!(self.nats.replicas, 1..=5) {
            report(
                "nats.replicas".into(),
                format!("{} is not between 1 and 5 (JetStream's limit)", self.nats.replicas),
            );
        } else if servers.len() > 1 && self.nats.replicas > servers.len() {
            // One URL may name a whole cluster (behind DNS or a balancer): only a list of
            // servers says how many there are.
            report(
                "nats.replicas".into(),
                format!("{} replicas need as many servers; {} are listed", self.nats.replicas, servers.len()),
            );
        }
        if self.nats.stream.is_empty() || self.nats.stream.contains(['.', ' ', '*', '>']) {
            report("nats.stream".into(), format!("{:?} is not a valid stream name", self.nats.stream));
        }
        if self.relayer.batch_size == 0 {
            report("relayer.batch_size".into(), "must be at least 1".into());
        }
        if self.relayer.max_in_flight == 0 {
            report("relayer.max_in_flight".into(), "must be at least 1".into());
        }
        if self.relayer.name.is_empty() || !self.relayer.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            report("relayer.name".into(), "must be letters, digits and dashes".into());
        }
        if let Err(e) = self.relayer_key() {
            report("relayer.key".into(), e.to_string());
        }

        let set = &self.validators.set;
        let distinct: BTreeSet<&Address> = set.iter().collect();
        if distinct.len() != set.len() {
            report("validators.set".into(), "lists a validator twice".into());
        }
        if set.contains(&Address::ZERO) {
            report("validators.set".into(), "contains the zero address".into());
        }
        let threshold = usize::from(self.validators.threshold);
        if threshold == 0 || threshold > set.len() {
            report("validators.threshold".into(), format!("{threshold} is not between 1 and {} validators", set.len()));
        }
        for (i, path) in self.validators.key_files.iter().enumerate() {
            let key = format!("validators.key_files[{i}]");
            match Secret::from_file(path, &key).and_then(|s| validator_address(&s, &key)) {
                Ok(address) if !set.contains(&address) => {
                    report(key, format!("the key's address {address} is not in validators.set"))
                }
                Ok(_) => {}
                Err(e) => report(key, e.to_string()),
            }
        }

        if self.chains.len() < 2 {
            report("chains".into(), "needs at least two chains to relay between".into());
        }
        let mut ids: BTreeMap<u64, &str> = BTreeMap::new();
        for (name, chain) in &self.chains {
            let key = |field: &str| format!("chains.{name}.{field}");
            if chain.chain_id == 0 || chain.chain_id > u64::from(u32::MAX) {
                report(key("chain_id"), format!("{} does not fit a message domain (1..2^32)", chain.chain_id));
            }
            if let Some(other) = ids.insert(chain.chain_id, name) {
                report(key("chain_id"), format!("{} is also chain {other}'s id", chain.chain_id));
            }
            check_endpoints(chain, &key, &mut report);
            if chain.mailbox == Address::ZERO {
                report(key("mailbox"), "is the zero address".into());
            }
            if chain.executor_workers == Some(0) {
                report(key("executor_workers"), "must be at least 1".into());
            }
            if let (Some(fee), Some(tip)) = (chain.max_fee_per_gas_gwei, chain.max_priority_fee_gwei)
                && tip > fee
            {
                report(key("max_priority_fee_gwei"), format!("{tip} is over max_fee_per_gas_gwei ({fee})"));
            }
            if chain.rpc_timeout_ms == 0 {
                report(key("rpc_timeout_ms"), "must be at least 1".into());
            }
            if chain.poll_interval_ms == 0 {
                report(key("poll_interval_ms"), "must be at least 1".into());
            }
        }
        let policy = &self.relayer.policy;
        let lists = [
            ("allow_origins", &policy.allow_origins),
            ("deny_origins", &policy.deny_origins),
            ("allow_destinations", &policy.allow_destinations),
            ("deny_destinations", &policy.deny_destinations),
        ];
        for (list, names) in lists {
            for (i, name) in names.iter().enumerate() {
                if !self.chains.contains_key(name) {
                    report(format!("relayer.policy.{list}[{i}]"), format!("{name} is not a configured chain"));
                }
            }
        }
        if policy.require_payment {
            for (name, chain) in &self.chains {
                if chain.paymaster.is_none() {
                    let problem =
                        "relayer.policy.require_payment is set, so messages from here would never be delivered";
                    report(format!("chains.{name}.paymaster"), format!("missing: {problem}"));
                }
            }
        }
        for (origin, routes) in &self.governor {
            for (destination, route) in routes {
                let key = format!("governor.{origin}.{destination}");
                for chain in [origin, destination] {
                    match self.chains.get(chain.as_str()) {
                        None => report(key.clone(), format!("{chain} is not a configured chain")),
                        Some(c) if c.bridge.is_none() => report(key.clone(), format!("chain {chain} has no bridge")),
                        Some(_) => {}
                    }
                }
                if origin == destination {
                    report(key.clone(), "a route joins two different chains".into());
                }
                if route.delay_threshold.is_zero() {
                    report(format!("{key}.delay_threshold"), "must be at least 1 (0 would hold every transfer)".into());
                }
            }
        }
        problems
    }

    /// The relayer key, from `relayer.key` or `relayer.key_file`.
    pub fn relayer_key(&self) -> Result<Option<Secret>, crate::ConfigError> {
        match (&self.relayer.key, &self.relayer.key_file) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, Some(path)) => Secret::from_file(path, "relayer.key_file").map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The validator keys this process signs with: `validators.key` and every
    /// `validators.key_files` entry.
    pub fn validator_keys(&self) -> Result<Vec<Secret>, crate::ConfigError> {
        let mut keys: Vec<Secret> = self.validators.key.iter().cloned().collect();
        for (i, path) in self.validators.key_files.iter().enumerate() {
            keys.push(Secret::from_file(path, &format!("validators.key_files[{i}]"))?);
        }
        Ok(keys)
    }

    /// The chain with EIP-155 id `chain_id`, with its name.
    pub fn chain_by_id(&self, chain_id: u64) -> Option<(&str, &crate::ChainConfig)> {
        self.chains.iter().find(|(_, c)| c.chain_id == chain_id).map(|(n, c)| (n.as_str(), c))
    }
}

fn validator_address(secret: &Secret, key: &str) -> Result<Address, crate::ConfigError> {
    ValidatorKey::from_bytes(secret.expose())
        .map(|k| k.address())
        .map_err(|e| crate::ConfigError::Secret { key: key.into(), reason: e.to_string() })
}

/// A chain's endpoints: each a URL of the right scheme, none twice, and a quorum that
/// the endpoints can reach.
fn check_endpoints(chain: &crate::ChainConfig, key: &dyn Fn(&str) -> String, report: &mut dyn FnMut(String, String)) {
    let urls = chain.rpc_endpoints();
    if urls.is_empty() {
        report(key("rpc_url"), "no RPC endpoint: set rpc_url or rpc_urls".into());
    }
    let field = |i: usize| {
        if !chain.rpc_url.is_empty() && i == 0 {
            key("rpc_url")
        } else {
            key(&format!("rpc_urls[{}]", i - usize::from(!chain.rpc_url.is_empty())))
        }
    };
    for (i, url) in urls.iter().enumerate() {
        if !matches!(url_scheme(url), Some("http" | "https")) {
            report(field(i), format!("{url:?} is not an http(s) URL"));
        }
        if urls[..i].contains(url) {
            report(field(i), format!("{url:?} is listed twice"));
        }
    }
    let ws = chain.ws_endpoints();
    for (i, url) in ws.iter().enumerate() {
        let field = if chain.ws_url.is_some() && i == 0 { key("ws_url") } else { key("ws_urls") };
        if !matches!(url_scheme(url), Some("ws" | "wss")) {
            report(field.clone(), format!("{url:?} is not a ws(s) URL"));
        }
        if ws[..i].contains(url) {
            report(field, format!("{url:?} is listed twice"));
        }
    }
    if chain.rpc_quorum == 0 || chain.rpc_quorum > urls.len().max(1) {
        report(
            key("rpc_quorum"),
            format!("{} cannot be reached: it must be between 1 and the {} endpoints", chain.rpc_quorum, urls.len()),
        );
    }
}

fn url_scheme(url: &str) -> Option<&str> {
    url.split_once("://").filter(|(_, rest)| !rest.is_empty()).map(|(scheme, _)| scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            data_dir = "/tmp/ferry"
            [nats]
            url = "http://nats:4222"
            urls = ["nats://b:4222"]
            replicas = 3
            [validators]
            threshold = 3
            set = ["0x0000000000000000000000000000000000000001", "0x0000000000000000000000000000000000000001"]
            [chains.alpha]
            chain_id = 31337
            rpc_url = "localhost:8545"
            mailbox = "0x0000000000000000000000000000000000000000"
            [chains.beta]
            chain_id = 31337
            rpc_url = "http://127.0.0.1:8546"
            ws_url = "http://127.0.0.1:8546"
            mailbox = "0x0000000000000000000000000000000000000009"
            [chains.gamma]
            chain_id = 7
            rpc_urls = ["http://a:8545", "http://b:8545", "http://a:8545"]
            rpc_quorum = 4
            max_fee_per_gas_gwei = 5
            max_priority_fee_gwei = 6
            mailbox = "0x0000000000000000000000000000000000000009"
            [chains.delta]
            chain_id = 8
            mailbox = "0x0000000000000000000000000000000000000009"
            [relayer.policy]
            require_payment = true
            deny_origins = ["omega"]
            [governor.alpha.omega]
            delay_threshold = "1000"
            delay_secs = 60
            [governor.gamma.delta]
            delay_threshold = "0"
            delay_secs = 60
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
        let keys: Vec<String> = config.check().into_iter().map(|p| p.key).collect();
        for expected in [
            "nats.url",
            "nats.replicas",
            "validators.set",
            "validators.threshold",
            "chains.alpha.rpc_url",
            "chains.alpha.mailbox",
            "chains.beta.chain_id",
            "chains.beta.ws_url",
            "chains.gamma.rpc_urls[2]",
            "chains.gamma.rpc_quorum",
            "chains.gamma.max_priority_fee_gwei",
            "chains.delta.rpc_url",
            "governor.alpha.omega",
            "relayer.policy.deny_origins[0]",
            "chains.alpha.paymaster",
            "governor.gamma.delta",
            "governor.gamma.delta.delay_threshold",
        ] {
            assert!(keys.iter().any(|k| k == expected), "{expected} missing from {keys:?}");
        }
        // Amounts in base units, decimal or hex, as `ferry bridge` takes them.
        assert_eq!(config.governor["alpha"]["omega"].delay_threshold, alloy::primitives::U256::from(1000));
    }
}
