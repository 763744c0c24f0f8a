//! Delivery fees and route policy end to end on a real anvil pair and a real
//! nats-server: a thousand unpaid dispatches wait in `awaiting_payment` and cost the
//! relayer nothing while ten paid transfers are delivered; a payment short of the cost
//! leaves a message waiting and saying so, and a top-up gets it delivered; a denied
//! recipient's message and one from a sender the allow list leaves out are parked for
//! the policy; the books' metrics match what the chain says was paid and spent.

mod common;

use std::{collections::HashSet, time::Duration};

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::{Provider, ext::AnvilApi},
};
use common::{Net, wait_for};
use ferry_messages::contracts::{Mailbox, TestRecipient, TokenBridge};
use ferry_relayer::{Role, Service, Stage, Store};

const BLOCK: Option<Duration> = Some(Duration::from_millis(500));
const SPAM: usize = 1_000;
const PAID: usize = 10;

/// Dispatches `count` messages to `recipient` on beta from dev account `sender` on
/// alpha, paying nothing for their delivery; returns their ids.
async fn dispatch_unpaid(net: &Net, sender: usize, recipient: Address, count: usize) -> Vec<B256> {
    let provider = net.wallet("alpha", sender);
    let mailbox = Mailbox::new(net.config.chains["alpha"].mailbox, &provider);
    let mut nonce = provider.get_transaction_count(net.account(sender)).pending().await.unwrap();
    let fee = provider.get_gas_price().await.unwrap() * 3 + 1_000_000_000;
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let body = Bytes::from(format!("spam {i}").into_bytes());
        let call = mailbox
            .dispatch(31338, recipient.into_word(), body)
            .nonce(nonce)
            .gas(200_000)
            .max_fee_per_gas(fee)
            .max_priority_fee_per_gas(1_000_000_000);
        pending.push(call.send().await.unwrap());
        nonce += 1;
    }
    common::dispatched_ids(pending, "dispatch").await
}

/// Pays for message `id`'s delivery and waits until the relayer parks it; its reason.
async fn paid_then_parked(net: &Net, store: &Store, id: B256) -> String {
    net.pay_for("alpha", 5, id, 31338, 100_000).await;
    wait_for(Duration::from_secs(120), &format!("message {id} parked"), || async {
        store.get(&id).unwrap()?.parked_reason().map(str::to_owned)
    })
    .await
}

/// The service's `/metrics` value summed over the series of `name` (any labels).
async fn metric_sum(net: &Net, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", net.api())).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_spam_costs_the_relayer_nothing_and_a_top_up_gets_a_message_delivered() {
    let mut net = Net::start(BLOCK, 2).await;
    assert!(net.config.relayer.policy.require_payment, "the devnet requires payment");
    let deployer = net.wallet("beta", 3);
    let open = *TestRecipient::deploy(&deployer).await.unwrap().address();
    let denied = *TestRecipient::deploy(&deployer).await.unwrap().address();
    net.config.relayer.policy.deny_recipients = vec![denied];
    // Senders: the bridge and the account that dispatches straight to the Mailbox.
    net.config.relayer.policy.allow_senders = vec![net.config.chains["alpha"].bridge.unwrap(), net.account(4)];

    let beta = net.wallet("beta", 3);
    let relayer = net.devnet.info().accounts.last().unwrap().address;
    let (balance_before, nonce_before) =
        (beta.get_balance(relayer).await.unwrap(), beta.get_transaction_count(relayer).await.unwrap());
    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let store = &service.context().store;

    let spam = dispatch_unpaid(&net, 4, open, SPAM).await;
    let paid = net.send_many("alpha", "beta", 0, net.account(1), &[U256::from(5); PAID]).await;
    let processed = net.wait_processed("beta", &paid, Duration::from_secs(180)).await;
    common::assert_once(&processed, &paid);
    wait_for(Duration::from_secs(180), "every unpaid message awaiting payment", || async {
        spam.iter().all(|id| store.get(id).unwrap().is_some_and(|r| r.stage() == Stage::AwaitingPayment)).then_some(())
    })
    .await;
    let record = store.get(&spam[0]).unwrap().unwrap();
    let reason = record.waiting_reason().unwrap();
    assert!(reason.starts_with("awaiting_payment: paid for 0 gas of "), "{reason}");
    let pending = service.context().metrics.messages_pending.with_label_values(&["beta", "awaiting_payment"]);
    wait_for(Duration::from_secs(30), "the pending gauge counts them", || async {
        (pending.get() == SPAM as i64).then_some(())
    })
    .await;
    let url = format!("{}/messages?status=awaiting_payment&limit=2000", net.api());
    let listed: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(SPAM), "the API lists them");

    // A payment short of the delivery's cost leaves a message waiting, saying what it
    // paid for (the paymaster adds its overhead to the gas bought); a top-up that makes
    // up the difference gets it delivered; the others stay.
    let topped = spam[7];
    let short_fee = net.pay_for("alpha", 5, topped, 31338, 1_000).await;
    let overhead = net.devnet.info().chains[0].gas_payment.unwrap().overhead;
    let said = format!("awaiting_payment: paid for {} gas of ", 1_000 + overhead);
    wait_for(Duration::from_secs(120), "the short payment read and found short", || async {
        let record = store.get(&topped).unwrap()?;
        (record.stage() == Stage::AwaitingPayment && record.waiting_reason()?.starts_with(&said)).then_some(())
    })
    .await;
    let top_up_fee = short_fee + net.pay_for("alpha", 5, topped, 31338, 100_000).await;
    let processed = net.wait_processed("beta", &[topped], Duration::from_secs(120)).await;
    common::assert_once(&processed, &[topped]);

    // A paid message to a denied recipient is parked for the policy, never sent.
    let refused = dispatch_unpaid(&net, 4, denied, 1).await[0];
    let reason = paid_then_parked(&net, store, refused).await;
    assert!(reason.contains(&format!("recipient {denied} is denied")), "{reason}");
    // So is a paid message from a sender the allow list leaves out.
    let outsider = dispatch_unpaid(&net, 6, open, 1).await[0];
    let reason = paid_then_parked(&net, store, outsider).await;
    assert!(reason.contains(&format!("sender {} is not allowed", net.account(6))), "{reason}");
    let parked = service.context().metrics.messages_parked_total.with_label_values(&["alpha", "beta", "policy"]).get();
    assert_eq!(parked, 2);

    // The relayer sent only the paid deliveries, and spent exactly their gas.
    let processed = net.processed("beta").await;
    let delivered: HashSet<B256> = paid.iter().chain([&topped]).copied().collect();
    let unexpected: Vec<_> = processed.keys().filter(|id| !delivered.contains(*id)).collect();
    assert!(unexpected.is_empty(), "unpaid or refused messages were delivered: {unexpected:?}");
    let txs: HashSet<B256> = delivered.iter().flat_map(|id| processed[id].clone()).collect();
    let mut spent = U256::ZERO;
    for tx in &txs {
        let receipt = beta.get_transaction_receipt(*tx).await.unwrap().unwrap();
        assert_eq!(receipt.from, relayer);
        spent += U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    }
    let nonce_after = beta.get_transaction_count(relayer).await.unwrap();
    assert_eq!(nonce_after - nonce_before, txs.len() as u64, "the relayer sent transactions for unpaid messages");
    assert_eq!(balance_before - beta.get_balance(relayer).await.unwrap(), spent);

    // The books: gas spent is what the chain charged, fees paid what the senders paid
    // (alpha's paymaster sells beta's gas one to one on the devnet).
    let quote = TokenBridge::new(net.config.chains["alpha"].bridge.unwrap(), net.wallet("alpha", 5))
        .quoteTransferRemote(31338)
        .call()
        .await
        .unwrap();
    let fees = quote * U256::from(PAID) + top_up_fee;
    let close = |metric: f64, wei: U256| (metric - f64::from(wei)).abs() <= f64::from(wei) * 1e-9;
    let gas_metric = metric_sum(&net, "ferry_relayer_gas_spent_wei_total").await;
    assert!(close(gas_metric, spent), "gas spent {gas_metric} vs {spent} on chain");
    let fees_metric = metric_sum(&net, "ferry_relayer_fees_paid_wei_total").await;
    assert!(close(fees_metric, fees), "fees paid {fees_metric} vs {fees} on chain");
    service.stop().await;

    // `ferry fees claim` moves what the senders paid at alpha's paymaster to the relayer.
    let alpha = net.wallet("alpha", 3);
    let paymaster = net.config.chains["alpha"].paymaster.unwrap();
    let held = alpha.get_balance(paymaster).await.unwrap();
    assert!(held >= fees, "alpha's paymaster holds {held}, the senders paid {fees}");
    let config = net.dir.path().join("ferry.toml");
    net.config.write(&config).unwrap();
    let relayer_before = alpha.get_balance(relayer).await.unwrap();
    let said = common::ferry_cli(&["fees", "claim", "--config", config.to_str().unwrap()], &[]).await;
    assert!(said.contains(&format!("alpha: claimed {held} wei")), "{said}");
    assert_eq!(alpha.get_balance(paymaster).await.unwrap(), U256::ZERO);
    let line = said.lines().find(|l| l.starts_with("alpha: claimed")).unwrap();
    let claim_tx = line.split_whitespace().last().unwrap().parse::<B256>().unwrap();
    let receipt = alpha.get_transaction_receipt(claim_tx).await.unwrap().unwrap();
    let claim_gas = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(alpha.get_balance(relayer).await.unwrap(), relayer_before + held - claim_gas);
    let again = common::ferry_cli(&["fees", "claim", "--config", config.to_str().unwrap()], &[]).await;
    assert!(again.contains("alpha: paymaster") && again.contains("holds nothing"), "{again}");
}

/// Runs `ferry ARGS`; returns whether it succeeded, its stdout and its stderr.
async fn ferry(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry")).args(args).output().await.unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Asserts `ferry` failed saying `expected`, once, with no raw revert data.
fn assert_said_once(outcome: &(bool, String, String), expected: &str) {
    let (ok, stdout, stderr) = outcome;
    assert!(!ok, "ferry succeeded: {stdout}");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    assert_eq!(stderr.matches("Error:").count(), 1, "{stderr}");
    assert_eq!(stderr.matches(expected).count(), 1, "said twice: {stderr}");
    assert!(!stderr.contains("custom error"), "undecoded revert: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_bridge_names_a_shortfall_before_sending_and_reverts_by_their_error() {
    let net = Net::start(None, 1).await;
    let config = net.dir.path().join("ferry.toml");
    net.config.write(&config).unwrap();
    let config = config.to_str().unwrap();
    let key_file = |name: &str, key: B256| {
        let path = net.dir.path().join(name);
        ferry_cli::write_secret(&path, &key).unwrap();
        path.to_str().unwrap().to_string()
    };
    let accounts = &net.devnet.info().accounts;
    let alpha = net.wallet("alpha", 0);
    let bridge = |key: &str, amount: &str| {
        let args =
            ["bridge", "--config", config, "--from", "alpha", "--to", "beta", "--amount", amount, "--key-file", key];
        args.map(str::to_string)
    };
    let run = |args: [String; 11]| async move { ferry(&args.iter().map(String::as_str).collect::<Vec<_>>()).await };
    let ten = "10000000000000000000";

    // No tokens: the balance is named in token units, and nothing is sent.
    let empty = key_file("empty.key", accounts[6].private_key);
    let nonce = alpha.get_transaction_count(accounts[6].address).await.unwrap();
    let said = run(bridge(&empty, ten)).await;
    assert_said_once(
        &said,
        &format!("{} holds 0 FTT and the transfer is 10 FTT: short by 10 FTT", accounts[6].address),
    );
    assert_eq!(alpha.get_transaction_count(accounts[6].address).await.unwrap(), nonce, "a transaction was sent");

    // Tokens but no ETH for the delivery fee.
    let poor = alloy::signers::local::PrivateKeySigner::random();
    let token = ferry_messages::contracts::TestToken::new(net.config.chains["alpha"].token.unwrap(), &alpha);
    let call = token.transfer(poor.address(), U256::from(10).pow(U256::from(19)));
    assert!(call.send().await.unwrap().get_receipt().await.unwrap().status());
    let poor_key = key_file("poor.key", B256::from_slice(&poor.to_bytes()[..]));
    let said = run(bridge(&poor_key, ten)).await;
    assert_said_once(
        &said,
        &format!("the delivery fee is 0.00036 ETH and {} holds 0 ETH: short by 0.00036 ETH", poor.address()),
    );

    // The fee but not the transaction's gas: named before anything is sent. (It approves
    // the bridge while it has ETH, so that the transfer is all that is left to pay.)
    let poor_alpha =
        ferry_devnet::wallet(&net.config.chains["alpha"].rpc_url, B256::from_slice(&poor.to_bytes()[..])).unwrap();
    let gas_money = U256::from(10).pow(U256::from(16));
    let fund = alloy::rpc::types::TransactionRequest::default().to(poor.address()).value(gas_money);
    assert!(alpha.send_transaction(fund).await.unwrap().get_receipt().await.unwrap().status());
    let poor_token = ferry_messages::contracts::TestToken::new(*token.address(), &poor_alpha);
    let approve = poor_token.approve(net.config.chains["alpha"].bridge.unwrap(), U256::MAX);
    assert!(approve.send().await.unwrap().get_receipt().await.unwrap().status());
    let fee = U256::from(360_000_000_000_000u64);
    alpha.anvil_set_balance(poor.address(), fee + U256::from(1)).await.unwrap();
    let nonce = alpha.get_transaction_count(poor.address()).await.unwrap();
    let said = run(bridge(&poor_key, ten)).await;
    assert_said_once(&said, "the delivery fee is 0.00036 ETH and the transaction's gas up to ");
    let holds = format!("{} holds 0.000360000000000001 ETH: short by", poor.address());
    assert!(said.2.contains(&holds), "{}", said.2);
    assert_eq!(alpha.get_transaction_count(poor.address()).await.unwrap(), nonce, "a transaction was sent");

    // More than the bridge's outbound bucket holds (100,000 FTT on the devnet).
    let deployer = key_file("deployer.key", accounts[0].private_key);
    let said = run(bridge(&deployer, "200000000000000000000000")).await;
    assert_said_once(
        &said,
        "lets 100000 FTT through now (of 100000 FTT, refilling 100 FTT a second) and the transfer is 200000 FTT",
    );

    // A transfer that can go goes, and says what it paid.
    let (ok, stdout, stderr) = run(bridge(&deployer, ten)).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("delivery paid: 360000000000000 wei"), "{stdout}");

    // A revert from a contract is named with its arguments: claiming with a key that is
    // not the paymaster's beneficiary.
    let mut stranger = net.config.clone();
    stranger.relayer.key_file = Some(empty.clone().into());
    stranger.relayer.key = None;
    let stranger_config = net.dir.path().join("stranger.toml");
    stranger.write(&stranger_config).unwrap();
    let said = ferry(&["fees", "claim", "--config", stranger_config.to_str().unwrap()]).await;
    assert_said_once(&said, &format!("reverted with NotBeneficiary(caller: {})", accounts[6].address));
}
