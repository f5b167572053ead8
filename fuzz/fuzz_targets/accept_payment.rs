//! Any `Accept-Payment` value through `settlegate_rules::accept_payment`,
//! as `/v1/authorize` and `/v1/verify` read it. Nothing panics; what
//! parses is within the bounds (at most `MAX_BYTES` in, `MAX_RANGES` out,
//! every weight 0 to 1000, methods lower case); and whatever the value, the
//! offers made are never none when there are offers to make: the wanted
//! ones by descending weight (the server's order for ties), else the ones
//! it does not name, else all, in the server's order; all of them when the
//! value is malformed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::accept_payment::{AcceptPayment, MAX_BYTES, MAX_RANGES, parse};

const OFFERS: [(&str, &str); 3] = [("tempo", "charge"), ("tempo", "session"), ("stripe", "charge")];

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(value);
    if let Ok(ranges) = &parsed {
        assert!(value.len() <= MAX_BYTES && ranges.len() <= MAX_RANGES);
        for r in ranges {
            assert!(r.q <= 1000, "{r:?}");
            assert!(r.method.as_ref().is_none_or(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase())));
            assert!(r.intent.as_ref().is_none_or(|i| !i.is_empty() && !i.contains(['/', ',', ';', ' '])));
        }
    }
    let prefs = AcceptPayment::from_header(Some(value));
    assert_eq!(prefs.is_stated(), parsed.is_ok());
    for n in 0..=OFFERS.len() {
        let offers = &OFFERS[..n];
        let order = prefs.order(offers);
        assert_eq!(order.is_empty(), n == 0, "{value:?}: nothing offered");
        let mut seen = order.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), order.len(), "{value:?}: an offer twice");
        assert!(order.iter().all(|&i| i < n));
        let weight = |i: usize| prefs.weight(offers[i].0, offers[i].1);
        let wanted: Vec<usize> = (0..n).filter(|&i| weight(i).is_some_and(|q| q > 0)).collect();
        let unnamed: Vec<usize> = (0..n).filter(|&i| weight(i).is_none()).collect();
        let all_in_order = order == (0..n).collect::<Vec<_>>();
        if !wanted.is_empty() {
            let mut made = order.clone();
            made.sort_unstable();
            assert_eq!(made, wanted, "{value:?}: exactly the wanted offers");
            assert!(
                order.windows(2).all(|w| weight(w[0]) > weight(w[1]) || (weight(w[0]) == weight(w[1]) && w[0] < w[1])),
                "{value:?}: by weight, then the server's order"
            );
        } else if !unnamed.is_empty() {
            assert_eq!(order, unnamed, "{value:?}: what it does not refuse");
        } else {
            assert!(all_in_order, "{value:?}: everything refused, everything offered");
        }
        if parsed.is_err() {
            assert!(all_in_order, "{value:?}: a malformed value changed the offers");
        }
    }
});
