//! The v1 voucher: EIP-712 over `Voucher(bytes32 channelId,uint128
//! cumulativeAmount)` in the domain `{"Tempo Stream Channel", "1", chainId,
//! escrow}`, and its secp256k1 signature.
//!
//! Signatures are kept in the one form the escrow's `settle` / `close`
//! accept (65 bytes, `v` 27 or 28, `s` at most half the curve order): a
//! compact EIP-2098 signature is expanded to it, and a high-s one is
//! refused, because `(r, n - s)` verifies too and would be a second
//! spelling of the same voucher that the contract refuses to settle.
//!
//! A signer seen before costs one verification rather than a recovery:
//! [`VoucherSignature::is_by`] holds exactly when recovering the signature
//! would give that key (same `r`, same `y` parity), so the answer is the
//! recovery's, at half its price (k256's recovery verifies what it
//! recovered, a second scalar multiplication).

use alloy_primitives::{Address, B256, Signature, U256, keccak256};

use super::ChannelId;

pub const SIGNATURE_LEN: usize = 65;
pub const COMPACT_SIGNATURE_LEN: usize = 64;

/// secp256k1's order / 2: the largest `s` accepted.
pub const HALF_ORDER: U256 = U256::from_be_bytes([
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e,
    0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
]);

pub const DOMAIN_NAME: &str = "Tempo Stream Channel";
pub const DOMAIN_VERSION: &str = "1";
pub const DOMAIN_TYPE: &str = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
pub const VOUCHER_TYPE: &str = "Voucher(bytes32 channelId,uint128 cumulativeAmount)";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("a signature is 0x-prefixed hex")]
    NotHex,
    #[error("a signature is 65 bytes (or 64, EIP-2098), not {0}")]
    Length(usize),
    #[error("a signature's v is 27 or 28, not {0}")]
    BadV(u8),
    #[error("the signature's s is above half the curve order (malleable)")]
    HighS,
    #[error("the signature's r or s is zero or not below the curve order")]
    OutOfRange,
    #[error("the signature recovers no signer")]
    Unrecoverable,
}

/// A canonical voucher signature: `r || s || v`, low `s`, `v` 27 or 28.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VoucherSignature([u8; SIGNATURE_LEN]);

impl VoucherSignature {
    /// `0x` and 128 or 130 hex digits (either case).
    pub fn parse_hex(s: &str) -> Result<Self, SignatureProblem> {
        let hex = s.strip_prefix("0x").ok_or(SignatureProblem::NotHex)?;
        if hex.len() != 2 * SIGNATURE_LEN && hex.len() != 2 * COMPACT_SIGNATURE_LEN {
            return Err(if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                SignatureProblem::Length(hex.len() / 2)
            } else {
                SignatureProblem::NotHex
            });
        }
        let bytes = alloy_primitives::hex::decode(hex).map_err(|_| SignatureProblem::NotHex)?;
        Self::from_slice(&bytes)
    }

    /// 65 bytes `r || s || v`, or 64 bytes EIP-2098 `r || yParity·2²⁵⁵ + s`.
    pub fn from_slice(b: &[u8]) -> Result<Self, SignatureProblem> {
        let mut out = [0u8; SIGNATURE_LEN];
        match b.len() {
            SIGNATURE_LEN => {
                if b[64] != 27 && b[64] != 28 {
                    return Err(SignatureProblem::BadV(b[64]));
                }
                out.copy_from_slice(b);
            }
            COMPACT_SIGNATURE_LEN => {
                out[..64].copy_from_slice(b);
                let odd = out[32] & 0x80 != 0;
                out[32] &= 0x7f;
                out[64] = if odd { 28 } else { 27 };
            }
            n => return Err(SignatureProblem::Length(n)),
        }
        let r = U256::from_be_slice(&out[..32]);
        let s = U256::from_be_slice(&out[32..64]);
        if s > HALF_ORDER {
            return Err(SignatureProblem::HighS);
        }
        if r.is_zero() || s.is_zero() || r >= secp256k1_order() {
            return Err(SignatureProblem::OutOfRange);
        }
        Ok(VoucherSignature(out))
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// Lower-case `0x` hex of the 65 bytes.
    pub fn to_hex(&self) -> String {
        format!("0x{}", alloy_primitives::hex::encode(self.0))
    }

    /// The address that signed `digest`.
    pub fn recover(&self, digest: &B256) -> Result<Address, SignatureProblem> {
        let r = U256::from_be_slice(&self.0[..32]);
        let s = U256::from_be_slice(&self.0[32..64]);
        Signature::new(r, s, self.0[64] == 28)
            .recover_address_from_prehash(digest)
            .map_err(|_| SignatureProblem::Unrecoverable)
    }

    /// The key that signed `digest`, to check its next signatures with
    /// [`VoucherSignature::is_by`].
    pub fn recover_key(&self, digest: &B256) -> Result<SignerKey, SignatureProblem> {
        let r = U256::from_be_slice(&self.0[..32]);
        let s = U256::from_be_slice(&self.0[32..64]);
        let key = Signature::new(r, s, self.0[64] == 28)
            .recover_from_prehash(digest)
            .map_err(|_| SignatureProblem::Unrecoverable)?;
        Ok(SignerKey {
            address: Address::from_public_key(&key),
            point: *key.as_affine(),
        })
    }

    /// Whether recovering this signature over `digest` gives `key`: the
    /// point `R = (z·G + r·Q) / s` has the x coordinate `r` (as a field
    /// element, not merely modulo the order) and the parity `v` names.
    /// Then `Q = (s·R - z·G) / r` is what recovery computes; conversely a
    /// recovery giving `Q` started from that `R`.
    pub fn is_by(&self, digest: &B256, key: &SignerKey) -> bool {
        use k256::elliptic_curve::PrimeField;
        use k256::elliptic_curve::group::Group;
        use k256::elliptic_curve::ops::{LinearCombination, Reduce};
        use k256::elliptic_curve::point::AffineCoordinates;
        use k256::{FieldBytes, ProjectivePoint, Scalar};

        let word = |b: &[u8]| {
            let mut w = [0u8; 32];
            w.copy_from_slice(b);
            FieldBytes::from(w)
        };
        let r_bytes = word(&self.0[..32]);
        let (Some(r), Some(s)) = (
            Option::<Scalar>::from(Scalar::from_repr(r_bytes)),
            Option::<Scalar>::from(Scalar::from_repr(word(&self.0[32..64]))),
        ) else {
            return false;
        };
        let Some(w) = Option::<Scalar>::from(s.invert()) else {
            return false;
        };
        let z = <Scalar as Reduce<k256::U256>>::reduce_bytes(&word(digest.as_slice()));
        let point = ProjectivePoint::lincomb(
            &ProjectivePoint::GENERATOR,
            &(z * w),
            &ProjectivePoint::from(key.point),
            &(r * w),
        );
        if bool::from(point.is_identity()) {
            return false;
        }
        let point = point.to_affine();
        point.x() == r_bytes && bool::from(point.y_is_odd()) == (self.0[64] == 28)
    }
}

/// A voucher signer's public key and its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerKey {
    address: Address,
    point: k256::AffinePoint,
}

impl SignerKey {
    pub fn address(&self) -> Address {
        self.address
    }
}

fn secp256k1_order() -> U256 {
    // n is odd, so n = 2 * floor(n / 2) + 1.
    HALF_ORDER * U256::from(2u8) + U256::from(1u8)
}

/// A voucher as a credential carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Voucher {
    pub channel_id: ChannelId,
    pub cumulative: u128,
    pub signature: VoucherSignature,
}

/// The EIP-712 domain of one escrow deployment on one chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domain {
    pub chain_id: u64,
    pub escrow: Address,
}

pub(crate) fn word_address(a: &Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

pub(crate) fn word_u128(v: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

pub(crate) fn word_u64(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

impl Domain {
    pub fn separator(&self) -> B256 {
        let mut buf = Vec::with_capacity(5 * 32);
        buf.extend_from_slice(keccak256(DOMAIN_TYPE).as_slice());
        buf.extend_from_slice(keccak256(DOMAIN_NAME).as_slice());
        buf.extend_from_slice(keccak256(DOMAIN_VERSION).as_slice());
        buf.extend_from_slice(&word_u64(self.chain_id));
        buf.extend_from_slice(&word_address(&self.escrow));
        keccak256(&buf)
    }

    /// `keccak256(0x1901 || separator || structHash)`.
    pub fn voucher_digest(&self, channel: &ChannelId, cumulative: u128) -> B256 {
        let mut st = Vec::with_capacity(3 * 32);
        st.extend_from_slice(keccak256(VOUCHER_TYPE).as_slice());
        st.extend_from_slice(channel.0.as_slice());
        st.extend_from_slice(&word_u128(cumulative));
        eip712(&self.separator(), &keccak256(&st))
    }

    /// The signer of `voucher` in this domain.
    pub fn recover(&self, voucher: &Voucher) -> Result<Address, SignatureProblem> {
        voucher.signature.recover(&self.digest(voucher))
    }

    /// What `voucher`'s signature signs in this domain.
    pub fn digest(&self, voucher: &Voucher) -> B256 {
        self.voucher_digest(&voucher.channel_id, voucher.cumulative)
    }
}

pub(crate) fn eip712(separator: &B256, struct_hash: &B256) -> B256 {
    let mut buf = [0u8; 66];
    buf[0] = 0x19;
    buf[1] = 0x01;
    buf[2..34].copy_from_slice(separator.as_slice());
    buf[34..].copy_from_slice(struct_hash.as_slice());
    keccak256(buf)
}

/// `keccak256(abi.encode(payer, payee, token, salt, authorizedSigner,
/// escrow, chainId))`: the escrow's `computeChannelId`.
pub fn channel_id_v1(
    payer: Address,
    payee: Address,
    token: Address,
    salt: B256,
    authorized_signer: Address,
    escrow: Address,
    chain_id: u64,
) -> ChannelId {
    let mut buf = Vec::with_capacity(7 * 32);
    buf.extend_from_slice(&word_address(&payer));
    buf.extend_from_slice(&word_address(&payee));
    buf.extend_from_slice(&word_address(&token));
    buf.extend_from_slice(salt.as_slice());
    buf.extend_from_slice(&word_address(&authorized_signer));
    buf.extend_from_slice(&word_address(&escrow));
    buf.extend_from_slice(&word_u64(chain_id));
    ChannelId(keccak256(&buf))
}
