//! Delivery fees and route policy end to end on a real anvil pair and a real
//! nats-server: a thousand unpaid dispatches wait in `awaiting_payment` and cost the
//! relayer nothing while ten paid transfers are delivered; a top-up gets one unpaid
//! message delivered; a denied recipient's message is parked for the policy; the books'
//! metrics match what the chain says was paid and spent.

mod common;

use std::{collections::HashSet, time::Duration};

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::Provider,
};
use common::{Net, wait_for};
use ferry_messages::contracts::{Mailbox, TestRecipient, TokenBridge};
use ferry_relayer::{Role, Service, Stage};

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
    let mut ids = Vec::with_capacity(count);
    for p in pending {
        let receipt = p.with_timeout(Some(Duration::from_secs(120))).get_receipt().await.unwrap();
        assert!(receipt.status(), "dispatch reverted: {receipt:?}");
        let dispatch = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap();
        ids.push(dispatch.inner.data.id);
    }
    ids
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

    // A top-up of one unpaid message gets it delivered; the others stay.
    let topped = spam[7];
    let top_up_fee = net.pay_for("alpha", 5, topped, 31338, 100_000).await;
    let processed = net.wait_processed("beta", &[topped], Duration::from_secs(120)).await;
    common::assert_once(&processed, &[topped]);

    // A paid message to a denied recipient is parked for the policy, never sent.
    let refused = dispatch_unpaid(&net, 4, denied, 1).await[0];
    net.pay_for("alpha", 5, refused, 31338, 100_000).await;
    let reason = wait_for(Duration::from_secs(120), "the denied message parked", || async {
        let record = store.get(&refused).unwrap()?;
        record.parked_reason().map(str::to_owned)
    })
    .await;
    assert!(reason.contains(&format!("recipient {denied} is denied")), "{reason}");
    let parked = service.context().metrics.messages_parked_total.with_label_values(&["alpha", "beta", "policy"]).get();
    assert_eq!(parked, 1);

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
