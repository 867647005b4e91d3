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
//!
//! Cranelift's key does not include its version (it only checks it when loading), so entries live
//! in a directory per Cranelift version: two installed rxnc builds do not overwrite each other's.
//! The cache is kept small by a sweep at most once a day, when an entry is written: entries unused
//! for [`UNUSED_FOR`] go, then, above [`CAPACITY`], the least recently used down to three quarters
//! of it;
//! so do temporary files left by interrupted writes. A hit marks its entry used (at most daily).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

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

/// The directory of this Cranelift version's entries, if a cache was asked for and is safe to
/// use (decided once per process).
pub(super) fn directory() -> Option<&'static Path> {
    USABLE
        .get_or_init(|| {
            let base = std::path::absolute(REQUESTED.get()?.as_ref()?).ok()?;
            // The base is checked before anything is created in it.
            if !(private_dir(&base).is_ok() && only_mine(&base)) {
                return None;
            }
            let entries = base.join(version_dir());
            (private_dir(&entries).is_ok() && only_mine(&entries)).then_some(entries)
        })
        .as_deref()
}

/// The name of the directory of this Cranelift version's entries.
fn version_dir() -> String {
    format!("{VERSION_PREFIX}{}", cranelift_codegen::VERSION)
}

const VERSION_PREFIX: &str = "cranelift-";

/// The cache's size limit: the least recently used entries beyond it are removed.
pub const CAPACITY: u64 = 128 << 20;
/// Entries not used for this long are removed.
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the cache is swept, and how often a hit updates its entry's time.
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Temporary files older than this are leftovers of interrupted writes.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
/// The file whose time says when the cache was last swept.
const SWEPT: &str = "swept";

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

/// The largest entry read (kernels are kilobytes).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

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
        use std::io::Read;
        let path = self.path(key);
        // Only a regular file of ours, not followed through a link, never blocking (a named
        // pipe put in its place), and read only up to a size no kernel comes near.
        let mut options = std::fs::File::options();
        options.read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
        );
        let mut file = options.open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let mut entry = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_ENTRY_BYTES)
            .read_to_end(&mut entry)
            .ok()?;
        let payload = payload(&entry, key)?;
        // Marks the entry used, for the sweep's least-recently-used order (daily at most: a
        // write per hit would cost more than the hit saves).
        let now = SystemTime::now();
        let used = meta.modified().unwrap_or(now);
        if now.duration_since(used).is_ok_and(|age| age > SWEEP_EVERY) {
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(now));
        }
        Some(std::borrow::Cow::Owned(payload.to_vec()))
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
        // Only a cache laid out as `directory` lays it out is swept (not, say, a test's).
        if self.dir.file_name() == Some(version_dir().as_ref())
            && let Some(base) = self.dir.parent()
        {
            sweep_if_due(base, SystemTime::now());
        }
    }
}

/// Sweeps the cache under `base` if the last sweep was more than [`SWEEP_EVERY`] ago.
fn sweep_if_due(base: &Path, now: SystemTime) {
    let marker = base.join(SWEPT);
    let last = std::fs::metadata(&marker).and_then(|m| m.modified());
    if last.is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age < SWEEP_EVERY)) {
        return;
    }
    // Marked first, so that concurrent processes do not all sweep.
    if std::fs::write(&marker, b"").is_ok() {
        sweep(base, now, CAPACITY, UNUSED_FOR);
    }
}

/// Removes from the cache under `base`: temporary files older than [`ABANDONED_AFTER`], entries
/// (of any Cranelift version, and of the flat layout before version directories) unused for
/// `unused_for`, then the least recently used entries until the rest fit in three quarters of
/// `capacity` bytes if they exceed it; then empty directories of other versions. Failures are
/// ignored: at worst an entry is compiled again.
fn sweep(base: &Path, now: SystemTime, capacity: u64, unused_for: Duration) {
    let age = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    let is_key = |name: &str| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let Ok(top) = std::fs::read_dir(base) else {
        return;
    };
    let mut entries: Vec<(Duration, u64, PathBuf)> = Vec::new();
    let mut version_dirs = Vec::new();
    // Entries in the version directories, and those of the flat layout before them (which an
    // older rxnc may still use).
    let mut dirs = vec![base.to_path_buf()];
    for item in top.flatten() {
        let (path, name) = (item.path(), item.file_name().to_string_lossy().into_owned());
        if name.starts_with(VERSION_PREFIX) && item.metadata().is_ok_and(|m| m.is_dir()) {
            if name != version_dir() {
                version_dirs.push(path.clone());
            }
            dirs.push(path);
        }
    }
    for path in &dirs {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            // What `insert` writes aside: `<key>.<pid>-<n>.tmp`, nothing else of that suffix.
            let aside = name.strip_suffix(".tmp").and_then(|n| n.split_once('.'));
            if aside.is_some_and(|(key, _)| is_key(key)) {
                if age(&meta) > ABANDONED_AFTER {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else if is_key(&name) && meta.is_file() {
                if age(&meta) > unused_for {
                    let _ = std::fs::remove_file(entry.path());
                } else {
                    entries.push((age(&meta), meta.len(), entry.path()));
                }
            }
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    if total > capacity {
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        for (_, size, path) in entries {
            if total <= capacity / 4 * 3 {
                break;
            }
            // Gone already counts as removed (another process sweeping at the same time).
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {}
                _ => total -= size,
            }
        }
    }
    for dir in version_dirs {
        // Fails, harmlessly, unless empty.
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `bytes` bytes at `path`, last used `days` days ago.
    fn file_used(path: &Path, bytes: usize, days: u64, now: SystemTime) {
        std::fs::write(path, vec![0u8; bytes]).unwrap();
        let then = now - Duration::from_secs(days * 24 * 3600);
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(then).unwrap();
    }

    /// The sweep removes leftovers, unused entries (also those of the flat layout an older rxnc
    /// uses) and then the least recently used entries down to three quarters of the capacity; it
    /// keeps the rest.
    #[test]
    fn the_sweep_keeps_recently_used_entries_within_capacity() {
        let base = std::env::temp_dir().join(format!("rxnc-cache-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (ours, theirs) = (base.join(version_dir()), base.join("cranelift-0.1.0"));
        private_dir(&ours).unwrap();
        private_dir(&theirs).unwrap();
        let now = SystemTime::now();
        let key = |n: u8| format!("{n:02x}").repeat(32);
        for n in 0..8 {
            file_used(&ours.join(key(n)), 1000, n as u64, now);
        }
        file_used(&ours.join(key(20)), 1000, 40, now);
        file_used(&theirs.join(key(30)), 1000, 31, now);
        file_used(&base.join(key(40)), 1000, 40, now);
        file_used(&base.join(key(41)), 1000, 0, now);
        file_used(&ours.join(format!("{}.7-0.tmp", key(50))), 10, 1, now);
        file_used(&ours.join(format!("{}.8-0.tmp", key(51))), 10, 0, now);
        file_used(&ours.join("notes.txt"), 10, 400, now);
        file_used(&base.join("draft.tmp"), 10, 400, now);
        sweep(&base, now, 6000, UNUSED_FOR);
        let mut left: Vec<String> = std::fs::read_dir(&ours)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected: Vec<String> = (0..3).map(key).collect();
        expected.push(format!("{}.8-0.tmp", key(51)));
        expected.push("notes.txt".into());
        expected.sort();
        // 9 entries of 1000 bytes against 6000 (one of them of the flat layout): the four most
        // recently used stay (4500 allowed).
        assert_eq!(left, expected);
        assert!(
            !theirs.exists(),
            "the other version's directory, emptied, is removed"
        );
        assert!(!base.join(key(40)).exists(), "unused flat-layout entry");
        assert!(
            base.join(key(41)).exists(),
            "recently used flat-layout entry"
        );
        assert!(base.join("draft.tmp").exists(), "another program's file");
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A hit marks an entry used if it was last marked more than a day ago.
    #[test]
    fn hits_mark_entries_used() {
        use cranelift_codegen::incremental_cache::CacheKvStore;
        let base = std::env::temp_dir().join(format!("rxnc-cache-hits-{}", std::process::id()));
        let ours = base.join(version_dir());
        private_dir(&ours).unwrap();
        let mut cache = DiskCache::new(&ours);
        let key = [3u8; 32];
        cache.insert(&key, b"machine code".to_vec());
        let used = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
        let now = SystemTime::now();
        let hours_ago = |h: u64| now - Duration::from_secs(h * 3600);
        let set = |t: SystemTime| {
            let file = std::fs::File::options().write(true).open(cache.path(&key));
            file.unwrap().set_modified(t).unwrap();
        };
        set(hours_ago(5));
        let before = used(&cache.path(&key));
        assert!(cache.get(&key).is_some());
        assert_eq!(used(&cache.path(&key)), before, "marked within the day");
        set(hours_ago(50));
        assert!(cache.get(&key).is_some());
        // (Some file systems keep times to the second.)
        assert!(used(&cache.path(&key)) >= hours_ago(1), "marked used");
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A sweep runs when none ran for a day, and not again soon after.
    #[test]
    fn sweeps_are_daily() {
        let base = std::env::temp_dir().join(format!("rxnc-cache-daily-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ours = base.join(version_dir());
        private_dir(&ours).unwrap();
        let now = SystemTime::now();
        let old = ours.join("ab".repeat(32));
        file_used(&old, 10, 100, now);
        file_used(&base.join(SWEPT), 0, 0, now);
        sweep_if_due(&base, now);
        assert!(old.exists(), "swept less than a day ago");
        file_used(&base.join(SWEPT), 0, 2, now);
        sweep_if_due(&base, now);
        assert!(!old.exists(), "swept two days ago");
        std::fs::remove_dir_all(&base).unwrap();
    }

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
        // Neither a named pipe nor a link to an endless device in its place blocks or is read.
        #[cfg(unix)]
        {
            std::fs::remove_file(cache.path(&key)).unwrap();
            let path = std::ffi::CString::new(cache.path(&key).to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
            assert_eq!(cache.get(&key), None, "named pipe");
            std::fs::remove_file(cache.path(&key)).unwrap();
            std::os::unix::fs::symlink("/dev/zero", cache.path(&key)).unwrap();
            assert_eq!(cache.get(&key), None, "link to /dev/zero");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
