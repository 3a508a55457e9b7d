//! Compile once, map many.
//!
//! The host compiles each module with Cranelift once and writes the artifact
//! to a cache folder, named by the SHA-256 of the module's bytes together
//! with the engine's [`precompile_compatibility_hash`]. Runners never
//! compile: they map the artifact with `deserialize_file`. Since loading an
//! artifact trusts its contents, only files this cache wrote are ever handed
//! to a runner, and they are written atomically (temporary file + rename) so
//! a reader never sees half a file.
//!
//! [`precompile_compatibility_hash`]: wasmtime::Engine::precompile_compatibility_hash

// The runner builds this crate without Cranelift: it only finds artifacts
// by path, so the compiling half of the cache goes unused there.
#![cfg_attr(not(feature = "compiler"), expect(dead_code, unused_imports))]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmproc_protocol::ModuleKind;

use crate::engine;

/// The environment variable that overrides the cache folder.
pub const CACHE_DIR_ENV: &str = "WASMPROC_CACHE_DIR";

/// Why a module could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("module {} not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read module {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a WebAssembly file (no `\\0asm` header)", path.display())]
    NotWasm { path: PathBuf },
    #[error("cannot compile {}: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    /// Found before compiling: the module imports what no runner provides.
    #[error(
        "{} imports {what}, which this host does not provide (it provides {PROVIDED})",
        path.display()
    )]
    MissingImport { path: PathBuf, what: String },
    #[error("cannot write the compiled artifact to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A module compiled and stored, ready for a runner to map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub kind: ModuleKind,
}

/// Tell a component from a core module by the version field of the header.
///
/// # Errors
///
/// [`CompileError::NotWasm`] when the bytes do not start with `\0asm`.
pub fn module_kind(bytes: &[u8], path: &Path) -> Result<ModuleKind, CompileError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(ModuleKind::Module),
        // Components carry a version and a layer of 1.
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(ModuleKind::Component),
        _ => Err(CompileError::NotWasm {
            path: path.to_owned(),
        }),
    }
}

/// What runners link a guest to, for [`CompileError::MissingImport`].
const PROVIDED: &str = "`wasi_snapshot_preview1` to a core module; WASI 0.2's cli, clocks, \
                        filesystem, io, random and sockets and `wasmproc:guest/ipc` (0.1, 0.2, 0.3) \
                        to a component";

/// The WASI 0.2 packages a component runner links.
const WASI_PACKAGES: [&str; 6] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Whether a component's import `name` is one a runner links.
fn provided(name: &str) -> bool {
    let (interface, version) = name.split_once('@').unwrap_or((name, ""));
    let wasi = WASI_PACKAGES.iter().any(|p| interface.starts_with(p))
        && (version.is_empty() || version.starts_with("0.2."));
    let ipc = interface == "wasmproc:guest/ipc"
        && ["0.1.", "0.2.", "0.3."]
            .iter()
            .any(|v| version.starts_with(v));
    wasi || ipc
}

/// Refuse, before compiling, a module whose imports no runner provides
/// (what the compiler would take seconds to reach, for a large module).
/// Only the outermost imports matter: nested modules import from inside.
fn check_imports(bytes: &[u8], kind: ModuleKind, path: &Path) -> Result<(), CompileError> {
    use wasmparser::{Parser, Payload};
    let missing = |what: String| CompileError::MissingImport {
        path: path.to_owned(),
        what,
    };
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        // A malformed module is the compiler's to name.
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(reader) if depth == 1 && kind == ModuleKind::Module => {
                for import in reader.into_imports() {
                    let Ok(import) = import else { return Ok(()) };
                    if import.module != "wasi_snapshot_preview1" {
                        return Err(missing(format!("`{}::{}`", import.module, import.name)));
                    }
                }
            }
            Payload::ComponentImportSection(reader)
                if depth == 1 && kind == ModuleKind::Component =>
            {
                for import in reader {
                    let Ok(import) = import else { return Ok(()) };
                    if !provided(import.name.name) {
                        return Err(missing(format!("`{}`", import.name.name)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether a file is WebAssembly text: a `.wat` name, or text that opens
/// with `(` after spaces and comments (as `(module` and `(component` do).
fn is_text(header: &[u8], path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "wat") {
        return true;
    }
    let start = header.iter().position(|b| !b.is_ascii_whitespace());
    matches!(start.map(|i| header[i]), Some(b'(' | b';'))
}

/// The process-wide artifact cache.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Modules already compiled by this process, by path, size and mtime, so
    /// a second fork of the same file neither hashes nor compiles it again.
    /// Each slot is locked while its module compiles: concurrent forks of one
    /// module wait for a single compilation.
    known: Mutex<HashMap<FileKey, Arc<tokio::sync::OnceCell<Artifact>>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

impl Cache {
    /// The cache in `$WASMPROC_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmproc`,
    /// else `~/.cache/wasmproc`, else a folder under the system temp dir.
    pub fn global() -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        CACHE.get_or_init(|| Cache {
            dir: default_dir(),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// The folder the artifacts are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artifact for the module at `path`, compiling it if needed.
    ///
    /// # Errors
    ///
    /// See [`CompileError`].
    pub async fn artifact(&self, path: &Path) -> Result<Artifact, CompileError> {
        let meta = match tokio::fs::metadata(path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => {
                return Err(CompileError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::other("not a regular file"),
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(CompileError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(CompileError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let key = FileKey {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        let slot = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.entry(key).or_default().clone()
        };
        let artifact = slot
            .get_or_try_init(|| {
                let path = path.to_owned();
                let dir = self.dir.clone();
                async move {
                    tokio::task::spawn_blocking(move || compile_to_cache(&path, &dir))
                        .await
                        .map_err(|err| CompileError::Compile {
                            path: PathBuf::new(),
                            message: format!("compiler task failed: {err}"),
                        })?
                }
            })
            .await?;
        Ok(artifact.clone())
    }
}

fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("wasmproc");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("wasmproc");
    }
    std::env::temp_dir().join("wasmproc-cache")
}

/// What a compile reports to the observer set with [`on_compile`].
#[derive(Debug, Clone)]
pub enum CompileProgress {
    /// A module is being compiled (a cache miss): its path and size.
    Started { path: PathBuf, bytes: u64 },
    /// That compile ended (done or failed), after `elapsed`.
    Finished { path: PathBuf, elapsed: Duration },
}

type Observer = Box<dyn Fn(CompileProgress) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Have `observer` told when a module starts and ends compiling (not when
/// its artifact is found in the cache): to show progress on a terminal.
/// Set once per process; `false` if an observer was set already.
pub fn on_compile(observer: impl Fn(CompileProgress) + Send + Sync + 'static) -> bool {
    OBSERVER.set(Box::new(observer)).is_ok()
}

fn observe(progress: impl FnOnce() -> CompileProgress) {
    if let Some(observer) = OBSERVER.get() {
        observer(progress());
    }
}

/// Read, hash and (if the cache lacks it) compile one module. Blocking.
/// The header is checked before the file is read whole, so a large file
/// that is not wasm costs eight bytes, not its size in memory.
///
/// An unchanged file (same path, size, modification time and inode, and
/// the same engine) is found through a small key file beside the
/// artifacts, without reading or hashing it again. Compiling takes a lock
/// on the artifact's name, so two processes that want the same new
/// artifact at once compile it once: the second waits and finds it made.
#[cfg(feature = "compiler")]
fn compile_to_cache(path: &Path, dir: &Path) -> Result<Artifact, CompileError> {
    use std::io::Read;
    let read_error = |source| CompileError::Read {
        path: path.to_owned(),
        source,
    };
    let engine = engine::engine().map_err(|err| CompileError::Compile {
        path: path.to_owned(),
        message: format!("{err:#}"),
    })?;
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let compat = compat.finish().to_le_bytes();

    let key = file_key(path, &compat);
    if let Some(found) = key.as_ref().and_then(|key| known_artifact(dir, key)) {
        return Ok(found);
    }

    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut header = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    let text = is_text(&header, path);
    let kind = if text {
        ModuleKind::Module
    } else {
        module_kind(&header, path)?
    };
    let mut bytes = header;
    file.read_to_end(&mut bytes).map_err(read_error)?;
    let (bytes, kind) = if text {
        // The text format (`.wat`), as `wasmtime run` takes it: a module
        // or a component.
        let binary = wat::parse_bytes(&bytes).map_err(|err| CompileError::Compile {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let kind = module_kind(&binary, path)?;
        (binary.into_owned(), kind)
    } else {
        (bytes, kind)
    };

    // Before the (long) compile: what it imports must be there to link.
    check_imports(&bytes, kind, path)?;
    let mut hasher = Sha256::new();
    hasher.update(compat);
    hasher.update(&bytes);
    let name: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let artifact = dir.join(format!("{name}.cwasm"));
    let write_err = |source| CompileError::Write {
        path: artifact.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    if !artifact.is_file() {
        // One compiler per artifact across processes; the lock goes with
        // the file handle.
        let lock = std::fs::File::create(dir.join(format!(".{name}.lock"))).map_err(write_err)?;
        lock.lock().map_err(write_err)?;
        if !artifact.is_file() {
            tracing::info!("compiling {} ({} bytes)", path.display(), bytes.len());
            let started = std::time::Instant::now();
            observe(|| CompileProgress::Started {
                path: path.to_owned(),
                bytes: bytes.len() as u64,
            });
            let compiled = match kind {
                ModuleKind::Module => engine.precompile_module(&bytes),
                ModuleKind::Component => engine.precompile_component(&bytes),
            };
            observe(|| CompileProgress::Finished {
                path: path.to_owned(),
                elapsed: started.elapsed(),
            });
            let compiled = compiled.map_err(|err| CompileError::Compile {
                path: path.to_owned(),
                message: format!("{err:#}"),
            })?;
            let mut tmp = tempfile_in(dir).map_err(write_err)?;
            tmp.1.write_all(&compiled).map_err(write_err)?;
            tmp.1.sync_all().map_err(write_err)?;
            std::fs::rename(&tmp.0, &artifact).map_err(write_err)?;
        }
    }
    if let Some(key) = key {
        remember(dir, &key, &name, kind);
    }
    Ok(Artifact {
        path: artifact,
        kind,
    })
}

/// A build without Cranelift (the runner's) loads artifacts and never makes one.
#[cfg(not(feature = "compiler"))]
fn compile_to_cache(path: &Path, _dir: &Path) -> Result<Artifact, CompileError> {
    Err(CompileError::Compile {
        path: path.to_owned(),
        message: "this build of wasmproc has no compiler (its `compiler` feature is off)".into(),
    })
}

/// What identifies an unchanged file for this engine: its absolute path,
/// size, modification time and inode, hashed with the engine's settings.
fn file_key(path: &Path, compat: &[u8]) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let absolute = std::path::absolute(path).ok()?;
    let mut hasher = Sha256::new();
    hasher.update(compat);
    hasher.update(absolute.as_os_str().as_encoded_bytes());
    hasher.update(meta.len().to_le_bytes());
    hasher.update(meta.mtime().to_le_bytes());
    hasher.update(meta.mtime_nsec().to_le_bytes());
    hasher.update(meta.ino().to_le_bytes());
    hasher.update(meta.dev().to_le_bytes());
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The artifact an earlier run recorded for `key`, if it is still there.
fn known_artifact(dir: &Path, key: &str) -> Option<Artifact> {
    let text = std::fs::read_to_string(dir.join("keys").join(key)).ok()?;
    let (name, kind) = text.trim().split_once(' ')?;
    let kind = match kind {
        "module" => ModuleKind::Module,
        "component" => ModuleKind::Component,
        _ => return None,
    };
    let path = dir.join(format!("{name}.cwasm"));
    path.is_file().then_some(Artifact { path, kind })
}

/// Record which artifact `key` names (best effort: without it, the next
/// run hashes the file again).
fn remember(dir: &Path, key: &str, name: &str, kind: ModuleKind) {
    let keys = dir.join("keys");
    let kind = match kind {
        ModuleKind::Module => "module",
        ModuleKind::Component => "component",
    };
    let written = std::fs::create_dir_all(&keys).and_then(|()| {
        let mut tmp = tempfile_in(&keys)?;
        tmp.1.write_all(format!("{name} {kind}\n").as_bytes())?;
        std::fs::rename(&tmp.0, keys.join(key))
    });
    if let Err(err) = written {
        tracing::debug!("cannot record the cache key {key}: {err}");
    }
}

/// A new file in `dir` that no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_module_from_component() {
        let p = Path::new("x.wasm");
        assert_eq!(
            module_kind(b"\0asm\x01\0\0\0rest", p).unwrap(),
            ModuleKind::Module
        );
        assert_eq!(
            module_kind(b"\0asm\x0d\0\x01\0rest", p).unwrap(),
            ModuleKind::Component
        );
        let err = module_kind(b"#!/bin/sh\n", p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.wasm is not a WebAssembly file (no `\\0asm` header)"
        );
    }
}
