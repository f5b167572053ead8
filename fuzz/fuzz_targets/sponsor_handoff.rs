//! Any bytes as a fee-sponsorship hand-off (a sponsored `transaction`
//! credential's payload). Nothing panics; what parses has a 65-byte
//! secp256k1 sender signature that recovers its sender, and co-signed with
//! a fixed sponsor key it becomes a 0x76 transaction whose own decoder
//! recovers the same sender, with the same calls: the co-signature never
//! changes who pays or what is paid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::signed_tx;
use settlegate_rules::sponsor::Handoff;
use settlegate_rules::tx_sign::PayeeKey;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Handoff::parse(data) else {
        return;
    };
    let key = PayeeKey::parse(&format!("0x{}", "02".repeat(32))).unwrap();
    let token = "0x20c0000000000000000000000000000000000000".parse().unwrap();
    let signed = h.cosign(token, &key).expect("a parsed hand-off co-signs");
    let decoded = signed_tx::decode(&signed.raw).expect("the co-signed transaction decodes");
    assert_eq!(decoded.signer, Some(h.sender));
    assert_eq!(decoded.calls, h.calls);
    assert_eq!(decoded.chain_id, Some(h.chain_id));
    // Deterministic: every instance broadcasts the same bytes.
    assert_eq!(h.cosign(token, &key).unwrap(), signed);
});
