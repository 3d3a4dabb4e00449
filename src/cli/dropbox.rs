//! `smpfs dropbox login`: the OAuth 2 PKCE flow (no app secret), cached in a 0600 token
//! file that mounts (`dropbox_token=`) and seals use without asking again.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use smpfs::backend::dropbox::{self, DropboxOptions};
use smpfs::backend::BackendError;

use super::output::say;

#[derive(clap::Subcommand)]
pub enum DropboxCommand {
    /// Allow smpfs's Dropbox app in a browser, paste the code back, and cache a refresh
    /// token for later mounts and seals. An "App folder" app sees only its folder
    /// (dropbox:///PATH is then below it); a "Full Dropbox" app sees everything.
    Login {
        /// The app key of your Dropbox app (from the App Console; PKCE needs no secret)
        /// [env: SMPFS_DROPBOX_APP_KEY].
        #[arg(long, value_name = "KEY")]
        app_key: Option<String>,
        /// Where to cache the tokens (mode 0600)
        /// [default: ~/.config/smpfs/dropbox-token.json].
        #[arg(long, value_name = "PATH")]
        token: Option<PathBuf>,
        /// Base of the token endpoint instead of https://api.dropboxapi.com (tests,
        /// proxies); the same as mount's dropbox_endpoint=.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The authorization page instead of https://www.dropbox.com/oauth2/authorize.
        #[arg(long, value_name = "URL", hide = true)]
        authorize_url: Option<String>,
    },
}

/// Runs a `dropbox` subcommand.
pub fn run(command: DropboxCommand) -> Result<()> {
    super::init_stderr_logging();
    match command {
        DropboxCommand::Login {
            app_key,
            token,
            endpoint,
            authorize_url,
        } => {
            let app_key = app_key
                .or_else(|| std::env::var("SMPFS_DROPBOX_APP_KEY").ok())
                .filter(|key| !key.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("Dropbox login needs --app-key KEY or SMPFS_DROPBOX_APP_KEY")
                })?;
            let token = token.unwrap_or_else(dropbox::default_token_path);
            let options = DropboxOptions {
                endpoint,
                ..DropboxOptions::default()
            };
            let authorize = authorize_url.unwrap_or_else(|| dropbox::DROPBOX_AUTHORIZE.into());
            let stored = dropbox::login(&app_key, &token, &options, &authorize, |url| {
                eprintln!(
                    "Open this URL in a browser, allow access, and paste the code Dropbox \
                     shows:\n{url}"
                );
                eprint!("Code: ");
                let mut code = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut code)
                    .map_err(|source| BackendError::Io {
                        context: "reading the authorization code".into(),
                        source,
                    })?;
                Ok(code)
            })
            .context("Dropbox login")?;
            say!(
                "logged in{}; token cached in {} (mode 0600)",
                stored
                    .account_id
                    .map(|a| format!(" as {a}"))
                    .unwrap_or_default(),
                token.display()
            );
            Ok(())
        }
    }
}
