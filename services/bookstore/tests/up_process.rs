//! `bookstore up` as real processes: the original's test cases through the
//! frontend, then a child killed with SIGKILL comes back with its state.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{TempDir, UpProcess, default_inventory_path, local_cluster};

fn run_client(frontend: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["client", "--frontend", frontend, "--inventory"])
        .arg(default_inventory_path())
        .output()
        .expect("run bookstore client")
}

fn wait_for_new_pid(up: &UpProcess, name: &str, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(pid) = up.pid(name).filter(|&p| p != old) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} was not restarted");
}

#[test]
fn up_runs_the_store_and_restarts_a_killed_child_with_its_state() {
    let dir = TempDir::new("up");
    let up = UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[]);

    let client = run_client(&up.frontend());
    let log = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "client failed:\n{log}\n{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        log.contains("test4 (race of concurrent buyers): Pass"),
        "{log}"
    );
    assert!(
        log.contains("Client1: Send request"),
        "the log names each client: {log}"
    );

    let before: Vec<_> = up.tier_status("catalog");
    let index = before[0]["applied_index"].clone();
    let digest = before[0]["digest"].clone();

    // Kill the catalog primary and an order replica; `up` restarts both.
    let catalog_primary = up.primary("catalog").expect("a catalog primary");
    let old_catalog = up.kill9(&catalog_primary);
    let order_replica = if up.primary("order").as_deref() == Some("order-0") {
        "order-1"
    } else {
        "order-0"
    };
    let old_order = up.kill9(order_replica);
    wait_for_new_pid(&up, &catalog_primary, old_catalog);
    wait_for_new_pid(&up, order_replica, old_order);
    up.wait_until_settled(Duration::from_secs(60));

    // Nothing was lost: the same writes and the same state on every member.
    for member in up.tier_status("catalog") {
        assert_eq!(member["applied_index"], index, "{member}");
        assert_eq!(member["digest"], digest, "{member}");
    }
    // The sold-out books stay sold out: the restart did not reload the inventory.
    let http = reqwest::blocking::Client::new();
    let book: serde_json::Value = http
        .get(format!("{}/lookup?item_number=1", up.frontend()))
        .send()
        .and_then(|r| r.json())
        .expect("lookup");
    assert_eq!(book["result"]["stock"], 0, "{book}");
    let order: serde_json::Value = http
        .get(format!("{}/orders/1", up.frontend()))
        .send()
        .and_then(|r| r.json())
        .expect("order");
    assert_eq!(order["result"]["item_number"], 1, "{order}");
}

/// A fresh store (no durable coordinator state) whose catalog-1 cannot start
/// (another process holds its peer port): the coordinator elects no catalog
/// primary, because only every member's data together shows which is newest,
/// and `bookstore status` says what it waits for. Once the port is free, the
/// store settles and the coordinator's lines show each tier's primary.
#[test]
fn a_bootstrap_without_durable_state_waits_for_every_member_and_status_says_so() {
    let dir = TempDir::new("bootstrap");
    let cluster = local_cluster(2);
    let catalog_1 = cluster
        .member(bookstore_core::cluster::Role::Catalog, 1)
        .expect("catalog-1")
        .peer
        .clone();
    let squatter = std::net::TcpListener::bind(&catalog_1).expect("hold catalog-1's port");
    let up = UpProcess::launch(dir.path(), cluster, &default_inventory_path(), &[]);
    let mut waiting = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting.is_none() && Instant::now() < deadline {
        waiting = up
            .coordinator_status("catalog")
            .and_then(|s| s["waiting"].as_str().map(str::to_owned));
        std::thread::sleep(Duration::from_millis(200));
    }
    let waiting = waiting.expect("the coordinator says why the catalog has no primary");
    assert!(
        waiting.contains("no durable coordinator state") && waiting.contains("all 2 members"),
        "{waiting}"
    );
    let catalog = up.coordinator_status("catalog").expect("a catalog line");
    assert!(catalog["primary"].is_null(), "no primary yet: {catalog}");

    drop(squatter);
    up.wait_until_settled(Duration::from_secs(60));
    for tier in ["catalog", "order"] {
        let line = up.coordinator_status(tier).expect("a coordinator line");
        assert_eq!(line["primary"], 0, "{line}");
        assert_eq!(line["in_sync"], serde_json::json!([0, 1]), "{line}");
        assert!(line["waiting"].is_null(), "{line}");
        assert!(line["epoch"].as_u64() >= Some(1), "{line}");
    }
}

/// `bookstore <args>` against `up`'s store; its stdout, after checking it
/// succeeded.
fn bookstore(up: &UpProcess, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(args)
        .arg("--cluster")
        .arg(&up.cluster_file)
        .arg("--data-dir")
        .arg(&up.data_dir)
        .output()
        .expect("run bookstore");
    assert!(
        output.status.success(),
        "bookstore {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for_primary(up: &UpProcess, tier: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if up.primary(tier).as_deref() == Some(name) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{name} did not become the {tier} primary: {:#?}",
        up.status()
    );
}

/// The README's "break it" steps with `bookstore fault` and the status
/// table: each fault moves the primary as its real counterpart does.
#[test]
fn bookstore_fault_kills_pauses_and_shuts_down_members_and_status_shows_it() {
    let dir = TempDir::new("fault");
    let up = UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[]);
    let table = bookstore(&up, &["status"]);
    let row = bookstore_system_tests::table_row;
    assert_eq!(
        row(&table, "catalog-0")[1..3],
        ["primary", "leading"],
        "{table}"
    );
    assert_eq!(
        row(&table, "catalog-1")[1..3],
        ["replica", "following"],
        "{table}"
    );
    assert!(table.contains("coordinator: catalog at epoch"), "{table}");

    // A crash: catalog-1 takes over, `up` restarts catalog-0.
    let old = up.pid("catalog-0").expect("catalog-0's pid");
    let said = bookstore(&up, &["fault", "kill", "catalog-0"]);
    assert!(said.contains("SIGKILL sent"), "{said}");
    wait_for_new_pid(&up, "catalog-0", old);
    wait_for_primary(&up, "catalog", "catalog-1");
    up.wait_until_settled(Duration::from_secs(60));

    // A pause longer than failure detection: order-1 takes over; resumed,
    // order-0 must not lead again until it has rejoined.
    bookstore(&up, &["fault", "pause", "order-0"]);
    wait_for_primary(&up, "order", "order-1");
    let paused = row(&bookstore(&up, &["status"]), "order-0");
    assert_eq!(
        paused[1..3],
        ["-", "down"],
        "a paused member answers nothing"
    );
    bookstore(&up, &["fault", "resume", "order-0"]);
    up.wait_until_settled(Duration::from_secs(60));

    // Playing dead, then back.
    bookstore(&up, &["fault", "shutdown", "catalog-1"]);
    let table = bookstore(&up, &["status"]);
    assert_eq!(row(&table, "catalog-1")[2], "shut", "{table}");
    bookstore(&up, &["fault", "recover", "catalog-1"]);
    up.wait_until_settled(Duration::from_secs(60));

    // A member that is not there is a clear error.
    let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["fault", "kill", "catalog-7", "--cluster"])
        .arg(&up.cluster_file)
        .arg("--data-dir")
        .arg(&up.data_dir)
        .output()
        .expect("run bookstore");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no member \"catalog-7\""), "{error}");
}

/// `GET /peer/status` of one member, asked on its peer port with the token.
fn member_status(up: &UpProcess, name: &str) -> serde_json::Value {
    let (role, ordinal) = name.split_once('-').expect("a member name like catalog-0");
    let role: bookstore_core::cluster::Role = role.parse().expect("a role");
    let member = up
        .cluster
        .member(role, ordinal.parse().expect("an ordinal"))
        .expect("a member");
    reqwest::blocking::Client::new()
        .get(format!("{}/peer/status", member.peer_url()))
        .header(bookstore_core::token::TOKEN_HEADER, up.peer_token())
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|error| panic!("status of {name}: {error}"))
}

/// The catalog primary's own answer for one book (its public port).
fn primary_stock(up: &UpProcess, name: &str, item: u64) -> u64 {
    let (_, ordinal) = name.split_once('-').expect("a member name like catalog-0");
    let member = up
        .cluster
        .member(
            bookstore_core::cluster::Role::Catalog,
            ordinal.parse().expect("an ordinal"),
        )
        .expect("a member");
    let url = member.public_url().expect("a public address");
    let book: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{url}/query_by_item?item_number={item}"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|error| panic!("lookup on {name}: {error}"));
    book["value"]["stock"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stock in {book}"))
}

/// The fault: the primary computed its digest on its writer task, so
/// `status` queued behind whatever batch the writer held. Here a paused
/// replica holds a buy's batch (until the primary gives up on it and drops
/// it from the in-sync set); the primary must answer status meanwhile, with
/// the index and digest readers see (the held batch is not visible yet).
/// The primary has committed the batch to its own disk, where readers read:
/// a lookup there must still show the stock from before it.
#[test]
fn status_is_not_held_behind_a_batch_that_a_paused_replica_holds() {
    let dir = TempDir::new("status-held");
    let up = UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[]);
    let primary = up.primary("catalog").expect("a catalog primary");
    let replica = if primary == "catalog-0" {
        "catalog-1"
    } else {
        "catalog-0"
    };
    let before = member_status(&up, &primary);
    let stock_before = primary_stock(&up, &primary, 2);

    up.pause(replica);
    let frontend = up.frontend();
    let buy = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(format!("{frontend}/buy?item_number=2"))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
    });
    // Long enough for the buy to reach the catalog's writer; the replica
    // holds it far longer (the primary's replicate timeout).
    std::thread::sleep(Duration::from_millis(300));
    let during = member_status(&up, &primary);
    let stock_during = primary_stock(&up, &primary, 2);
    let buy_was_pending = !buy.is_finished();
    up.resume(replica);

    assert!(
        buy_was_pending,
        "the buy must still be held when status answers"
    );
    assert_eq!(during["applied_index"], before["applied_index"], "{during}");
    assert_eq!(during["digest"], before["digest"], "{during}");
    assert_eq!(stock_during, stock_before, "a held batch is not readable");
    let bought = buy.join().expect("buyer thread").expect("buy answered");
    assert!(bought["order_number"].is_u64(), "{bought}");
    up.wait_until_settled(Duration::from_secs(60));
    let after = member_status(&up, &primary);
    assert!(
        after["applied_index"].as_u64() > before["applied_index"].as_u64(),
        "{after}"
    );
    assert_ne!(after["digest"], before["digest"], "{after}");
    assert_eq!(primary_stock(&up, &primary, 2), stock_before - 1);
}

/// `bookstore status --verify` on a settled store passes: every member's
/// digest matches its rows and the members of each tier agree. Then the
/// fault it exists for: a row changed behind a member's back (a hand edit,
/// a damaged disk) leaves the digest the member keeps per write describing
/// rows it no longer has, and verify fails, naming that member.
#[test]
fn status_verify_catches_a_row_changed_behind_a_members_back() {
    let dir = TempDir::new("verify");
    let up = UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[]);
    let http = reqwest::blocking::Client::new();
    for _ in 0..3 {
        let bought: serde_json::Value = http
            .get(format!("{}/buy?item_number=3", up.frontend()))
            .send()
            .and_then(|r| r.json())
            .expect("buy");
        assert!(bought["order_number"].is_u64(), "{bought}");
    }
    up.wait_until_settled(Duration::from_secs(60));
    let said = bookstore(&up, &["status", "--verify"]);
    let index = up.tier_status("catalog")[0]["applied_index"].clone();
    for (tier, members) in [
        ("catalog", "catalog-0, catalog-1"),
        ("order", "order-0, order-1"),
    ] {
        assert!(
            said.contains(&format!(
                "verify {tier}: {members} hold the same rows at index"
            )),
            "{said}"
        );
    }
    assert!(
        said.contains(&format!("verify catalog-1: at index {index} its digest")),
        "{said}"
    );

    let database = up.data_dir.join("catalog-1").join("catalog-1.db");
    rusqlite::Connection::open(&database)
        .and_then(|db| {
            db.execute(
                "UPDATE books SET stock = stock + 5 WHERE item_number = 3",
                [],
            )
        })
        .expect("edit catalog-1's database behind its back");
    let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["status", "--verify", "--cluster"])
        .arg(&up.cluster_file)
        .arg("--data-dir")
        .arg(&up.data_dir)
        .output()
        .expect("run bookstore");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("verification failed"),
        "{output:?}"
    );
    assert!(
        said.lines()
            .any(|line| line.starts_with("verify catalog-1:") && line.contains("but its rows have")),
        "{said}"
    );
    assert!(
        said.contains("verify catalog-0: at index"),
        "the untouched member still verifies: {said}"
    );
    assert!(said.contains("their rows differ"), "{said}");
}
