//! Quorum certificates made with k256 keys: the light client's verdict and the
//! Mailbox's on chain agree, for the exact threshold and for every way to be short.

use alloy::{
    primitives::{Address, B256, Signature},
    providers::DynProvider,
};
use ferry_devnet::{Devnet, DevnetOptions};
use ferry_light_client::{CommitteeError, ValidatorKey, ValidatorSet};
use ferry_messages::{
    Attestation, Message, QuorumCertificate,
    contracts::{Mailbox, TestRecipient},
};

struct Setup {
    devnet: Devnet,
    beta: DynProvider,
    message: Message,
    attestation: Attestation,
    keys: Vec<ValidatorKey>,
    set: ValidatorSet,
}

async fn setup() -> Setup {
    let devnet = Devnet::start(DevnetOptions { block_time: None, ..Default::default() }).await.unwrap();
    let info = devnet.info().clone();
    let alpha = ferry_devnet::wallet(&info.chains[0].rpc_url, info.accounts[0].private_key).unwrap();
    let beta = ferry_devnet::wallet(&info.chains[1].rpc_url, info.accounts[9].private_key).unwrap();
    let recipient = TestRecipient::deploy(&beta).await.unwrap();
    let mailbox_a = devnet.deployments()[0].mailbox;
    let receipt = Mailbox::new(mailbox_a, &alpha)
        .dispatch(31338, recipient.address().into_word(), b"certified".into())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let dispatch = receipt.inner.logs().iter().find_map(|l| l.log_decode::<Mailbox::Dispatch>().ok()).unwrap();
    let message = Message::decode(&dispatch.inner.data.message).unwrap();
    let attestation = Attestation {
        origin: 31337,
        origin_mailbox: mailbox_a.into_word(),
        destination: 31338,
        block_hash: receipt.block_hash.unwrap(),
        id: message.id(),
    };
    let keys: Vec<ValidatorKey> =
        devnet.validator_keys().iter().map(|k| ValidatorKey::from_bytes(k).unwrap()).collect();
    let set = ValidatorSet::new(info.validators.clone(), usize::from(info.threshold)).unwrap();
    assert_eq!(keys.iter().map(ValidatorKey::address).collect::<Vec<_>>(), info.validators);
    Setup { devnet, beta, message, attestation, keys, set }
}

impl Setup {
    fn sign(&self, which: &[usize]) -> Vec<Signature> {
        which.iter().map(|i| self.keys[*i].sign(&self.attestation).unwrap()).collect()
    }

    async fn on_chain(&self, certificate: &QuorumCertificate) -> Result<(), String> {
        let mailbox = Mailbox::new(self.devnet.deployments()[1].mailbox, &self.beta);
        let call = mailbox.process(certificate.metadata().into(), self.message.encode().into());
        call.call().await.map(|_| ()).map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn the_exact_threshold_passes_here_and_on_chain() {
    let s = setup().await;
    let certificate = s.set.certify(&s.attestation, s.sign(&[2, 0])).unwrap();
    assert_eq!(certificate.signatures.len(), 2);
    let signers = s.set.verify(&s.attestation, &certificate).unwrap();
    assert!(signers.windows(2).all(|w| w[0] < w[1]));
    s.on_chain(&certificate).await.unwrap();
    // And it really delivers.
    let mailbox = Mailbox::new(s.devnet.deployments()[1].mailbox, &s.beta);
    let receipt = mailbox
        .process(certificate.metadata().into(), s.message.encode().into())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    assert!(mailbox.delivered(s.message.id()).call().await.unwrap());
}

#[tokio::test]
async fn short_repeated_foreign_and_misdirected_certificates_fail_here_and_on_chain() {
    let s = setup().await;
    let block_hash = s.attestation.block_hash;

    let one = QuorumCertificate { block_hash, signatures: s.sign(&[1]) };
    assert!(matches!(
        s.set.verify(&s.attestation, &one),
        Err(CommitteeError::InsufficientSignatures { count: 1, threshold: 2 })
    ));
    assert!(s.on_chain(&one).await.is_err());

    let twice = QuorumCertificate { block_hash, signatures: s.sign(&[1, 1]) };
    assert!(matches!(s.set.verify(&s.attestation, &twice), Err(CommitteeError::SignersNotAscending { .. })));
    assert!(s.on_chain(&twice).await.is_err());

    let outsider = ValidatorKey::from_bytes(&B256::repeat_byte(0x99)).unwrap();
    let mut mixed =
        vec![(s.keys[0].address(), s.sign(&[0])[0]), (outsider.address(), outsider.sign(&s.attestation).unwrap())];
    mixed.sort_by_key(|(a, _)| *a);
    let foreign = QuorumCertificate { block_hash, signatures: mixed.into_iter().map(|(_, sig)| sig).collect() };
    match s.set.verify(&s.attestation, &foreign) {
        Err(CommitteeError::NotValidator { signer }) => assert_eq!(signer, outsider.address()),
        other => panic!("expected NotValidator, got {other:?}"),
    }
    assert!(s.on_chain(&foreign).await.is_err());

    // Signed for another destination: recovers strangers (ordered as they recover here).
    let elsewhere = Attestation { destination: 31339, ..s.attestation };
    let mut sigs: Vec<Signature> = [0, 1].iter().map(|i| s.keys[*i].sign(&elsewhere).unwrap()).collect();
    sigs.sort_by_key(|sig| s.attestation.recover_signer(sig).unwrap());
    let misdirected = QuorumCertificate { block_hash, signatures: sigs };
    assert!(matches!(s.set.verify(&s.attestation, &misdirected), Err(CommitteeError::NotValidator { .. })));
    assert!(s.on_chain(&misdirected).await.is_err());

    // A certificate for another block than the attestation names.
    let good = s.set.certify(&s.attestation, s.sign(&[0, 1])).unwrap();
    let relabelled = QuorumCertificate { block_hash: B256::repeat_byte(1), ..good.clone() };
    assert!(matches!(s.set.verify(&s.attestation, &relabelled), Err(CommitteeError::BlockMismatch { .. })));
    assert!(s.on_chain(&relabelled).await.is_err());

    // A high-s twin of a valid signature: the Mailbox (OpenZeppelin ECDSA) refuses it.
    let sig = s.sign(&[0])[0];
    let n =
        alloy::primitives::U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16)
            .unwrap();
    let high = Signature::new(sig.r(), n - sig.s(), !sig.v());
    assert_eq!(s.attestation.recover_signer(&high).unwrap(), s.keys[0].address(), "the twin recovers the same signer");
    let mut pair = vec![(s.keys[0].address(), high), (s.keys[1].address(), s.sign(&[1])[0])];
    pair.sort_by_key(|(a, _)| *a);
    let malleable = QuorumCertificate { block_hash, signatures: pair.into_iter().map(|(_, sig)| sig).collect() };
    assert!(matches!(s.set.verify(&s.attestation, &malleable), Err(CommitteeError::HighS { .. })));
    assert!(s.on_chain(&malleable).await.is_err());

    // certify picks what is usable from a messy pile, or says there is not enough.
    let pile = [s.sign(&[1, 1]), vec![outsider.sign(&s.attestation).unwrap()], s.sign(&[2])].concat();
    let certified = s.set.certify(&s.attestation, pile).unwrap();
    s.set.verify(&s.attestation, &certified).unwrap();
    s.on_chain(&certified).await.unwrap();
    let poor = [s.sign(&[1, 1]), vec![outsider.sign(&s.attestation).unwrap()]].concat();
    assert!(s.set.certify(&s.attestation, poor).is_err());
}

#[test]
fn validator_sets_must_be_able_to_reach_their_threshold() {
    let a = Address::repeat_byte(1);
    let b = Address::repeat_byte(2);
    assert!(ValidatorSet::new(vec![a, b], 0).is_err());
    assert!(ValidatorSet::new(vec![a, b], 3).is_err());
    assert!(ValidatorSet::new(vec![a, a], 1).is_err());
    assert!(ValidatorSet::new(vec![a, Address::ZERO], 1).is_err());
    assert!(ValidatorSet::new(vec![a, b], 2).is_ok());
    let key = ValidatorKey::from_bytes(&B256::repeat_byte(3)).unwrap();
    assert!(!format!("{key:?}").contains("0303"), "keys never print");
    assert!(ValidatorKey::from_bytes(&B256::ZERO).is_err());
}
