//! Links the system OpenBLAS (Debian: `libopenblas-dev`), whose CBLAS `cblas-sys` declares.
fn main() {
    println!("cargo:rustc-link-lib=openblas");
}
