//! The typed genome errors. Each variant has exactly one stable code; the code is what operators grep for and what the
//! boot line prints, so it is never derived from message text.

/// Why a genome was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenomeError {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    InvalidSchema(String),
    #[error("the genome carries no signature")]
    Unsigned,
    #[error("{0}")]
    UntrustedSigner(String),
    #[error("{0}")]
    SignatureInvalid(String),
    #[error("{0}")]
    ThresholdNotMet(String),
    #[error("{0}")]
    NotYetValid(String),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    PolicyInvalid(String),
    #[error("{0}")]
    ManifestMismatch(String),
    #[error("{0}")]
    Rollback(String),
    #[error("{0}")]
    PolicyConflict(String),
}

impl GenomeError {
    /// The stable code of genome.md.
    pub fn code(&self) -> &'static str {
        match self {
            GenomeError::Missing(_) => "GENOME_MISSING",
            GenomeError::Unreadable(_) => "GENOME_UNREADABLE",
            GenomeError::InvalidSchema(_) => "GENOME_INVALID_SCHEMA",
            GenomeError::Unsigned => "GENOME_UNSIGNED",
            GenomeError::UntrustedSigner(_) => "GENOME_UNTRUSTED_SIGNER",
            GenomeError::SignatureInvalid(_) => "GENOME_SIGNATURE_INVALID",
            GenomeError::ThresholdNotMet(_) => "GENOME_THRESHOLD_NOT_MET",
            GenomeError::NotYetValid(_) => "GENOME_NOT_YET_VALID",
            GenomeError::Expired(_) => "GENOME_EXPIRED",
            GenomeError::PolicyInvalid(_) => "GENOME_POLICY_INVALID",
            GenomeError::ManifestMismatch(_) => "GENOME_MANIFEST_MISMATCH",
            GenomeError::Rollback(_) => "GENOME_ROLLBACK",
            GenomeError::PolicyConflict(_) => "GENOME_POLICY_CONFLICT",
        }
    }
}
