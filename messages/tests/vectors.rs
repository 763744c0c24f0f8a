//! The Rust codec against the shared vectors, which an independent JS implementation
//! wrote (ops/message-vectors.mjs).

mod common;

use alloy::primitives::Bytes;
use common::vectors;
use ferry_messages::{MAX_BODY_LEN, Message, MessageError};

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
        assert_eq!(Bytes::from(message.encode()), case.encoded, "encode: {}", case.name);
        assert_eq!(Message::decode(&case.encoded).unwrap(), message, "decode: {}", case.name);
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
