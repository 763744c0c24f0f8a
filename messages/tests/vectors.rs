//! The Rust codec against the shared vectors, which an independent JS implementation
//! wrote (ops/message-vectors.mjs).

use alloy::primitives::{B256, Bytes};
use ferry_messages::{MAX_BODY_LEN, Message, MessageError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    max_body_bytes: usize,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
}

#[derive(Deserialize)]
struct Valid {
    name: String,
    version: u8,
    nonce: u32,
    origin: u32,
    sender: B256,
    destination: u32,
    recipient: B256,
    body: Bytes,
    encoded: Bytes,
    id: B256,
}

#[derive(Deserialize)]
struct Invalid {
    name: String,
    encoded: Bytes,
    error: String,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/message_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn encode_decode_and_id_match_the_vectors() {
    let v = vectors();
    assert_eq!(v.max_body_bytes, MAX_BODY_LEN);
    assert!(v.valid.len() >= 5);
    for case in v.valid {
        let message = Message {
            version: case.version,
            nonce: case.nonce,
            origin: case.origin,
            sender: case.sender,
            destination: case.destination,
            recipient: case.recipient,
            body: case.body,
        };
        assert_eq!(
            Bytes::from(message.encode()),
            case.encoded,
            "encode: {}",
            case.name
        );
        assert_eq!(
            Message::decode(&case.encoded).unwrap(),
            message,
            "decode: {}",
            case.name
        );
        assert_eq!(message.id(), case.id, "id: {}", case.name);
    }
}

#[test]
fn invalid_vectors_are_rejected_with_their_reason() {
    let v = vectors();
    assert!(!v.invalid.is_empty());
    for case in v.invalid {
        let err = Message::decode(&case.encoded).expect_err(&case.name);
        let kind = match err {
            MessageError::TooShort { .. } => "too_short",
            MessageError::TooLong { .. } => "too_long",
            MessageError::UnsupportedVersion(_) => "unsupported_version",
        };
        assert_eq!(kind, case.error, "{}: {err}", case.name);
    }
}
