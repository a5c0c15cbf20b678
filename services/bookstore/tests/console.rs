//! The console in a real browser: `bookstore up` and `bookstore console` as
//! real processes, and Debian's headless Chromium driven through chromedriver
//! (WebDriver). The page must show both tiers with their primaries; the
//! test kills the catalog primary with the page's own button (accepting its
//! confirmation), and the page must show ordinal 1 as primary at a higher
//! epoch and the failover in its timeline. A screenshot of the page after the
//! failover is saved under `target/` for a person to look at.
//!
//! Chromium and chromedriver come from Debian's packages (`chromium`,
//! `chromium-driver`); `tests/run-all.sh` installs them. Without them the
//! test fails and says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{TempDir, UpProcess, default_inventory_path, free_port, local_cluster};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page may take to show a change.
const PAGE_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_failover_caused_by_its_own_kill_button() {
    let dir = TempDir::new("console");
    let up = tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[])
    });
    let console = ConsoleProcess::start(&up, dir.path()).await;
    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(dir.path()).await;
    browser
        .goto(&console.url)
        .await
        .expect("the console's page loads");

    let before = wait_for_page(&browser, "both tiers with their primaries", |page| {
        let catalog = &page["tiers"]["catalog"];
        let order = &page["tiers"]["order"];
        (catalog["primary"] == "catalog-0"
            && order["primary"] == "order-0"
            && catalog["roles"]["catalog-0"] == "primary"
            && catalog["roles"]["catalog-1"] == "replica")
            .then(|| {
                catalog["epoch"]
                    .as_str()
                    .and_then(|e| e.parse::<u64>().ok())
            })
            .flatten()
    })
    .await;

    // A bounded buy load from the page, so the failover happens under load
    // and the plots have something to show.
    browser
        .find(Locator::Id("load"))
        .await
        .expect("the load button")
        .click()
        .await
        .expect("the load button clicks");
    browser
        .accept_alert()
        .await
        .expect("the confirmation is accepted");
    wait_for_page(
        &browser,
        "the load buying and the buy rate above zero",
        |page| {
            let bought = page["load"].as_str()?.contains("Running")
                && !page["load"].as_str()?.contains(" 0 bought");
            let plotted = page["buy"].as_str()?.contains("p50")
                && !page["buy"].as_str()?.contains("no requests");
            (bought && plotted).then_some(())
        },
    )
    .await;

    // The page's own button, behind its confirmation.
    browser
        .find(Locator::Css(
            r#"button[data-action="kill"][data-member="catalog-0"]"#,
        ))
        .await
        .expect("a kill button for catalog-0")
        .click()
        .await
        .expect("the kill button clicks");
    browser
        .accept_alert()
        .await
        .expect("the confirmation is accepted");

    let after = wait_for_page(
        &browser,
        "catalog-1 primary at a higher epoch, and the failover in the timeline",
        |page| {
            let catalog = &page["tiers"]["catalog"];
            let epoch = catalog["epoch"].as_str()?.parse::<u64>().ok()?;
            let failover = page["timeline"].as_array()?.iter().any(|entry| {
                entry["kind"] == "failover"
                    && entry["tier"] == "catalog"
                    && entry["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("catalog-0 → catalog-1"))
            });
            (catalog["primary"] == "catalog-1" && epoch > before && failover).then_some(epoch)
        },
    )
    .await;
    let result = browser
        .find(Locator::Id("result"))
        .await
        .expect("the result line")
        .text()
        .await
        .expect("its text");
    assert!(
        result.contains("SIGKILL sent"),
        "the page says what it did: {result}"
    );
    println!("the page showed catalog-1 primary at epoch {after} (was catalog-0 at {before})");

    let screenshot = browser.screenshot().await.expect("a screenshot");
    let path = screenshot_path();
    std::fs::write(&path, screenshot).expect("the screenshot is saved");
    println!("screenshot: {}", path.display());
    browser.close().await.expect("the browser closes");
}

/// Where the screenshot goes: the test's scratch dir inside `target/`.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-failover.png")
}

/// What the page shows, read in the page itself.
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

/// Reads the page every 200 ms until `check` finds what it looks for.
async fn wait_for_page<T>(browser: &Client, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
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

/// `bookstore console` for `up`'s store, on a free loopback port.
struct ConsoleProcess {
    child: Child,
    url: String,
}

impl ConsoleProcess {
    async fn start(up: &UpProcess, dir: &Path) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("console.log")).expect("a console log");
        let child = Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .args(["console", "--listen", &address, "--cluster"])
            .arg(&up.cluster_file)
            .arg("--data-dir")
            .arg(&up.data_dir)
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("bookstore console starts");
        let url = format!("http://{address}/");
        wait_until_answers(&url, "the console").await;
        Self { child, url }
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver on a free loopback port, driving Debian's Chromium.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start(dir: &Path) -> Self {
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
    async fn browser(&self, dir: &Path) -> Client {
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
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 30 s) until `url` answers 200.
async fn wait_until_answers(url: &str, what: &str) {
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
