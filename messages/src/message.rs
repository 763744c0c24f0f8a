//! The packed message (docs/architecture.md).

use alloy::primitives::{Address, B256, Bytes, keccak256};
use serde::{Deserialize, Serialize};

use crate::MessageError;

/// The message format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the body: version 1, nonce 4, origin 4, sender 32, destination 4, recipient 32.
pub const HEADER_LEN: usize = 77;
/// The largest body the Mailbox dispatches or accepts (`Message.MAX_BODY_BYTES`).
pub const MAX_BODY_LEN: usize = 16 * 1024;

/// A message's id: `keccak256` of its packed bytes.
pub type MessageId = B256;

/// A cross-chain message, as the Mailbox packs it:
/// `version u8 | nonce u32 | origin u32 | sender bytes32 | destination u32 | recipient bytes32 | body`,
/// big-endian.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Format version, [`VERSION`].
    pub version: u8,
    /// Per-origin-Mailbox sequence number.
    pub nonce: u32,
    /// EIP-155 chain id of the origin chain.
    pub origin: u32,
    /// The dispatching contract, left-padded to 32 bytes.
    pub sender: B256,
    /// EIP-155 chain id of the destination chain.
    pub destination: u32,
    /// The receiving contract, left-padded to 32 bytes.
    pub recipient: B256,
    /// The application payload.
    pub body: Bytes,
}

impl Message {
    /// The packed bytes, exactly as the Mailbox emits them in `Dispatch`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.push(self.version);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(self.sender.as_slice());
        out.extend_from_slice(&self.destination.to_be_bytes());
        out.extend_from_slice(self.recipient.as_slice());
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses packed bytes, refusing short or oversized input and unknown versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() < HEADER_LEN {
            return Err(MessageError::TooShort { len: bytes.len(), min: HEADER_LEN });
        }
        if bytes.len() > HEADER_LEN + MAX_BODY_LEN {
            return Err(MessageError::TooLong { len: bytes.len(), max: HEADER_LEN + MAX_BODY_LEN });
        }
        let version = bytes[0];
        if version != VERSION {
            return Err(MessageError::UnsupportedVersion(version));
        }
        Ok(Self {
            version,
            nonce: be_u32(&bytes[1..5]),
            origin: be_u32(&bytes[5..9]),
            sender: B256::from_slice(&bytes[9..41]),
            destination: be_u32(&bytes[41..45]),
            recipient: B256::from_slice(&bytes[45..77]),
            body: Bytes::copy_from_slice(&bytes[HEADER_LEN..]),
        })
    }

    /// The message id, `keccak256(encode())`.
    pub fn id(&self) -> MessageId {
        keccak256(self.encode())
    }

    /// The recipient as an address, if its upper 12 bytes are zero.
    pub fn recipient_address(&self) -> Option<Address> {
        address_of(&self.recipient)
    }

    /// The sender as an address, if its upper 12 bytes are zero.
    pub fn sender_address(&self) -> Option<Address> {
        address_of(&self.sender)
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_be_bytes(word)
}

fn address_of(word: &B256) -> Option<Address> {
    word[..12].iter().all(|b| *b == 0).then(|| Address::from_slice(&word[12..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..=2048),
        )
            .prop_map(|(nonce, origin, sender, destination, recipient, body)| Message {
                version: VERSION,
                nonce,
                origin,
                sender: B256::from(sender),
                destination,
                recipient: B256::from(recipient),
                body: body.into(),
            })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(message in arb_message()) {
            let bytes = message.encode();
            prop_assert_eq!(bytes.len(), HEADER_LEN + message.body.len());
            prop_assert_eq!(Message::decode(&bytes)?, message);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match Message::decode(&bytes) {
                Ok(message) => prop_assert_eq!(message.encode(), bytes),
                Err(MessageError::TooShort { len, .. }) => prop_assert!(len < HEADER_LEN),
                Err(MessageError::UnsupportedVersion(v)) => prop_assert_ne!(v, VERSION),
                Err(e @ MessageError::TooLong { .. }) => prop_assert!(false, "{e} for {} bytes", bytes.len()),
            }
        }
    }

    #[test]
    fn addresses_only_when_left_padded() {
        let mut message = Message {
            version: VERSION,
            nonce: 0,
            origin: 1,
            sender: Address::repeat_byte(0xab).into_word(),
            destination: 2,
            recipient: B256::repeat_byte(0xff),
            body: Bytes::new(),
        };
        assert_eq!(message.sender_address(), Some(Address::repeat_byte(0xab)));
        assert_eq!(message.recipient_address(), None);
        message.recipient = Address::ZERO.into_word();
        assert_eq!(message.recipient_address(), Some(Address::ZERO));
    }
}
