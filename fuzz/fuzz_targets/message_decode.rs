//! Arbitrary bytes as a packed message: decoding never panics, and whatever decodes
//! encodes back to exactly the same bytes under the same id.
#![no_main]

use alloy::primitives::keccak256;
use ferry_messages::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else { return };
    let encoded = message.encode();
    assert_eq!(encoded.as_slice(), data, "decode then encode is the identity");
    assert_eq!(message.id(), keccak256(data));
    assert_eq!(Message::decode(&encoded).ok(), Some(message));
});
