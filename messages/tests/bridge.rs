//! A token round trip between two anvil chains with hand-made validator signatures
//! (no relayer): lock on alpha, mint on beta, burn on beta, release on alpha.

mod common;

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
};
use common::{Dispatched, TX_GAS, attestation, dispatches, metadata, mined, wallet};
use ferry_messages::contracts::{BridgedToken, Mailbox, TestToken, TokenBridge};

#[tokio::test]
async fn lock_mint_burn_release_round_trip_is_exact() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [alpha, beta] = devnet.deployments().clone();
    let keys = &devnet.validator_keys()[..2];

    let alice = info.accounts[0].clone(); // holds the TestToken supply on alpha
    let bob = info.accounts[1].clone(); // receives on beta, sends back
    let carol = Address::repeat_byte(0xca); // receives the return on alpha, has no key
    let relayer = info.accounts[9].private_key;

    let a_alice = wallet(&info.chains[0].rpc_url, alice.private_key);
    let a_relayer = wallet(&info.chains[0].rpc_url, relayer);
    let b_bob = wallet(&info.chains[1].rpc_url, bob.private_key);
    let b_relayer = wallet(&info.chains[1].rpc_url, relayer);

    let token_a = TestToken::new(alpha.token, &a_alice);
    let token_b = BridgedToken::new(beta.token, &b_bob);
    let alice_start = token_a.balanceOf(alice.address).call().await.unwrap();
    let sent = U256::from(1_234_567_890_123_456_789u128);
    let returned = U256::from(987_654_321u64);

    // Lock on alpha.
    mined(token_a.approve(alpha.bridge, sent).send().await).await;
    let receipt = mined(
        TokenBridge::new(alpha.bridge, &a_alice)
            .transferRemote(31338, bob.address, sent)
            .value(PAY)
            .gas(TX_GAS)
            .send()
            .await,
    )
    .await;
    let out = single(dispatches(&receipt));
    assert_eq!(token_a.balanceOf(alpha.bridge).call().await.unwrap(), sent, "locked");
    assert_eq!(token_a.balanceOf(alice.address).call().await.unwrap(), alice_start - sent);
    let message = out.decoded();
    assert_eq!(message.sender, alpha.bridge.into_word());
    assert_eq!(message.recipient, beta.bridge.into_word());

    // Mint on beta.
    let meta = metadata(&attestation(&out, alpha.mailbox), keys);
    mined(Mailbox::new(beta.mailbox, &b_relayer).process(meta, out.message.clone()).gas(TX_GAS).send().await).await;
    assert_eq!(token_b.balanceOf(bob.address).call().await.unwrap(), sent, "minted");
    assert_eq!(token_b.totalSupply().call().await.unwrap(), sent);

    // Burn on beta (no approval: the bridge is the minter).
    let receipt = mined(
        TokenBridge::new(beta.bridge, &b_bob)
            .transferRemote(31337, carol, returned)
            .value(PAY)
            .gas(TX_GAS)
            .send()
            .await,
    )
    .await;
    let back = single(dispatches(&receipt));
    assert_eq!(token_b.balanceOf(bob.address).call().await.unwrap(), sent - returned);
    assert_eq!(token_b.totalSupply().call().await.unwrap(), sent - returned, "burned");

    // Release on alpha.
    let meta = metadata(&attestation(&back, beta.mailbox), keys);
    mined(Mailbox::new(alpha.mailbox, &a_relayer).process(meta, back.message.clone()).gas(TX_GAS).send().await).await;
    assert_eq!(token_a.balanceOf(carol).call().await.unwrap(), returned, "released");
    assert_eq!(token_a.balanceOf(alpha.bridge).call().await.unwrap(), sent - returned);

    // The invariant the fault suite relies on: locked on alpha == supply on beta.
    assert_eq!(token_a.balanceOf(alpha.bridge).call().await.unwrap(), token_b.totalSupply().call().await.unwrap());
    assert_eq!(token_a.balanceOf(alice.address).call().await.unwrap(), alice_start - sent);
}

#[tokio::test]
async fn the_bridge_accepts_only_its_mailbox_and_its_enrolled_peer() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [_, beta] = devnet.deployments().clone();
    let b = wallet(&info.chains[1].rpc_url, info.accounts[0].private_key);
    let bridge = TokenBridge::new(beta.bridge, &b);
    let body: alloy::primitives::Bytes =
        [info.accounts[0].address.into_word().0, U256::from(5).to_be_bytes()].concat().into();

    // Straight from an account instead of the Mailbox.
    let err = bridge.handle(31337, devnet.deployments()[0].bridge.into_word(), body).call().await.unwrap_err();
    match err.as_decoded_interface_error::<TokenBridge::TokenBridgeErrors>() {
        Some(TokenBridge::TokenBridgeErrors::NotMailbox(e)) => {
            assert_eq!(e.caller, info.accounts[0].address)
        }
        other => panic!("expected NotMailbox, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_from_an_unenrolled_sender_mints_nothing() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [alpha, beta] = devnet.deployments().clone();
    let a = wallet(&info.chains[0].rpc_url, info.accounts[0].private_key);
    let b = wallet(&info.chains[1].rpc_url, info.accounts[9].private_key);

    // An account dispatches a well-formed bridge body straight to beta's bridge: the
    // validators attest it (it did happen), but the bridge refuses it.
    let body = [info.accounts[0].address.into_word().0, U256::from(1_000).to_be_bytes()].concat();
    let receipt =
        mined(Mailbox::new(alpha.mailbox, &a).dispatch(31338, beta.bridge.into_word(), body.into()).send().await).await;
    let forged = single(dispatches(&receipt));
    let meta = metadata(&attestation(&forged, alpha.mailbox), &devnet.validator_keys()[..2]);
    let err = Mailbox::new(beta.mailbox, &b).process(meta, forged.message.clone()).call().await.unwrap_err();
    match err.as_decoded_error::<TokenBridge::UnenrolledSender>() {
        Some(e) => assert_eq!((e.origin, e.sender), (31337, info.accounts[0].address.into_word())),
        None => panic!("expected UnenrolledSender, got {err}"),
    }
    assert_eq!(BridgedToken::new(beta.token, &b).totalSupply().call().await.unwrap(), U256::ZERO);
}

/// What each transfer sends for its delivery: more than the devnet's quote, the excess
/// refunded by the paymaster.
const PAY: U256 = U256::from_limbs([10_000_000_000_000_000, 0, 0, 0]);

/// What a revert of the bridge names, or a panic saying what came instead.
fn bridge_error(err: alloy::contract::Error) -> TokenBridge::TokenBridgeErrors {
    err.as_decoded_interface_error::<TokenBridge::TokenBridgeErrors>()
        .unwrap_or_else(|| panic!("expected a TokenBridge error, got {err}"))
}

#[tokio::test]
async fn rate_limits_bound_each_direction_refill_with_time_and_only_the_owner_sets_them() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [alpha, beta] = devnet.deployments().clone();
    let alice = info.accounts[0].clone(); // the owner, holding the TestToken supply
    let a_alice = wallet(&info.chains[0].rpc_url, alice.private_key);
    let a_bob = wallet(&info.chains[0].rpc_url, info.accounts[1].private_key);
    let bridge = TokenBridge::new(alpha.bridge, &a_alice);
    let limit = ferry_devnet::DEVNET_RATE_LIMIT;

    // The devnet's buckets, full, both ways, and written to devnet.json.
    for inbound in [false, true] {
        let bucket = bridge.rateLimit(31338, inbound).call().await.unwrap();
        assert_eq!(
            (bucket.capacity, bucket.available, bucket.refillPerSecond),
            (limit.capacity, limit.capacity, limit.refill_per_second)
        );
    }
    assert_eq!(info.chains[0].rate_limit, limit);

    // Only the owner sets a limit.
    let err = TokenBridge::new(alpha.bridge, &a_bob)
        .setRateLimit(31338, false, U256::from(1), U256::ZERO)
        .call()
        .await
        .unwrap_err();
    match bridge_error(err) {
        TokenBridge::TokenBridgeErrors::OwnableUnauthorizedAccount(e) => {
            assert_eq!(e.account, info.accounts[1].address)
        }
        other => panic!("expected OwnableUnauthorizedAccount, got {other:?}"),
    }

    // 1,000 at once, 10 a second back.
    mined(bridge.setRateLimit(31338, false, U256::from(1_000), U256::from(10)).gas(TX_GAS).send().await).await;
    mined(TestToken::new(alpha.token, &a_alice).approve(alpha.bridge, U256::from(10_000)).send().await).await;
    mined(bridge.transferRemote(31338, alice.address, U256::from(600)).value(PAY).gas(TX_GAS).send().await).await;
    let left = bridge.rateLimit(31338, false).call().await.unwrap().available;
    assert!(left >= U256::from(400) && left < U256::from(1_000), "{left}");
    match bridge_error(
        bridge.transferRemote(31338, alice.address, U256::from(900)).value(PAY).call().await.unwrap_err(),
    ) {
        TokenBridge::TokenBridgeErrors::RateLimited(e) => {
            assert_eq!(
                (e.remote, e.inbound, e.amount, e.refillPerSecond),
                (31338, false, U256::from(900), U256::from(10))
            );
            assert!(e.available < U256::from(900));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // A minute later the bucket is full again, and no fuller.
    let provider = common::plain(&info.chains[0].rpc_url);
    provider.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (60,)).await.unwrap();
    provider.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    assert_eq!(bridge.rateLimit(31338, false).call().await.unwrap().available, U256::from(1_000));
    mined(bridge.transferRemote(31338, alice.address, U256::from(900)).value(PAY).gas(TX_GAS).send().await).await;

    // Inbound on beta: a release over the bucket reverts in `handle`, naming the bucket.
    let b_owner = wallet(&info.chains[1].rpc_url, alice.private_key);
    mined(
        TokenBridge::new(beta.bridge, &b_owner)
            .setRateLimit(31337, true, U256::from(500), U256::ZERO)
            .gas(TX_GAS)
            .send()
            .await,
    )
    .await;
    let receipt =
        mined(bridge.transferRemote(31338, alice.address, U256::from(50)).value(PAY).gas(TX_GAS).send().await).await;
    let small = single(dispatches(&receipt));
    let b_relayer = wallet(&info.chains[1].rpc_url, info.accounts[9].private_key);
    let keys = &devnet.validator_keys()[..2];
    mined(
        Mailbox::new(beta.mailbox, &b_relayer)
            .process(metadata(&attestation(&small, alpha.mailbox), keys), small.message.clone())
            .gas(TX_GAS)
            .send()
            .await,
    )
    .await;
    mined(bridge.setRateLimit(31338, false, U256::ZERO, U256::ZERO).gas(TX_GAS).send().await).await;
    let receipt =
        mined(bridge.transferRemote(31338, alice.address, U256::from(600)).value(PAY).gas(TX_GAS).send().await).await;
    let big = single(dispatches(&receipt));
    let meta = metadata(&attestation(&big, alpha.mailbox), keys);
    let beta_mailbox = Mailbox::new(beta.mailbox, &b_relayer);
    match bridge_error(beta_mailbox.process(meta.clone(), big.message.clone()).call().await.unwrap_err()) {
        TokenBridge::TokenBridgeErrors::RateLimited(e) => {
            assert_eq!((e.remote, e.inbound, e.amount, e.available), (31337, true, U256::from(600), U256::from(450)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Capacity 0: no limit (and the maximum available).
    mined(
        TokenBridge::new(beta.bridge, &b_owner)
            .setRateLimit(31337, true, U256::ZERO, U256::ZERO)
            .gas(TX_GAS)
            .send()
            .await,
    )
    .await;
    assert_eq!(
        TokenBridge::new(beta.bridge, &b_owner).rateLimit(31337, true).call().await.unwrap().available,
        U256::MAX
    );
    mined(Mailbox::new(beta.mailbox, &b_relayer).process(meta, big.message.clone()).gas(TX_GAS).send().await).await;
    assert_eq!(BridgedToken::new(beta.token, &b_owner).balanceOf(alice.address).call().await.unwrap(), U256::from(650));
}

/// The bucket in the shared vectors (modelled in JS by ops/message-vectors.mjs) and the
/// deployed TokenBridge agree, step by step, at the vectors' timestamps.
#[tokio::test]
async fn the_bridge_bucket_matches_the_shared_vectors() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [alpha, _] = devnet.deployments().clone();
    let alice = info.accounts[0].clone();
    let provider = wallet(&info.chains[0].rpc_url, alice.private_key);
    let bridge = TokenBridge::new(alpha.bridge, &provider);
    mined(TestToken::new(alpha.token, &provider).approve(alpha.bridge, U256::MAX).send().await).await;
    for case in common::vectors().rate_limits {
        let set =
            mined(bridge.setRateLimit(31338, false, case.capacity, case.refill_per_second).gas(TX_GAS).send().await)
                .await;
        let block = provider.get_block_by_number(set.block_number.unwrap().into()).await.unwrap().unwrap();
        let t0 = block.header.timestamp;
        for step in &case.steps {
            let at = t0 + step.at_secs;
            provider.raw_request::<_, serde_json::Value>("evm_setNextBlockTimestamp".into(), (at,)).await.unwrap();
            let receipt = bridge
                .transferRemote(31338, alice.address, step.amount)
                .value(PAY)
                .gas(TX_GAS)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            let what = format!("{}: {} at +{}s", case.name, step.amount, step.at_secs);
            assert_eq!(receipt.status(), step.ok, "{what}");
            let bucket =
                bridge.rateLimit(31338, false).call().block(receipt.block_number.unwrap().into()).await.unwrap();
            assert_eq!(Some(bucket.available).filter(|a| *a != U256::MAX), step.available_after, "{what}");
        }
    }
}

fn single(mut dispatched: Vec<Dispatched>) -> Dispatched {
    assert_eq!(dispatched.len(), 1, "one Dispatch per transfer");
    dispatched.remove(0)
}
