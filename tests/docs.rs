//! The documentation's transcripts are specifications: every `$ rxnc ...` line in a code block of
//! the docs is run, and what it prints (standard output, then standard error) must be the text
//! that follows it in the block, up to the next `$` line. `$ cat FILE` shows a file the commands
//! before it wrote. A transcript that no longer reproduces (an fd example printed the gradient of
//! an older perturbation scheme for a session) fails here instead of misleading its readers.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rxnc");

/// One `$ command` and the lines the docs show after it.
struct Transcript {
    doc: &'static str,
    line: usize,
    command: String,
    expected: String,
}

/// The transcripts of a document: code blocks whose first line starts with `$ `.
fn transcripts(doc: &'static str) -> Vec<Transcript> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(doc)).unwrap();
    let mut out: Vec<Transcript> = Vec::new();
    let mut in_block = false;
    let mut in_transcript = false;
    for (k, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            in_transcript = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            in_transcript = true;
            out.push(Transcript {
                doc,
                line: k + 1,
                command: command.to_string(),
                expected: String::new(),
            });
        } else if in_transcript && let Some(t) = out.last_mut() {
            t.expected.push_str(line);
            t.expected.push('\n');
        }
    }
    out
}

/// Splits a command line on spaces, keeping double-quoted words whole (the docs quote objectives).
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut started) = (String::new(), false, false);
    for c in command.chars() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Runs a transcript's command in `dir` (where `examples` points at the crate's examples) and
/// returns what it printed.
fn run(dir: &Path, command: &str) -> String {
    let words = words(command);
    if words[0] == "cat" {
        return std::fs::read_to_string(dir.join(&words[1])).unwrap();
    }
    assert_eq!(words[0], "rxnc", "a transcript runs rxnc or cat: {command}");
    let out = Command::new(BIN)
        .args(&words[1..])
        .current_dir(dir)
        .env("RXNC_CACHE_DIR", "off")
        .env("NO_COLOR", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    #[cfg(unix)]
    std::os::unix::fs::symlink(examples, dir.join("examples")).unwrap();
    dir
}

fn trimmed(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

#[cfg(unix)]
#[test]
fn the_docs_transcripts_reproduce() {
    let mut failures = Vec::new();
    let mut count = 0;
    for doc in [
        "docs/cli.md",
        "docs/gradients.md",
        "docs/language.md",
        "docs/fitting.md",
        "README.md",
    ] {
        let dir = scratch(&doc.replace(['/', '.'], "-"));
        for t in transcripts(doc) {
            count += 1;
            let printed = run(&dir, &t.command);
            if trimmed(&printed) != trimmed(&t.expected) {
                failures.push(format!(
                    "{}:{}: $ {}\n--- the docs show\n{}\n--- it prints\n{}",
                    t.doc, t.line, t.command, t.expected, printed
                ));
            }
        }
    }
    assert!(count >= 10, "only {count} transcripts found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
