//! Secrets and side files. A [`Secret`] never reaches a log line or a
//! `Debug` dump; a side file (`…_file` keys, for values kept out of the
//! environment) is read whole, bounded in size, and named by its key in
//! any refusal.

use std::fmt;
use std::path::{Path, PathBuf};

use super::SettingsError;
use super::error::MAX_SIDE_FILE_BYTES;

/// A value that must never reach a log line or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(super) fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub(super) fn read_side_file(path: &Path, key: &str) -> Result<String, SettingsError> {
    let failed = |e: std::io::Error| SettingsError::SideFile {
        key: key.to_owned(),
        path: path.to_owned(),
        error: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(failed)?;
    if meta.len() > MAX_SIDE_FILE_BYTES {
        return Err(SettingsError::SideFileTooLarge {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(failed)
}

/// A value given inline (`prefix.key`) or in a file (`prefix.key_file`),
/// not both; `None` when neither is set.
pub(super) fn inline_or_file(
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Either>, SettingsError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(SettingsError::Both(key.to_owned(), format!("{key}_file"))),
        (Some(v), None) => Ok(Some(Either::Inline(v))),
        (None, Some(path)) => Ok(Some(Either::File(path))),
        (None, None) => Ok(None),
    }
}

/// Where a value given one way or the other came from.
pub(super) enum Either {
    Inline(String),
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, load};

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("redis-url");
        std::fs::write(&f, "redis://:hunter2@127.0.0.1:6379\n").unwrap();
        let s = load(&[
            ("SETTLEGATE_TRUST__KEYS", &key(1)),
            ("SETTLEGATE_REDIS__URL_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(
            s.redis.as_ref().unwrap().urls[0].expose(),
            "redis://:hunter2@127.0.0.1:6379"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
