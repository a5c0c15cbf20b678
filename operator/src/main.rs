//! Placeholder for the kube-rs operator (see the operator issue). It exists so
//! the workspace has the layout of DESIGN.md and the image scripts have a
//! binary to pack; it refuses to run rather than pretend to reconcile.

fn main() {
    eprintln!("bookstore-operator is not implemented yet; see the operator issue");
    std::process::exit(2);
}
