//! Where encryption keys come from: one resolution for `serve` and for every
//! offline command (`restore-file`, `documents extract`), so a key given as
//! a file works everywhere a key given inline does.

use std::path::PathBuf;

use clap::{Args, Parser};

use crate::error::{Error, Result};
use crate::format::codec::Keyring;

/// The key settings: flags or environment variables.
#[derive(Debug, Clone, Default, Args)]
pub struct KeySettings {
    /// 32 bytes, base64: encrypts every new backup (XChaCha20-Poly1305 STREAM).
    #[arg(long, env = "BACKUP_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// A file holding the encryption key (base64), instead of BACKUP_ENCRYPTION_KEY.
    #[arg(long, env = "BACKUP_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Older keys (base64, comma-separated) that still open old backups.
    #[arg(
        long,
        env = "BACKUP_DECRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub decryption_keys: Vec<String>,
}

impl KeySettings {
    /// The key settings the environment holds (offline commands).
    pub fn from_env() -> Result<Self> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            keys: KeySettings,
        }
        Only::try_parse_from(["backup-service"])
            .map(|only| only.keys)
            .map_err(|e| Error::invalid(format!("encryption key settings: {e}")))
    }

    /// The keyring: the inline key wins over the key file; older keys follow.
    pub fn keyring(&self) -> Result<Keyring> {
        let from_file = match &self.encryption_key_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(format!(
                    "BACKUP_ENCRYPTION_KEY_FILE {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let current = self.encryption_key.clone().or(from_file);
        Keyring::new(current.as_deref(), &self.decryption_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn a_key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", key(3))).unwrap();
        let from_file = KeySettings {
            encryption_key_file: Some(path),
            ..Default::default()
        }
        .keyring()
        .unwrap();
        let inline = KeySettings {
            encryption_key: Some(key(3)),
            ..Default::default()
        }
        .keyring()
        .unwrap();
        let (Some(a), Some(b)) = (from_file.current, inline.current) else {
            panic!("both name a current key");
        };
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn a_missing_key_file_is_a_clear_error() {
        let Err(e) = (KeySettings {
            encryption_key_file: Some("/nonexistent/backup.key".into()),
            ..Default::default()
        })
        .keyring() else {
            panic!("a missing key file must be refused");
        };
        assert!(
            e.message.contains("BACKUP_ENCRYPTION_KEY_FILE"),
            "{}",
            e.message
        );
    }
}
