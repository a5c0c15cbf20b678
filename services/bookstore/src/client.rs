//! `bookstore client`: the original's test cases 1-4 against a running
//! frontend, printing a log like the original's client log.
//!
//! 1. Search every topic of the inventory; each answer lists exactly the
//!    inventory's books of that topic.
//! 2. Look up every book; title, topic and cost match the inventory.
//! 3. Buy the first book until it is sold out: every buy while stock lasts
//!    succeeds with an order number that can be read back, the next fails,
//!    and a lookup then shows stock 0 (the cache was invalidated).
//! 4. Race: stock + 1 concurrent buyers of the second book; exactly `stock`
//!    succeed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bookstore_core::api::{BookDetails, BuyResponse, BuyResult, Envelope, Order, SearchEntry};
use bookstore_core::inventory::{self, Book};
use clap::Args;
use serde::de::DeserializeOwned;

use crate::settings::DEFAULT_INVENTORY;

/// How long one request may take (a buy may wait out a failover).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The frontend's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub frontend: String,
    /// The inventory the store started from (what the answers must match).
    #[arg(long, default_value = DEFAULT_INVENTORY)]
    pub inventory: PathBuf,
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let books = inventory::load(&args.inventory)?;
    run_test_cases(&args.frontend, &books).await?;
    println!("All test cases passed.");
    Ok(())
}

/// Runs test cases 1-4; the first failure ends the run with its reason.
pub async fn run_test_cases(frontend: &str, books: &[Book]) -> anyhow::Result<()> {
    ensure!(books.len() >= 2, "the test cases need at least two books");
    let client = Client::new(frontend)?;
    for (name, result) in [
        ("test1 (search)", test_search(&client, books).await),
        ("test2 (lookup)", test_lookup(&client, books).await),
        (
            "test3 (buy until sold out)",
            test_sequential_buys(&client, &books[0]).await,
        ),
        (
            "test4 (race of concurrent buyers)",
            test_concurrent_buys(&client, &books[1]).await,
        ),
    ] {
        match result {
            Ok(()) => println!("{name}: Pass"),
            Err(error) => bail!("{name}: Fail: {error:#}"),
        }
    }
    Ok(())
}

/// A logging HTTP client of the public API.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        who: usize,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .build()?;
        println!("Client{who}: Send request {}", request.url());
        let response = self.http.execute(request).await?;
        let status = response.status();
        let body = response.text().await?;
        println!("Client{who}: Get response {body}");
        ensure!(status.is_success(), "HTTP {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("unexpected answer {body}"))
    }
}

async fn test_search(client: &Client, books: &[Book]) -> anyhow::Result<()> {
    let topics: BTreeSet<&str> = books.iter().map(|b| b.topic.as_str()).collect();
    for topic in topics {
        let answer: Envelope<Vec<SearchEntry>> = client
            .get(0, "/search", &[("topic", topic.to_owned())])
            .await?;
        let found: BTreeSet<(u64, String)> = answer
            .result
            .into_iter()
            .map(|e| (e.item_number, e.title))
            .collect();
        let expected: BTreeSet<(u64, String)> = books
            .iter()
            .filter(|b| b.topic == topic)
            .map(|b| (b.item_number, b.title.clone()))
            .collect();
        ensure!(
            found == expected,
            "search {topic:?} found {found:?}, expected {expected:?}"
        );
    }
    Ok(())
}

async fn test_lookup(client: &Client, books: &[Book]) -> anyhow::Result<()> {
    for book in books {
        let details = lookup(client, 0, book.item_number).await?;
        ensure!(
            details.title == book.title && details.topic == book.topic && details.cost == book.cost,
            "lookup {} answered {details:?}",
            book.item_number
        );
        ensure!(
            details.stock <= book.stock,
            "stock {} exceeds the initial {}",
            details.stock,
            book.stock
        );
    }
    Ok(())
}

async fn lookup(client: &Client, who: usize, item: u64) -> anyhow::Result<BookDetails> {
    let answer: Envelope<BookDetails> = client
        .get(who, "/lookup", &[("item_number", item.to_string())])
        .await?;
    Ok(answer.result)
}

async fn buy(client: &Client, who: usize, item: u64) -> anyhow::Result<BuyResponse> {
    client
        .get(who, "/buy", &[("item_number", item.to_string())])
        .await
}

async fn test_sequential_buys(client: &Client, book: &Book) -> anyhow::Result<()> {
    let stock = lookup(client, 0, book.item_number).await?.stock;
    ensure!(
        stock > 0,
        "book {} is already sold out: start the store from a fresh data directory",
        book.item_number
    );
    for _ in 0..stock {
        let answer = buy(client, 0, book.item_number).await?;
        ensure!(
            answer.result == BuyResult::Success,
            "a buy with stock left answered {answer:?}"
        );
        let number = answer
            .order_number
            .context("a successful buy has an order number")?;
        let order: Envelope<Order> = client.get(0, &format!("/orders/{number}"), &[]).await?;
        ensure!(
            order.result.item_number == book.item_number,
            "order {number} is for another book"
        );
    }
    let sold_out = buy(client, 0, book.item_number).await?;
    ensure!(
        sold_out.result == BuyResult::Failed,
        "a buy of a sold-out book answered {sold_out:?}"
    );
    let after = lookup(client, 0, book.item_number).await?.stock;
    ensure!(after == 0, "after selling out, lookup shows stock {after}");
    Ok(())
}

async fn test_concurrent_buys(client: &Client, book: &Book) -> anyhow::Result<()> {
    let stock = lookup(client, 0, book.item_number).await?.stock;
    ensure!(
        stock > 0,
        "book {} is already sold out: start the store from a fresh data directory",
        book.item_number
    );
    let buyers = stock as usize + 1;
    let mut tasks = tokio::task::JoinSet::new();
    for who in 1..=buyers {
        let client = client.clone();
        let item = book.item_number;
        tasks.spawn(async move { buy(&client, who, item).await });
    }
    let mut successes = 0;
    while let Some(joined) = tasks.join_next().await {
        if joined??.result == BuyResult::Success {
            successes += 1;
        }
    }
    ensure!(
        successes == stock,
        "{buyers} buyers of stock {stock}: {successes} succeeded"
    );
    Ok(())
}
