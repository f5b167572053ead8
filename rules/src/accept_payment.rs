//! `Accept-Payment`: which `Payment` challenges a client takes, and in what
//! order (draft-httpauth-payment, "Client Payment Preferences").
//!
//! ```abnf
//! Accept-Payment = #payment-range                 ; RFC 9110 list: commas, OWS, empty elements
//! payment-range  = payment-token [ weight ]       ; weight = OWS ";" OWS "q=" qvalue (RFC 9110 §12.4.2)
//! payment-token  = ( payment-method-id / "*" ) "/" ( intent-token / "*" )
//! payment-method-id = 1*LOWERALPHA
//! intent-token      = 1*( ALPHA / DIGIT / "-" )
//! ```
//!
//! Parsed strictly: a method in upper case, a parameter other than `q`, a
//! `q` beyond 1 or with four decimals makes the whole value malformed, and
//! a malformed value is ignored (the spec's MAY), so a client's typo can
//! cost it its preferences but never its 402. ABNF literals are
//! case-insensitive, so `Q=0.5` is a weight. Intents compare exactly:
//! registered intents are lower case, and `Charge` matches nothing.
//!
//! What the server does with a parsed value ([`AcceptPayment::order`]):
//! each offer takes the weight of the **most specific** range that matches
//! it (`tempo/session` over `tempo/*` over `*/*`; among equally specific
//! ones the lowest weight, so a refusal is never outvoted by a sibling
//! wildcard). The offers weighted above 0 are made, by descending weight,
//! the server's order kept for equal weights (the spec's SHOULDs). When no
//! offer is weighted above 0, the spec lets the server ignore the header;
//! we ignore only what it does not say: a value that merely refuses
//! (`tempo/charge;q=0`) gets the offers it does not name, in the server's
//! order, and only when it refuses every offer are they all made. The spec
//! defines no problem type for that case, and a 402 must always say how to
//! pay.
//!
//! Bounds: at most [`MAX_BYTES`] bytes and [`MAX_RANGES`] ranges; beyond
//! either the value is malformed.

/// The longest value considered, in bytes (several header lines joined).
pub const MAX_BYTES: usize = 1024;
/// The most ranges considered.
pub const MAX_RANGES: usize = 32;
/// `q=1`, in thousandths.
const ONE: u16 = 1000;

/// Why an `Accept-Payment` value is malformed (and so ignored).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcceptPaymentError {
    #[error("longer than {MAX_BYTES} bytes")]
    TooLong,
    #[error("more than {MAX_RANGES} ranges")]
    TooManyRanges,
    #[error("range {0}: not method/intent")]
    NotAToken(usize),
    #[error("range {0}: the method must be lower-case letters or *")]
    BadMethod(usize),
    #[error("range {0}: the intent must be letters, digits and hyphens, or *")]
    BadIntent(usize),
    #[error("range {0}: only a q weight may follow the token")]
    BadParameter(usize),
    #[error("range {0}: q must be 0 to 1 with at most three decimals")]
    BadWeight(usize),
}

/// One `method/intent;q=…` range; `None` is the wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRange {
    pub method: Option<String>,
    pub intent: Option<String>,
    /// The weight in thousandths: `q=0.5` is 500.
    pub q: u16,
}

impl PaymentRange {
    fn matches(&self, method: &str, intent: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.intent.as_deref().is_none_or(|i| i == intent)
    }

    /// 2 for `method/intent`, 1 with one wildcard, 0 for `*/*`.
    fn specificity(&self) -> u8 {
        u8::from(self.method.is_some()) + u8::from(self.intent.is_some())
    }
}

/// A client's preferences: the ranges of a well-formed value, or none
/// (absent or malformed), which accepts every offer in the server's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptPayment {
    ranges: Option<Vec<PaymentRange>>,
}

impl AcceptPayment {
    /// Every offer, in the server's order: no header.
    pub fn any() -> Self {
        AcceptPayment::default()
    }

    /// The preferences a header value states; a malformed one states none.
    pub fn from_header(value: Option<&str>) -> Self {
        AcceptPayment {
            ranges: value.and_then(|v| parse(v).ok()),
        }
    }

    /// Whether a well-formed value was given.
    pub fn is_stated(&self) -> bool {
        self.ranges.is_some()
    }

    /// The weight of `method/intent`: that of its most specific matching
    /// range (the lowest among equally specific ones); `None` when no range
    /// matches or none was stated.
    pub fn weight(&self, method: &str, intent: &str) -> Option<u16> {
        let ranges = self.ranges.as_ref()?;
        let best = ranges
            .iter()
            .filter(|r| r.matches(method, intent))
            .map(PaymentRange::specificity)
            .max()?;
        ranges
            .iter()
            .filter(|r| r.matches(method, intent) && r.specificity() == best)
            .map(|r| r.q)
            .min()
    }

    /// The offers to make, as indices into `offers` (`(method, intent)` in
    /// the server's order of preference): those the client weights above
    /// 0, by descending weight, ties in the server's order; failing any,
    /// those it does not name; failing any, all. Nothing stated: all, in
    /// order.
    pub fn order(&self, offers: &[(&str, &str)]) -> Vec<usize> {
        let all: Vec<usize> = (0..offers.len()).collect();
        if self.ranges.is_none() {
            return all;
        }
        let weights: Vec<Option<u16>> = offers.iter().map(|(m, i)| self.weight(m, i)).collect();
        let mut wanted: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| weights[i].is_some_and(|q| q > 0))
            .collect();
        if !wanted.is_empty() {
            // stable: equal weights keep the server's order
            wanted.sort_by(|&a, &b| weights[b].cmp(&weights[a]));
            return wanted;
        }
        let unnamed: Vec<usize> = all.iter().copied().filter(|&i| weights[i].is_none()).collect();
        if unnamed.is_empty() { all } else { unnamed }
    }
}

/// Parses a whole `Accept-Payment` value (lines already joined with `,`).
/// An empty list is well formed and matches nothing.
pub fn parse(value: &str) -> Result<Vec<PaymentRange>, AcceptPaymentError> {
    if value.len() > MAX_BYTES {
        return Err(AcceptPaymentError::TooLong);
    }
    let mut ranges = Vec::new();
    // The list rule allows empty elements: `a, , b` and `,a` are two ranges.
    for element in value.split(',').map(trim_ows).filter(|e| !e.is_empty()) {
        let n = ranges.len();
        if n == MAX_RANGES {
            return Err(AcceptPaymentError::TooManyRanges);
        }
        ranges.push(range(element, n)?);
    }
    Ok(ranges)
}

/// OWS is spaces and horizontal tabs only.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn range(element: &str, n: usize) -> Result<PaymentRange, AcceptPaymentError> {
    let (token, weight) = match element.split_once(';') {
        None => (element, None),
        // a second `;` is a second parameter
        Some((_, w)) if w.contains(';') => return Err(AcceptPaymentError::BadParameter(n)),
        Some((t, w)) => (trim_ows(t), Some(trim_ows(w))),
    };
    let (method, intent) = token.split_once('/').ok_or(AcceptPaymentError::NotAToken(n))?;
    let method = match method {
        "*" => None,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase()) => Some(m.to_owned()),
        _ => return Err(AcceptPaymentError::BadMethod(n)),
    };
    let intent = match intent {
        "*" => None,
        i if !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => Some(i.to_owned()),
        _ => return Err(AcceptPaymentError::BadIntent(n)),
    };
    let q = match weight {
        None => ONE,
        Some(w) => {
            // exactly one parameter, `q` (either case), no space around `=`
            let value = w
                .strip_prefix("q=")
                .or_else(|| w.strip_prefix("Q="))
                .ok_or(AcceptPaymentError::BadParameter(n))?;
            qvalue(value).ok_or(AcceptPaymentError::BadWeight(n))?
        }
    };
    Ok(PaymentRange { method, intent, q })
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = match s.split_once('.') {
        None => (s, ""),
        Some((i, f)) => (i, f),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(ONE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHARGE: (&str, &str) = ("tempo", "charge");
    const SESSION: (&str, &str) = ("tempo", "session");
    /// The server's offers, in its order of preference.
    const OFFERS: [(&str, &str); 2] = [CHARGE, SESSION];

    fn order(header: &str) -> Vec<(&'static str, &'static str)> {
        AcceptPayment::from_header(Some(header))
            .order(&OFFERS)
            .into_iter()
            .map(|i| OFFERS[i])
            .collect()
    }

    fn r(method: Option<&str>, intent: Option<&str>, q: u16) -> PaymentRange {
        PaymentRange {
            method: method.map(str::to_owned),
            intent: intent.map(str::to_owned),
            q,
        }
    }

    #[test]
    fn the_specs_examples_parse() {
        assert_eq!(
            parse("tempo/charge, tempo/session, stripe/charge;q=0.5, solana/charge;q=0.3").unwrap(),
            [
                r(Some("tempo"), Some("charge"), 1000),
                r(Some("tempo"), Some("session"), 1000),
                r(Some("stripe"), Some("charge"), 500),
                r(Some("solana"), Some("charge"), 300),
            ]
        );
        assert_eq!(
            parse("tempo/*, solana/*;q=0.6, */session;q=0.3").unwrap(),
            [
                r(Some("tempo"), None, 1000),
                r(Some("solana"), None, 600),
                r(None, Some("session"), 300)
            ]
        );
        assert_eq!(
            parse("tempo/charge, tempo/session;q=0, solana/charge").unwrap()[1],
            r(Some("tempo"), Some("session"), 0)
        );
        // mppx's test vector
        assert_eq!(
            parse("tempo/*, stripe/charge;q=0.5, */session;q=0").unwrap(),
            [
                r(Some("tempo"), None, 1000),
                r(Some("stripe"), Some("charge"), 500),
                r(None, Some("session"), 0)
            ]
        );
    }

    #[test]
    fn weights_follow_rfc_9110_qvalues() {
        for (q, want) in [
            ("0", 0),
            ("0.", 0),
            ("0.5", 500),
            ("0.05", 50),
            ("0.001", 1),
            ("0.999", 999),
            ("1", 1000),
            ("1.", 1000),
            ("1.000", 1000),
        ] {
            assert_eq!(parse(&format!("tempo/charge;q={q}")).unwrap()[0].q, want, "{q}");
        }
        for q in [
            "", "1.001", "1.5", "2", "0.1234", ".5", "-0", "+1", "0x1", "1e0", "0,5", " 0.5",
        ] {
            assert!(parse(&format!("tempo/charge;q={q}")).is_err(), "{q:?}");
        }
        // `q` is an ABNF literal: case-insensitive; OWS around `;`, none around `=`
        assert_eq!(parse("tempo/charge;Q=0.5").unwrap()[0].q, 500);
        assert_eq!(parse("tempo/charge \t; q=0.5").unwrap()[0].q, 500);
        for bad in [
            "tempo/charge;q =0.5",
            "tempo/charge;q= 0.5",
            "tempo/charge;",
            "tempo/charge;q",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // only the weight may follow the token
        for bad in [
            "tempo/charge;x=1",
            "tempo/charge;q=0.5;x=1",
            "tempo/charge;x=1;q=0.5",
            "tempo/charge;qq=1",
        ] {
            assert_eq!(parse(bad), Err(AcceptPaymentError::BadParameter(0)), "{bad:?}");
        }
    }

    #[test]
    fn methods_are_lower_case_and_intents_tokens() {
        assert_eq!(parse("*/*").unwrap(), [r(None, None, 1000)]);
        assert_eq!(
            parse("tempo/charge-v2").unwrap(),
            [r(Some("tempo"), Some("charge-v2"), 1000)]
        );
        // the intent ABNF allows upper case and digits; it matches exactly
        assert_eq!(parse("tempo/Charge2").unwrap()[0].intent.as_deref(), Some("Charge2"));
        assert_eq!(order("tempo/Charge;q=0"), OFFERS, "Charge is not charge");
        for (bad, err) in [
            ("Tempo/charge", AcceptPaymentError::BadMethod(0)),
            ("TEMPO/charge", AcceptPaymentError::BadMethod(0)),
            ("tempo2/charge", AcceptPaymentError::BadMethod(0)),
            ("tem-po/charge", AcceptPaymentError::BadMethod(0)),
            ("/charge", AcceptPaymentError::BadMethod(0)),
            ("**/charge", AcceptPaymentError::BadMethod(0)),
            ("tempo/", AcceptPaymentError::BadIntent(0)),
            ("tempo/char ge", AcceptPaymentError::BadIntent(0)),
            ("tempo/charge/x", AcceptPaymentError::BadIntent(0)),
            ("tempo/ch_arge", AcceptPaymentError::BadIntent(0)),
            ("tempo/*x", AcceptPaymentError::BadIntent(0)),
            ("tempo /charge", AcceptPaymentError::BadMethod(0)),
            ("tempo", AcceptPaymentError::NotAToken(0)),
            ("*", AcceptPaymentError::NotAToken(0)),
            ("tempo/charge, bogus", AcceptPaymentError::NotAToken(1)),
            ("tempo/charge, tempo/séance", AcceptPaymentError::BadIntent(1)),
        ] {
            assert_eq!(parse(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn the_list_rule_tolerates_empty_elements_and_ows() {
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse(" , ,\t").unwrap(), []);
        assert_eq!(
            parse(",tempo/charge,,\ttempo/session ;q=0.2 ,").unwrap(),
            [
                r(Some("tempo"), Some("charge"), 1000),
                r(Some("tempo"), Some("session"), 200)
            ]
        );
        // an empty list matches nothing: every offer is made
        assert_eq!(order(""), OFFERS);
    }

    #[test]
    fn sizes_are_bounded() {
        let many = vec!["tempo/charge"; MAX_RANGES].join(",");
        assert_eq!(parse(&many).unwrap().len(), MAX_RANGES);
        assert_eq!(
            parse(&format!("{many},tempo/session")),
            Err(AcceptPaymentError::TooManyRanges)
        );
        // empty elements do not count, bytes do
        let padded = format!("{}tempo/session;q=0", " ".repeat(MAX_BYTES - 17));
        assert_eq!(padded.len(), MAX_BYTES);
        assert_eq!(parse(&padded).unwrap().len(), 1);
        assert_eq!(parse(&format!(" {padded}")), Err(AcceptPaymentError::TooLong));
        // too long is ignored, whatever it says
        assert_eq!(order(&format!(" {padded}")), OFFERS);
    }

    #[test]
    fn offers_are_filtered_and_ordered_as_the_spec_says() {
        // refusals
        assert_eq!(
            order("tempo/charge;q=0"),
            [SESSION],
            "charge refused, session unmatched"
        );
        assert_eq!(order("tempo/session;q=0"), [CHARGE]);
        assert_eq!(order("tempo/charge;q=0, */*"), [SESSION]);
        // only matched ranges with q > 0 are kept
        assert_eq!(order("tempo/charge"), [CHARGE]);
        assert_eq!(order("tempo/session"), [SESSION]);
        assert_eq!(order("*/session"), [SESSION]);
        // descending q; equal q keeps the server's order
        assert_eq!(order("tempo/charge;q=0.4, tempo/session;q=0.5"), [SESSION, CHARGE]);
        assert_eq!(order("tempo/session, tempo/charge"), [CHARGE, SESSION]);
        assert_eq!(order("tempo/*"), [CHARGE, SESSION]);
        assert_eq!(order("*/*;q=0.3"), [CHARGE, SESSION]);
        // the most specific range wins, whatever its weight or position
        assert_eq!(order("tempo/*;q=0.5, tempo/session"), [SESSION, CHARGE]);
        assert_eq!(order("tempo/session, tempo/*;q=0.5"), [SESSION, CHARGE]);
        assert_eq!(
            order("tempo/*;q=0.5, tempo/session;q=0"),
            [CHARGE],
            "mppx would keep session"
        );
        assert_eq!(order("*/*;q=0, tempo/charge"), [CHARGE]);
        assert_eq!(
            order("tempo/*;q=0, */*"),
            OFFERS,
            "every offer refused: the header is ignored"
        );
        assert_eq!(order("tempo/*;q=0, tempo/charge;q=0.1"), [CHARGE]);
        // equally specific: the lowest weight, so a refusal stands
        assert_eq!(
            order("tempo/*;q=0, */session"),
            [CHARGE, SESSION],
            "both refused: ignored"
        );
        assert_eq!(order("tempo/*;q=0, */session, tempo/charge"), [CHARGE]);
        assert_eq!(
            order("tempo/charge;q=0.9, tempo/charge;q=0.2, tempo/session;q=0.5"),
            [SESSION, CHARGE]
        );
        // other methods do not disturb ours
        assert_eq!(order("stripe/charge, tempo/session;q=0.5"), [SESSION]);
        assert_eq!(order("stripe/charge;q=0.5, tempo/session;q=0"), [CHARGE]);
        // nothing we offer is named, or every offer is refused: the normal set
        assert_eq!(order("stripe/charge, solana/*"), OFFERS);
        assert_eq!(order("tempo/charge;q=0, tempo/session;q=0"), OFFERS);
        // malformed: ignored whole, even its well-formed ranges
        assert_eq!(order("tempo/charge;q=0, Tempo/session"), OFFERS);
        assert_eq!(order("tempo/session;q=2"), OFFERS);
        assert_eq!(order("garbage \u{7f} here"), OFFERS);
    }

    #[test]
    fn mppx_ranks_like_this_too_where_it_follows_the_spec() {
        // mppx's rank vector: offers [tempo/charge, stripe/charge, tempo/session]
        let offers = [CHARGE, ("stripe", "charge"), SESSION];
        let got = AcceptPayment::from_header(Some("stripe/charge;q=0.5, tempo/charge;q=0.9, tempo/session;q=0.9"))
            .order(&offers);
        assert_eq!(got, [0, 2, 1]);
    }

    #[test]
    fn absent_or_malformed_states_nothing() {
        assert!(!AcceptPayment::any().is_stated());
        assert!(!AcceptPayment::from_header(None).is_stated());
        assert!(!AcceptPayment::from_header(Some("tempo")).is_stated());
        assert!(AcceptPayment::from_header(Some("tempo/charge")).is_stated());
        assert_eq!(AcceptPayment::any().order(&OFFERS), [0, 1]);
        assert_eq!(AcceptPayment::any().order(&[]), Vec::<usize>::new());
        assert_eq!(
            AcceptPayment::from_header(Some("*/*")).weight("tempo", "charge"),
            Some(1000)
        );
        assert_eq!(
            AcceptPayment::from_header(Some("stripe/*")).weight("tempo", "charge"),
            None
        );
    }
}
