//! The `oidc-provider` test server (`tests/oidc-provider/server.mjs`), started
//! on an ephemeral loopback port with one client registered, stopped on drop.

use std::process::Child;
use std::sync::{Arc, Mutex};

/// The registered client's credentials.
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";

/// A running provider.
pub struct Provider {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Settings for one provider.
pub struct ProviderSettings<'a> {
    pub redirect_uris: &'a [&'a str],
    pub post_logout_redirect_uris: &'a [&'a str],
    /// Access token lifetime in seconds.
    pub access_token_ttl: u64,
}

impl Provider {
    /// Starts the provider. Panics with instructions when Node.js or the
    /// npm dependencies are missing: `scripts/test` installs both.
    pub fn start(settings: &ProviderSettings<'_>) -> Self {
        let started = super::node::start("oidc-provider", "server.mjs", "oidc-provider", "issuer", false, |command| {
            command
                .env("OIDC_CLIENT_ID", CLIENT_ID)
                .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
                .env("OIDC_REDIRECT_URIS", settings.redirect_uris.join(","))
                .env("OIDC_POST_LOGOUT_REDIRECT_URIS", settings.post_logout_redirect_uris.join(","))
                .env("OIDC_ACCESS_TOKEN_TTL", settings.access_token_ttl.to_string());
        });
        Self { child: started.child, issuer: started.announced, stderr: started.stderr }
    }

    /// Stops the provider (an outage), keeping the handle.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the provider wrote on stderr (warnings, errors).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
