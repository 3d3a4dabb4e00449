//! Google credentials for the Drive backend, through yup-oauth2: a service-account key
//! (`gdrive_credentials=KEY.json`, the JWT flow against the key's `token_uri`) or the
//! installed-app login cached in a token file (`smpfs gdrive login`, `gdrive_token=PATH`).
//!
//! Invariants:
//! - mounts ask for the read-only scope, sealing for the file scope; `login` asks for both
//!   at once, so one cached token serves mounts and seals;
//! - the token file is written with mode 0600 (write to a temporary file, fsync, rename)
//!   and refused if group or others can read it; it holds the OAuth client and the
//!   tokens, never anything of smpfs's keys;
//! - a daemon never starts an interactive login: a cached login that cannot be refreshed
//!   is an error saying to run `smpfs gdrive login`;
//! - tokens and keys are never logged.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use google_drive3::api::Scope;
use google_drive3::common::GetToken;
use google_drive3::yup_oauth2::authenticator::Authenticator;
use google_drive3::yup_oauth2::authenticator_delegate::InstalledFlowDelegate;
use google_drive3::yup_oauth2::storage::{TokenInfo, TokenStorage, TokenStorageError};
use google_drive3::yup_oauth2::{
    self, ApplicationSecret, ConsoleApplicationSecret, CustomHyperClientBuilder,
    InstalledFlowAuthenticator, InstalledFlowReturnMethod, ServiceAccountAuthenticator,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Connector;
use crate::backend::BackendError;

/// Where `smpfs gdrive login` caches its token unless told otherwise:
/// `$XDG_CONFIG_HOME/smpfs/gdrive-token.json` (or `~/.config/…`).
pub fn default_token_path() -> PathBuf {
    config_dir().join("gdrive-token.json")
}

/// Where `smpfs gdrive login` looks for the OAuth client unless told otherwise:
/// `$XDG_CONFIG_HOME/smpfs/gdrive-client.json` (or `~/.config/…`).
pub fn default_client_secret_path() -> PathBuf {
    config_dir().join("gdrive-client.json")
}

fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"))
        .join("smpfs")
}

/// A source of access tokens for one scope set; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    authenticator: Authenticator<Connector>,
    scopes: Vec<&'static str>,
    /// What the credentials are, for messages ("service account a@b", "the login in P").
    what: String,
}

fn client_builder(connector: Connector) -> CustomHyperClientBuilder<Connector> {
    let client = google_drive3::hyper_util::client::legacy::Client::builder(
        google_drive3::hyper_util::rt::TokioExecutor::new(),
    )
    .build::<_, String>(connector);
    CustomHyperClientBuilder::from(client)
}

fn read_error(path: &Path, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::BadSource {
        source_text: path.display().to_string(),
        reason: format!("cannot use it as {what}: {e}"),
    }
}

impl Auth {
    /// Credentials from a service-account key file, asking for the file scope if
    /// `writable`, else the read-only scope. Makes no request.
    pub async fn service_account(
        key_path: &Path,
        connector: Connector,
        writable: bool,
    ) -> Result<Self, BackendError> {
        let key = yup_oauth2::read_service_account_key(key_path)
            .await
            .map_err(|e| read_error(key_path, "a service-account key", e))?;
        let what = format!("service account {}", key.client_email);
        let authenticator =
            ServiceAccountAuthenticator::with_client(key, client_builder(connector))
                .build()
                .await
                .map_err(|e| read_error(key_path, "a service-account key", e))?;
        Ok(Auth {
            authenticator,
            scopes: vec![scope(writable)],
            what,
        })
    }

    /// Credentials from a token file written by [`login`]; never prompts. Makes no request.
    pub async fn token_file(
        path: &Path,
        connector: Connector,
        writable: bool,
    ) -> Result<Self, BackendError> {
        let file = TokenFile::load(path)?;
        let client = file.stored.lock().client.clone();
        // Interactive, so that the refusing delegate ends the flow (the redirect flow
        // ignores the delegate's answer and waits for a browser).
        let authenticator = InstalledFlowAuthenticator::with_client(
            client,
            InstalledFlowReturnMethod::Interactive,
            client_builder(connector),
        )
        .with_storage(Box::new(file))
        .flow_delegate(Box::new(NoPrompt))
        .build()
        .await
        .map_err(|e| read_error(path, "a Google login", e))?;
        Ok(Auth {
            authenticator,
            scopes: vec![scope(writable)],
            what: format!("the Google login in {}", path.display()),
        })
    }

    /// What the credentials are, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// A current access token (cached until it nearly expires).
    pub async fn token(&self) -> Result<String, yup_oauth2::Error> {
        let token = self.authenticator.token(&self.scopes).await?;
        token
            .token()
            .map(str::to_owned)
            .ok_or(yup_oauth2::Error::MissingAccessToken)
    }

    /// A new access token, for when the server refused the cached one (401).
    pub async fn refresh(&self) -> Result<String, yup_oauth2::Error> {
        let token = self
            .authenticator
            .force_refreshed_token(&self.scopes)
            .await?;
        token
            .token()
            .map(str::to_owned)
            .ok_or(yup_oauth2::Error::MissingAccessToken)
    }
}

fn scope(writable: bool) -> &'static str {
    if writable {
        Scope::File.as_ref()
    } else {
        Scope::Readonly.as_ref()
    }
}

impl GetToken for Auth {
    fn get_token<'a>(
        &'a self,
        _scopes: &'a [&str],
    ) -> Pin<
        Box<
            dyn Future<Output = Result<Option<String>, Box<dyn std::error::Error + Send + Sync>>>
                + Send
                + 'a,
        >,
    > {
        // The scope is the backend's (read-only for mounts), whatever a call asks for.
        Box::pin(async move { Ok(Some(self.token().await?)) })
    }
}

/// Refuses to start an interactive login inside a mount or a seal.
struct NoPrompt;

impl InstalledFlowDelegate for NoPrompt {
    fn present_user_url<'a>(
        &'a self,
        _url: &'a str,
        _need_code: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async {
            Err(
                "the cached Google login has no valid token and could not be refreshed \
                 (revoked, expired or for other scopes): run `smpfs gdrive login` again"
                    .to_owned(),
            )
        })
    }
}

/// Shows the consent URL on stderr for `smpfs gdrive login`.
struct ShowUrl;

impl InstalledFlowDelegate for ShowUrl {
    fn present_user_url<'a>(
        &'a self,
        url: &'a str,
        _need_code: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            eprintln!("Open this URL in a browser on this machine and allow access:\n{url}");
            Ok(String::new())
        })
    }
}

/// Runs the installed-app login with the OAuth client in `client_secret` (a "Desktop app"
/// client JSON from the Google Cloud console) and caches the tokens, for both scopes, in
/// `token_path` (mode 0600). Returns once a token was obtained and stored.
pub async fn login(
    client_secret: &Path,
    token_path: &Path,
    connector: Connector,
) -> Result<(), BackendError> {
    let text = tokio::fs::read(client_secret)
        .await
        .map_err(|e| read_error(client_secret, "an OAuth client", e))?;
    let console: ConsoleApplicationSecret = serde_json::from_slice(&text)
        .map_err(|e| read_error(client_secret, "an OAuth client", e))?;
    let client = console.installed.or(console.web).ok_or_else(|| {
        read_error(
            client_secret,
            "an OAuth client",
            "it has no \"installed\" (Desktop app) client",
        )
    })?;
    let storage = TokenFile::create(token_path, client.clone())?;
    let authenticator = InstalledFlowAuthenticator::with_client(
        client,
        InstalledFlowReturnMethod::HTTPRedirect,
        client_builder(connector),
    )
    .with_storage(Box::new(storage))
    .flow_delegate(Box::new(ShowUrl))
    .build()
    .await
    .map_err(|e| read_error(client_secret, "an OAuth client", e))?;
    authenticator
        .token(&[Scope::Readonly.as_ref(), Scope::File.as_ref()])
        .await
        .map_err(|e| BackendError::Remote {
            context: "Google login".into(),
            message: e.to_string(),
        })?;
    Ok(())
}

/// The token file: the OAuth client and the tokens obtained with it.
#[derive(Serialize, Deserialize)]
struct Stored {
    client: ApplicationSecret,
    tokens: Vec<StoredToken>,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    scopes: Vec<String>,
    token: TokenInfo,
}

/// yup-oauth2 token storage in one 0600 JSON file.
struct TokenFile {
    path: PathBuf,
    stored: Mutex<Stored>,
}

impl TokenFile {
    fn load(path: &Path) -> Result<Self, BackendError> {
        let io = |e: std::io::Error| {
            read_error(
                path,
                "a Google login",
                format!("{e} (run `smpfs gdrive login` first, or pass gdrive_credentials=)"),
            )
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(read_error(
                path,
                "a Google login",
                format!("mode {:o} lets others read it; chmod 600 it", mode & 0o777),
            ));
        }
        let stored = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| read_error(path, "a Google login", e))?;
        Ok(TokenFile {
            path: path.to_owned(),
            stored: Mutex::new(stored),
        })
    }

    fn create(path: &Path, client: ApplicationSecret) -> Result<Self, BackendError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BackendError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(TokenFile {
            path: path.to_owned(),
            stored: Mutex::new(Stored {
                client,
                tokens: Vec::new(),
            }),
        })
    }

    /// Writes the file: a 0600 temporary file beside it, fsynced, renamed over it.
    fn save(&self, stored: &Stored) -> std::io::Result<()> {
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, &self.path)
    }
}

#[async_trait::async_trait]
impl TokenStorage for TokenFile {
    async fn set(&self, scopes: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        let mut stored = self.stored.lock();
        let mut scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        scopes.sort();
        stored.tokens.retain(|t| t.scopes != scopes);
        stored.tokens.push(StoredToken { scopes, token });
        self.save(&stored)?;
        Ok(())
    }

    /// A token whose scopes include all of `scopes`.
    async fn get(&self, scopes: &[&str]) -> Option<TokenInfo> {
        let stored = self.stored.lock();
        stored
            .tokens
            .iter()
            .rev()
            .find(|t| scopes.iter().all(|s| t.scopes.iter().any(|have| have == s)))
            .map(|t| t.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ApplicationSecret {
        ApplicationSecret {
            client_id: "id".into(),
            client_secret: "secret".into(),
            token_uri: "http://127.0.0.1:1/token".into(),
            auth_uri: "http://127.0.0.1:1/auth".into(),
            ..Default::default()
        }
    }

    fn token(access: &str) -> TokenInfo {
        TokenInfo {
            access_token: Some(access.into()),
            refresh_token: Some("refresh".into()),
            expires_at: None,
            id_token: None,
        }
    }

    #[tokio::test]
    async fn token_file_is_0600_and_serves_subsets_of_its_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.json");
        let file = TokenFile::create(&path, client()).unwrap();
        file.set(&["b", "a"], token("one")).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = TokenFile::load(&path).unwrap();
        assert_eq!(loaded.get(&["a"]).await, Some(token("one")));
        assert_eq!(loaded.get(&["a", "b"]).await, Some(token("one")));
        assert_eq!(loaded.get(&["c"]).await, None);
        loaded.set(&["a", "b"], token("two")).await.unwrap();
        assert_eq!(loaded.get(&["b"]).await, Some(token("two")));
        assert_eq!(loaded.stored.lock().tokens.len(), 1);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(TokenFile::load(&path).is_err());
    }
}
