//! The `rxnc` command line, run as a user would: exit statuses, outputs, and never a panic.
//!
//! Exit status contract: 0 success, 1 the input was wrong (with a diagnostic on standard error),
//! 2 anything else. A panic (101) or a signal is never acceptable; every run here checks that.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_rxnc");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A fresh scratch directory for one test, removed when the test ends.
#[derive(Debug)]
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("rxnc-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(args: &[&str], out: Output) -> Run {
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("rxnc {args:?} was killed by a signal"));
    let run = Run {
        code,
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    };
    assert_ne!(run.code, 101, "rxnc {args:?} panicked:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("internal error"),
        "rxnc {args:?}:\n{}",
        run.stderr
    );
    assert!(
        matches!(run.code, 0..=2),
        "rxnc {args:?} exited with {}",
        run.code
    );
    run
}

/// Runs rxnc in `dir` with plain diagnostics.
fn rxnc_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("rxnc runs");
    finish(args, out)
}

fn rxnc(args: &[&str]) -> Run {
    rxnc_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_prints_species_parameters_and_reactions() {
    let r = rxnc(&["check", "examples/telegraph.rxn"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for word in ["species", "Goff", "Gon", "M", "kon", "koff", "ktx", "kdeg"] {
        assert!(r.stdout.contains(word), "no {word} in\n{}", r.stdout);
    }
    // The reversible reaction's two channels and the labels.
    for name in ["switch.fwd", "switch.rev", "tx", "deg"] {
        assert!(r.stdout.contains(name), "no {name} in\n{}", r.stdout);
    }
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn check_shows_generated_reaction_names() {
    let dir = scratch("generated-names");
    write(
        &dir,
        "m.rxn",
        "species A = 1, B\nA <-> B @ 1, 2\nB -> 0 @ 1\n",
    );
    let r = rxnc_in(&dir, &["check", "m.rxn"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for name in ["R1.fwd", "R1.rev", "R2"] {
        assert!(r.stdout.contains(name), "no {name} in\n{}", r.stdout);
    }
}

#[test]
fn check_emits_ir_and_clif() {
    for emit in ["summary", "ir", "clif"] {
        let r = rxnc(&["check", "examples/birth_death.rxn", "--emit", emit]);
        assert_eq!(r.code, 0, "--emit {emit}: {}", r.stderr);
        assert!(!r.stdout.is_empty(), "--emit {emit}");
    }
    let r = rxnc(&["check", "examples/birth_death.rxn", "--emit", "bogus"]);
    assert_eq!(r.code, 1);
}

#[test]
fn check_reports_a_broken_file_with_its_place() {
    let dir = scratch("broken");
    write(
        &dir,
        "broken.rxn",
        "species A = 1\nparam k = 1\nA -> B @ k\n",
    );
    let r = rxnc_in(&dir, &["check", "broken.rxn"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("broken.rxn:3:6"), "{}", r.stderr);
    assert!(r.stderr.contains("rxn::undeclared"), "{}", r.stderr);
    assert!(r.stderr.contains("species B"), "{}", r.stderr);
    // Plain when standard error is not a terminal: no colour codes.
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
}

#[test]
fn check_reports_every_corpus_file_without_crashing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rxn") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let r = rxnc_in(&dir, &["check", &name]);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("[{name}:")),
            "{name}: no place in\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("help:"),
            "{name}: no help in\n{}",
            r.stderr
        );
        n += 1;
    }
    assert!(n >= 60);
}

#[test]
fn check_survives_hostile_input() {
    let dir = scratch("hostile");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "nested.rxn",
            format!(
                "species A\nA -> 0 @ {}1{}\n",
                "(".repeat(100_000),
                ")".repeat(100_000)
            )
            .into_bytes(),
        ),
        (
            "long.rxn",
            format!("species A\nA -> 0 @ {}\n", vec!["A"; 200_000].join("*")).into_bytes(),
        ),
        (
            "signs.rxn",
            format!("species A\nA -> 0 @ {}1\n", "-".repeat(200_000)).into_bytes(),
        ),
        (
            "latin1.rxn",
            b"species A = 1 # caf\xe9\nA -> 0 @ 1\n".to_vec(),
        ),
        ("nul.rxn", b"species A\0 = 1\nA -> 0 @ 1\n".to_vec()),
        ("binary.rxn", (0..=255u8).cycle().take(4096).collect()),
        (
            "unicode.rxn",
            "species Ä = 1\nÄ -> 0 @ 1\n".as_bytes().to_vec(),
        ),
        (
            "emoji.rxn",
            "species A = 1 # 🧬\nA -> 0 @ 1 🧪\n".as_bytes().to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        std::fs::write(dir.join(name), bytes).unwrap();
        let r = rxnc_in(&dir, &["check", name]);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(r.stderr.contains(name), "{name}: {}", r.stderr);
    }
}

#[test]
fn missing_file_is_an_input_error() {
    let r = rxnc(&["check", "no/such/model.rxn"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no/such/model.rxn"), "{}", r.stderr);
    let r = rxnc(&["simulate", "no/such/model.rxn", "--t-end", "1"]);
    assert_eq!(r.code, 1);
    let r = rxnc(&["check", "examples"]);
    assert_eq!(r.code, 1, "a directory is not a model file");
}

#[test]
fn bad_usage_is_an_input_error_not_claps_two() {
    for args in [
        &["check", "--bogus", "examples/telegraph.rxn"][..],
        &[
            "simulate",
            "examples/telegraph.rxn",
            "--t-end",
            "1",
            "--bogus",
        ],
        &["simulate", "examples/telegraph.rxn"],
        &["simulate", "examples/telegraph.rxn", "--t-end", "soon"],
        &[
            "simulate",
            "examples/telegraph.rxn",
            "--t-end",
            "1",
            "-n",
            "-3",
        ],
        &[
            "simulate",
            "examples/telegraph.rxn",
            "--t-end",
            "1",
            "--seed",
            "x",
        ],
        &["frobnicate"],
        &["check"],
        &[],
    ] {
        let r = rxnc(args);
        assert_eq!(r.code, 1, "rxnc {args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "rxnc {args:?} said nothing");
    }
}

#[test]
fn help_and_version_succeed() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["check", "--help"],
        &["simulate", "--help"],
        &["help", "simulate"],
        &["--version"],
        &["-V"],
    ] {
        let r = rxnc(args);
        assert_eq!(r.code, 0, "rxnc {args:?}: {}", r.stderr);
        assert!(!r.stdout.is_empty(), "rxnc {args:?}");
    }
    let r = rxnc(&["simulate", "--help"]);
    for flag in [
        "--t-end",
        "--every",
        "--trajectories",
        "--seed",
        "--out",
        "--stats",
        "--max-events",
        "--threads",
    ] {
        assert!(r.stdout.contains(flag), "no {flag} in\n{}", r.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// simulate: options

#[test]
fn simulate_rejects_bad_numbers() {
    let bd = s(&example("birth_death.rxn")).to_string();
    for (args, says) in [
        (vec!["--t-end", "0"], "--t-end"),
        (vec!["--t-end", "-1"], "--t-end"),
        (vec!["--t-end=-5"], "--t-end"),
        (vec!["--t-end", "nan"], "--t-end"),
        (vec!["--t-end", "inf"], "--t-end"),
        (vec!["--t-end", "1", "--every", "0"], "--every"),
        (vec!["--t-end", "1", "--every", "-0.1"], "--every"),
        (vec!["--t-end", "1", "-n", "0"], "-n"),
        (vec!["--t-end", "1", "--threads", "0"], "--threads"),
        (vec!["--t-end", "1", "--max-events", "0"], "--max-events"),
        (vec!["--t-end", "1", "--every", "1e-12"], "10^8"),
        (vec!["--t-end", "1", "--every", "1e-8"], "10^8"),
        (vec!["--t-end", "5e-324"], "too small"),
        (vec!["--t-end", "1e300", "--every", "1e-300"], "10^8"),
        (vec!["--t-end", "1", "--every", "-1e-9"], "--every"),
        (
            vec![
                "--t-end",
                "10",
                "-n",
                "100000000000",
                "--plot",
                "/dev/null/p.svg",
            ],
            "memory",
        ),
    ] {
        let mut all = vec!["simulate", bd.as_str()];
        all.extend(args.iter().copied());
        let r = rxnc(&all);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("help:"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?} printed {}", r.stdout);
    }
    // One trajectory of 2000 species at 10^8 times is 1.6 TB of samples, whatever -n.
    let dir = scratch("too-long");
    let species: Vec<String> = (0..2000).map(|i| format!("S{i}")).collect();
    let text = format!("species {}\nS0 -> S1 @ 1\n", species.join(", "));
    write(&dir, "wide.rxn", &text);
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            "wide.rxn",
            "--t-end",
            "1",
            "--every",
            "1.0000001e-8",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("a trajectory sampled every 1.0000001e-8"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("GB of memory"), "{}", r.stderr);
    assert!(r.stderr.contains("--every"), "{}", r.stderr);
}

/// An output that cannot be opened fails before any work, creates nothing, and says why: a
/// missing directory, or a file where a directory should be.
#[test]
fn simulate_unwritable_out_fails_before_running_and_creates_nothing() {
    let dir = scratch("unwritable");
    let file = write(&dir, "file", "");
    let bd = example("birth_death.rxn");
    let in_file = file.join("x.csv");
    for (target, says) in [
        (
            Path::new("/nonexistent/dir/x.csv"),
            "the directory `/nonexistent/dir` does not exist",
        ),
        (in_file.as_path(), "is a file, not a directory"),
    ] {
        for flag in ["--out", "--stats"] {
            let r = rxnc(&["simulate", s(&bd), "--t-end", "1", flag, s(target)]);
            assert_eq!(r.code, 1, "{flag}: {}", r.stderr);
            assert!(
                r.stderr.contains(says),
                "{flag}: no `{says}` in\n{}",
                r.stderr
            );
            assert!(!target.exists());
        }
    }
    assert!(!Path::new("/nonexistent").exists());
    assert_eq!(std::fs::read(&file).unwrap(), b"");
}

#[test]
fn simulate_out_to_a_directory_is_an_input_error() {
    let dir = scratch("out-dir");
    let bd = example("birth_death.rxn");
    for flag in ["--out", "--stats"] {
        let r = rxnc(&["simulate", s(&bd), "--t-end", "1", flag, s(&dir)]);
        assert_eq!(r.code, 1, "{flag}: {}", r.stderr);
        assert!(r.stderr.contains("directory"), "{}", r.stderr);
        assert!(dir.is_dir());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "left something in {dir:?}"
        );
    }
}

/// No output may name an input (the model, the data), directly, through another spelling, a
/// symbolic link or a hard link: it would be destroyed. Both stay as they were.
#[test]
fn outputs_never_overwrite_inputs() {
    let dir = scratch("inputs");
    let model = std::fs::read_to_string(example("birth_death.rxn")).unwrap();
    write(&dir, "m.rxn", &model);
    let data = "X\n3\n4\n5\n";
    write(&dir, "d.csv", data);
    #[cfg(unix)]
    std::os::unix::fs::symlink("m.rxn", dir.join("link.rxn")).unwrap();
    std::fs::hard_link(dir.join("d.csv"), dir.join("hard.csv")).unwrap();
    let simulate = ["simulate", "m.rxn", "--t-end", "1"];
    let fit = ["run", "m.rxn", "--fit", "d.csv", "-n", "20", "--steps", "2"];
    for (command, output, path, says) in [
        (
            &simulate[..],
            "--out",
            "m.rxn",
            "--out names `m.rxn`, the model file",
        ),
        (
            &simulate[..],
            "--stats",
            "./m.rxn",
            "--stats names `./m.rxn`, the model file",
        ),
        (&simulate[..], "--out", "link.rxn", "the model file"),
        (
            &fit[..],
            "--out",
            "d.csv",
            "--out names `d.csv`, the data file",
        ),
        (
            &fit[..],
            "--trace",
            "m.rxn",
            "--trace names `m.rxn`, the model file",
        ),
        (&fit[..], "--out", "hard.csv", "the data file"),
    ] {
        let mut args = command.to_vec();
        args.extend([output, path]);
        let r = rxnc_in(&dir, &args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(says),
            "{args:?}: no `{says}` in\n{}",
            r.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join("m.rxn")).unwrap(), model);
    assert_eq!(std::fs::read_to_string(dir.join("d.csv")).unwrap(), data);
}

#[test]
fn simulate_out_and_stats_must_differ() {
    let dir = scratch("same-file");
    let bd = example("birth_death.rxn");
    for (a, b, says) in [
        ("--out", "--stats", "--out and --stats"),
        ("--out", "--plot", "--out and --plot"),
        ("--stats", "--plot", "--stats and --plot"),
    ] {
        let r = rxnc_in(
            &dir,
            &["simulate", s(&bd), "--t-end", "1", a, "x.svg", b, "./x.svg"],
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert!(!dir.join("x.svg").exists());
    }
    // The process's own standard output may take two outputs, even when it is a file.
    let log = std::fs::File::create(dir.join("log.txt")).unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args(["simulate", s(&bd), "--t-end", "1", "-n", "2"])
        .args(["--out", "/dev/stdout", "--stats", "/dev/stdout"])
        .stdout(log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.starts_with("trajectory,time,X\n") && log.contains("time,name,mean,sd\n"));
}

/// A full disk is exit 2 with the output it could not write, not an "internal error" (which
/// `finish` refuses), for every output of every command; `-` is standard output on /dev/full.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_names_the_output() {
    let full_disk = |args: &[&str], stdout_full: bool| {
        let mut command = Command::new(BIN);
        command
            .env("RXNC_CACHE_DIR", "off")
            .env("NO_COLOR", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args);
        if stdout_full {
            command.stdout(std::fs::File::create("/dev/full").unwrap());
        }
        finish(args, command.output().unwrap())
    };
    let simulate = [
        "simulate",
        "examples/birth_death.rxn",
        "--t-end",
        "100",
        "--every",
        "0.001",
    ];
    let fit = [
        "run",
        "examples/telegraph_fit.rxn",
        "--fit",
        "examples/telegraph_fit.csv",
        "-n",
        "30",
        "--steps",
        "2",
    ];
    let grad = [
        "grad",
        "examples/birth_death.rxn",
        "--objective",
        "mean(X)",
        "--t-end",
        "1",
        "-n",
        "8",
    ];
    for (command, output, says) in [
        (
            &simulate[..],
            "--stats",
            "cannot write --stats: No space left",
        ),
        (&simulate[..], "--out", "cannot write --out: No space left"),
        (
            &simulate[..],
            "-",
            "cannot write standard output: No space left",
        ),
        (
            &fit[..],
            "--out",
            "cannot write `/dev/full` (given to --out): No space left",
        ),
        (
            &fit[..],
            "--trace",
            "cannot write `/dev/full` (given to --trace): No space left",
        ),
        (&fit[..], "-", "cannot write standard output: No space left"),
        (
            &grad[..],
            "-",
            "cannot write standard output: No space left",
        ),
        (
            &grad[..],
            "--json",
            "cannot write standard output: No space left",
        ),
    ] {
        let mut args = command.to_vec();
        match output {
            "-" => {}
            "--json" => args.push("--json"),
            flag => args.extend([flag, "/dev/full"]),
        }
        let r = full_disk(&args, matches!(output, "-" | "--json"));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(says),
            "{args:?}: no `{says}` in\n{}",
            r.stderr
        );
    }
}

/// An existing output file is replaced only if it could be written (a read-only one is exit 1
/// and stays as it was), and the replacement keeps its permissions.
#[cfg(unix)]
#[test]
fn existing_outputs_keep_their_permissions_and_read_only_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = scratch("output-permissions");
    let bd = write(&dir, "bd.rxn", "species X\n0 -> X @ 1\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // Kept: a private file stays private (it became 0644).
    let private = write(&dir, "private.csv", "old\n");
    chmod(&private, 0o600);
    let r = rxnc_in(
        &dir,
        &["simulate", s(&bd), "--t-end", "1", "--stats", "private.csv"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        std::fs::read_to_string(&private)
            .unwrap()
            .starts_with("time,name")
    );
    assert_eq!(mode(&private), 0o600);
    // Refused: a read-only file, for a user other than root (root may write it, as with `>`).
    let read_only = write(&dir, "read-only.csv", "precious\n");
    chmod(&read_only, 0o444);
    chmod(&dir, 0o777);
    let mut command = Command::new(BIN);
    command
        .env("RXNC_CACHE_DIR", "off")
        .env("NO_COLOR", "1")
        .current_dir(&dir)
        .args([
            "simulate",
            "bd.rxn",
            "--t-end",
            "1",
            "--stats",
            "read-only.csv",
        ]);
    // SAFETY: only drops privileges between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::geteuid() == 0 && libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let args = ["simulate", "--stats", "read-only.csv"];
    let r = finish(&args, command.output().unwrap());
    if r.code == 1 && !r.stderr.contains("read-only.csv") {
        // The unprivileged user cannot reach the scratch directory (a private home above it).
        eprintln!("skipped the read-only case: {}", r.stderr);
        return;
    }
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert!(r.stderr.contains("not writable"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&read_only).unwrap(), "precious\n");
    assert_eq!(mode(&read_only), 0o444);
}

/// A standard output closed at start (`rxnc ... >&-`) is exit 2 where the command would write
/// there (before the work), not output lost with exit 0; a command writing only files runs.
#[cfg(target_os = "linux")]
#[test]
fn a_closed_stdout_is_an_output_failure() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("closed-stdout");
    let closed_stdout = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .env("RXNC_CACHE_DIR", "off")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args);
        // SAFETY: only closes a descriptor between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::close(1);
                Ok(())
            })
        };
        finish(args, command.output().unwrap())
    };
    let bd = "examples/birth_death.rxn";
    let stats = dir.join("stats.csv");
    let says = "error: cannot write standard output: it was closed when rxnc started";
    for args in [
        &["check", bd][..],
        &["simulate", bd, "--t-end", "1"],
        &["simulate", bd, "--t-end", "1", "--out", "/dev/stdout"],
        &[
            "grad",
            bd,
            "--objective",
            "mean(X)",
            "--t-end",
            "1",
            "-n",
            "8",
        ],
        &["simulate", "--help"],
        &["--version"],
    ] {
        let r = closed_stdout(args);
        assert_eq!((r.code, r.stderr.trim()), (2, says), "{args:?}");
    }
    let r = closed_stdout(&["simulate", bd, "--t-end", "1", "--stats", s(&stats)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        std::fs::read_to_string(&stats)
            .unwrap()
            .starts_with("time,name,mean,sd\n")
    );
}

/// A run that needs more memory than the address-space limit (`ulimit -v`) allows is refused
/// with the memory diagnostic, not aborted by a failed allocation.
#[cfg(unix)]
#[test]
fn the_address_space_limit_counts_as_memory() {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(BIN);
    command
        .env("RXNC_CACHE_DIR", "off")
        .args(["simulate", s(&example("telegraph.rxn")), "--t-end", "1"])
        .args(["--every", "1.0000001e-8", "--out", "/dev/null"]);
    // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let r = finish(&["simulate (ulimit -v)"], command.output().unwrap());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("GB of memory"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// simulate: outputs

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn simulate_writes_trajectories_to_stdout() {
    let bd = example("birth_death.rxn");
    let r = rxnc(&[
        "simulate",
        s(&bd),
        "--t-end",
        "2",
        "--every",
        "0.5",
        "-n",
        "3",
        "--seed",
        "7",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = lines(&r.stdout);
    assert_eq!(rows[0], "trajectory,time,X");
    // 3 trajectories x 5 times (0, 0.5, 1, 1.5, 2).
    assert_eq!(rows.len(), 1 + 3 * 5, "{}", r.stdout);
    assert!(rows[1].starts_with("0,0,0"), "{}", rows[1]);
    assert!(
        rows.last().unwrap().starts_with("2,2,"),
        "{}",
        rows.last().unwrap()
    );
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 3, "{row}");
        let count: i64 = cells[2].parse().unwrap();
        assert!(count >= 0);
    }
    // No progress bar, no chatter: standard error is not a terminal.
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn simulate_header_has_species_then_observables() {
    let dir = scratch("observables");
    write(
        &dir,
        "obs.rxn",
        "species A = 5, B = 0\nobservable total = A + B, twice = 2 * A\nA -> B @ 1\n",
    );
    let r = rxnc_in(
        &dir,
        &["simulate", "obs.rxn", "--t-end", "1", "--every", "1"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = lines(&r.stdout);
    assert_eq!(rows[0], "trajectory,time,A,B,total,twice");
    assert_eq!(rows[1], "0,0,5,0,5,10");
    for row in &rows[1..] {
        let c: Vec<f64> = row.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(c[4], c[2] + c[3], "{row}");
        assert_eq!(c[5], 2.0 * c[2], "{row}");
    }
}

#[test]
fn simulate_default_grid_is_a_hundredth_of_the_horizon() {
    let bd = example("birth_death.rxn");
    let r = rxnc(&["simulate", s(&bd), "--t-end", "10"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = lines(&r.stdout);
    assert_eq!(rows.len(), 1 + 101);
    assert!(rows[2].starts_with("0,0.1,"), "{}", rows[2]);
    assert!(rows[101].starts_with("0,10,"), "{}", rows[101]);
}

/// A species or observable named like the trajectories CSV's own columns is warned about where
/// those rows are written (the header repeats the name), not for --stats alone.
#[test]
fn names_clashing_with_csv_columns_are_warned_about() {
    let dir = scratch("clashing-names");
    write(
        &dir,
        "m.rxn",
        "species time = 1, A\nobservable trajectory = A\ntime -> A @ 1\n",
    );
    let r = rxnc_in(&dir, &["simulate", "m.rxn", "--t-end", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("trajectory,time,time,A,trajectory\n"),
        "{}",
        r.stdout
    );
    for (kind, name) in [("species", "time"), ("observable", "trajectory")] {
        let says = format!("warning: {kind} `{name}` has the name of the trajectories CSV's own");
        assert!(r.stderr.contains(&says), "{}", r.stderr);
    }
    let r = rxnc_in(
        &dir,
        &["simulate", "m.rxn", "--t-end", "1", "--stats", "s.csv"],
    );
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}

/// The sampling times are multiples of DT written as decimals, and end at T itself, also when
/// the last multiple is within rounding of T.
#[test]
fn simulate_grid_times_end_at_the_horizon() {
    let bd = example("birth_death.rxn");
    let times = |t_end: &str, every: &str| -> Vec<String> {
        let r = rxnc(&["simulate", s(&bd), "--t-end", t_end, "--every", every]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        lines(&r.stdout)[1..]
            .iter()
            .map(|row| row.split(',').nth(1).unwrap().to_string())
            .collect()
    };
    let case = |t_end, every, expected: &[&str]| assert_eq!(times(t_end, every), expected);
    case("1", "0.3", &["0", "0.3", "0.6", "0.9", "1"]);
    case("0.3", "0.1", &["0", "0.1", "0.2", "0.3"]);
    case(
        "0.3000000000000001",
        "0.1",
        &["0", "0.1", "0.2", "0.3000000000000001"],
    );
    case(
        "1",
        "0.33333333333",
        &["0", "0.33333333333", "0.66666666666", "1"],
    );
    case("1", "5", &["0", "1"]);
}

#[test]
fn simulate_writes_out_and_stats_files() {
    let dir = scratch("files");
    let bd = example("birth_death.rxn");
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            s(&bd),
            "--t-end",
            "4",
            "--every",
            "1",
            "-n",
            "20",
            "--out",
            "traj.csv",
            "--stats",
            "stats.csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "with --out/--stats nothing goes to stdout:\n{}",
        r.stdout
    );
    let traj = std::fs::read_to_string(dir.join("traj.csv")).unwrap();
    assert_eq!(lines(&traj)[0], "trajectory,time,X");
    assert_eq!(lines(&traj).len(), 1 + 20 * 5);
    let stats = std::fs::read_to_string(dir.join("stats.csv")).unwrap();
    let rows = lines(&stats);
    assert_eq!(rows[0], "time,name,mean,sd");
    assert_eq!(rows.len(), 1 + 5);
    assert_eq!(rows[1], "0,X,0,0");
    for row in &rows[1..] {
        let c: Vec<&str> = row.split(',').collect();
        assert_eq!(c.len(), 4);
        assert_eq!(c[1], "X");
        let mean: f64 = c[2].parse().unwrap();
        let sd: f64 = c[3].parse().unwrap();
        assert!(mean >= 0.0 && sd >= 0.0, "{row}");
    }
    // No temporary files are left next to the outputs.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["stats.csv", "traj.csv"]);
}

/// Runs rxnc in `dir` with standard output discarded, checks that it succeeds, and returns its
/// peak resident memory in MB (wait4 rather than Child::wait, for this child's resource usage).
#[cfg(target_os = "linux")]
fn peak_mb(dir: &Path, args: &[&str]) -> i64 {
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    #[allow(
        clippy::zombie_processes,
        reason = "reaped below with wait4, for its peak memory"
    )]
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RXNC_CACHE_DIR", "off")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data, zero is a valid value of it; the pid is our child's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32);
    let errors = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(libc::WIFEXITED(status), "{args:?}: {errors}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "{args:?}: {errors}");
    usage.ru_maxrss / 1024
}

/// Trajectories are summarised (and written) as they finish, so memory does not grow with the
/// ensemble: 13 000 trajectories sampled at 10 001 times would be 1 GB of counts if kept.
#[cfg(target_os = "linux")]
#[test]
fn simulate_memory_does_not_grow_with_the_ensemble() {
    let dir = scratch("streaming");
    let n = 13_000;
    let model = example("birth_death.rxn");
    let bd = s(&model);
    let peak = peak_mb(
        &dir,
        &[
            "simulate",
            bd,
            "--t-end",
            "100",
            "--every",
            "0.01",
            "-n",
            &n.to_string(),
            "--stats",
            "s.csv",
        ],
    );
    assert!(peak < 200, "peak resident memory {peak} MB");
    // The statistics are those of the whole ensemble: X(100) is Poisson(10).
    let stats = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    let rows = lines(&stats);
    assert_eq!(rows.len(), 1 + 10_001);
    let last: Vec<&str> = rows[10_001].split(',').collect();
    assert_eq!(last[..2], ["100", "X"]);
    let (mean, sd): (f64, f64) = (last[2].parse().unwrap(), last[3].parse().unwrap());
    let z = (mean - 10.0) / (10f64.sqrt() / (n as f64).sqrt());
    assert!(z.abs() < 4.0, "mean {mean}, z = {z}");
    // The sample sd's standard error, sqrt((mu4 - sigma^4) / (4 sigma^2 n)), with Poisson's
    // fourth central moment mu4 = lambda (1 + 3 lambda).
    let se_sd = ((10.0 * 31.0 - 100.0) / (4.0 * 10.0 * n as f64)).sqrt();
    let z = (sd - 10f64.sqrt()) / se_sd;
    assert!(z.abs() < 4.0, "sd {sd}, z = {z}");
    // One trajectory at 10^7 times: its samples and times (160 MB), and text written in pieces.
    let peak = peak_mb(
        &dir,
        &[
            "simulate",
            bd,
            "--t-end",
            "100",
            "--every",
            "1e-5",
            "--out",
            "/dev/null",
        ],
    );
    assert!(
        peak < 250,
        "peak resident memory {peak} MB writing a long trajectory"
    );
}

#[test]
fn simulate_stats_only() {
    let dir = scratch("stats-only");
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            s(&example("telegraph.rxn")),
            "--t-end",
            "1",
            "--every",
            "0.5",
            "-n",
            "5",
            "--stats",
            "s.csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let stats = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    let rows = lines(&stats);
    assert_eq!(rows[0], "time,name,mean,sd");
    // 3 times x 3 species, tidy.
    assert_eq!(rows.len(), 1 + 3 * 3);
    assert!(rows[1].starts_with("0,Goff,1,"), "{}", rows[1]);
    assert!(!dir.join("traj.csv").exists());
}

/// An observable that is infinite or NaN in some trajectory has the sum's mean (inf, -inf, NaN
/// for both signs or a NaN) and an undefined sd, with a warning naming it; the figure breaks its
/// curves there instead of drawing through infinity.
#[test]
fn non_finite_observables_are_summarised_and_named() {
    let dir = scratch("non-finite-observables");
    write(
        &dir,
        "m.rxn",
        "species A = 3\nparam k = 1\nobservable big = exp(1000 * A)\nobservable low = -exp(1000 * A)\n\
         observable undefined = exp(1000 * A) - exp(1000 * A)\nobservable inverse = 1 / A\nA -> 0 @ k\n",
    );
    let r = rxnc_in(
        &dir,
        &[
            "simulate", "m.rxn", "--t-end", "20", "--every", "10", "-n", "4", "--stats", "s.csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stats = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    for row in [
        "0,big,inf,NaN",
        "0,low,-inf,NaN",
        "0,undefined,NaN,NaN",
        "0,inverse,0.3333333333333333,0",
        // By t = 20 every A has decayed (e^-20 per molecule): 1/0.
        "20,inverse,inf,NaN",
    ] {
        assert!(lines(&stats).contains(&row), "no `{row}` in\n{stats}");
    }
    for name in ["`big`", "`low`", "`undefined`", "`inverse`"] {
        let warning = r.stderr.lines().find(|l| l.contains(name));
        assert!(
            warning.is_some_and(|w| w.starts_with("warning: ")),
            "{name}: {}",
            r.stderr
        );
    }
    assert!(
        r.stderr
            .contains("`inverse` is infinite or NaN in some trajectories at 2 of 3 sampling times (the first t = 10)"),
        "{}",
        r.stderr
    );
    // The trajectories' rows keep inf and NaN as they are, with a warning counting the rows
    // (exp(1000 A) overflows at t = 0 in all four; by t = 10 every A has decayed).
    let r = rxnc_in(
        &dir,
        &[
            "simulate", "m.rxn", "--t-end", "20", "--every", "10", "-n", "4",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().nth(1).unwrap().contains(",inf,-inf,NaN,"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(
            "warning: observable `big` is infinite or NaN in 4 rows of the trajectories (the \
             first: trajectory 0, t = 0)"
        ),
        "{}",
        r.stderr
    );
    let r = rxnc_in(
        &dir,
        &[
            "simulate", "m.rxn", "--t-end", "20", "-n", "4", "--plot", "f.svg",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let svg = std::fs::read_to_string(dir.join("f.svg")).unwrap();
    assert!(
        !svg.contains("NaN") && !svg.contains("inf"),
        "non-finite coordinates in the figure"
    );
}

#[test]
fn one_trajectory_has_an_empty_sd() {
    let dir = scratch("one-trajectory");
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            s(&example("birth_death.rxn")),
            "--t-end",
            "1",
            "--every",
            "1",
            "--stats",
            "s.csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stats = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    assert_eq!(lines(&stats)[1], "0,X,0,");
}

#[test]
fn same_seed_same_output_whatever_the_threads() {
    let t = example("telegraph.rxn");
    let run = |seed: &str, threads: &str| {
        let r = rxnc(&[
            "simulate",
            s(&t),
            "--t-end",
            "20",
            "-n",
            "16",
            "--seed",
            seed,
            "--threads",
            threads,
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let a = run("42", "1");
    assert_eq!(a, run("42", "1"), "same seed, same output");
    assert_eq!(a, run("42", "2"), "the thread count must not matter");
    assert_eq!(a, run("42", "7"), "the thread count must not matter");
    assert_ne!(a, run("43", "2"), "another seed, other trajectories");
    // Trajectory i depends only on (seed, i): the first trajectories of a larger run are the same.
    let r = rxnc(&[
        "simulate",
        s(&t),
        "--t-end",
        "20",
        "-n",
        "4",
        "--seed",
        "42",
    ]);
    let prefix: Vec<&str> = a.lines().take(r.stdout.lines().count()).collect();
    assert_eq!(prefix, r.stdout.lines().collect::<Vec<_>>());
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let dir = scratch("closed-pipe");
    // Rows to standard output, to it through /dev/stdout, with statistics to a file (still
    // written whole), statistics to standard output, and both there. Each is larger than a pipe
    // holds (10 001 times × 3 species).
    for (extra, header) in [
        (&[][..], "trajectory,time,"),
        (&["--out", "/dev/stdout"], "trajectory,time,"),
        (
            &["--out", "/dev/stdout", "--stats", "s.csv"],
            "trajectory,time,",
        ),
        (&["--stats", "/dev/stdout"], "time,name,mean,sd"),
        (
            &["--out", "/dev/stdout", "--stats", "/dev/stdout"],
            "trajectory,time,",
        ),
    ] {
        let mut child = Command::new(BIN)
            .env("RXNC_CACHE_DIR", "off")
            .current_dir(&dir)
            .args(["simulate", s(&example("telegraph.rxn")), "--t-end", "1000"])
            .args(["--every", "0.1", "-n", "200"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Read;
            let mut stdout = child.stdout.take().unwrap();
            let mut first = [0u8; 64];
            stdout.read_exact(&mut first).unwrap();
            assert!(first.starts_with(header.as_bytes()), "{extra:?}");
            // Dropping the pipe closes it, like `| head`.
        }
        let out = child.wait_with_output().unwrap();
        let r = finish(&["simulate (closed pipe)"], out);
        assert_eq!(r.code, 0, "{extra:?}: {}", r.stderr);
        assert!(r.stderr.is_empty(), "{extra:?}: {}", r.stderr);
    }
    let stats = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    assert_eq!(lines(&stats).len(), 1 + 10_001 * 3);
}

/// An interrupted run (Ctrl-C, or SIGTERM from a job scheduler) removes its partial outputs
/// and dies of the signal, as it would have without them; a signal it was started ignoring
/// (`nohup` ignores SIGHUP) stays ignored.
#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_no_partial_files() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // (the signal sent, a signal ignored from the start and sent first)
    for (signal, ignored) in [
        (libc::SIGINT, None),
        (libc::SIGTERM, None),
        (libc::SIGTERM, Some(libc::SIGHUP)),
    ] {
        let dir = scratch(&format!("interrupted-{signal}-{ignored:?}"));
        let mut command = Command::new(BIN);
        command
            .env("RXNC_CACHE_DIR", "off")
            .current_dir(&dir)
            .args([
                "simulate",
                s(&example("birth_death.rxn")),
                "--t-end",
                "1000",
            ])
            .args(["-n", "1000000", "--out", "traj.csv", "--stats", "stats.csv"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The test's own dispositions are not inherited (a script's background job ignores
        // SIGINT): default ones, and the one under test ignored.
        // SAFETY: only signal(2), async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                if let Some(ignored) = ignored {
                    libc::signal(ignored, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id() as i32;
        let send = |signal| {
            // SAFETY: kill has no memory-safety preconditions; the pid is our running child's.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        };
        // Once both temporary files exist, the run is under way.
        let started = std::time::Instant::now();
        while std::fs::read_dir(&dir).unwrap().count() < 2 {
            assert!(
                started.elapsed().as_secs() < 20,
                "no temporary files appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some(ignored) = ignored {
            send(ignored);
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(
                child.try_wait().unwrap().is_none(),
                "an ignored signal stopped the run"
            );
        }
        send(signal);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(signal), "{out:?}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "signal {signal} left {left:?}");
    }
}

#[cfg(unix)]
#[test]
fn out_through_a_symlink_keeps_the_link() {
    let dir = scratch("symlink");
    let target = write(&dir, "real.csv", "old contents\n");
    std::os::unix::fs::symlink(&target, dir.join("link.csv")).unwrap();
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            s(&example("birth_death.rxn")),
            "--t-end",
            "1",
            "--every",
            "1",
            "--out",
            "link.csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        std::fs::symlink_metadata(dir.join("link.csv"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(text.starts_with("trajectory,time,X\n"), "{text}");
}

#[cfg(unix)]
#[test]
fn out_to_a_named_pipe_writes_into_the_pipe() {
    let dir = scratch("fifo");
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is not available; skipped");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let r = rxnc_in(
        &dir,
        &[
            "simulate",
            s(&example("birth_death.rxn")),
            "--t-end",
            "1",
            "--every",
            "1",
            "--stats",
            "pipe",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = reader.join().unwrap();
    assert!(text.starts_with("time,name,mean,sd\n"), "{text}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the pipe was replaced"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn out_to_the_process_own_stdout_shares_it() {
    // `/proc/self/fd/1` (like `/dev/stdout`) is this process's standard output: the CSV goes there,
    // and nothing is renamed over it.
    let r = rxnc(&[
        "simulate",
        s(&example("birth_death.rxn")),
        "--t-end",
        "1",
        "--every",
        "1",
        "--stats",
        "/proc/self/fd/1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines(&r.stdout)[0], "time,name,mean,sd");
    assert_eq!(lines(&r.stdout).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// simulate: runtime errors

#[test]
fn negative_propensity_names_the_reaction() {
    let dir = scratch("negative-propensity");
    write(
        &dir,
        "neg.rxn",
        "species X = 5\nparam k = 1\nmake: 0 -> X @ k\ndecay: X -> 0 @= k * (1 - X)\n",
    );
    let r = rxnc_in(
        &dir,
        &["simulate", "neg.rxn", "--t-end", "10", "--out", "traj.csv"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("decay"), "{}", r.stderr);
    assert!(
        r.stderr.contains("rxn::runtime::propensity"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("neg.rxn:4:18"), "{}", r.stderr);
    // Nothing written: not the file, not a temporary.
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "only the model is left"
    );
    insta::assert_snapshot!("runtime_negative_propensity", r.stderr);
}

#[test]
fn negative_propensity_in_a_reverse_reaction() {
    let dir = scratch("negative-reverse");
    write(
        &dir,
        "rev.rxn",
        "species A = 5, B = 0\nr: A <-> B @ 1, 2 - B\n",
    );
    let r = rxnc_in(
        &dir,
        &["simulate", "rev.rxn", "--t-end", "100", "--seed", "1"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("`r.rev`"), "{}", r.stderr);
    // The label points at the second rate.
    assert!(r.stderr.contains("rev.rxn:2:17"), "{}", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "no partial CSV on failure: {}",
        r.stdout
    );
}

/// An infinite propensity (overflow of the rate law), at the start or on the way, is the
/// propensity's error at its rate, as is a sum of finite propensities that overflows; a count
/// passing 2^63 - 1 is an error, not a wrapped number.
#[test]
fn infinite_propensities_and_overflowing_counts_are_errors() {
    let dir = scratch("overflow");
    for (model, says) in [
        ("species A = 1\nA -> 2A @ 1e307\n", "e-307 in trajectory 0"),
        ("species A = 0\n0 -> A @= 1e308 * 10\n", "is inf at t = 0"),
        (
            "species A = 1, B\nA -> 2A @ 1e307\nA -> B @ 1\n",
            "`R1` is inf",
        ),
        (
            "species A = 0\n0 -> A @= 1e308\n0 -> 2A @= 1e308\n",
            "sum to more than the largest",
        ),
        (
            "species A = 9223372036854774784\n0 -> A @ 1e6\n",
            "passed the largest count",
        ),
        (
            "species A = 9223372036854774784\n0 -> A @ 1e6\n",
            "(state: A = 92233720368",
        ),
    ] {
        write(&dir, "m.rxn", model);
        let r = rxnc_in(
            &dir,
            &["simulate", "m.rxn", "--t-end", "0.01", "--every", "0.005"],
        );
        assert_eq!(r.code, 1, "{model}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{model}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{model}: {}", r.stdout);
    }
}

#[test]
fn nan_propensity_is_an_error() {
    let dir = scratch("nan-propensity");
    write(&dir, "nan.rxn", "species X = 0\n0 -> X @= log(X) + 1\n");
    let r = rxnc_in(&dir, &["simulate", "nan.rxn", "--t-end", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("R1"), "{}", r.stderr);
    assert!(
        r.stderr.contains("rxn::runtime::propensity"),
        "{}",
        r.stderr
    );
}

/// A propensity that reads time and turns negative or NaN between events stops the trajectory
/// at that time, whichever reaction fires next (it was read as 0, and a NaN silenced every
/// reaction); one that stays valid to the horizon runs.
#[test]
fn a_propensity_turning_invalid_in_time_is_an_error() {
    let dir = scratch("invalid-in-time");
    for (rate, t_end, says) in [
        (
            "sqrt(1 - t)",
            "3",
            Some("`neg` is NaN at t = 1.000000000000000"),
        ),
        ("2 - t", "4", Some("`neg` is -")),
        // Negative only for 0.9 < t < 1.1.
        ("0.1 * ((t - 1)^2 - 0.01)", "3", Some("at t = 0.9")),
        ("2 - t", "2", None),
    ] {
        let model = format!("species A, B\nneg: 0 -> A @= {rate}\npos: 0 -> B @= 5 + 0 * t\n");
        write(&dir, "m.rxn", &model);
        let r = rxnc_in(
            &dir,
            &[
                "simulate", "m.rxn", "--t-end", t_end, "-n", "50", "--stats", "s.csv",
            ],
        );
        match says {
            Some(says) => {
                assert_eq!(r.code, 1, "{rate}: {}", r.stderr);
                assert!(
                    r.stderr.contains("rxn::runtime::propensity"),
                    "{}",
                    r.stderr
                );
                assert!(
                    r.stderr.contains(says),
                    "{rate}: no `{says}` in {}",
                    r.stderr
                );
            }
            None => assert_eq!(r.code, 0, "{rate}: {}", r.stderr),
        }
    }
}

#[test]
fn negative_count_names_the_reaction_and_species() {
    let dir = scratch("negative-count");
    write(
        &dir,
        "count.rxn",
        "species X = 0\nmake: 0 -> X @ 1\nwrong: X -> 0 @= 3\n",
    );
    let r = rxnc_in(
        &dir,
        &["simulate", "count.rxn", "--t-end", "10", "--seed", "3"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("rxn::runtime::negative_count"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("`wrong`") && r.stderr.contains("`X`"),
        "{}",
        r.stderr
    );
    // The time of the failure depends on the random stream; the rest does not.
    let time = r
        .stderr
        .split("t = ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    assert!(time.parse::<f64>().unwrap() > 0.0);
    insta::assert_snapshot!("runtime_negative_count", r.stderr.replace(time, "[time]"));
}

#[test]
fn event_limit_is_an_input_error() {
    let r = rxnc(&[
        "simulate",
        s(&example("birth_death.rxn")),
        "--t-end",
        "1000",
        "--max-events",
        "10",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("limit of 10 events"), "{}", r.stderr);
    assert!(r.stderr.contains("--max-events"), "{}", r.stderr);
}

#[test]
fn a_model_that_stops_is_fine() {
    // All propensities reach zero: the state is held to the horizon.
    let dir = scratch("absorbing");
    write(&dir, "stop.rxn", "species A = 3, B\nA -> B @ 5\n");
    let r = rxnc_in(
        &dir,
        &["simulate", "stop.rxn", "--t-end", "100", "--every", "50"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines(&r.stdout).last().copied(), Some("0,100,0,3"));
}
