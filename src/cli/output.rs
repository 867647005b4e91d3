//! Writing outputs safely: files appear complete or not at all, and a closed pipe is not an error.

use super::Failure;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Removing partial outputs when the run is interrupted (Ctrl-C, SIGTERM from a job scheduler,
/// SIGHUP): a long simulation stopped by hand leaves no hidden file of gigabytes behind. The
/// process then dies of the signal as it would have (a shell reports 130 for Ctrl-C). A signal
/// the process was started ignoring (`nohup`, a background job) stays ignored.
#[cfg(unix)]
mod interrupt {
    use std::ffi::{CString, c_char, c_int};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// The paths of the temporary files being written. Only atomics and `unlink` are touched in
    /// the handler (async-signal-safe); a path's string is never freed, so a handler running on
    /// another thread cannot read freed memory (a few bytes per output file).
    static IN_PROGRESS: [AtomicPtr<c_char>; 16] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; 16];

    extern "C" fn remove_and_die(signal: c_int) {
        for slot in &IN_PROGRESS {
            let path = slot.load(Ordering::SeqCst);
            if !path.is_null() {
                // SAFETY: a NUL-terminated string that is never freed; unlink is signal-safe.
                unsafe { libc::unlink(path) };
            }
        }
        // SAFETY: restoring the default action and raising the signal again are signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    fn install() {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with valid pointers; the handler only does signal-safe work.
            unsafe {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut current) != 0
                    || current.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = remove_and_die as extern "C" fn(c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    }

    /// Registers `path` for removal on interruption; the slot to give [`forget`].
    pub fn register(path: &std::path::Path) -> Option<usize> {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(install);
        use std::os::unix::ffi::OsStrExt;
        let path = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        let slot = IN_PROGRESS.iter().position(|slot| {
            slot.compare_exchange(
                std::ptr::null_mut(),
                path,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        });
        if slot.is_none() {
            // SAFETY: `path` came from into_raw above and was not shared.
            drop(unsafe { CString::from_raw(path) });
        }
        slot
    }

    /// The file registered in `slot` is complete or removed: no longer removed on interruption.
    pub fn forget(slot: Option<usize>) {
        if let Some(slot) = slot {
            IN_PROGRESS[slot].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

#[cfg(not(unix))]
mod interrupt {
    pub fn register(_: &std::path::Path) -> Option<usize> {
        None
    }
    pub fn forget(_: Option<usize>) {}
}

/// A file being written under a temporary name next to its destination; it takes its real name
/// only when [`PendingFile::commit`] is called, so an interrupted run never leaves a truncated file
/// under the name the user asked for.
///
/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N` write to the process's own
/// descriptor, sharing its position, as if the output went to standard output (`--stats
/// /dev/stdout > log` keeps what else was printed to `log`). Another destination that exists and
/// is not a regular file (a named pipe, a terminal) is written directly: renaming over it would
/// replace it with a plain file. A symbolic
/// link to a regular file is followed, so the link stays and its target gets the contents.
pub struct PendingFile {
    /// The temporary file, or `None` when writing directly to a special file.
    temp: Option<PathBuf>,
    /// Its slot among the files removed if the run is interrupted.
    interrupt_slot: Option<usize>,
    dest: PathBuf,
    /// The option that named it (`--out`), for messages.
    flag: String,
    writer: Option<BufWriter<File>>,
}

impl PendingFile {
    /// Creates the temporary file now, so that an unwritable path fails before any work is done.
    pub fn create(dest: &Path, flag: &str) -> Result<PendingFile, Failure> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.is_empty() || dest.is_dir() {
            return Err(Failure::input(
                format!(
                    "`{}` given to {flag} is a directory, not a file",
                    dest.display()
                ),
                format!(
                    "give a file name, for example {flag} {}",
                    Path::new(&dest).join("out.csv").display()
                ),
            ));
        }
        let cannot = |e: io::Error| {
            let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
            let help = match parent {
                Some(p) if p.exists() && !p.is_dir() => {
                    format!("`{}` is a file, not a directory", p.display())
                }
                Some(p) if !p.exists() => {
                    format!(
                        "the directory `{}` does not exist; create it first",
                        p.display()
                    )
                }
                _ if e.kind() == io::ErrorKind::PermissionDenied => {
                    "you have no permission to write there; choose another path".to_string()
                }
                _ => "check that the directory exists and is writable".to_string(),
            };
            Failure::input(
                format!("cannot write `{}` (given to {flag}): {e}", dest.display()),
                help,
            )
        };
        #[cfg(unix)]
        if let Some(fd) = inherited_fd(dest) {
            if fd == 1 {
                stdout_open()?;
            }
            // SAFETY: the descriptor is open (its `/dev/fd` entry exists) and is only duplicated.
            let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(cannot)?;
            return Ok(PendingFile {
                interrupt_slot: None,
                temp: None,
                dest: dest.to_path_buf(),
                flag: flag.to_string(),
                writer: Some(BufWriter::new(File::from(owned))),
            });
        }
        match std::fs::metadata(dest) {
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new().append(true).open(dest).map_err(cannot)?;
                Ok(PendingFile {
                    interrupt_slot: None,
                    temp: None,
                    dest: dest.to_path_buf(),
                    flag: flag.to_string(),
                    writer: Some(BufWriter::new(file)),
                })
            }
            found => {
                let real = match found {
                    Ok(_) => std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf()),
                    Err(_) => dest.to_path_buf(),
                };
                // An existing file is replaced only if it could be written in place (as `>`
                // would), and the replacement keeps its permissions and, where allowed, its owner.
                let existing = found.ok();
                #[cfg(unix)]
                if let (Some(_), Err(e)) = (&existing, writable(&real)) {
                    return Err(Failure::input(
                        format!("cannot write `{}` (given to {flag}): {e}", dest.display()),
                        "the file exists and is not writable: change its permissions or give another file",
                    ));
                }
                let temp = real.with_file_name(format!(
                    ".{}.rxnc-{}.tmp",
                    real.file_name()
                        .map_or(name.clone(), |n| n.to_string_lossy().into_owned()),
                    std::process::id()
                ));
                let interrupt_slot = interrupt::register(&temp);
                let file = File::create(&temp).map_err(|e| {
                    interrupt::forget(interrupt_slot);
                    cannot(e)
                })?;
                #[cfg(unix)]
                if let Some(meta) = &existing {
                    keep_owner_and_mode(&file, meta);
                }
                Ok(PendingFile {
                    interrupt_slot,
                    temp: Some(temp),
                    dest: real,
                    flag: flag.to_string(),
                    writer: Some(BufWriter::new(file)),
                })
            }
        }
    }

    /// The writer for the contents.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit")
    }

    /// Whether the output goes straight to a pipe, device or inherited descriptor (not through a
    /// temporary file).
    pub fn is_direct(&self) -> bool {
        self.temp.is_none()
    }

    /// Writes `bytes` as the whole contents, then commits.
    pub fn write_and_commit(mut self, bytes: &[u8]) -> Result<(), Failure> {
        match self.writer().write_all(bytes) {
            Err(e) if !(self.is_direct() && is_broken_pipe(&e)) => Err(self.failure(e)),
            _ => self.commit(),
        }
    }

    /// A failed write (a full disk), naming the output.
    fn failure(&self, e: io::Error) -> Failure {
        write_failure(
            e,
            &format!("`{}` (given to {})", self.dest.display(), self.flag),
        )
    }

    /// Flushes and gives the file its real name. A pipe closed by its reader is not an error.
    pub fn commit(mut self) -> Result<(), Failure> {
        let w = self.writer.take().expect("writer is present until commit");
        let fail = |e: io::Error| self.failure(e);
        let file = match w.into_inner() {
            Ok(file) => file,
            Err(e) if self.temp.is_none() && is_broken_pipe(e.error()) => return Ok(()),
            Err(e) => return Err(fail(e.into_error())),
        };
        if let Some(temp) = &self.temp {
            // The rename is what makes the file appear whole; an fsync would add tens of
            // milliseconds to every run for durability across power loss, which outputs that can
            // be regenerated from a seed do not need.
            drop(file);
            std::fs::rename(temp, &self.dest).map_err(fail)?;
            interrupt::forget(self.interrupt_slot.take());
            self.temp = None;
        }
        Ok(())
    }
}

/// Refuses two outputs that name the same regular file (they would share one temporary file and
/// overwrite each other); two outputs into one device or pipe (`/dev/null`) are fine.
pub fn distinct_outputs(
    outputs: &[(&str, Option<&Path>)],
    inputs: &[(&str, &Path)],
) -> Result<(), Failure> {
    let given: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|&(flag, path)| Some((flag, path?)))
        .collect();
    for (i, &(flag_a, a)) in given.iter().enumerate() {
        // The process's own descriptors (`/dev/stdout`) are written in place, like devices.
        #[cfg(unix)]
        let own = inherited_fd(a).is_some();
        #[cfg(not(unix))]
        let own = false;
        let special = own || std::fs::metadata(a).is_ok_and(|m| !m.is_file());
        if special {
            continue;
        }
        for &(flag_b, b) in &given[i + 1..] {
            if same_file(a, b) {
                return Err(Failure::input(
                    format!("{flag_a} and {flag_b} both name `{}`", a.display()),
                    "give them different files",
                ));
            }
        }
        // Writing an output over an input would destroy it (and the run reads it first).
        for &(what, input) in inputs {
            if same_file(a, input) {
                return Err(Failure::input(
                    format!(
                        "{flag_a} names `{}`, the {what}: writing it would destroy it",
                        a.display()
                    ),
                    format!("give {flag_a} another file"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether two paths name one file: the same path, through links, or (Unix) the same inode.
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let canonical = |p: &Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    if matches!((canonical(a), canonical(b)), (Ok(x), Ok(y)) if x == y) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// Whether this process may write `path`, by its effective ids (so root may write any file, as
/// with `>`); the error says why not.
#[cfg(unix)]
fn writable(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let status =
        unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the replacement of an existing file its owner, group and permissions where this process
/// may: only root may give a file away, and a member of the file's group may keep it. Where the
/// group cannot be kept, the group's permissions are not given to this process's own group; the
/// set-id bits are never copied.
#[cfg(unix)]
fn keep_owner_and_mode(file: &File, old: &std::fs::Metadata) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _ = std::os::unix::fs::fchown(file, Some(old.uid()), None);
    let group_kept = std::os::unix::fs::fchown(file, None, Some(old.gid())).is_ok()
        || file.metadata().is_ok_and(|m| m.gid() == old.gid());
    let mut mode = old.mode() & 0o1777;
    if !group_kept {
        mode &= !0o070;
    }
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
}

/// The descriptor a path names when it is one of this process's own (`/dev/stdout`, `/dev/fd/3`),
/// and that descriptor is open.
#[cfg(unix)]
fn inherited_fd(dest: &Path) -> Option<i32> {
    let text = dest.to_str()?;
    let fd = match text {
        "/dev/stdin" => 0,
        "/dev/stdout" => 1,
        "/dev/stderr" => 2,
        _ => text
            .strip_prefix("/dev/fd/")
            .or_else(|| text.strip_prefix("/proc/self/fd/"))?
            .parse()
            .ok()?,
    };
    std::fs::metadata(dest).is_ok().then_some(fd)
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Not committed (or the commit failed): the partial file goes.
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
        }
        interrupt::forget(self.interrupt_slot.take());
    }
}

/// Whether `e` says the reader of a pipe went away (`rxnc ... | head`).
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// A failed write of output `what` (`standard output`, `--stats`, ...): a full disk, an I/O
/// error. Not the user's input, and not a fault of rxnc: exit 2 with a plain message.
pub fn write_failure(e: io::Error, what: &str) -> Failure {
    Failure::Output(format!("cannot write {what}: {e}"))
}

/// Maps an error writing to standard output: a closed pipe (`rxnc ... | head`) ends quietly.
pub fn stdout_error(e: io::Error) -> Result<(), Failure> {
    if is_broken_pipe(&e) {
        Ok(())
    } else {
        Err(write_failure(e, "standard output"))
    }
}

/// Set when standard output was closed as the process started (see [`note_stdout_closed`]).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Records that standard output was closed when the process started (`rxnc simulate ... >&-`).
///
/// Rust's runtime reopens a closed standard descriptor on `/dev/null` before `main`, so output
/// written there would vanish with exit status 0. The `rxnc` executable checks descriptor 1 in a
/// constructor, which runs before that, and calls this; the commands then fail (exit 2) where
/// they would write to standard output. Not needed by programs that embed the library.
pub fn note_stdout_closed() {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
}

/// Fails if standard output was closed at start ([`note_stdout_closed`]).
pub fn stdout_open() -> Result<(), Failure> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(Failure::Output(
            "cannot write standard output: it was closed when rxnc started".to_string(),
        ));
    }
    Ok(())
}

/// Prints text to standard output.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    stdout_open()?;
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .or_else(stdout_error)
}
