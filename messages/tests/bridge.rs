//! A token round trip between two anvil chains with hand-made validator signatures
//! (no relayer): lock on alpha, mint on beta, burn on beta, release on alpha.

mod common;

use alloy::primitives::{Address, U256};
use common::{Dispatched, attestation, dispatches, metadata, mined, wallet};
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
    let receipt =
        mined(TokenBridge::new(alpha.bridge, &a_alice).transferRemote(31338, bob.address, sent).send().await).await;
    let out = single(dispatches(&receipt));
    assert_eq!(token_a.balanceOf(alpha.bridge).call().await.unwrap(), sent, "locked");
    assert_eq!(token_a.balanceOf(alice.address).call().await.unwrap(), alice_start - sent);
    let message = out.decoded();
    assert_eq!(message.sender, alpha.bridge.into_word());
    assert_eq!(message.recipient, beta.bridge.into_word());

    // Mint on beta.
    let meta = metadata(&attestation(&out, alpha.mailbox), keys);
    mined(Mailbox::new(beta.mailbox, &b_relayer).process(meta, out.message.clone()).send().await).await;
    assert_eq!(token_b.balanceOf(bob.address).call().await.unwrap(), sent, "minted");
    assert_eq!(token_b.totalSupply().call().await.unwrap(), sent);

    // Burn on beta (no approval: the bridge is the minter).
    let receipt =
        mined(TokenBridge::new(beta.bridge, &b_bob).transferRemote(31337, carol, returned).send().await).await;
    let back = single(dispatches(&receipt));
    assert_eq!(token_b.balanceOf(bob.address).call().await.unwrap(), sent - returned);
    assert_eq!(token_b.totalSupply().call().await.unwrap(), sent - returned, "burned");

    // Release on alpha.
    let meta = metadata(&attestation(&back, beta.mailbox), keys);
    mined(Mailbox::new(alpha.mailbox, &a_relayer).process(meta, back.message.clone()).send().await).await;
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

fn single(mut dispatched: Vec<Dispatched>) -> Dispatched {
    assert_eq!(dispatched.len(), 1, "one Dispatch per transfer");
    dispatched.remove(0)
}
