//! The initial inventory, in the original's `init_bookstore` line format:
//! `init,item_number,stock,cost,topic,title`. Blank lines and lines starting
//! with `#` are ignored; the title is the rest of the line and may hold commas.

use std::collections::BTreeSet;
use std::path::Path;

use crate::api::ItemNumber;

/// One book as the inventory file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub item_number: ItemNumber,
    pub stock: u64,
    pub cost: u64,
    pub topic: String,
    pub title: String,
}

/// Why an inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("inventory has no books")]
    Empty,
}

/// Reads and parses the inventory file at `path`.
pub fn load(path: &Path) -> Result<Vec<Book>, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Parses inventory text; item numbers must be unique.
pub fn parse(text: &str) -> Result<Vec<Book>, InventoryError> {
    let mut books = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let book = parse_line(line).map_err(|reason| InventoryError::Line {
            line: index + 1,
            reason,
        })?;
        if !seen.insert(book.item_number) {
            return Err(InventoryError::Line {
                line: index + 1,
                reason: format!("item {} appears twice", book.item_number),
            });
        }
        books.push(book);
    }
    if books.is_empty() {
        return Err(InventoryError::Empty);
    }
    Ok(books)
}

fn parse_line(line: &str) -> Result<Book, String> {
    let fields: Vec<&str> = line.splitn(6, ',').map(str::trim).collect();
    let [op, item, stock, cost, topic, title] = fields[..] else {
        return Err("expected init,item_number,stock,cost,topic,title".to_owned());
    };
    if op != "init" {
        return Err(format!("unknown operation {op:?}; expected init"));
    }
    if topic.is_empty() || title.is_empty() {
        return Err("topic and title must not be empty".to_owned());
    }
    Ok(Book {
        item_number: number(item, "item_number")?,
        stock: number(stock, "stock")?,
        cost: number(cost, "cost")?,
        topic: topic.to_owned(),
        title: title.to_owned(),
    })
}

fn number(field: &str, name: &str) -> Result<u64, String> {
    field
        .parse()
        .map_err(|_| format!("{name} {field:?} is not a non-negative integer"))
}

/// Renders books back into the file format (used to write generated inventories).
pub fn render(books: &[Book]) -> String {
    books
        .iter()
        .map(|b| {
            format!(
                "init,{},{},{},{},{}\n",
                b.item_number, b.stock, b.cost, b.topic, b.title
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_format_with_commas_in_titles() {
        let books =
            parse("# comment\n\ninit,1,3,10,distributed systems,How to get a good grade, fast\n")
                .expect("valid");
        assert_eq!(books.len(), 1);
        assert_eq!(books[0].title, "How to get a good grade, fast");
        assert_eq!(books[0].stock, 3);
    }

    #[test]
    fn rejects_bad_lines_with_their_number() {
        let error = parse("init,1,3,10,t,a\ninit,x,3,10,t,b\n").expect_err("bad item");
        assert!(error.to_string().starts_with("inventory line 2"), "{error}");
        assert!(parse("init,1,-3,10,t,a").is_err());
        assert!(parse("init,1,3,10,t").is_err());
        assert!(parse("add,1,3,10,t,a").is_err());
        assert!(parse("init,1,3,10,t,a\ninit,1,3,10,t,b").is_err());
        assert!(matches!(parse("# nothing"), Err(InventoryError::Empty)));
    }

    #[test]
    fn render_round_trips() {
        let books = parse("init,2,3,20,distributed systems,RPCs for Dummies").expect("valid");
        assert_eq!(parse(&render(&books)).expect("valid"), books);
    }

    #[test]
    fn the_shipped_default_inventory_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/inventory.txt");
        let books = load(&path).expect("config/inventory.txt is valid");
        assert_eq!(books.len(), 7);
        assert_eq!(books[1].title, "RPCs for Dummies");
    }
}
