//! What both targets check once a `Payment` credential parsed: nothing on
//! its way to a verdict panics, and what was parsed is what was sent.

use settlegate_rules::mpp::{
    ChallengeProblem, ChargeRequest, Echo, Modes, PaymentCredential, Secrets, check_challenge,
};
use time::OffsetDateTime;

const REALM: &str = "api.settlegate.test";

fn secrets() -> Secrets {
    Secrets::new(b"fuzz-secret-0123456789abcdef-0123456789".to_vec(), None).unwrap()
}

fn request() -> ChargeRequest {
    ChargeRequest {
        amount: "1000000".parse().unwrap(),
        currency: "0x20c0000000000000000000000000000000000001".parse().unwrap(),
        recipient: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8".parse().unwrap(),
        chain_id: 42431,
        modes: Modes::BOTH,
        fee_payer: false,
        splits: Vec::new(),
    }
}

pub fn check_parsed(c: &PaymentCredential) {
    // The hash a payload names, or the keccak of its transaction.
    let _ = c.payload.tx_hash();
    let (secrets, request, now) = (secrets(), request(), OffsetDateTime::now_utc());
    // A challenge this service did not mint never verifies: an id that
    // passes with a random echo would be a forgery.
    let lifetime = time::Duration::seconds(60);
    if let Ok(()) = check_challenge(&c.challenge, &secrets, REALM, &request, lifetime, now) {
        panic!("an echo the fuzzer made up verified: {:?}", c.challenge);
    }
    // The same echo with a genuine id for its fields runs every check past
    // the HMAC (realm, request decoding, digest, opaque, expires) on fuzzed
    // input.
    let minted = settlegate_rules::mpp::Challenge::mint_encoded(
        &secrets,
        &c.challenge.realm,
        &c.challenge.request,
        now + time::Duration::seconds(60),
        c.challenge.opaque.clone(),
    );
    let echo = Echo {
        id: minted.id,
        expires: Some(minted.expires),
        ..c.challenge.clone()
    };
    match check_challenge(&echo, &secrets, REALM, &request, lifetime, now) {
        Ok(()) => {
            assert_eq!(echo.realm, REALM);
            assert!(echo.digest.is_none() && echo.description.is_none() && echo.header.is_none());
            assert!(echo.opaque.is_some());
        }
        Err(ChallengeProblem::Invalid(_)) => {}
        Err(ChallengeProblem::Expired) => panic!("a challenge minted to expire in 60 s expired"),
    }
}
