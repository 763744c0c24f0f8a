//! The Mailbox on real anvil chains: dispatch matches the shared vectors, `process`
//! delivers with a quorum and refuses everything else, `processBatch` isolates
//! failures.

mod common;

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, ext::AnvilApi},
    signers::local::PrivateKeySigner,
};
use common::{Dispatched, attestation, dispatches, metadata, metadata_as_is, mined, plain, sign, wallet};
use ferry_devnet::Devnet;
use ferry_messages::{
    QuorumCertificate,
    contracts::{Mailbox, Mailbox::MailboxErrors, TestRecipient},
};

#[tokio::test]
async fn dispatch_emits_the_vectors() {
    let devnet = common::devnet().await;
    let alpha = &devnet.info().chains[0];
    let provider = plain(&alpha.rpc_url);
    let mailbox = Mailbox::new(alpha.mailbox, &provider);
    for v in common::vectors().valid {
        assert_eq!(v.origin as u64, alpha.chain_id, "{}", v.name);
        assert_eq!(mailbox.nonce().call().await.unwrap(), v.nonce, "{}: vectors are dispatched in order", v.name);
        let sender = Address::from_word(v.sender);
        provider.anvil_impersonate_account(sender).await.unwrap();
        provider.anvil_set_balance(sender, U256::from(10u128.pow(20))).await.unwrap();
        let receipt =
            mined(mailbox.dispatch(v.destination, v.recipient, v.body.clone()).from(sender).send().await).await;
        let emitted = dispatches(&receipt);
        assert_eq!(emitted.len(), 1, "{}", v.name);
        assert_eq!(emitted[0].message, v.encoded, "{}: message bytes", v.name);
        assert_eq!(emitted[0].id, v.id, "{}: id", v.name);
    }
}

/// Two chains, a recipient on beta, and the means to dispatch to it from alpha.
struct Delivery {
    devnet: Devnet,
    alpha: DynProvider,
    beta: DynProvider,
    recipient: Address,
}

impl Delivery {
    async fn new() -> Self {
        let devnet = common::devnet().await;
        let info = devnet.info().clone();
        let user = info.accounts[0].private_key;
        let alpha = wallet(&info.chains[0].rpc_url, user);
        // A separate account delivers, as a relayer would.
        let beta = wallet(&info.chains[1].rpc_url, info.accounts[9].private_key);
        let recipient = *TestRecipient::deploy(&beta).await.unwrap().address();
        Self { devnet, alpha, beta, recipient }
    }

    fn alpha_mailbox(&self) -> Address {
        self.devnet.deployments()[0].mailbox
    }

    fn beta_mailbox(&self) -> Mailbox::MailboxInstance<&DynProvider> {
        Mailbox::new(self.devnet.deployments()[1].mailbox, &self.beta)
    }

    async fn dispatch(&self, destination: u32, recipient: Address, body: &'static [u8]) -> Dispatched {
        let mailbox = Mailbox::new(self.alpha_mailbox(), &self.alpha);
        let receipt = mined(mailbox.dispatch(destination, recipient.into_word(), body.into()).send().await).await;
        dispatches(&receipt).remove(0)
    }

    /// Metadata signed by the first `n` devnet validators.
    fn quorum(&self, d: &Dispatched, n: usize) -> Bytes {
        metadata(&attestation(d, self.alpha_mailbox()), &self.devnet.validator_keys()[..n])
    }

    async fn rejection(&self, metadata: Bytes, d: &Dispatched) -> MailboxErrors {
        let call = self.beta_mailbox().process(metadata, d.message.clone()).call().await;
        let err = call.expect_err("process must revert");
        err.as_decoded_interface_error::<MailboxErrors>().unwrap_or_else(|| panic!("undecodable revert: {err}"))
    }

    async fn received(&self) -> U256 {
        TestRecipient::new(self.recipient, &self.beta).received().call().await.unwrap()
    }

    async fn delivered(&self, id: B256) -> bool {
        self.beta_mailbox().delivered(id).call().await.unwrap()
    }
}

#[tokio::test]
async fn process_with_quorum_delivers_once_and_calls_the_recipient() {
    let t = Delivery::new().await;
    let d = t.dispatch(31338, t.recipient, b"hello beta").await;
    assert!(!t.delivered(d.id).await);

    let receipt = mined(t.beta_mailbox().process(t.quorum(&d, 2), d.message.clone()).send().await).await;
    assert!(t.delivered(d.id).await);
    let process = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Process>().ok()).unwrap();
    assert_eq!(process.inner.data.id, d.id);
    assert_eq!(process.inner.data.origin, 31337);
    let received = receipt.inner.logs().iter().find_map(|l| l.log_decode::<TestRecipient::Received>().ok()).unwrap();
    assert_eq!(received.inner.data.origin, 31337);
    assert_eq!(received.inner.data.sender, t.devnet.info().accounts[0].address.into_word());
    assert_eq!(received.inner.data.body, Bytes::from_static(b"hello beta"));
    assert_eq!(t.received().await, U256::from(1));

    // The same id a second time, even with all three signatures.
    match t.rejection(t.quorum(&d, 3), &d).await {
        MailboxErrors::AlreadyDelivered(e) => assert_eq!(e.id, d.id),
        other => panic!("expected AlreadyDelivered, got {other:?}"),
    }
}

#[tokio::test]
async fn process_rejects_bad_quorums() {
    let t = Delivery::new().await;
    let d = t.dispatch(31338, t.recipient, b"guarded").await;
    let att = attestation(&d, t.alpha_mailbox());
    let keys = t.devnet.validator_keys();

    // Too few signatures.
    match t.rejection(t.quorum(&d, 1), &d).await {
        MailboxErrors::InsufficientSignatures(e) => {
            assert_eq!((e.count, e.threshold), (U256::from(1), U256::from(2)))
        }
        other => panic!("expected InsufficientSignatures, got {other:?}"),
    }

    // The same validator twice.
    let twice = sign(&att, &[keys[0], keys[0]]);
    match t.rejection(metadata_as_is(d.block_hash, twice), &d).await {
        MailboxErrors::SignersNotAscending(e) => assert_eq!(e.previous, e.signer),
        other => panic!("expected SignersNotAscending, got {other:?}"),
    }

    // A key outside the validator set.
    let outsider = keccak_key(b"not a validator");
    let outsider_address = PrivateKeySigner::from_bytes(&outsider).unwrap().address();
    let mixed = QuorumCertificate::ordered(&att, sign(&att, &[keys[0], outsider])).unwrap();
    match t.rejection(mixed.metadata().into(), &d).await {
        MailboxErrors::NotValidator(e) => assert_eq!(e.signer, outsider_address),
        other => panic!("expected NotValidator, got {other:?}"),
    }

    // Validators' signatures over another statement (a different block): they recover
    // to strangers. Order them as the Mailbox will recover them so the check is exact.
    let other = ferry_messages::Attestation { block_hash: B256::repeat_byte(0x42), ..att };
    let mut wrong = sign(&other, &keys[..2]);
    wrong.sort_by_key(|s| att.recover_signer(s).unwrap());
    match t.rejection(metadata_as_is(d.block_hash, wrong), &d).await {
        MailboxErrors::NotValidator(e) => assert!(!t.devnet.info().validators.contains(&e.signer)),
        other => panic!("expected NotValidator, got {other:?}"),
    }

    // Good signatures, but metadata naming another block than the one signed.
    let good = QuorumCertificate::ordered(&att, sign(&att, &keys[..2])).unwrap();
    let relabelled = metadata_as_is(B256::repeat_byte(0x42), good.signatures);
    assert!(matches!(
        t.rejection(relabelled, &d).await,
        MailboxErrors::NotValidator(_) | MailboxErrors::SignersNotAscending(_)
    ));

    // Truncated metadata.
    match t.rejection(Bytes::from(vec![0u8; 40]), &d).await {
        MailboxErrors::MalformedMetadata(e) => assert_eq!(e.length, U256::from(40)),
        other => panic!("expected MalformedMetadata, got {other:?}"),
    }

    assert!(!t.delivered(d.id).await, "nothing above may deliver");
}

#[tokio::test]
async fn process_rejects_a_message_for_another_destination() {
    let t = Delivery::new().await;
    let d = t.dispatch(31339, t.recipient, b"for someone else").await;
    match t.rejection(t.quorum(&d, 3), &d).await {
        MailboxErrors::WrongDestination(e) => assert_eq!((e.expected, e.actual), (31338, 31339)),
        other => panic!("expected WrongDestination, got {other:?}"),
    }
    assert!(!t.delivered(d.id).await);
}

#[tokio::test]
async fn process_batch_delivers_the_good_items_despite_bad_ones() {
    let t = Delivery::new().await;
    let rejecting = TestRecipient::deploy(&t.beta).await.unwrap();
    mined(rejecting.setRejecting(true).send().await).await;

    let good_a = t.dispatch(31338, t.recipient, b"a").await;
    let short = t.dispatch(31338, t.recipient, b"one signature").await;
    let refused = t.dispatch(31338, *rejecting.address(), b"refused").await;
    let good_b = t.dispatch(31338, t.recipient, b"b").await;
    let items = [
        (t.quorum(&good_a, 2), &good_a),
        (t.quorum(&short, 1), &short),
        (t.quorum(&refused, 2), &refused),
        (t.quorum(&good_a, 2), &good_a), // a repeat within the batch
        (t.quorum(&good_b, 2), &good_b),
    ];
    let (metadata, messages): (Vec<Bytes>, Vec<Bytes>) =
        items.iter().map(|(m, d)| (m.clone(), d.message.clone())).unzip();
    let receipt = mined(t.beta_mailbox().processBatch(metadata, messages).send().await).await;

    let processed: Vec<B256> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<Mailbox::Process>().ok())
        .map(|l| l.inner.data.id)
        .collect();
    assert_eq!(processed, vec![good_a.id, good_b.id]);

    let failed: Vec<(B256, Option<MailboxErrors>)> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<Mailbox::ProcessFailed>().ok())
        .map(|l| {
            let reason = alloy::sol_types::SolInterface::abi_decode(&l.inner.data.reason).ok();
            (l.inner.data.id, reason)
        })
        .collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0].0, short.id);
    assert!(matches!(failed[0].1, Some(MailboxErrors::InsufficientSignatures(_))), "{:?}", failed[0].1);
    assert_eq!(failed[1].0, refused.id);
    // The recipient's own error is not a Mailbox error: check its raw reason instead.
    let raw = receipt.inner.logs().iter().filter_map(|l| l.log_decode::<Mailbox::ProcessFailed>().ok()).nth(1).unwrap();
    let rejected = <TestRecipient::Rejected as alloy::sol_types::SolError>::abi_decode(&raw.inner.data.reason).unwrap();
    assert_eq!(rejected.origin, 31337);
    assert_eq!(failed[2].0, good_a.id);
    assert!(matches!(failed[2].1, Some(MailboxErrors::AlreadyDelivered(_))), "{:?}", failed[2].1);

    for (d, expected) in [(&good_a, true), (&short, false), (&refused, false), (&good_b, true)] {
        assert_eq!(t.delivered(d.id).await, expected, "delivered({})", d.id);
    }
    assert_eq!(t.received().await, U256::from(2));
}

#[tokio::test]
async fn only_the_mailbox_itself_may_process_batch_items() {
    let t = Delivery::new().await;
    let d = t.dispatch(31338, t.recipient, b"x").await;
    let err = t.beta_mailbox().processItem(t.quorum(&d, 2), d.message.clone()).call().await.unwrap_err();
    assert!(matches!(err.as_decoded_interface_error::<MailboxErrors>(), Some(MailboxErrors::OnlySelf(_))));
}

fn keccak_key(seed: &[u8]) -> B256 {
    alloy::primitives::keccak256(seed)
}
