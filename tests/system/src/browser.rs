//! The console's page in a real browser, for the tests of both consoles:
//! Debian's headless Chromium driven through chromedriver (WebDriver, with
//! the `fantoccini` crate), and the page's state read in the page itself.
//!
//! Chromium and chromedriver come from Debian's packages (`chromium`,
//! `chromium-driver`); `tests/run-all.sh` installs them. Without them a test
//! fails and says so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fantoccini::Client;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page may take to show a change.
pub const PAGE_LIMIT: Duration = Duration::from_secs(30);

/// What the console's page shows, read in the page itself: each tier's
/// epoch, primary and members' roles, the timeline, the load and the buy plot.
const READ_PAGE: &str = r##"
const tiers = {};
for (const table of document.querySelectorAll("table[data-tier]")) {
  const roles = {};
  for (const row of table.querySelectorAll("tr[data-member]")) {
    roles[row.dataset.member] = row.querySelector('[data-field="role"]').textContent;
  }
  tiers[table.dataset.tier] = {
    epoch: table.caption.dataset.epoch, primary: table.caption.dataset.primary, roles,
  };
}
const timeline = [...document.querySelectorAll("#timeline li")].map((li) => ({
  kind: li.dataset.kind, tier: li.dataset.tier, text: li.textContent,
}));
const load = document.querySelector("#load-progress").textContent;
const buy = document.querySelector('figure[data-route="buy"] figcaption')?.textContent;
return { tiers, timeline, load, buy };
"##;

/// Reads the console's page every 200 ms until `check` finds what it looks for.
pub async fn wait_for_page<T>(
    browser: &Client,
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PAGE_LIMIT;
    let mut page = Value::Null;
    while Instant::now() < deadline {
        page = browser
            .execute(READ_PAGE, vec![])
            .await
            .unwrap_or(Value::Null);
        if let Some(found) = check(&page) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the page did not show {what} within {PAGE_LIMIT:?}; it showed {page:#}");
}

/// chromedriver on a free loopback port, driving Debian's Chromium.
pub struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    /// Starts chromedriver, its log and the browser's profile in `dir`
    /// (made if missing).
    pub async fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver packages (tests/run-all.sh does)"
            );
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("a driver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        wait_until_answers(&format!("{url}/status"), "chromedriver").await;
        Self { child, url }
    }

    /// A headless Chromium session. The flags keep it off the network (this
    /// machine has none beyond loopback) and out of the user's profile.
    pub async fn browser(&self, dir: &Path) -> Client {
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,1500".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = serde_json::from_value(json!({
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }))
        .expect("capabilities are a JSON object");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }

    /// A headless Chromium session ([`Chromedriver::browser`]) with `url`
    /// loaded.
    pub async fn open(&self, dir: &Path, url: &str) -> Client {
        let browser = self.browser(dir).await;
        browser
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the page {url} does not load: {e}"));
        browser
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 30 s) until `url` answers 200.
pub async fn wait_until_answers(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not answer at {url} within 30 s");
}

/// A change of primary the page shows: `tier`'s primary moved from `from`
/// to `to` (the `kind` of change in its timeline, `failover` or `handover`)
/// at an epoch above `before`.
#[derive(Debug, Clone, Copy)]
pub struct PrimaryMove<'a> {
    pub tier: &'a str,
    pub kind: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub before: u64,
}

impl PrimaryMove<'_> {
    /// The tier's new epoch, if [`READ_PAGE`]'s `page` shows the move: the
    /// new primary at a higher epoch, and the change in the timeline.
    pub fn shown(&self, page: &Value) -> Option<u64> {
        let tier = &page["tiers"][self.tier];
        let epoch = tier["epoch"].as_str()?.parse::<u64>().ok()?;
        let arrow = format!("{} → {}", self.from, self.to);
        let in_timeline = page["timeline"].as_array()?.iter().any(|entry| {
            entry["kind"] == self.kind
                && entry["tier"] == self.tier
                && entry["text"].as_str().is_some_and(|t| t.contains(&arrow))
        });
        (tier["primary"] == self.to && epoch > self.before && in_timeline).then_some(epoch)
    }

    /// Waits until the page shows the move; the new epoch.
    pub async fn wait(&self, browser: &Client) -> u64 {
        let what = format!(
            "{} primary at an epoch above {}, and the {} {} in the timeline",
            self.to, self.before, self.kind, self.from
        );
        wait_for_page(browser, &what, |page| self.shown(page)).await
    }
}

/// Clicks the button `css` selects and accepts its confirmation, as a
/// person does.
pub async fn click_and_confirm(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no button {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("the button {css} does not click: {e}"));
    browser
        .accept_alert()
        .await
        .unwrap_or_else(|e| panic!("no confirmation after {css}: {e}"));
}

/// The text of the element with `id`.
pub async fn text_of(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("no text in #{id}: {e}"))
}

/// Saves a screenshot of the page at `path` for a person to look at.
pub async fn save_screenshot(browser: &Client, path: &Path) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot save {}: {e}", path.display()));
    println!("screenshot: {}", path.display());
}
