//! `proof` credentials: a signature instead of a payment, for a route a
//! genome prices at `"0"` (identity without payment). The payer signs an
//! EIP-712 message naming the challenge; the signer it recovers must be the
//! address its `source` names, on the challenge's chain.
//!
//! Two forms are accepted, both over domain `{name "MPP", chainId}` with no
//! verifying contract:
//! - **v3**, what mppx 0.11 signs: domain version `"3"`,
//!   `Proof(address account,string challengeId,string realm)`.
//! - **v1**, the tempo charge draft's form: domain version `"1"`,
//!   `Proof(string challengeId)`.
//!
//! v1 is not weaker here: a challenge id is an HMAC over the realm (and a
//! per-challenge nonce) under this service's secret, so it already names
//! one realm and one challenge, and the account is bound by requiring the
//! recovered signer to be the `source`. A proof is claimed once per
//! challenge id whichever form it has, so the two spellings of one proof
//! are still one use.
//!
//! Only 65-byte secp256k1 signatures of an externally owned account are
//! recovered (no ERC-1271 contract wallets, no Tempo access keys), with a
//! low `s` (EIP-2): a high-`s` twin of a signature is refused.
//!
//! Pure: the caller claims the challenge id ([`replay_key`]) in the replay
//! store.

use alloy_primitives::{Address, B256, Signature, U256, keccak256};

use crate::credential::TxHash;

/// Which EIP-712 form a proof verified under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofForm {
    /// Domain version 3 (mppx 0.11): account, challenge id and realm.
    V3,
    /// Domain version 1 (the draft): the challenge id alone.
    V1,
}

/// Why a proof does not prove anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a proof signature is 65 bytes (r, s, v) of an externally owned account")]
    NotSecp256k1,
    #[error("the signature's v is not 0, 1, 27 or 28")]
    BadV,
    #[error("the signature's s is in the upper half of the curve order")]
    HighS,
    #[error("the signature does not recover a signer")]
    Unrecoverable,
    #[error("the signer is not the credential's source")]
    NotTheSource,
}

/// Half the secp256k1 order: a valid `s` is at most this (EIP-2).
const HALF_ORDER: U256 = U256::from_limbs([
    0xdfe9_2f46_681b_20a0,
    0x5d57_6e73_57a4_501d,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
]);

fn word_u64(v: u64) -> [u8; 32] {
    U256::from(v).to_be_bytes()
}

fn domain_separator(version: &str, chain_id: u64) -> B256 {
    let mut enc = Vec::with_capacity(4 * 32);
    enc.extend_from_slice(keccak256(b"EIP712Domain(string name,string version,uint256 chainId)").as_slice());
    enc.extend_from_slice(keccak256(b"MPP").as_slice());
    enc.extend_from_slice(keccak256(version.as_bytes()).as_slice());
    enc.extend_from_slice(&word_u64(chain_id));
    keccak256(&enc)
}

fn typed_digest(domain: B256, struct_hash: B256) -> B256 {
    let mut m = Vec::with_capacity(66);
    m.extend_from_slice(&[0x19, 0x01]);
    m.extend_from_slice(domain.as_slice());
    m.extend_from_slice(struct_hash.as_slice());
    keccak256(&m)
}

/// The v3 digest (mppx 0.11's `Proof.typedData`).
pub fn digest_v3(chain_id: u64, account: Address, challenge_id: &str, realm: &str) -> B256 {
    let mut enc = Vec::with_capacity(4 * 32);
    enc.extend_from_slice(keccak256(b"Proof(address account,string challengeId,string realm)").as_slice());
    enc.extend_from_slice(&[0u8; 12]);
    enc.extend_from_slice(account.as_slice());
    enc.extend_from_slice(keccak256(challenge_id.as_bytes()).as_slice());
    enc.extend_from_slice(keccak256(realm.as_bytes()).as_slice());
    typed_digest(domain_separator("3", chain_id), keccak256(&enc))
}

/// The v1 digest (the tempo charge draft).
pub fn digest_v1(chain_id: u64, challenge_id: &str) -> B256 {
    let mut enc = Vec::with_capacity(2 * 32);
    enc.extend_from_slice(keccak256(b"Proof(string challengeId)").as_slice());
    enc.extend_from_slice(keccak256(challenge_id.as_bytes()).as_slice());
    typed_digest(domain_separator("1", chain_id), keccak256(&enc))
}

/// The signer of `digest` under a 65-byte `r || s || v` signature.
fn recover(signature: &[u8], digest: &B256) -> Result<Address, ProofError> {
    let [rs @ .., v] = signature else {
        return Err(ProofError::NotSecp256k1);
    };
    if rs.len() != 64 {
        return Err(ProofError::NotSecp256k1);
    }
    let parity = match *v {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(ProofError::BadV),
    };
    let r = U256::from_be_slice(&rs[..32]);
    let s = U256::from_be_slice(&rs[32..]);
    if s > HALF_ORDER {
        return Err(ProofError::HighS);
    }
    Signature::new(r, s, parity)
        .recover_address_from_prehash(digest)
        .map_err(|_| ProofError::Unrecoverable)
}

/// Verifies a proof `signature` by `source` for the challenge `challenge_id`
/// of `realm` on `chain_id`: v3 first (what clients send), then v1.
pub fn verify(
    signature: &[u8],
    source: Address,
    chain_id: u64,
    challenge_id: &str,
    realm: &str,
) -> Result<ProofForm, ProofError> {
    if recover(signature, &digest_v3(chain_id, source, challenge_id, realm))? == source {
        return Ok(ProofForm::V3);
    }
    if recover(signature, &digest_v1(chain_id, challenge_id))? == source {
        return Ok(ProofForm::V1);
    }
    Err(ProofError::NotTheSource)
}

/// The replay-store key of a proof for `challenge_id`: a 32-byte hash in a
/// domain of its own, so no transaction hash can ever name it (and the
/// store, its records and its caches need nothing new).
pub fn replay_key(challenge_id: &str) -> TxHash {
    let mut m = b"settlegate proof v1\0".to_vec();
    m.extend_from_slice(challenge_id.as_bytes());
    TxHash::from(keccak256(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256, hex};

    // The vectors of mppx's `src/tempo/Proof.conformance.test.ts` (v3) and
    // of viem's `hashTypedData` for the draft's form (v1): key 0x01…01.
    const SIGNER: Address = address!("1a642f0E3c3aF545E7AcBD38b07251B3990914F1");
    const CHAIN: u64 = 42431;
    const ID: &str = "kM9xPqWvT2nJrHsY4aDfEb";
    const REALM: &str = "api.example.com";
    const V3_SIG: &str = "53f5d64d9f995e841b4212639b2e17e508e96752e10316df3814a16443dcbdb626c082190a4c3ecc3148101eb443d15bd83b579380b1be735a9c99f0df36c9fe1b";
    const V1_SIG: &str = "e788373edbf80cec231f79e97fc005bc58ab5e24d565a886ab98aee45a5294020d3e6c18a86d15a935cdae067e3d1d910a05afe7424758daadecd807c366f37f1b";

    #[test]
    fn digests_match_the_vectors() {
        assert_eq!(
            digest_v3(CHAIN, SIGNER, ID, REALM),
            b256!("3860a700a55e02ad3c2dc047e92489feceecbdb0a801d948e1d9f0b61ea9bc3f")
        );
        assert_eq!(
            digest_v1(CHAIN, ID),
            b256!("c5c155e34a264f8a8ff363f3e989f402356697303a4e1102d512c25b1b2afb11")
        );
    }

    #[test]
    fn the_vector_signatures_verify_as_their_form_and_nothing_else() {
        let v3 = hex::decode(V3_SIG).unwrap();
        let v1 = hex::decode(V1_SIG).unwrap();
        assert_eq!(verify(&v3, SIGNER, CHAIN, ID, REALM), Ok(ProofForm::V3));
        assert_eq!(verify(&v1, SIGNER, CHAIN, ID, REALM), Ok(ProofForm::V1));
        // v1 does not name the realm; v3 does
        assert_eq!(verify(&v1, SIGNER, CHAIN, ID, "other"), Ok(ProofForm::V1));
        let stranger = address!("3c44cdddb6a900fa2b585dd299e03d12fa4293bc");
        for (sig, source, chain, id, realm) in [
            (&v3, stranger, CHAIN, ID, REALM),
            (&v3, SIGNER, 4217, ID, REALM),
            (&v3, SIGNER, CHAIN, "kM9xPqWvT2nJrHsY4aDfEc", REALM),
            (&v3, SIGNER, CHAIN, ID, "api.example.org"),
            (&v1, SIGNER, 4217, ID, REALM),
            (&v1, SIGNER, CHAIN, "another", REALM),
        ] {
            assert_eq!(
                verify(sig, source, chain, id, realm),
                Err(ProofError::NotTheSource),
                "{source} {chain} {id} {realm}"
            );
        }
    }

    #[test]
    fn other_spellings_of_a_signature_are_refused() {
        let v3 = hex::decode(V3_SIG).unwrap();
        // v as 0/1 is the same signature
        let mut zero_one = v3.clone();
        zero_one[64] -= 27;
        assert_eq!(verify(&zero_one, SIGNER, CHAIN, ID, REALM), Ok(ProofForm::V3));
        // the high-s twin (n - s, flipped parity) recovers the same signer
        // on chains without EIP-2; it is refused here
        let n = U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
        let s = U256::from_be_slice(&v3[32..64]);
        let mut twin = v3.clone();
        twin[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        twin[64] = if v3[64] == 27 { 28 } else { 27 };
        assert_eq!(verify(&twin, SIGNER, CHAIN, ID, REALM), Err(ProofError::HighS));
        let mut bad_v = v3.clone();
        bad_v[64] = 29;
        assert_eq!(verify(&bad_v, SIGNER, CHAIN, ID, REALM), Err(ProofError::BadV));
        for len in [0, 64, 66, 130] {
            let mut sig = v3.clone();
            sig.resize(len, 0);
            assert_eq!(
                verify(&sig, SIGNER, CHAIN, ID, REALM),
                Err(ProofError::NotSecp256k1),
                "{len}"
            );
        }
        assert!(HALF_ORDER * U256::from(2) + U256::from(1) == n);
    }

    #[test]
    fn replay_keys_are_per_challenge_and_not_the_id_hashed_plainly() {
        assert_ne!(replay_key(ID), replay_key("kM9xPqWvT2nJrHsY4aDfEc"));
        assert_eq!(replay_key(ID), replay_key(ID));
        assert_ne!(replay_key(ID), TxHash::from(keccak256(ID.as_bytes())));
    }
}
