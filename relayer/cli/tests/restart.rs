//! A restart in each stage resumes. Six real transfers alpha -> beta are left, before
//! any ferry process runs, exactly as a process stopped in each non-final stage leaves
//! them: a record in the store at that stage and, from published on, the deliverable on
//! JetStream unacked; the submitted one's delivery transaction already landed on beta.
//! The observed and proven ones sit past the scan cursor (the watcher had not moved it),
//! the others before it. A fresh service on that store and stream must bring every one
//! to delivered, each delivered on beta exactly once, resuming from where its record
//! stood (read off the history).

mod common;

use std::time::Duration;

use alloy::{
    primitives::{B256, Bytes, U256},
    providers::Provider,
};
use common::{Net, assert_once, wait_for};
use ferry_light_client::ValidatorKey;
use ferry_messages::{
    Message, QuorumCertificate,
    contracts::Mailbox,
    wire::{self, Deliverable, OriginBlock, WIRE_VERSION},
};
use ferry_relayer::{Bus, MessageRecord, Role, Secret, Service, Stage, Store};

const BLOCK: Option<Duration> = Some(Duration::from_millis(500));

/// A dispatched message and the block that holds it.
struct Dispatched {
    message: Message,
    block: OriginBlock,
}

/// Sends one transfer alpha -> beta and reads its message and block back from the chain.
async fn dispatch(net: &Net, amount: u64) -> Dispatched {
    let id = net.send_many("alpha", "beta", 0, net.account(2), &[U256::from(amount)]).await[0];
    let alpha = net.wallet("alpha", 0);
    let filter = alloy::rpc::types::Filter::new()
        .address(net.config.chains["alpha"].mailbox)
        .event_signature(<Mailbox::Dispatch as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        .topic1(id)
        .from_block(0);
    let log = alpha.get_logs(&filter).await.unwrap().pop().unwrap();
    let dispatch = log.log_decode::<Mailbox::Dispatch>().unwrap();
    let message = Message::decode(&dispatch.inner.data.message).unwrap();
    assert_eq!(message.id(), id);
    let number = log.block_number.unwrap();
    let header = alpha.get_block_by_number(number.into()).await.unwrap().unwrap().header;
    Dispatched { message, block: OriginBlock { number, hash: header.hash, timestamp: header.timestamp } }
}

/// The quorum certificate the devnet's validators give `d`.
fn certificate(net: &Net, d: &Dispatched) -> Bytes {
    let attestation = wire::attestation(&d.message, net.config.chains["alpha"].mailbox, d.block.hash);
    let keys: Vec<ValidatorKey> =
        net.devnet.validator_keys().iter().map(|k| ValidatorKey::from_bytes(k).unwrap()).collect();
    let threshold = net.config.validators.threshold as usize;
    let signatures = keys[..threshold].iter().map(|k| k.sign(&attestation).unwrap()).collect();
    QuorumCertificate::ordered(&attestation, signatures).unwrap().metadata().into()
}

/// `d`'s record as a process that stopped in `stage` left it.
fn record_in(net: &Net, d: &Dispatched, stage: Stage, tx: B256) -> MessageRecord {
    let mut record = MessageRecord::observe(&d.message, net.config.chains["alpha"].mailbox, d.block);
    type Step<'a> = &'a dyn Fn(&mut MessageRecord);
    let steps: [(Stage, Step<'_>); 5] = [
        (Stage::Proven, &|r| r.prove("receipt proof".into()).unwrap()),
        (Stage::Attested, &|r| r.attest(certificate(net, d), "2 signatures".into()).unwrap()),
        (Stage::Published, &|r| r.publish(None).unwrap()),
        (Stage::Executed, &|r| r.execute("predicted gas".into()).unwrap()),
        (Stage::Submitted, &|r| r.submit(tx, format!("tx {tx}")).unwrap()),
    ];
    for (reached, step) in steps {
        if record.stage() == stage {
            break;
        }
        step(&mut record);
        assert_eq!(record.stage(), reached);
    }
    assert_eq!(record.stage(), stage);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_each_stage_resumes_to_delivered_once() {
    let net = Net::start(BLOCK, 1).await;
    // Before the cursor: attested and on (the watcher had moved past their blocks).
    let mut before = Vec::new();
    for (i, stage) in [Stage::Attested, Stage::Published, Stage::Executed, Stage::Submitted].into_iter().enumerate() {
        before.push((stage, dispatch(&net, 100 + i as u64).await));
    }
    let cursor = before.iter().map(|(_, d)| d.block.number).max().unwrap();
    // After it: the watcher stopped before it scanned them.
    let mut after = Vec::new();
    for (i, stage) in [Stage::Observed, Stage::Proven].into_iter().enumerate() {
        after.push((stage, dispatch(&net, 200 + i as u64).await));
    }
    assert!(after.iter().all(|(_, d)| d.block.number > cursor), "the last two landed past the cursor");

    // The submitted one's delivery landed on beta before the stop, from the relayer's key.
    let (_, submitted) = before.iter().find(|(s, _)| *s == Stage::Submitted).unwrap();
    let key = Secret::from_file(net.config.relayer.key_file.as_deref().unwrap(), "relayer.key_file").unwrap();
    let relayer = ferry_devnet::wallet(net.rpc("beta"), *key.expose()).unwrap();
    let mailbox = Mailbox::new(net.config.chains["beta"].mailbox, &relayer);
    // A gas limit of its own: an estimate lets the outer call succeed with the item out of gas.
    let call = mailbox
        .processBatch(vec![certificate(&net, submitted)], vec![submitted.message.encode().into()])
        .gas(1_000_000);
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    let failed: Vec<_> =
        receipt.inner.logs().iter().filter_map(|l| l.log_decode::<Mailbox::ProcessFailed>().ok()).collect();
    assert!(failed.is_empty(), "the delivery before the stop failed: {failed:?}");
    assert!(receipt.inner.logs().iter().any(|l| l.log_decode::<Mailbox::Process>().is_ok()), "{receipt:?}");

    // The store and the stream as the stopped process left them.
    std::fs::create_dir_all(&net.config.data_dir).unwrap();
    let store = Store::open(&net.config.data_dir.join("ferry.redb")).unwrap();
    let records: Vec<MessageRecord> =
        before.iter().chain(&after).map(|(stage, d)| record_in(&net, d, *stage, receipt.transaction_hash)).collect();
    store
        .write(|tx| {
            records.iter().try_for_each(|r| tx.put(r))?;
            tx.set_cursor(net.config.chains["alpha"].chain_id, cursor)
        })
        .unwrap();
    drop(store);
    let nats = &net.config.nats;
    let bus = Bus::connect(nats).await.unwrap();
    let on_stream: Vec<(Deliverable, u32, String)> = before
        .iter()
        .filter(|(stage, _)| *stage >= Stage::Published)
        .map(|(_, d)| {
            let deliverable = Deliverable {
                version: WIRE_VERSION,
                message: d.message.encode().into(),
                origin_mailbox: net.config.chains["alpha"].mailbox,
                block: d.block,
                metadata: certificate(&net, d),
            };
            (deliverable, d.message.destination, d.message.id().to_string())
        })
        .collect();
    assert!(bus.publish_deliverables(&on_stream).await.unwrap().iter().all(|fresh| *fresh));
    drop(bus);

    let service = Service::start(net.config.clone(), Role::All).await.unwrap();
    let store = &service.context().store;
    let ids: Vec<B256> = records.iter().map(|r| r.id).collect();
    let processed = net.wait_processed("beta", &ids, Duration::from_secs(120)).await;
    assert_once(&processed, &ids);
    let delivered = wait_for(Duration::from_secs(60), "every record delivered", || async {
        let now: Vec<MessageRecord> = ids.iter().filter_map(|id| store.get(id).unwrap()).collect();
        now.iter().all(|r| r.stage() == Stage::Delivered).then_some(now)
    })
    .await;
    for (was, now) in records.iter().zip(&delivered) {
        // Resumed from where it stood: its history up to the stop is kept, and goes on.
        assert_eq!(&now.history()[..was.history().len()], was.history(), "{} from {}", was.id, was.stage());
        let mut after_stop: Vec<Stage> = now.history()[was.history().len()..].iter().map(|e| e.stage).collect();
        // A round tried again (a batch whose prediction failed, a replaced transaction)
        // repeats a stage; the way is what matters.
        after_stop.dedup();
        use Stage::*;
        let expected: &[Stage] = match was.stage() {
            Observed | Proven => &[Attested, Published, Executed, Submitted, Delivered],
            Attested => &[Published, Executed, Submitted, Delivered],
            Published | Executed => &[Executed, Submitted, Delivered],
            // Its transaction had landed: the chain says it is delivered, nothing is sent.
            Submitted => &[Delivered],
            other => panic!("no message was left {other}"),
        };
        assert_eq!(after_stop, expected, "{} from {}", was.id, was.stage());
    }
    // The one delivered before the stop was not sent again.
    assert_eq!(processed[&submitted.message.id()], vec![receipt.transaction_hash]);
    service.stop().await;
}
