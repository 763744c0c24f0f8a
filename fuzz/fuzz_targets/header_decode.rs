//! Arbitrary bytes as an RLP header: decoding and sealing never panic, and a decoded
//! header checked against a fixed parent is accepted or refused with a reason.
#![no_main]

use alloy::{consensus::Header, rlp::Decodable};
use ferry_light_client::{HeaderRules, SealedHeader, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Header::decode(&mut &data[..]) else { return };
    let hash = header.hash_slow();
    let Ok(sealed) = verify::seal(header.clone(), hash) else { panic!("a header must seal under its own hash") };
    let parent = Header { number: header.number.wrapping_sub(1), ..Default::default() };
    let parent_hash = parent.hash_slow();
    let parent = SealedHeader::new_unchecked(parent, parent_hash);
    for rules in [HeaderRules::ethereum(), HeaderRules::anvil()] {
        if let Err(e) = verify::check_against_parent(&parent, &sealed, &rules, verify::Position::default()) {
            assert!(!e.reason().is_empty());
        }
    }
});
