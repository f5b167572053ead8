//! Session v2: the TIP-20 channel reserve precompile (TIP-1034), active from
//! Tempo hardfork T5. No chain this service runs on has it yet (anvil stops
//! at T4), so only its pure encodings live here, checked against viem:
//! the channel id of a descriptor, the EIP-712 domain `"TIP20 Channel
//! Reserve"` and the voucher digest over a `uint96` amount.
//!
//! A v2 channel is named by its full descriptor (an `operator` may settle
//! for the payee; `expiringNonceHash` ties it to the opening transaction),
//! and the precompile's address is the verifying contract.

use alloy_primitives::{Address, B256, address, keccak256};

use super::ChannelId;
use super::voucher::{DOMAIN_TYPE, DOMAIN_VERSION, eip712, word_address, word_u64, word_u128};

/// The precompile's address.
pub const PRECOMPILE: Address = address!("4d50500000000000000000000000000000000000");
pub const DOMAIN_NAME: &str = "TIP20 Channel Reserve";
pub const VOUCHER_TYPE: &str = "Voucher(bytes32 channelId,uint96 cumulativeAmount)";
/// Amounts are `uint96`.
pub const MAX_AMOUNT: u128 = (1u128 << 96) - 1;

/// What names a v2 channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub payer: Address,
    pub payee: Address,
    pub operator: Address,
    pub token: Address,
    pub salt: B256,
    pub authorized_signer: Address,
    pub expiring_nonce_hash: B256,
}

impl Descriptor {
    /// `keccak256(abi.encode(payer, payee, operator, token, salt,
    /// authorizedSigner, expiringNonceHash, PRECOMPILE, chainId))`.
    pub fn channel_id(&self, chain_id: u64) -> ChannelId {
        let mut buf = Vec::with_capacity(9 * 32);
        buf.extend_from_slice(&word_address(&self.payer));
        buf.extend_from_slice(&word_address(&self.payee));
        buf.extend_from_slice(&word_address(&self.operator));
        buf.extend_from_slice(&word_address(&self.token));
        buf.extend_from_slice(self.salt.as_slice());
        buf.extend_from_slice(&word_address(&self.authorized_signer));
        buf.extend_from_slice(self.expiring_nonce_hash.as_slice());
        buf.extend_from_slice(&word_address(&PRECOMPILE));
        buf.extend_from_slice(&word_u64(chain_id));
        ChannelId(keccak256(&buf))
    }

    /// Who signs vouchers: the authorized signer, or the payer when zero.
    pub fn expected_signer(&self) -> Address {
        if self.authorized_signer == Address::ZERO {
            self.payer
        } else {
            self.authorized_signer
        }
    }
}

/// The domain separator of the precompile on `chain_id`.
pub fn separator(chain_id: u64) -> B256 {
    let mut buf = Vec::with_capacity(5 * 32);
    buf.extend_from_slice(keccak256(DOMAIN_TYPE).as_slice());
    buf.extend_from_slice(keccak256(DOMAIN_NAME).as_slice());
    buf.extend_from_slice(keccak256(DOMAIN_VERSION).as_slice());
    buf.extend_from_slice(&word_u64(chain_id));
    buf.extend_from_slice(&word_address(&PRECOMPILE));
    keccak256(&buf)
}

/// The voucher digest, or `None` when `cumulative` does not fit `uint96`
/// (the precompile could never settle it).
pub fn voucher_digest(chain_id: u64, channel: &ChannelId, cumulative: u128) -> Option<B256> {
    if cumulative > MAX_AMOUNT {
        return None;
    }
    let mut st = Vec::with_capacity(3 * 32);
    st.extend_from_slice(keccak256(VOUCHER_TYPE).as_slice());
    st.extend_from_slice(channel.0.as_slice());
    st.extend_from_slice(&word_u128(cumulative));
    Some(eip712(&separator(chain_id), &keccak256(&st)))
}

#[cfg(test)]
mod tests {
    use alloy_primitives::b256;

    use super::*;

    /// Vectors from viem 2.56.8 (`encodeAbiParameters`, `hashDomain`,
    /// `hashTypedData`).
    const ID: &str = "0x81afce8c858bf37a39301acc07561a8b0109b9e83ba1df74cf681aad619867ae";

    fn descriptor() -> Descriptor {
        Descriptor {
            payer: address!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
            payee: address!("70997970c51812dc3a010c7d01b50e0d17dc79c8"),
            operator: address!("3c44cdddb6a900fa2b585dd299e03d12fa4293bc"),
            token: address!("20c0000000000000000000000000000000000001"),
            salt: B256::repeat_byte(0x11),
            authorized_signer: Address::ZERO,
            expiring_nonce_hash: B256::repeat_byte(0x33),
        }
    }

    #[test]
    fn channel_id_separator_and_digest_match_viem() {
        let id = descriptor().channel_id(42431);
        assert_eq!(id.to_string(), ID);
        assert_ne!(descriptor().channel_id(4217), id);
        assert_eq!(
            separator(42431),
            b256!("a3aa475070603a80823360e5a4a0d3b4fe2cd4e82a109ee3c21a4640a199688d")
        );
        assert_eq!(
            voucher_digest(42431, &id, MAX_AMOUNT),
            Some(b256!(
                "8abb1a1eefaa295840b8ad6f6f2336595f53eedb418e09fe3502bc0f162d8954"
            ))
        );
        assert_eq!(voucher_digest(42431, &id, MAX_AMOUNT + 1), None);
        assert_eq!(descriptor().expected_signer(), descriptor().payer);
    }
}
