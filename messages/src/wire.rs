//! What travels on NATS (docs/architecture.md, steps 2 and 3): subjects and the two envelopes,
//! size-capped and strictly decoded because anyone on the bus can publish.
//!
//! An envelope is written in the format its `version` names: version 2 (what this code
//! writes) is a packed binary layout, fixed fields then length-prefixed bytes, a fifth of
//! the JSON's size and several times cheaper to write and read; version 1, JSON, is still
//! read (a process of the previous release may publish it during an upgrade).

use alloy::primitives::{Address, B256, Bytes, Signature};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Attestation, Message, MessageId, QuorumCertificate, SIGNATURE_LEN};

/// Envelope format version written: 2, packed binary.
pub const WIRE_VERSION: u8 = 2;
/// The JSON envelope format of the previous release, still read.
pub const JSON_WIRE_VERSION: u8 = 1;
/// The first byte of a packed attestation: its version, then its kind.
const ATTESTATION_KIND: u8 = 0xa1;
/// The kind byte of a packed deliverable.
const DELIVERABLE_KIND: u8 = 0xd1;

/// The largest envelope accepted: a maximal message with a generous certificate, hex
/// encoded, fits with room to spare.
pub const MAX_ENVELOPE_LEN: usize = 96 * 1024;

/// Subject a validator's signature for a message from `origin` to `destination` goes to.
pub fn attestation_subject(origin: u32, destination: u32) -> String {
    format!("ferry.att.{origin}.{destination}")
}

/// Subject of deliverable messages bound for `destination`.
pub fn message_subject(destination: u32) -> String {
    format!("ferry.msg.{destination}")
}

/// Why bytes from the bus are not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over [`MAX_ENVELOPE_LEN`].
    #[error("envelope is {0} bytes, over the {MAX_ENVELOPE_LEN}-byte limit")]
    TooLarge(usize),
    /// Not an envelope of the right shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A version this code does not speak.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// The message bytes do not decode.
    #[error("message: {0}")]
    Message(#[from] crate::MessageError),
    /// The signature or certificate bytes do not parse.
    #[error("signature: {0}")]
    Signature(String),
}

impl WireError {
    /// A short label for metrics (`ferry_bad_input_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::Version(_) => "version",
            Self::Message(_) => "malformed_message",
            Self::Signature(_) => "malformed_signature",
        }
    }
}

/// Where a message was dispatched: the origin block that the attestation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginBlock {
    /// Block number.
    pub number: u64,
    /// Block hash (signed over).
    pub hash: B256,
    /// Block timestamp (informational: delivery latency runs from it).
    pub timestamp: u64,
}

/// One validator's signature over one message (subject [`attestation_subject`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The origin block.
    pub block: OriginBlock,
    /// Who claims to have signed (checked against the recovered signer).
    pub validator: Address,
    /// `r | s | v`, 65 bytes.
    pub signature: Bytes,
}

/// A message with a quorum certificate, ready for its destination (subject
/// [`message_subject`], `Nats-Msg-Id` = its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deliverable {
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// The packed message.
    pub message: Bytes,
    /// The origin Mailbox.
    pub origin_mailbox: Address,
    /// The origin block.
    pub block: OriginBlock,
    /// The quorum certificate as `Mailbox.process` metadata.
    pub metadata: Bytes,
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8], version: impl Fn(&T) -> u8) -> Result<T, WireError> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    match version(&value) {
        JSON_WIRE_VERSION => Ok(value),
        other => Err(WireError::Version(other)),
    }
}

fn encode_json(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty payload would be refused
    // by every reader rather than silently accepted.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Which format `bytes` are in, refusing oversize input: JSON (`{`), or packed (its
/// version byte first, then `kind`).
fn format(bytes: &[u8], kind: u8) -> Result<Format, WireError> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match bytes {
        [b'{', ..] => Ok(Format::Json),
        [WIRE_VERSION, k, ..] if *k == kind => Ok(Format::Packed),
        [WIRE_VERSION, ..] => Err(WireError::Malformed("not this kind of envelope".into())),
        [] => Err(WireError::Malformed("empty envelope".into())),
        // A small first byte names a packed format of another release.
        [version @ 1..=0x0f, ..] => Err(WireError::Version(*version)),
        _ => Err(WireError::Malformed("neither JSON nor a packed envelope".into())),
    }
}

/// An envelope's encoding.
enum Format {
    Json,
    Packed,
}

/// Writes the packed layout.
struct Packer(Vec<u8>);

impl Packer {
    fn new(kind: u8, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + 2);
        out.extend_from_slice(&[WIRE_VERSION, kind]);
        Self(out)
    }

    fn fixed(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `bytes` after their length (u32, big-endian).
    fn sized(self, bytes: &[u8]) -> Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.fixed(&len.to_be_bytes()).fixed(bytes)
    }

    fn block(self, block: &OriginBlock) -> Self {
        self.fixed(&block.number.to_be_bytes()).fixed(block.hash.as_slice()).fixed(&block.timestamp.to_be_bytes())
    }
}

/// Reads the packed layout, refusing short and trailing bytes.
struct Unpacker<'a>(&'a [u8]);

impl<'a> Unpacker<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed(format!("truncated: {n} bytes wanted, {} left", self.0.len())));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn sized(&mut self) -> Result<Bytes, WireError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn block(&mut self) -> Result<OriginBlock, WireError> {
        Ok(OriginBlock { number: self.u64()?, hash: B256::from(self.array::<32>()?), timestamp: self.u64()? })
    }

    fn address(&mut self) -> Result<Address, WireError> {
        Ok(Address::from(self.array::<20>()?))
    }

    fn end(self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Malformed(format!("{n} bytes after the envelope"))),
        }
    }
}

impl SignedAttestation {
    /// The envelope's bytes, in the format its version names.
    pub fn encode(&self) -> Vec<u8> {
        if self.version == JSON_WIRE_VERSION {
            return encode_json(self);
        }
        Packer::new(ATTESTATION_KIND, 48 + 40 + self.signature.len() + self.message.len() + 8)
            .block(&self.block)
            .fixed(self.origin_mailbox.as_slice())
            .fixed(self.validator.as_slice())
            .sized(&self.signature)
            .sized(&self.message)
            .0
    }

    /// Parses bytes from the bus, refusing oversize input, unknown fields and versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match format(bytes, ATTESTATION_KIND)? {
            Format::Json => decode_json(bytes, |s: &Self| s.version),
            Format::Packed => {
                let mut r = Unpacker(&bytes[2..]);
                let (block, origin_mailbox, validator) = (r.block()?, r.address()?, r.address()?);
                let (signature, message) = (r.sized()?, r.sized()?);
                r.end()?;
                Ok(Self { version: WIRE_VERSION, message, origin_mailbox, block, validator, signature })
            }
        }
    }

    /// The message, the attestation it signs, and the signature.
    pub fn open(&self) -> Result<(Message, Attestation, Signature), WireError> {
        let message = Message::decode(&self.message)?;
        let attestation = attestation(&message, self.origin_mailbox, self.block.hash);
        if self.signature.len() != SIGNATURE_LEN {
            return Err(WireError::Signature(format!("{} bytes, not {SIGNATURE_LEN}", self.signature.len())));
        }
        let signature = Signature::from_raw(&self.signature).map_err(|e| WireError::Signature(e.to_string()))?;
        Ok((message, attestation, signature))
    }
}

impl Deliverable {
    /// The envelope's bytes, in the format its version names.
    pub fn encode(&self) -> Vec<u8> {
        if self.version == JSON_WIRE_VERSION {
            return encode_json(self);
        }
        Packer::new(DELIVERABLE_KIND, 48 + 20 + self.metadata.len() + self.message.len() + 8)
            .block(&self.block)
            .fixed(self.origin_mailbox.as_slice())
            .sized(&self.metadata)
            .sized(&self.message)
            .0
    }

    /// Parses bytes from the bus, refusing oversize input, unknown fields and versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match format(bytes, DELIVERABLE_KIND)? {
            Format::Json => decode_json(bytes, |d: &Self| d.version),
            Format::Packed => {
                let mut r = Unpacker(&bytes[2..]);
                let (block, origin_mailbox) = (r.block()?, r.address()?);
                let (metadata, message) = (r.sized()?, r.sized()?);
                r.end()?;
                Ok(Self { version: WIRE_VERSION, message, origin_mailbox, block, metadata })
            }
        }
    }

    /// The message, the attestation its certificate signs, and the certificate.
    pub fn open(&self) -> Result<(Message, Attestation, QuorumCertificate), WireError> {
        let message = Message::decode(&self.message)?;
        let qc = QuorumCertificate::from_metadata(&self.metadata).map_err(|e| WireError::Signature(e.to_string()))?;
        if qc.block_hash != self.block.hash {
            return Err(WireError::Signature("the certificate names another block".into()));
        }
        Ok((message.clone(), attestation(&message, self.origin_mailbox, self.block.hash), qc))
    }
}

/// The attestation of `message` dispatched by `origin_mailbox` in block `block_hash`.
pub fn attestation(message: &Message, origin_mailbox: Address, block_hash: B256) -> Attestation {
    attestation_of(message.id(), message, origin_mailbox, block_hash)
}

/// [`attestation`] of a message whose id `id` is known (the hash of its bytes as
/// dispatched), not computed again.
pub fn attestation_of(id: MessageId, message: &Message, origin_mailbox: Address, block_hash: B256) -> Attestation {
    Attestation {
        origin: message.origin,
        origin_mailbox: origin_mailbox.into_word(),
        destination: message.destination,
        block_hash,
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedAttestation {
        let message = Message {
            version: crate::VERSION,
            nonce: 7,
            origin: 31337,
            sender: B256::repeat_byte(1),
            destination: 31338,
            recipient: B256::repeat_byte(2),
            body: vec![1, 2, 3].into(),
        };
        SignedAttestation {
            version: WIRE_VERSION,
            message: message.encode().into(),
            origin_mailbox: Address::repeat_byte(9),
            block: OriginBlock { number: 5, hash: B256::repeat_byte(5), timestamp: 1000 },
            validator: Address::repeat_byte(3),
            signature: vec![0x11; 64].into_iter().chain([27]).collect(),
        }
    }

    fn deliverable() -> Deliverable {
        Deliverable {
            version: WIRE_VERSION,
            message: sample().message,
            origin_mailbox: Address::repeat_byte(4),
            block: sample().block,
            metadata: vec![7; 32 + 130].into(),
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let signed = sample();
        let packed = signed.encode();
        assert_eq!(packed[..2], [WIRE_VERSION, ATTESTATION_KIND]);
        assert_eq!(SignedAttestation::decode(&packed).unwrap(), signed);
        let (message, attestation, _) = signed.open().unwrap();
        assert_eq!(attestation.id, message.id());
        assert_eq!(attestation.block_hash, B256::repeat_byte(5));
        let deliverable = deliverable();
        assert_eq!(Deliverable::decode(&deliverable.encode()).unwrap(), deliverable);
    }

    /// The previous release's JSON envelopes are read, and written back as JSON.
    #[test]
    fn json_envelopes_of_the_previous_release_are_read() {
        let json = SignedAttestation { version: JSON_WIRE_VERSION, ..sample() };
        let bytes = json.encode();
        assert_eq!(bytes[0], b'{');
        assert_eq!(SignedAttestation::decode(&bytes).unwrap(), json);
        assert!(bytes.len() > 2 * sample().encode().len(), "{} bytes of JSON", bytes.len());
        let json = Deliverable { version: JSON_WIRE_VERSION, ..deliverable() };
        assert_eq!(Deliverable::decode(&json.encode()).unwrap(), json);
    }

    #[test]
    fn bad_envelopes_are_refused_with_a_reason() {
        assert!(matches!(SignedAttestation::decode(b"\x00\xff garbage"), Err(WireError::Malformed(_))));
        assert_eq!(SignedAttestation::decode(b"\x03\xa1 a later format"), Err(WireError::Version(3)));
        assert!(matches!(SignedAttestation::decode(b"garbage"), Err(WireError::Malformed(_))));
        assert!(matches!(SignedAttestation::decode(b""), Err(WireError::Malformed(_))));
        assert!(matches!(SignedAttestation::decode(&vec![b' '; MAX_ENVELOPE_LEN + 1]), Err(WireError::TooLarge(_))));
        let mut wrong = serde_json::to_value(sample()).unwrap();
        wrong["version"] = 9.into();
        assert_eq!(SignedAttestation::decode(wrong.to_string().as_bytes()), Err(WireError::Version(9)));
        // Packed: truncated anywhere, or with bytes after it, it is refused.
        let packed = sample().encode();
        for len in 0..packed.len() {
            assert!(SignedAttestation::decode(&packed[..len]).is_err(), "{len} bytes accepted");
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert!(matches!(SignedAttestation::decode(&longer), Err(WireError::Malformed(_))));
        let mut lying = packed.clone();
        let at = 2 + 48 + 40;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(SignedAttestation::decode(&lying), Err(WireError::Malformed(_))));
        // Each kind refuses the other's packed bytes.
        assert!(matches!(Deliverable::decode(&packed), Err(WireError::Malformed(_))));
        assert!(matches!(SignedAttestation::decode(&deliverable().encode()), Err(WireError::Malformed(_))));
        // A JSON deliverable is not an attestation: unknown and missing fields are refused.
        let json = Deliverable { version: JSON_WIRE_VERSION, ..deliverable() };
        assert!(matches!(SignedAttestation::decode(&json.encode()), Err(WireError::Malformed(_))));
        let mut short = sample();
        short.signature = vec![1; 10].into();
        assert!(matches!(short.open(), Err(WireError::Signature(_))));
        let mut truncated = sample();
        truncated.message = truncated.message[..20].to_vec().into();
        assert!(matches!(truncated.open(), Err(WireError::Message(_))));
    }
}
