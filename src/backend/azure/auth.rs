//! Azure credentials, found the usual way (the order of the Azure CLI and SDKs), and the
//! Shared Key signature.
//!
//! Invariants:
//! - the first source that is configured wins, in this order: `AZURE_STORAGE_CONNECTION_STRING`
//!   (account key or SAS, and its endpoint), an account key (`AZURE_STORAGE_KEY` or
//!   `AZURE_STORAGE_ACCOUNT_KEY`), a SAS token (`AZURE_STORAGE_SAS_TOKEN`), a service
//!   principal (`AZURE_CLIENT_ID` and `AZURE_TENANT_ID` with `AZURE_CLIENT_SECRET` or
//!   `AZURE_FEDERATED_TOKEN_FILE`), the Azure CLI's login (when `az` is on `PATH`), and
//!   last the managed identity of the machine (IMDS);
//! - a connection string naming another account than the source's is refused, never
//!   silently used for the wrong account;
//! - secrets are never part of an error message or a log line;
//! - a bearer token is reused until five minutes before it expires, then fetched again.

use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::backend::BackendError;

/// The audience of storage tokens.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Where Entra ID tokens come from unless `AZURE_AUTHORITY_HOST` says otherwise.
const AUTHORITY: &str = "https://login.microsoftonline.com";
/// The instance metadata service of an Azure VM.
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How requests are authorized.
pub enum Credential {
    /// Shared Key: requests signed with the account key (decoded bytes).
    SharedKey(Vec<u8>),
    /// A SAS token: query parameters appended to every URL (without the leading `?`).
    Sas(String),
    /// An Entra ID bearer token from `source`, cached until shortly before it expires.
    Token {
        source: TokenSource,
        cached: tokio::sync::Mutex<Option<(String, Instant)>>,
    },
}

/// Where bearer tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A service principal's client secret.
    ClientSecret {
        tenant: String,
        client: String,
        secret: String,
    },
    /// Workload identity: a federated token file exchanged for an access token.
    Federated {
        tenant: String,
        client: String,
        file: String,
    },
    /// `az account get-access-token`.
    AzureCli,
    /// The machine's managed identity (IMDS), optionally a user-assigned one.
    ManagedIdentity { client: Option<String> },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Credential {
    /// What kind of credential this is, for messages (never the secret).
    pub fn describe(&self) -> &'static str {
        match self {
            Credential::SharedKey(_) => "the account key",
            Credential::Sas(_) => "the SAS token",
            Credential::Token { source, .. } => match source {
                TokenSource::ClientSecret { .. } => "the service principal (AZURE_CLIENT_SECRET)",
                TokenSource::Federated { .. } => {
                    "the workload identity (AZURE_FEDERATED_TOKEN_FILE)"
                }
                TokenSource::AzureCli => "the Azure CLI login (`az login`)",
                TokenSource::ManagedIdentity { .. } => "the managed identity",
            },
        }
    }

    fn token(source: TokenSource) -> Self {
        Credential::Token {
            source,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

/// A credential and, from a connection string, the endpoint it names.
#[derive(Debug)]
pub struct Found {
    /// How to authorize.
    pub credential: Credential,
    /// The account's blob endpoint, when a connection string gives one.
    pub endpoint: Option<String>,
}

/// The parts of a connection string (`Key=Value;…`), by lower-cased key.
fn connection_string(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// Azurite's published development account and key.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The published key of [`DEV_ACCOUNT`] (not a secret).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn decode_key(what: &str, key: &str) -> Result<Vec<u8>, BackendError> {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| BackendError::BadSource {
            source_text: what.to_owned(),
            reason: "the account key is not base64".into(),
        })
}

/// The credential for `account`, from `env` (a variable's value by name), in the order of
/// the module docs; `az_on_path` tells whether the Azure CLI can be asked.
pub fn find(
    account: &str,
    env: impl Fn(&str) -> Option<String>,
    az_on_path: bool,
) -> Result<Found, BackendError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(text) = env("AZURE_STORAGE_CONNECTION_STRING") {
        let parts = connection_string(&text);
        let get = |k: &str| parts.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let bad = |reason: String| BackendError::BadSource {
            source_text: "AZURE_STORAGE_CONNECTION_STRING".into(),
            reason,
        };
        let dev = get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let named = get("accountname").or(dev.then(|| DEV_ACCOUNT.to_owned()));
        if let Some(named) = &named {
            if named != account {
                return Err(bad(format!(
                    "the connection string is for account {named:?}, the source names {account:?}"
                )));
            }
        }
        let endpoint = get("blobendpoint").or_else(|| {
            if dev {
                return Some(format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
            }
            let suffix = get("endpointsuffix")?;
            let scheme = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
            Some(format!("{scheme}://{account}.blob.{suffix}"))
        });
        let credential = if let Some(key) = get("accountkey") {
            Credential::SharedKey(decode_key("AZURE_STORAGE_CONNECTION_STRING", &key)?)
        } else if let Some(sas) = get("sharedaccesssignature") {
            Credential::Sas(sas.trim_start_matches('?').to_owned())
        } else if dev {
            Credential::SharedKey(decode_key("UseDevelopmentStorage", DEV_KEY)?)
        } else {
            return Err(bad(
                "the connection string has neither AccountKey nor SharedAccessSignature".into(),
            ));
        };
        return Ok(Found {
            credential,
            endpoint,
        });
    }
    let found = |credential| {
        Ok(Found {
            credential,
            endpoint: None,
        })
    };
    for name in ["AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY"] {
        if let Some(key) = env(name) {
            return found(Credential::SharedKey(decode_key(name, &key)?));
        }
    }
    if let Some(sas) = env("AZURE_STORAGE_SAS_TOKEN") {
        return found(Credential::Sas(
            sas.trim().trim_start_matches('?').to_owned(),
        ));
    }
    if let (Some(client), Some(tenant)) = (env("AZURE_CLIENT_ID"), env("AZURE_TENANT_ID")) {
        if let Some(secret) = env("AZURE_CLIENT_SECRET") {
            return found(Credential::token(TokenSource::ClientSecret {
                tenant,
                client,
                secret,
            }));
        }
        if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
            return found(Credential::token(TokenSource::Federated {
                tenant,
                client,
                file,
            }));
        }
    }
    if az_on_path {
        return found(Credential::token(TokenSource::AzureCli));
    }
    found(Credential::token(TokenSource::ManagedIdentity {
        client: env("AZURE_CLIENT_ID"),
    }))
}

/// Whether an executable `az` is on `PATH`.
pub fn az_on_path() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("az"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The Shared Key `Authorization` value of a request: `method`, the standard headers that
/// are signed (`content_length` empty for none or 0, `content_md5`, `content_type`,
/// `if_match`, `if_none_match`), every `x-ms-*` header in `ms_headers` (lower-case names),
/// the URL's encoded `path` and its decoded `query` pairs.
#[allow(clippy::too_many_arguments)]
pub fn shared_key(
    account: &str,
    key: &[u8],
    method: &str,
    content_length: u64,
    content_md5: &str,
    content_type: &str,
    if_match: &str,
    if_none_match: &str,
    ms_headers: &[(&str, String)],
    path: &str,
    query: &[(&str, String)],
) -> String {
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut headers: Vec<_> = ms_headers.to_vec();
    headers.sort();
    let mut query: Vec<_> = query.to_vec();
    query.sort();
    let mut text = format!(
        "{method}\n\n\n{length}\n{content_md5}\n{content_type}\n\n\n{if_match}\n{if_none_match}\n\n\n"
    );
    for (name, value) in &headers {
        text.push_str(&format!("{name}:{}\n", value.trim()));
    }
    text.push_str(&format!("/{account}{path}"));
    for (name, value) in &query {
        text.push_str(&format!("\n{}:{value}", name.to_ascii_lowercase()));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(text.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{signature}")
}

/// An access token and how long it lasts, from a token endpoint's JSON answer.
fn parse_token(json: &serde_json::Value) -> Option<(String, Duration)> {
    let token = json["access_token"]
        .as_str()
        .or(json["accessToken"].as_str())?;
    let lasts = match &json["expires_in"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .or_else(|| {
        let on = json["expires_on"].as_u64()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(on.saturating_sub(now))
    })
    .unwrap_or(600);
    Some((token.to_owned(), Duration::from_secs(lasts)))
}

/// What a token request sends: method, URL, extra headers, form body.
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Where to.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// URL-encoded form, empty for a GET.
    pub form: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", super::client::encode(k), super::client::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl TokenSource {
    /// The HTTP request that fetches a token, or `None` for the Azure CLI (a command).
    pub fn request(&self) -> Result<Option<TokenRequest>, BackendError> {
        let authority = std::env::var("AZURE_AUTHORITY_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| AUTHORITY.into());
        let authority = authority.trim_end_matches('/');
        Ok(Some(match self {
            TokenSource::ClientSecret {
                tenant,
                client,
                secret,
            } => TokenRequest {
                method: "POST",
                url: format!("{authority}/{tenant}/oauth2/v2.0/token"),
                headers: Vec::new(),
                form: form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                    ("scope", STORAGE_SCOPE),
                ]),
            },
            TokenSource::Federated {
                tenant,
                client,
                file,
            } => {
                let assertion =
                    std::fs::read_to_string(file).map_err(|source| BackendError::Io {
                        context: format!("reading AZURE_FEDERATED_TOKEN_FILE {file}"),
                        source,
                    })?;
                TokenRequest {
                    method: "POST",
                    url: format!("{authority}/{tenant}/oauth2/v2.0/token"),
                    headers: Vec::new(),
                    form: form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", assertion.trim()),
                        ("scope", STORAGE_SCOPE),
                    ]),
                }
            }
            TokenSource::ManagedIdentity { client } => {
                let mut url = format!(
                    "{IMDS}?api-version=2018-02-01&resource={}",
                    super::client::encode("https://storage.azure.com/")
                );
                if let Some(client) = client {
                    url.push_str(&format!("&client_id={client}"));
                }
                TokenRequest {
                    method: "GET",
                    url,
                    headers: vec![("Metadata", "true".into())],
                    form: String::new(),
                }
            }
            TokenSource::AzureCli => return Ok(None),
        }))
    }

    /// A token from the Azure CLI (`az account get-access-token`), run without a shell.
    pub async fn from_cli() -> Result<(String, Duration), BackendError> {
        let context = || "getting a storage token from the Azure CLI".to_owned();
        let run = tokio::task::spawn_blocking(|| {
            std::process::Command::new("az")
                .args([
                    "account",
                    "get-access-token",
                    "--resource",
                    "https://storage.azure.com/",
                    "--output",
                    "json",
                ])
                .stdin(std::process::Stdio::null())
                .output()
        });
        let output = run
            .await
            .map_err(|e| BackendError::Remote {
                context: context(),
                message: e.to_string(),
            })?
            .map_err(|source| BackendError::Io {
                context: context(),
                source,
            })?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(BackendError::Remote {
                context: context(),
                message: format!(
                    "Azure Blob authentication failed: `az account get-access-token` failed \
                     (run `az login`, or set AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN / \
                     AZURE_STORAGE_CONNECTION_STRING): {}",
                    said.trim().chars().take(300).collect::<String>()
                ),
            });
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        parse_token(&json).ok_or_else(|| BackendError::Remote {
            context: context(),
            message: "the Azure CLI printed no accessToken".into(),
        })
    }

    /// The token in a token endpoint's answer.
    pub fn parse(
        body: &[u8],
        context: impl Fn() -> String,
    ) -> Result<(String, Duration), BackendError> {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        parse_token(&json).ok_or_else(|| BackendError::Remote {
            context: context(),
            message: "the token endpoint's answer has no access_token".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn credentials_are_found_in_the_documented_order() {
        let cs = format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:9/{DEV_ACCOUNT};"
        );
        let found = find(
            DEV_ACCOUNT,
            env(&[
                ("AZURE_STORAGE_CONNECTION_STRING", &cs),
                ("AZURE_STORAGE_SAS_TOKEN", "sv=1"),
            ]),
            true,
        )
        .unwrap();
        assert!(matches!(found.credential, Credential::SharedKey(_)));
        assert_eq!(
            found.endpoint.as_deref(),
            Some("http://127.0.0.1:9/devstoreaccount1")
        );
        let other = find(
            "other",
            env(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]),
            false,
        );
        assert!(other.unwrap_err().to_string().contains("is for account"));
        let dev = find(
            DEV_ACCOUNT,
            env(&[(
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            )]),
            false,
        )
        .unwrap();
        assert_eq!(
            dev.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        let sas = find(
            "a",
            env(&[("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=x")]),
            true,
        )
        .unwrap();
        assert!(matches!(sas.credential, Credential::Sas(ref q) if q == "sv=1&sig=x"));
        let sp = find(
            "a",
            env(&[
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_SECRET", "s"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            sp.credential.describe(),
            "the service principal (AZURE_CLIENT_SECRET)"
        );
        let cli = find("a", env(&[]), true).unwrap();
        assert_eq!(
            cli.credential.describe(),
            "the Azure CLI login (`az login`)"
        );
        let msi = find("a", env(&[]), false).unwrap();
        assert_eq!(msi.credential.describe(), "the managed identity");
        assert!(find("a", env(&[("AZURE_STORAGE_KEY", "not base64!")]), false).is_err());
    }

    #[test]
    fn shared_key_signs_the_canonical_request() {
        // The string to sign, worked by hand from Microsoft's "Authorize with Shared Key".
        let key = b"key";
        let got = shared_key(
            "acct",
            key,
            "GET",
            0,
            "",
            "",
            "\"0x1\"",
            "",
            &[
                ("x-ms-version", "2021-08-06".into()),
                ("x-ms-date", "Fri, 26 Jun 2015 23:39:12 GMT".into()),
            ],
            "/c/a%20b",
            &[("restype", "container".into()), ("comp", "list".into())],
        );
        let text = "GET\n\n\n\n\n\n\n\n\"0x1\"\n\n\n\nx-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\n\
                    x-ms-version:2021-08-06\n/acct/c/a%20b\ncomp:list\nrestype:container";
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(text.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(got, format!("SharedKey acct:{want}"));
    }

    #[test]
    fn tokens_parse_with_their_lifetime() {
        let (t, d) =
            TokenSource::parse(br#"{"access_token":"x","expires_in":"3599"}"#, String::new)
                .unwrap();
        assert_eq!((t.as_str(), d), ("x", Duration::from_secs(3599)));
        assert!(TokenSource::parse(b"{}", String::new).is_err());
    }
}
