//! The console in a real browser: `bookstore up` and `bookstore console` as
//! real processes, and Debian's headless Chromium driven through chromedriver
//! (WebDriver). The page must show both tiers with their primaries; the
//! test kills the catalog primary with the page's own button (accepting its
//! confirmation), and the page must show ordinal 1 as primary at a higher
//! epoch and the failover in its timeline. A screenshot of the page after the
//! failover is saved under `target/` for a person to look at. The browser
//! comes from `bookstore_system_tests::browser`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use bookstore_system_tests::browser::{
    Chromedriver, PrimaryMove, click_and_confirm, save_screenshot, text_of, wait_for_page,
    wait_until_answers,
};
use support::{TempDir, UpProcess, default_inventory_path, free_port, local_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_failover_caused_by_its_own_kill_button() {
    let dir = TempDir::new("console");
    let up = tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[])
    });
    let console = ConsoleProcess::start(&up, dir.path()).await;
    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.open(dir.path(), &console.url).await;

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
    click_and_confirm(&browser, "#load").await;
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
    click_and_confirm(
        &browser,
        r#"button[data-action="kill"][data-member="catalog-0"]"#,
    )
    .await;

    let after = PrimaryMove {
        tier: "catalog",
        kind: "failover",
        from: "catalog-0",
        to: "catalog-1",
        before,
    }
    .wait(&browser)
    .await;
    let result = text_of(&browser, "result").await;
    assert!(
        result.contains("SIGKILL sent"),
        "the page says what it did: {result}"
    );
    println!("the page showed catalog-1 primary at epoch {after} (was catalog-0 at {before})");

    save_screenshot(&browser, &screenshot_path()).await;
    browser.close().await.expect("the browser closes");
}

/// Where the screenshot goes: the test's scratch dir inside `target/`.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-failover.png")
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
