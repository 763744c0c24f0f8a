//! Reverts named: the error one of ferry's contracts (or the OpenZeppelin code they build
//! on) reverted with, decoded by the contracts' own ABIs to its name and arguments, so
//! nobody reads `custom error 0xe450d38c: 0000...`.

use alloy::{
    primitives::Address,
    sol_types::{Panic, Revert, SolError, SolInterface},
};

use crate::contracts::{BridgedToken, GasPaymaster, Mailbox, TestRecipient, TestToken, TokenBridge};

/// `data` (a revert's return data) as `Name(arg: value, ...)` if it is an error of one
/// of ferry's contracts, as its text if it is a `require` message, or the panic's
/// meaning.
pub fn describe_revert(data: &[u8]) -> Option<String> {
    // Errors several contracts share (OpenZeppelin's) decode the same under any of them.
    let custom = Mailbox::MailboxErrors::abi_decode(data)
        .map(|e| format!("{e:?}"))
        .or_else(|_| TokenBridge::TokenBridgeErrors::abi_decode(data).map(|e| format!("{e:?}")))
        .or_else(|_| GasPaymaster::GasPaymasterErrors::abi_decode(data).map(|e| format!("{e:?}")))
        .or_else(|_| BridgedToken::BridgedTokenErrors::abi_decode(data).map(|e| format!("{e:?}")))
        .or_else(|_| TestToken::TestTokenErrors::abi_decode(data).map(|e| format!("{e:?}")))
        .or_else(|_| TestRecipient::TestRecipientErrors::abi_decode(data).map(|e| format!("{e:?}")));
    if let Ok(debug) = custom {
        return Some(checksummed(&arguments_form(&debug)));
    }
    if let Ok(revert) = Revert::abi_decode(data) {
        // A `require` message says itself: it is what Solidity users know it by.
        return Some(revert.reason);
    }
    Panic::abi_decode(data).ok().map(|panic| panic.to_string())
}

/// Why a contract call failed: its revert decoded where it carries one of the errors
/// [`describe_revert`] knows, otherwise what the node or the transport said.
pub fn explain(error: &alloy::contract::Error) -> String {
    match error.as_revert_data().and_then(|data| describe_revert(&data)) {
        Some(decoded) => format!("reverted with {decoded}"),
        None => error.to_string(),
    }
}

/// `Name(Name { a: 1, b: 2 })` (a `sol!` error enum's Debug around its error's) as
/// `Name(a: 1, b: 2)`; `Name(Name)` as `Name()`.
fn arguments_form(debug: &str) -> String {
    let inner = match debug.split_once('(') {
        Some((name, rest)) if rest.starts_with(name) => rest.strip_suffix(')').unwrap_or(rest),
        _ => debug,
    };
    match inner.split_once(" { ") {
        Some((name, fields)) => format!("{name}({})", fields.strip_suffix(" }").unwrap_or(fields)),
        None => format!("{}()", inner.trim_end_matches(" {}")),
    }
}

/// `text` with every address (`0x` and 40 hex digits) in its checksummed form, as
/// explorers and wallets show it (Debug writes them in lower case).
fn checksummed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let digits = after.bytes().take_while(u8::is_ascii_hexdigit).count();
        match (digits == 40).then(|| after[..40].parse::<Address>().ok()).flatten() {
            Some(address) => out.push_str(&address.to_checksum(None)),
            None => out.push_str(&rest[at..at + 2 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, U256};

    use super::*;

    #[test]
    fn openzeppelin_and_ferry_errors_read_as_name_and_arguments() {
        let sender = Address::repeat_byte(0x11);
        let shortfall =
            BridgedToken::ERC20InsufficientBalance { sender, balance: U256::from(5), needed: U256::from(10) };
        assert_eq!(
            describe_revert(&shortfall.abi_encode()).unwrap(),
            format!("ERC20InsufficientBalance(sender: {sender}, balance: 5, needed: 10)")
        );
        let limited = TokenBridge::RateLimited {
            remote: 31337,
            inbound: true,
            amount: U256::from(600),
            available: U256::from(400),
            refillPerSecond: U256::from(100),
        };
        assert_eq!(
            describe_revert(&limited.abi_encode()).unwrap(),
            "RateLimited(remote: 31337, inbound: true, amount: 600, available: 400, refillPerSecond: 100)"
        );
        assert_eq!(
            describe_revert(&GasPaymaster::NoQuote { destination: 9 }.abi_encode()).unwrap(),
            "NoQuote(destination: 9)"
        );
        let caller: Address = "0x976EA74026E726554dB657fA54763abd0C3a0aa9".parse().unwrap();
        assert_eq!(
            describe_revert(&GasPaymaster::NotBeneficiary { caller }.abi_encode()).unwrap(),
            format!("NotBeneficiary(caller: {caller})")
        );
        assert_eq!(describe_revert(&TokenBridge::ZeroAmount {}.abi_encode()).unwrap(), "ZeroAmount()");
    }

    #[test]
    fn only_addresses_are_checksummed() {
        let address: Address = "0x976EA74026E726554dB657fA54763abd0C3a0aa9".parse().unwrap();
        let word = B256::repeat_byte(0xab);
        let text = format!("X(a: {address:?}, id: {word:?}, data: 0x, n: 0xab)");
        assert_eq!(checksummed(&text), format!("X(a: {address}, id: {word:?}, data: 0x, n: 0xab)"));
    }

    #[test]
    fn require_messages_and_panics_are_named_and_unknown_data_is_not_guessed() {
        let text = Revert::from("no way").abi_encode();
        assert_eq!(describe_revert(&text).unwrap(), "no way");
        let panic = Panic::from(0x11).abi_encode();
        assert!(describe_revert(&panic).unwrap().contains("overflow"), "{:?}", describe_revert(&panic));
        assert_eq!(describe_revert(&[0xde, 0xad, 0xbe, 0xef, 0, 0]), None);
        assert_eq!(describe_revert(&[]), None);
    }
}
