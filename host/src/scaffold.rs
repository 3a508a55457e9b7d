//! `wasmproc new`: a guest folder in Rust, Python or JavaScript that builds
//! with one command and runs with `wasmproc run`.
//!
//! Everything a guest needs is written into the folder: the contract
//! (`wit/`), the language's SDK (`sdk/`), a first program, and a README.
//! The files come from this build of wasmproc, so a scaffold matches the
//! host that made it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A guest's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust with the `wasmproc-guest` crate, built by cargo for wasm32-wasip2.
    Rust,
    /// Python with the `wasmproc_guest` package, built by componentize-py.
    Python,
    /// JavaScript with the `wasmproc-guest.js` module, built by componentize-js.
    Js,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "JavaScript",
        })
    }
}

/// The componentize-py release the Python SDK is built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The componentize-js release the JavaScript SDK is built and tested with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// A guest folder, written.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The folder.
    pub dir: PathBuf,
    /// The guest's name: the folder's.
    pub name: String,
    pub language: Language,
    /// The command that builds it, run in `dir`.
    pub build: String,
    /// What the build needs installed first.
    pub needs: String,
    /// The module the build makes, relative to `dir`.
    pub module: PathBuf,
}

/// The contract: the world, the WASI packages it includes, and the 0.1
/// and 0.2 packages the Rust SDK's bindings are named beside.
const WIT: &[(&str, &str)] = &[
    (
        "wit/deps/wasmproc-guest-0.1.0/guest.wit",
        include_str!("../../wit/deps/wasmproc-guest-0.1.0/guest.wit"),
    ),
    (
        "wit/deps/wasmproc-guest-0.2.0/guest.wit",
        include_str!("../../wit/deps/wasmproc-guest-0.2.0/guest.wit"),
    ),
    ("wit/guest.wit", include_str!("../../wit/guest.wit")),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../wit/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../wit/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../wit/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../wit/deps/sockets/sockets.wit"),
    ),
];

const RUST_SDK: &str = include_str!("../../guests/sdk/src/lib.rs");
const RUST_SDK_MANIFEST: &str = include_str!("../../guests/sdk/Cargo.toml");
const GUESTS_MANIFEST: &str = include_str!("../../guests/Cargo.toml");
const GUESTS_LOCK: &str = include_str!("../../guests/Cargo.lock");
const PYTHON_SDK: &str = include_str!("../../guests/python/wasmproc_guest/__init__.py");
const JS_SDK: &str = include_str!("../../guests/js/wasmproc-guest.js");
const JS_LOCK: &str = include_str!("../../guests/js/package-lock.json");

const RUST_MAIN: &str = include_str!("scaffold/rust_main.rs.txt");
const PYTHON_APP: &str = include_str!("scaffold/python_app.py.txt");
const JS_APP: &str = include_str!("scaffold/js_app.js.txt");
const README: &str = include_str!("scaffold/README.md.txt");

/// Write a new guest in `language` into the folder `dir`, named after it.
///
/// # Errors
///
/// When the folder's name is not a guest name, when the folder exists and
/// is not empty, or when a file cannot be written.
pub fn create(dir: &Path, language: Language) -> anyhow::Result<Scaffold> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_name(&name)?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} already exists and is not empty", dir.display());
    }
    if dir.is_file() {
        bail!("{} already exists and is a file", dir.display());
    }

    let mut files: Vec<(String, String)> = WIT
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .collect();
    let (build, needs, module, listing) = match language {
        Language::Rust => {
            files.push(("Cargo.toml".into(), rust_manifest(&name)));
            files.push(("Cargo.lock".into(), GUESTS_LOCK.to_owned()));
            files.push(("src/main.rs".into(), RUST_MAIN.replace("{name}", &name)));
            files.push(("sdk/wasmproc-guest/Cargo.toml".into(), rust_sdk_manifest()?));
            files.push(("sdk/wasmproc-guest/src/lib.rs".into(), RUST_SDK.to_owned()));
            files.push((".gitignore".into(), "/target\n".into()));
            (
                "cargo build --release --target wasm32-wasip2".to_owned(),
                "Rust with `rustup target add wasm32-wasip2`".to_owned(),
                PathBuf::from(format!("target/wasm32-wasip2/release/{name}.wasm")),
                "`src/main.rs` (the guest), `Cargo.toml`",
            )
        }
        Language::Python => {
            files.push(("app.py".into(), PYTHON_APP.replace("{name}", &name)));
            files.push((
                "sdk/wasmproc_guest/__init__.py".into(),
                PYTHON_SDK.to_owned(),
            ));
            files.push(("sdk/wasmproc_guest/py.typed".into(), String::new()));
            files.push((".gitignore".into(), "*.wasm\n__pycache__/\n".into()));
            (
                format!(
                    "componentize-py -d wit -w command componentize -p . -p sdk app -o {name}.wasm"
                ),
                format!("`pip install componentize-py=={COMPONENTIZE_PY}`"),
                PathBuf::from(format!("{name}.wasm")),
                "`app.py` (the guest; componentize-py runs its `Run`)",
            )
        }
        Language::Js => {
            files.push(("app.js".into(), JS_APP.replace("{name}", &name)));
            files.push(("sdk/wasmproc-guest.js".into(), JS_SDK.to_owned()));
            files.push(("package.json".into(), js_package(&name)));
            files.push(("package-lock.json".into(), js_lock(&name)));
            files.push((".gitignore".into(), "node_modules/\n*.wasm\n".into()));
            (
                "npm install --no-audit --no-fund && npm run build".to_owned(),
                "Node.js and npm; `npm install` fetches componentize-js".to_owned(),
                PathBuf::from(format!("{name}.wasm")),
                "`app.js` (the guest; componentize-js runs its `run` export), `package.json`",
            )
        }
    };
    let module_text = module.display().to_string();
    files.push((
        "README.md".into(),
        README
            .replace("{name}", &name)
            .replace("{language}", &language.to_string())
            .replace("{needs}", &needs)
            .replace("{build}", &build)
            .replace("{module}", &module_text)
            .replace("{files}", listing)
            .replace(
                "{world}",
                if language == Language::Rust {
                    "guest"
                } else {
                    "command"
                },
            ),
    ));

    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Scaffold {
        dir: dir.to_owned(),
        name,
        language,
        build,
        needs,
        module,
    })
}

/// A guest's name is its folder's: a Cargo package name, which is also a
/// fine file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!(
            "`{name}` is not a guest name: use letters, digits, `-` and `_`, starting with a letter"
        );
    }
    Ok(())
}

fn rust_manifest(name: &str) -> String {
    format!(
        "[package]\n\
         name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         edition = \"2024\"\n\
         \n\
         [dependencies]\n\
         wasmproc-guest = {{ path = \"sdk/wasmproc-guest\" }}\n\
         \n\
         # A guest is a folder of its own, not a member of a workspace around it.\n\
         [workspace]\n\
         \n\
         [profile.release]\n\
         # Keep the name section: trap backtraces show function names.\n\
         strip = \"debuginfo\"\n\
         panic = \"abort\"\n"
    )
}

/// The SDK's manifest with what it inherits from the guests' workspace
/// written out: the same versions the SDK is built and tested with here.
fn rust_sdk_manifest() -> anyhow::Result<String> {
    let workspace: toml::Table =
        toml::from_str(GUESTS_MANIFEST).context("guests/Cargo.toml does not parse")?;
    let section = |key: &str| {
        workspace
            .get("workspace")
            .and_then(|w| w.get(key))
            .and_then(|v| v.as_table())
            .with_context(|| format!("guests/Cargo.toml has no [workspace.{key}]"))
    };
    let (package, dependencies) = (section("package")?, section("dependencies")?);
    let mut out = String::new();
    for line in RUST_SDK_MANIFEST.lines() {
        match line.split_once(".workspace = true") {
            Some((key, "")) => {
                let value = package
                    .get(key)
                    .or_else(|| dependencies.get(key))
                    .with_context(|| format!("guests/Cargo.toml does not give `{key}`"))?;
                out.push_str(&format!("{key} = {value}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn js_package(name: &str) -> String {
    let package = serde_json::json!({
        "name": name,
        "private": true,
        "type": "module",
        "scripts": {
            "build": format!(
                "componentize-js app.js --wit wit --world-name command --disable http fetch-event -o {name}.wasm"
            ),
        },
        "devDependencies": js_dev_dependencies(),
    });
    format!("{:#}\n", package)
}

/// The pinned tools, as the guests' own `package.json` lists them.
fn js_dev_dependencies() -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(include_str!("../../guests/js/package.json"))
        .ok()
        .and_then(|p| p.get("devDependencies").cloned())
        .unwrap_or_else(
            || serde_json::json!({ "@bytecodealliance/componentize-js": COMPONENTIZE_JS }),
        )
}

/// The guests' lock file under the new package's name: the same versions
/// of every tool, as tested here.
fn js_lock(name: &str) -> String {
    let Ok(mut lock) = serde_json::from_str::<serde_json::Value>(JS_LOCK) else {
        return String::new();
    };
    lock["name"] = name.into();
    if let Some(root) = lock.pointer_mut("/packages/") {
        root["name"] = name.into();
        root.as_object_mut().map(|r| r.remove("description"));
    }
    format!("{:#}\n", lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffold_carries_every_file_of_the_contract_it_needs() {
        let root = crate::testing::repo_root();
        let mut on_disk: Vec<String> = Vec::new();
        let mut folders = vec![root.join("wit")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        on_disk.sort();
        let mut carried: Vec<String> = WIT.iter().map(|(p, _)| (*p).to_owned()).collect();
        carried.sort();
        assert_eq!(carried, on_disk);
    }

    #[test]
    fn the_rust_sdk_manifest_names_every_dependency_with_its_version() {
        let manifest = rust_sdk_manifest().unwrap();
        assert!(!manifest.contains("workspace"), "{manifest}");
        let parsed: toml::Table = toml::from_str(&manifest).unwrap();
        let deps = parsed["dependencies"].as_table().unwrap();
        let mut names: Vec<&str> = deps.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["postcard", "serde", "serde_json", "wasip2", "wit-bindgen"]
        );
        assert_eq!(parsed["package"]["name"].as_str(), Some("wasmproc-guest"));
    }

    #[test]
    fn a_name_is_a_cargo_package_name() {
        for good in ["hello", "a1", "my-guest", "my_guest"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "-x", "a b", "a.b", "ünï"] {
            assert_eq!(
                check_name(bad).unwrap_err().to_string(),
                format!(
                    "`{bad}` is not a guest name: use letters, digits, `-` and `_`, starting with a letter"
                )
            );
        }
    }
}
