//! Writing outputs safely: files appear complete or not at all, and a closed pipe is not an error.

use super::Failure;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name next to its destination; it takes its real name
/// only when [`PendingFile::commit`] is called, so an interrupted run never leaves a truncated file
/// under the name the user asked for.
pub struct PendingFile {
    temp: PathBuf,
    dest: PathBuf,
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
        let temp = dest.with_file_name(format!(".{name}.rxnc-{}.tmp", std::process::id()));
        let file = File::create(&temp).map_err(|e| {
            Failure::input(
                format!("cannot write `{}` (given to {flag}): {e}", dest.display()),
                "check that the directory exists and is writable",
            )
        })?;
        Ok(PendingFile {
            temp,
            dest: dest.to_path_buf(),
            writer: Some(BufWriter::new(file)),
        })
    }

    /// The writer for the contents.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit")
    }

    /// Flushes and gives the file its real name.
    pub fn commit(mut self) -> Result<(), Failure> {
        let w = self.writer.take().expect("writer is present until commit");
        let fail = |e: io::Error| {
            Failure::input(
                format!("cannot write `{}`: {e}", self.dest.display()),
                "check free disk space and permissions",
            )
        };
        let file = w.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&self.temp, &self.dest).map_err(fail)?;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Maps an error writing to standard output: a closed pipe (`rxnc ... | head`) ends quietly.
pub fn stdout_error(e: io::Error) -> Result<(), Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Failure::Internal(format!(
            "cannot write to standard output: {e}"
        )))
    }
}

/// Prints text to standard output.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .or_else(stdout_error)
}
