//! Headless Chromium (Debian `chromium`), driven over the DevTools protocol
//! with chromiumoxide: the pages the gateway serves are opened, used by
//! keyboard and screenshotted in a real browser, which also reports every
//! Content-Security-Policy violation.
//!
//! `scripts/test` installs `chromium`; a test that needs it fails with that
//! advice when it is missing (never skips silently).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::input::{DispatchKeyEventParams, DispatchKeyEventType};
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;

/// Records CSP violations in the page itself: installed by DevTools before
/// any page script runs, so the page's own CSP does not apply to it.
const RECORD_VIOLATIONS: &str = "window.__cspViolations = [];\
    document.addEventListener('securitypolicyviolation', \
    e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));";

/// A browser with its own throw-away profile.
pub struct Chromium {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Launches headless Chromium (as root it needs `--no-sandbox`).
    pub async fn launch() -> Self {
        let executable = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("headless Chromium is needed: install Debian `chromium` (scripts/test does)"));
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1024, 768)
            .launch_timeout(Duration::from_secs(60))
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .build()
            .unwrap();
        let (browser, mut events) = Browser::launch(config).await.expect("Chromium did not start");
        let handler = tokio::spawn(async move { while events.next().await.is_some() {} });
        Self { browser, handler, _profile: profile }
    }

    /// A new tab recording CSP violations, opened at `url`.
    pub async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page("about:blank").await.unwrap();
        page.evaluate_on_new_document(RECORD_VIOLATIONS).await.unwrap();
        page.goto(url).await.unwrap();
        wait_for_url(&page, url).await;
        page
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// The CSP violations the page's document reported.
pub async fn csp_violations(page: &Page) -> Vec<String> {
    page.evaluate("window.__cspViolations || []").await.unwrap().into_value().unwrap()
}

/// Waits (up to 15 s) until the page shows `url`, loaded: a form submitted
/// by a key press navigates after the press returns, so the navigation is
/// waited for by its result, not by an event that may already have fired.
pub async fn wait_for_url(page: &Page, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let at = page.url().await.ok().flatten().unwrap_or_default();
        let loaded = at == url
            && page
                .evaluate("document.readyState")
                .await
                .ok()
                .and_then(|r| r.into_value::<String>().ok())
                .is_some_and(|state| state == "complete");
        if loaded {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page stayed at {at}, expected {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses `key` (`Tab`, `Enter`, …) on whatever has the focus.
pub async fn press(page: &Page, key: &str) {
    let code = match key {
        "Enter" => 13,
        "Tab" => 9,
        " " => 32,
        _ => 0,
    };
    let text = if key == "Enter" { Some("\r") } else { None };
    for kind in [DispatchKeyEventType::KeyDown, DispatchKeyEventType::KeyUp] {
        let mut event = DispatchKeyEventParams::builder()
            .r#type(kind.clone())
            .key(key)
            .code(key)
            .windows_virtual_key_code(code)
            .native_virtual_key_code(code);
        if let (Some(text), DispatchKeyEventType::KeyDown) = (text, &kind) {
            event = event.text(text);
        }
        page.execute(event.build().unwrap()).await.unwrap();
    }
}

/// Saves a PNG screenshot of the page as a test artifact
/// (`target/test-artifacts/NAME.png`) and returns its path.
pub async fn screenshot(page: &Page, name: &str) -> PathBuf {
    let png = page.screenshot(chromiumoxide::page::ScreenshotParams::builder().full_page(true).build()).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}
