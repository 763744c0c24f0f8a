//! Errors of decoding messages and quorum certificates.

/// Why bytes are not a ferry [`Message`](crate::Message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Fewer bytes than the fixed header.
    #[error("message is {len} bytes, shorter than the {min}-byte header")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// The header's length.
        min: usize,
    },
    /// A body over the limit the Mailbox enforces.
    #[error("message is {len} bytes, longer than the {max}-byte limit")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Header plus the largest body.
        max: usize,
    },
    /// A version this code does not speak.
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u8),
}

/// Why bytes are not a [`QuorumCertificate`](crate::QuorumCertificate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not a 32-byte block hash followed by whole 65-byte signatures.
    #[error("metadata is {0} bytes, not 32 + a multiple of 65")]
    Length(usize),
    /// A signature that does not parse (bad `v`, or `r`/`s` out of range).
    #[error("signature {index} is malformed: {reason}")]
    Signature {
        /// Position in the certificate.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A signature whose signer cannot be recovered from the digest.
    #[error("signature {index} does not recover a signer: {reason}")]
    Recovery {
        /// Position in the certificate.
        index: usize,
        /// What recovery said.
        reason: String,
    },
}
