//! The generated inventory that benchmarks start the store from: enough
//! stock that every buy of a run succeeds.

use std::path::Path;

use anyhow::{Context, ensure};
use bookstore_core::inventory::{self, Book};

/// Topics of a generated inventory (the original's two, and two more).
const TOPICS: [&str; 4] = [
    "distributed systems",
    "graduate school",
    "operating systems",
    "databases",
];

/// Books `1..=count`, spread over [`TOPICS`], each with `stock` copies.
pub fn generated_inventory(count: u64, stock: u64) -> Vec<Book> {
    (1..=count)
        .map(|item_number| Book {
            item_number,
            stock,
            cost: 10 + item_number % 40,
            topic: TOPICS[(item_number as usize - 1) % TOPICS.len()].to_owned(),
            title: format!("Benchmark Book {item_number}"),
        })
        .collect()
}

pub(super) fn write_inventory(path: &Path, count: u64, stock: u64) -> anyhow::Result<()> {
    ensure!(count > 0, "--books must be at least 1");
    let text = format!(
        "# A generated inventory for `bookstore bench`: {count} books, {stock} copies each.\n{}",
        inventory::render(&generated_inventory(count, stock))
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Wrote {count} books with {stock} copies each to {}.",
        path.display()
    );
    Ok(())
}
