//! `kubectl-bookstore`: the kubectl plugin (`kubectl bookstore ...`); see
//! [`bookstore_operator::plugin`].

fn main() -> anyhow::Result<()> {
    bookstore_operator::plugin::main()
}
