//! The compiled-code cache: the machine code of kernels kept on disk between processes, through
//! Cranelift's incremental-compilation cache (whose key is a hash of a function's IR and of the
//! target, and which checks Cranelift's version when it loads an entry).
//!
//! What is loaded is run as machine code, so the cache is used only in a directory that this
//! user owns and nobody else can write to, and an entry is used only if it names its own key and
//! its contents match the checksum stored with them: a damaged, truncated or misplaced file is a
//! miss, and the kernel is compiled (and the entry written) again. The key is the function's IR:
//! a kernel must therefore never embed an address of this process as a constant (another process
//! would run it); buffers and tables come as arguments or through a frame, and other functions
//! through relocations.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory asked for with [`set_code_cache`].
static REQUESTED: OnceLock<Option<PathBuf>> = OnceLock::new();
/// The directory in use: the one asked for, once checked.
static USABLE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Keeps the machine code of compiled kernels in `dir`, so that a later process compiling the
/// same kernels for the same processor loads them instead (a compilation cache, as JAX's or
/// Julia's). The directory is created (owner-only) when first needed and used only if this user
/// owns it and nobody else can write to it; a changed model, rxnc, Cranelift or processor misses;
/// an unreadable, damaged or unwritable cache only costs the compilation. The library uses no
/// cache unless this is called (once, before compiling; later calls are ignored); the `rxnc`
/// command line calls it with `$RXNC_CACHE_DIR`, `$XDG_CACHE_HOME/rxnc` or `~/.cache/rxnc`.
pub fn set_code_cache(dir: Option<PathBuf>) {
    let _ = REQUESTED.set(dir);
}

/// The cache directory, if one was asked for and is safe to use (decided once per process).
pub(super) fn directory() -> Option<&'static Path> {
    USABLE
        .get_or_init(|| {
            let dir = REQUESTED.get()?.as_ref()?;
            let dir = std::path::absolute(dir).ok()?;
            (private_dir(&dir).is_ok() && only_mine(&dir)).then_some(dir)
        })
        .as_deref()
}

/// Creates `dir` (and its parents) if missing; on Unix readable and writable by its owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether `dir` is a directory this user owns and nobody else can write to.
#[cfg(unix)]
fn only_mine(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
}

#[cfg(not(unix))]
fn only_mine(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir())
}

/// What every entry starts with; a format change changes it.
const MAGIC: &[u8] = b"rxnc code cache 1\n";

/// Cranelift's cache as files in a directory, one per entry, named by its key; an entry is
/// [`MAGIC`], the key, the SHA-256 of the payload, the payload.
pub(super) struct DiskCache<'d> {
    dir: &'d Path,
}

impl<'d> DiskCache<'d> {
    pub(super) fn new(dir: &'d Path) -> Self {
        DiskCache { dir }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }
}

/// The payload of `entry` if it is a whole, undamaged entry for `key`.
fn payload<'e>(entry: &'e [u8], key: &[u8]) -> Option<&'e [u8]> {
    let rest = entry.strip_prefix(MAGIC)?.strip_prefix(key)?;
    let (sum, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == sum).then_some(payload)
}

impl cranelift_codegen::incremental_cache::CacheKvStore for DiskCache<'_> {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let entry = std::fs::read(self.path(key)).ok()?;
        payload(&entry, key).map(|p| std::borrow::Cow::Owned(p.to_vec()))
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        let mut entry = Vec::with_capacity(MAGIC.len() + key.len() + 32 + value.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(key);
        entry.extend_from_slice(&Sha256::digest(&value));
        entry.extend_from_slice(&value);
        // Written aside (a name of its own per process and write) and renamed into place, so
        // that a concurrent reader sees a whole entry or none; any failure leaves the cache as
        // it was.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = self.path(key);
        let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = path.with_extension(format!("{}-{nth}.tmp", std::process::id()));
        let written = std::fs::write(&aside, entry).and_then(|()| std::fs::rename(&aside, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&aside);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry is read back only whole, undamaged and under its own key.
    #[test]
    fn entries_are_checked_before_use() {
        let dir = std::env::temp_dir().join(format!("rxnc-cache-unit-{}", std::process::id()));
        private_dir(&dir).unwrap();
        let mut cache = DiskCache::new(&dir);
        let (key, other) = ([7u8; 32], [9u8; 32]);
        use cranelift_codegen::incremental_cache::CacheKvStore;
        cache.insert(&key, b"machine code".to_vec());
        assert_eq!(cache.get(&key).as_deref(), Some(&b"machine code"[..]));
        assert_eq!(cache.get(&other), None, "missing");
        std::fs::copy(cache.path(&key), cache.path(&other)).unwrap();
        assert_eq!(cache.get(&other), None, "another key's entry");
        let mut entry = std::fs::read(cache.path(&key)).unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 1;
        std::fs::write(cache.path(&key), &entry).unwrap();
        assert_eq!(cache.get(&key), None, "damaged");
        std::fs::write(cache.path(&key), &entry[..40]).unwrap();
        assert_eq!(cache.get(&key), None, "truncated");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
