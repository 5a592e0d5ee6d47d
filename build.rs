//! Rebuilds when `static/` changes: the dashboard is embedded into the binary.
fn main() {
    println!("cargo:rerun-if-changed=static");
}
