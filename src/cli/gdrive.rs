//! `smpfs gdrive login`: the installed-app OAuth flow, cached in a 0600 token file that
//! mounts (`gdrive_token=`) and seals use without asking again.

use std::path::PathBuf;

use anyhow::{Context, Result};
use smpfs::backend::gdrive;

use super::output::say;

#[derive(clap::Subcommand)]
pub enum GdriveCommand {
    /// Log in with a browser and cache the token (read-only and file scopes) for later
    /// mounts and seals.
    Login {
        /// OAuth client of type "Desktop app" (JSON from the Google Cloud console)
        /// [default: ~/.config/smpfs/gdrive-client.json].
        #[arg(long, value_name = "FILE")]
        client_secret: Option<PathBuf>,
        /// Where to cache the token (mode 0600) [default: ~/.config/smpfs/gdrive-token.json].
        #[arg(long, value_name = "PATH")]
        token: Option<PathBuf>,
    },
}

/// Runs a `gdrive` subcommand.
pub fn run(command: GdriveCommand) -> Result<()> {
    super::init_stderr_logging();
    match command {
        GdriveCommand::Login {
            client_secret,
            token,
        } => {
            let client_secret = client_secret.unwrap_or_else(gdrive::default_client_secret_path);
            let token = token.unwrap_or_else(gdrive::default_token_path);
            gdrive::login(&client_secret, &token).context("Google Drive login")?;
            say!("logged in; token cached in {} (mode 0600)", token.display());
            Ok(())
        }
    }
}
