//! Dropbox credentials: OAuth 2 with PKCE (`smpfs dropbox login`, no app secret) and a
//! long-lived refresh token cached in a token file that mounts and seals use
//! (`dropbox_token=PATH`).
//!
//! Invariants:
//! - the token file is written with mode 0600 (a temporary file beside it, fsynced,
//!   renamed over it) and refused if group or others may read it; it holds the app key and
//!   the tokens, never anything of smpfs's keys;
//! - an access token is refreshed with the refresh token when it is within a minute of its
//!   expiry, or when the server refused it (401 `expired_access_token`); concurrent callers
//!   that saw the same refused token share one refresh;
//! - a refusal of the refresh token (`invalid_grant`: revoked, or another app's) is an
//!   error saying to run `smpfs dropbox login`; a token server that cannot be reached is
//!   transient; a daemon never starts an interactive login;
//! - tokens are never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::client::{http_client, Connector, Failure, Kind};
use crate::backend::BackendError;

/// Where `smpfs dropbox login` caches its tokens unless told otherwise:
/// `$XDG_CONFIG_HOME/smpfs/dropbox-token.json` (or `~/.config/…`), beside the Drive login.
pub fn default_token_path() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"))
        .join("smpfs")
        .join("dropbox-token.json")
}

/// The token file's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    /// The app key (OAuth client id) the tokens were issued to; refreshing needs it.
    pub app_key: String,
    /// The long-lived refresh token.
    pub refresh_token: String,
    /// The last access token, if any.
    #[serde(default)]
    pub access_token: Option<String>,
    /// When `access_token` expires, in seconds since the epoch.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The Dropbox account, for messages.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn bad_file(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::BadSource {
        source_text: path.display().to_string(),
        reason: format!("cannot use it as a Dropbox login: {e}"),
    }
}

impl Stored {
    /// Reads a token file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Self, BackendError> {
        let io = |e: std::io::Error| {
            bad_file(
                path,
                format!("{e} (run `smpfs dropbox login` first, or pass dropbox_token=)"),
            )
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(bad_file(
                path,
                format!("mode {:o} lets others read it; chmod 600 it", mode & 0o777),
            ));
        }
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| bad_file(path, e))
    }

    /// Writes the file: a 0600 temporary file beside it, fsynced, renamed over it
    /// (creating its directory if needed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut temp = path.to_owned().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the token endpoint answers.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

/// POSTs a form to the token endpoint on a client of its own (so it works on any runtime,
/// see [`crate::backend::remote::BlockingRuntime::run_here`]).
async fn token_request(
    connector: &Connector,
    url: &str,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, Failure> {
    use google_drive3::hyper;
    use http_body_util::{BodyExt, Full};
    let context = || format!("getting a Dropbox access token from {url}");
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, FORM)))
        .collect::<Vec<_>>()
        .join("&");
    let request = hyper::Request::post(url)
        .header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(hyper::body::Bytes::from(body)))
        .map_err(|e| Failure::fatal(context(), e.to_string()))?;
    let response = http_client(connector.clone(), 0)
        .request(request)
        .await
        .map_err(|e| {
            Failure::transient(
                context(),
                format!("token server: {}", super::client::chain(&e)),
            )
        })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::transient(context(), format!("token server: {e}")))?
        .to_bytes();
    if status == 429 || status >= 500 {
        return Err(Failure::transient(
            context(),
            format!("token server: HTTP {status}"),
        ));
    }
    if status != 200 {
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let error = json["error"].as_str().unwrap_or("error");
        let description = json["error_description"].as_str().unwrap_or_default();
        return Err(Failure::fatal(
            context(),
            format!(
                "Dropbox refused the credentials (HTTP {status} {error}: {description}); \
                 run `smpfs dropbox login` again"
            ),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::fatal(
            context(),
            format!("the token endpoint's answer is not a token: {e}"),
        )
    })
}

/// Characters percent-encoded in a form value.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The current access token and what refreshes it.
pub struct Auth {
    path: PathBuf,
    token_url: String,
    connector: Connector,
    stored: tokio::sync::Mutex<Stored>,
}

impl Auth {
    /// Credentials from the token file at `path`, refreshed at `token_url`. Makes no
    /// request.
    pub fn load(
        path: &Path,
        token_url: String,
        connector: Connector,
    ) -> Result<Self, BackendError> {
        Ok(Auth {
            stored: tokio::sync::Mutex::new(Stored::load(path)?),
            path: path.to_owned(),
            token_url,
            connector,
        })
    }

    /// What the credentials are, for messages.
    pub fn describe(&self) -> String {
        format!("the Dropbox login in {}", self.path.display())
    }

    /// An access token valid for at least another minute, refreshed if needed.
    pub async fn token(&self) -> Result<String, Failure> {
        let mut stored = self.stored.lock().await;
        match (&stored.access_token, stored.expires_at) {
            (Some(token), Some(at)) if at > now_secs() + 60 => Ok(token.clone()),
            (Some(token), None) => Ok(token.clone()),
            _ => self.refresh_locked(&mut stored).await,
        }
    }

    /// A new access token after the server refused `refused`; if another caller has
    /// already replaced it, that one.
    pub async fn refresh(&self, refused: &str) -> Result<String, Failure> {
        let mut stored = self.stored.lock().await;
        match &stored.access_token {
            Some(token) if token != refused => Ok(token.clone()),
            _ => self.refresh_locked(&mut stored).await,
        }
    }

    async fn refresh_locked(&self, stored: &mut Stored) -> Result<String, Failure> {
        tracing::info!("refreshing the Dropbox access token");
        let answer = token_request(
            &self.connector,
            &self.token_url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &stored.refresh_token),
                ("client_id", &stored.app_key),
            ],
        )
        .await
        .map_err(|mut f| {
            if let BackendError::Remote { context, .. } = &mut f.error {
                *context = format!("refreshing {}", self.describe());
            }
            f
        })?;
        stored.access_token = Some(answer.access_token.clone());
        stored.expires_at = answer.expires_in.map(|s| now_secs() + s);
        if let Some(refresh) = answer.refresh_token {
            stored.refresh_token = refresh;
        }
        if let Err(e) = stored.save(&self.path) {
            // The new token works all the same; the next process refreshes again.
            tracing::warn!(path = %self.path.display(), "cannot cache the new access token: {e}");
        }
        Ok(answer.access_token)
    }
}

/// A PKCE pair: the secret verifier (43 URL-safe characters from 32 random bytes) and its
/// S256 challenge, `base64url(sha256(verifier))` without padding.
pub fn pkce_pair() -> Result<(String, String), BackendError> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).map_err(|e| BackendError::Io {
        context: "drawing the PKCE verifier".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = engine.encode(random);
    let challenge = engine.encode(Sha256::digest(verifier.as_bytes()));
    Ok((verifier, challenge))
}

/// The URL that asks the user to allow app `app_key` (offline access: a refresh token),
/// with the PKCE `challenge`; `authorize` is `https://www.dropbox.com/oauth2/authorize`
/// outside tests.
pub fn authorize_url(authorize: &str, app_key: &str, challenge: &str) -> String {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, FORM).to_string();
    format!(
        "{authorize}?client_id={}&response_type=code&token_access_type=offline\
         &code_challenge={}&code_challenge_method=S256",
        enc(app_key),
        enc(challenge)
    )
}

/// Exchanges an authorization `code` (with the PKCE `verifier`) at `token_url` and caches
/// the tokens in `token_path` (mode 0600).
pub async fn exchange(
    connector: &Connector,
    token_url: &str,
    app_key: &str,
    code: &str,
    verifier: &str,
    token_path: &Path,
) -> Result<Stored, BackendError> {
    let answer = token_request(
        connector,
        token_url,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("client_id", app_key),
        ],
    )
    .await
    .map_err(|f| match f.kind {
        Kind::Transient => f.error,
        _ => BackendError::Remote {
            context: "exchanging the authorization code".into(),
            message: f.error.to_string(),
        },
    })?;
    let refresh_token = answer.refresh_token.ok_or_else(|| BackendError::Remote {
        context: "exchanging the authorization code".into(),
        message: "the answer has no refresh token (token_access_type=offline was not honoured)"
            .into(),
    })?;
    let stored = Stored {
        app_key: app_key.to_owned(),
        refresh_token,
        access_token: Some(answer.access_token),
        expires_at: answer.expires_in.map(|s| now_secs() + s),
        account_id: answer.account_id,
    };
    stored.save(token_path).map_err(|source| BackendError::Io {
        context: format!("writing {}", token_path.display()),
        source,
    })?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        let (verifier, challenge) = pkce_pair().unwrap();
        assert_eq!(verifier.len(), 43);
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            challenge,
            engine.encode(Sha256::digest(verifier.as_bytes()))
        );
        assert_ne!(pkce_pair().unwrap().0, verifier);
        let url = authorize_url("https://x/oauth2/authorize", "k y", &challenge);
        assert!(url.starts_with("https://x/oauth2/authorize?client_id=k%20y&"));
        assert!(url.contains("code_challenge_method=S256"));
    }

    #[test]
    fn token_file_is_0600_and_refused_when_others_may_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.json");
        let stored = Stored {
            app_key: "k".into(),
            refresh_token: "r".into(),
            access_token: None,
            expires_at: None,
            account_id: None,
        };
        stored.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Stored::load(&path).unwrap(), stored);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Stored::load(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }
}
