//! Compiles every `scenarios/*.toml` into the lab: adding a scenario is adding a file.

use std::fmt::Write;

fn main() {
    let dir =
        std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".toml")?
                .to_owned();
            println!("cargo:rerun-if-changed={}", path.display());
            Some(name)
        })
        .collect();
    names.sort();
    let mut out =
        String::from("/// Every file in scenarios/, by name.\nconst FILES: &[(&str, &str)] = &[\n");
    for name in &names {
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/scenarios/{name}.toml\"))),"
        );
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var_os("OUT_DIR").unwrap()).join("scenarios.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
