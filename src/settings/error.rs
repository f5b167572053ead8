//! Why a configuration is refused. Every variant's text is the operator's
//! line after `settlegate: CONFIG_INVALID: `, so it names the key and the
//! value's problem, and never quotes a secret or a URL's credentials.

use std::path::PathBuf;

/// Anything larger than this in a side file is not a key list or a URL.
pub(super) const MAX_SIDE_FILE_BYTES: u64 = 64 * 1024;

/// A configuration problem: the boot stops with `CONFIG_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The file given on the command line is not there.
    #[error("config file {} does not exist", .0.display())]
    NoSuchFile(PathBuf),
    /// A `SETTLEGATE_…` variable whose value is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(String),
    /// The layered sources did not make one document of the known keys
    /// (an unknown key, a value of the wrong type): the `config` crate's words.
    #[error("{0}")]
    Layering(String),
    /// A value given both inline and as a file.
    #[error("set {0} or {1}, not both")]
    Both(String, String),
    /// A side file (`…_file`) that cannot be read.
    #[error("{key} {}: {error}", path.display())]
    SideFile { key: String, path: PathBuf, error: String },
    /// A side file too large to be what it should hold.
    #[error("{key} {} is larger than {MAX_SIDE_FILE_BYTES} bytes", path.display())]
    SideFileTooLarge { key: String, path: PathBuf },
    /// A duration outside its bounds.
    #[error("{key} must be between {lo} and {hi} milliseconds, got {got}")]
    Millis {
        key: &'static str,
        lo: u64,
        hi: u64,
        got: u64,
    },
    /// A URL that does not parse (`shown` never holds its credentials).
    #[error("{key}: {shown} is not a URL: {reason}")]
    NotUrl { key: String, shown: String, reason: String },
    /// A URL that is not http(s) with a host.
    #[error("{key}: {shown} must be an http(s) URL with a host")]
    NotHttpUrl { key: String, shown: String },
    /// Not an IP address or a CIDR block.
    #[error("{key}: {value:?} is not an IP address or CIDR block such as 10.0.0.0/8")]
    NotNet { key: &'static str, value: String },
    /// A value its section refuses; the text names the key and the rule.
    #[error("{reason}")]
    Invalid { section: &'static str, reason: String },
}

impl SettingsError {
    /// A refusal by `section`'s own rules.
    pub fn invalid(section: &'static str, reason: impl Into<String>) -> Self {
        SettingsError::Invalid {
            section,
            reason: reason.into(),
        }
    }
}

impl From<config::ConfigError> for SettingsError {
    fn from(e: config::ConfigError) -> Self {
        SettingsError::Layering(e.to_string())
    }
}
