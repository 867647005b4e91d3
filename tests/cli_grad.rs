//! `rxnc grad` run as a user would: the table, the JSON of the contract
//! (/work/shared/rxn-core.md), every estimator, reproducibility, and every kind of bad input
//! answered with exit status 1 and a diagnostic, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_rxnc");

const TELEGRAPH: &str = "examples/telegraph.rxn";

/// Birth-death with a constant species `Y` and an observable.
const BIRTH_DEATH: &str = "species X = 0, Y = 5
param k = 10, g = 1
const two = 2
observable twice = two * X
0 -> X @ k
X -> 0 @ g
";

/// A fresh scratch directory for one test, removed when the test ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("rxnc-cli-grad-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs rxnc from the crate root with plain diagnostics; checks that it neither panicked nor was
/// killed and that the status is one of the contract's.
fn rxnc(args: &[&str]) -> Run {
    let out: Output = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("rxnc runs");
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

/// `rxnc grad FILE --objective OBJ --t-end T -n N` followed by `extra`.
fn grad(file: &str, objective: &str, t_end: &str, n: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "grad",
        file,
        "--objective",
        objective,
        "--t-end",
        t_end,
        "-n",
        n,
    ];
    args.extend_from_slice(extra);
    rxnc(&args)
}

/// Exit status 1, nothing on standard output, and a diagnostic with a help line that mentions
/// every one of `words`.
fn assert_input_error(what: &str, r: &Run, words: &[&str]) {
    assert_eq!(r.code, 1, "{what}: exit {}\n{}", r.code, r.stderr);
    assert!(r.stdout.is_empty(), "{what}: stdout\n{}", r.stdout);
    assert!(
        r.stderr.contains("help:"),
        "{what}: no help in\n{}",
        r.stderr
    );
    for w in words {
        assert!(r.stderr.contains(w), "{what}: no `{w}` in\n{}", r.stderr);
    }
}

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{}", r.stdout))
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// `{"estimate": finite number, "stderr": finite non-negative number}`, exactly.
fn assert_estimate(what: &str, v: &serde_json::Value) {
    assert_eq!(keys(v), ["estimate", "stderr"], "{what}: {v}");
    let estimate = v["estimate"].as_f64();
    let stderr = v["stderr"].as_f64();
    assert!(estimate.is_some_and(f64::is_finite), "{what}: estimate {v}");
    assert!(
        stderr.is_some_and(|s| s.is_finite() && s >= 0.0),
        "{what}: stderr {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Output

#[test]
fn table_lists_every_parameter_in_declaration_order() {
    let r = grad(TELEGRAPH, "mean(M)", "5", "40", &["--seed", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let out = &r.stdout;
    for word in [
        "mean(M)",
        "estimate",
        "gs-st",
        "40 trajectories",
        "parameter",
    ] {
        assert!(out.contains(word), "no `{word}` in\n{out}");
    }
    // One row per free parameter, in declaration order; the constant kdeg has none.
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("parameter"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["kon", "koff", "ktx"], "{out}");
    for row in rows {
        // name, value, gradient, stderr: all numbers after the name.
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "{row}");
        for f in &fields[1..] {
            assert!(f.parse::<f64>().is_ok_and(f64::is_finite), "`{f}` in {row}");
        }
    }
}

/// Very small and very large numbers are printed in scientific notation: readable, exact enough
/// to tell apart, and short (`{}` writes 1e-300 with 300 digits, `{:.6}` as 0.000000).
#[test]
fn table_shows_extreme_numbers_readably() {
    let dir = scratch("extreme");
    let tiny = write(
        &dir,
        "tiny.rxn",
        "species X = 0\nparam k = 1e-300, g = 1e300\n0 -> X @ k\nX -> 0 @ g\n",
    );
    let r = grad(
        &tiny,
        "mean(X)",
        "1e-300",
        "4",
        &["--temperature", "1e-300"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for shown in [
        "(temperature 1e-300)",
        "to t = 1e-300,",
        "1.000000e-300",
        "1.000000e300",
    ] {
        assert!(r.stdout.contains(shown), "no `{shown}` in\n{}", r.stdout);
    }
    assert!(r.stdout.lines().all(|l| l.len() < 100), "{}", r.stdout);
}

#[test]
fn json_has_exactly_the_contract_keys() {
    let r = grad(
        TELEGRAPH,
        "(mean(M) - 3)^2 + var(M)",
        "5",
        "40",
        &["--json"],
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert!(r.stdout.ends_with('\n'));
    let v = json(&r);
    assert_eq!(
        keys(&v),
        ["objective", "gradient", "estimator", "trajectories"]
    );
    assert_estimate("objective", &v["objective"]);
    assert_eq!(keys(&v["gradient"]), ["kon", "koff", "ktx"]);
    for (name, g) in v["gradient"].as_object().unwrap() {
        assert_estimate(name, g);
    }
    assert_eq!(v["estimator"], "gs-st", "the default estimator");
    assert_eq!(v["trajectories"], 40);
    assert!(v["trajectories"].is_u64());
    // The order in the text itself, not only after parsing.
    let at = |s: &str| r.stdout.find(s).unwrap_or_else(|| panic!("no {s}"));
    assert!(at("\"kon\"") < at("\"koff\"") && at("\"koff\"") < at("\"ktx\""));
}

#[test]
fn every_estimator_works() {
    let dir = scratch("estimators");
    let model = write(&dir, "bd.rxn", BIRTH_DEATH);
    for name in ["gs-st", "score", "alt-path", "fd"] {
        let r = grad(
            &model,
            "mean(X) + sd(twice)",
            "2",
            "50",
            &["--estimator", name, "--json"],
        );
        let v = json(&r);
        assert_eq!(v["estimator"], name);
        assert_eq!(keys(&v["gradient"]), ["k", "g"], "{name}");
        assert_estimate(name, &v["objective"]);
        for (p, g) in v["gradient"].as_object().unwrap() {
            assert_estimate(&format!("{name} d/d{p}"), g);
        }
        // The table too.
        let r = grad(&model, "mean(X)", "2", "50", &["--estimator", name]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(r.stdout.contains(name), "{name}:\n{}", r.stdout);
    }
    // The estimators' own options.
    for extra in [
        ["--estimator", "gs-st", "--temperature", "0.5"],
        ["--estimator", "fd", "--sigma", "0.1"],
    ] {
        let mut args = extra.to_vec();
        args.push("--json");
        let r = grad(&model, "mean(X)", "2", "50", &args);
        assert_eq!(json(&r)["estimator"], extra[1]);
    }
}

#[test]
fn same_seed_same_json_whatever_the_threads() {
    let dir = scratch("seed");
    let model = write(&dir, "bd.rxn", BIRTH_DEATH);
    for name in ["gs-st", "score", "alt-path", "fd"] {
        let run = |seed: &str, threads: &str| {
            let r = grad(
                &model,
                "var(X)",
                "2",
                "60",
                &[
                    "--estimator",
                    name,
                    "--seed",
                    seed,
                    "--threads",
                    threads,
                    "--json",
                ],
            );
            assert_eq!(r.code, 0, "{name}: {}", r.stderr);
            r.stdout
        };
        let first = run("42", "1");
        assert_eq!(first, run("42", "1"), "{name}: same seed, same threads");
        assert_eq!(first, run("42", "2"), "{name}: same seed, 2 threads");
        assert_ne!(first, run("43", "1"), "{name}: another seed");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 1 with a diagnostic

/// Objectives that do not resolve: the rendered diagnostics are snapshots.
#[test]
fn bad_objectives_are_diagnosed() {
    let cases = [
        // (snapshot, objective, words the diagnostic must contain)
        (
            "objective_unknown_species",
            "mean(Gonn)",
            vec!["Gonn", "Gon"],
        ),
        ("objective_unknown_name", "mean(Q) - 1", vec!["`Q`"]),
        ("objective_bare_species", "M", vec!["mean(M)"]),
        (
            "objective_bare_species_in_sum",
            "mean(M) + M",
            vec!["mean(M)"],
        ),
        ("objective_bare_parameter", "mean(M) * kon", vec!["kon"]),
        ("objective_bare_unknown_name", "mean(M) * k", vec!["`k`"]),
        (
            "objective_unknown_function",
            "median(M)",
            vec!["median", "mean"],
        ),
        (
            "objective_unknown_function_inside",
            "mean(foo(M))",
            vec!["foo"],
        ),
        (
            "objective_nested_statistics",
            "mean(var(M))",
            vec!["nested"],
        ),
        ("objective_arity", "mean(M, Gon)", vec!["mean"]),
        ("objective_arity_outer", "exp(mean(M), 2)", vec!["exp"]),
        ("objective_constant", "3", vec!["mean(x)"]),
        ("objective_unclosed", "mean(M", vec!["("]),
        ("objective_dangling_operator", "mean(M) +", vec!["+"]),
        ("objective_two_lines", "mean(M)\nvar(M)", vec!["objective"]),
        (
            "objective_division_by_zero",
            "mean(M) / 0",
            vec!["division by zero"],
        ),
        (
            "objective_sd_of_a_constant",
            "sd(kon) + mean(M)",
            vec!["sd of an expression without species"],
        ),
        (
            "objective_overflowing_number",
            "mean(M) + 1e400",
            vec!["overflows to infinity"],
        ),
        (
            "objective_overflowing_number_inside",
            "mean(M * 1e400)",
            vec!["overflows to infinity"],
        ),
        ("objective_empty", "", vec!["empty"]),
        ("objective_blank", "   ", vec!["empty"]),
    ];
    for (name, objective, words) in cases {
        let r = grad(TELEGRAPH, objective, "5", "10", &[]);
        assert_input_error(name, &r, &words);
        assert!(
            r.stderr.contains("--objective"),
            "{name}: the diagnostic does not say it is about the objective:\n{}",
            r.stderr
        );
        insta::assert_snapshot!(name, r.stderr);
    }
}

#[test]
fn bad_options_are_input_errors() {
    let dir = scratch("options");
    let bd = write(&dir, "bd.rxn", BIRTH_DEATH);
    let consts = write(
        &dir,
        "consts.rxn",
        "species X = 0\nconst k = 10, g = 1\n0 -> X @ k\nX -> 0 @ g\n",
    );
    let missing = dir.join("missing.rxn");
    let missing = missing.to_str().unwrap();
    let broken = write(&dir, "broken.rxn", "species X\nparam k = 1\nX -> Y @ k\n");
    // Simulates, but its derivative comes to 121 k operations.
    let tower = write(
        &dir,
        "tower.rxn",
        &format!(
            "species X = 1\nparam k = 1\nX -> 0 @ k * {}\n",
            vec!["X"; 200].join("^")
        ),
    );
    let cases: Vec<(&str, Run, Vec<&str>)> = vec![
        (
            "derivatives too large",
            grad(&tower, "mean(X)", "1", "10", &[]),
            vec![
                "rxn::too_large",
                "partial derivatives of reaction `R1`",
                "tower.rxn:3",
            ],
        ),
        (
            "t-end 0",
            grad(&bd, "mean(X)", "0", "10", &[]),
            vec!["--t-end", "positive"],
        ),
        (
            "t-end negative",
            grad(&bd, "mean(X)", "-1", "10", &[]),
            vec!["--t-end", "-1"],
        ),
        (
            "t-end NaN",
            grad(&bd, "mean(X)", "nan", "10", &[]),
            vec!["--t-end"],
        ),
        (
            "t-end infinite",
            grad(&bd, "mean(X)", "inf", "10", &[]),
            vec!["--t-end"],
        ),
        (
            "-n 0",
            grad(&bd, "mean(X)", "1", "0", &[]),
            vec!["-n", "at least 2"],
        ),
        (
            "-n 1",
            grad(&bd, "mean(X)", "1", "1", &[]),
            vec!["-n", "at least 2"],
        ),
        (
            "var with -n 2",
            grad(&bd, "var(X)", "1", "2", &[]),
            vec!["at least 3", "var or sd", "not 2"],
        ),
        (
            "score with -n 2",
            grad(&bd, "mean(X)", "1", "2", &["--estimator", "score"]),
            vec!["at least 3", "score", "not 2"],
        ),
        (
            "unknown estimator",
            grad(&bd, "mean(X)", "1", "10", &["--estimator", "reinforce"]),
            vec!["reinforce", "gs-st, score, alt-path, fd"],
        ),
        (
            "temperature 0",
            grad(&bd, "mean(X)", "1", "10", &["--temperature", "0"]),
            vec!["temperature", "positive"],
        ),
        (
            "temperature negative",
            grad(&bd, "mean(X)", "1", "10", &["--temperature", "-1"]),
            vec!["temperature", "-1"],
        ),
        (
            "sigma 0",
            grad(
                &bd,
                "mean(X)",
                "1",
                "10",
                &["--estimator", "fd", "--sigma", "0"],
            ),
            vec!["smoothing width", "positive"],
        ),
        (
            "sigma NaN",
            grad(
                &bd,
                "mean(X)",
                "1",
                "10",
                &["--estimator", "fd", "--sigma", "nan"],
            ),
            vec!["smoothing width"],
        ),
        (
            "sigma too wide",
            grad(
                &bd,
                "mean(X)",
                "1",
                "10",
                &["--estimator", "fd", "--sigma", "1e300"],
            ),
            vec!["at most 10, not 1e300", "relative to each parameter"],
        ),
        (
            "max-events 0",
            grad(&bd, "mean(X)", "1", "10", &["--max-events", "0"]),
            vec!["--max-events must be at least 1"],
        ),
        (
            "threads 0",
            grad(&bd, "mean(X)", "1", "10", &["--threads", "0"]),
            vec!["--threads"],
        ),
        (
            "missing model file",
            grad(missing, "mean(X)", "1", "10", &[]),
            vec!["cannot read", "missing.rxn"],
        ),
        (
            "broken model file",
            grad(&broken, "mean(X)", "1", "10", &[]),
            vec!["broken.rxn:3", "Y"],
        ),
        (
            "no free parameters",
            grad(&consts, "mean(X)", "1", "10", &[]),
            vec!["no free parameters", "param"],
        ),
        (
            "event limit",
            grad(&bd, "mean(X)", "1", "10", &["--max-events", "5"]),
            vec!["limit of 5 events"],
        ),
    ];
    for (what, r, words) in &cases {
        assert_input_error(what, r, words);
    }
    // Usage errors (clap's own messages, without a help line), also 1.
    let usage = [
        (
            "t-end not a number",
            grad(&bd, "mean(X)", "soon", "10", &[]),
            "soon",
        ),
        ("-n negative", grad(&bd, "mean(X)", "1", "-3", &[]), "-3"),
        (
            "-n fractional",
            grad(&bd, "mean(X)", "1", "2.5", &[]),
            "2.5",
        ),
        (
            "no --objective",
            rxnc(&["grad", &bd, "--t-end", "1", "-n", "10"]),
            "--objective",
        ),
        (
            "no --t-end",
            rxnc(&["grad", &bd, "--objective", "mean(X)", "-n", "10"]),
            "--t-end",
        ),
        (
            "no -n",
            rxnc(&["grad", &bd, "--objective", "mean(X)", "--t-end", "1"]),
            "--trajectories",
        ),
    ];
    for (what, r, word) in usage {
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
        assert!(
            r.stderr.contains(word),
            "{what}: no {word} in\n{}",
            r.stderr
        );
    }
}

/// An objective whose value or gradient is not finite fails with exit 1, says which estimator,
/// and quotes the innermost part of the objective that is not finite, with why.
#[test]
fn non_finite_estimates_name_the_estimator_and_the_place() {
    let dir = scratch("non-finite");
    let bd = write(&dir, "bd.rxn", BIRTH_DEATH);
    for name in ["gs-st", "score", "alt-path", "fd"] {
        for (objective, place) in [
            (
                "log(mean(X) - mean(X))",
                "`log(mean(X) - mean(X))` takes the log of `mean(X) - mean(X)`, which is 0 here",
            ),
            (
                "mean(X) / (mean(X) - mean(X))",
                "`mean(X) / (mean(X) - mean(X))` divides by `(mean(X) - mean(X))`, which is 0",
            ),
            // X - X has sd 0, where sd is not differentiable. (The constant species Y depends on
            // no parameter: sd(Y) has the exact derivative 0.)
            (
                "1 + sd(X - X)",
                "`sd(X - X)` is 0 (every trajectory ends with the same value)",
            ),
            (
                "0^mean(X)",
                "`0^mean(X)` has no derivative with respect to its power where its base is 0",
            ),
            (
                "sqrt(mean(X - X))",
                "`sqrt(mean(X - X))` has an infinite derivative where `mean(X - X)` is 0",
            ),
            (
                "(mean(Y) - 6)^0.5",
                "`(mean(Y) - 6)` is -1) to a power that is not a whole number",
            ),
            (
                "exp(1000 * mean(X))",
                "`exp(1000 * mean(X))` is inf: too large",
            ),
        ] {
            let r = grad(&bd, objective, "1", "20", &["--estimator", name]);
            assert_input_error(
                &format!("{name} {objective}"),
                &r,
                &[&format!("the {name} estimate is not finite"), place],
            );
        }
    }
}

/// What stops `rxnc simulate` stops every estimator, with the same diagnostic: a propensity
/// that becomes infinite on the way, finite propensities whose sum overflows, a full propensity
/// that fires without its reactant (few species: one column per reaction; many: one branch per
/// reaction), a count passing 2^63 - 1 (its state shown as it is, not wrapped around).
#[test]
fn runtime_failures_stop_every_estimator() {
    let dir = scratch("runtime-failures");
    let cases = [
        (
            "species A = 0, B = 0\nparam g = 1\n0 -> A @ 1\nA -> B @ g * exp(800 * A)\n",
            "the propensity of reaction `R2` is inf",
        ),
        (
            "species A = 0\nparam k = 1e308\n0 -> A @= k\n0 -> 2 A @= k\n",
            "sum to more than the largest",
        ),
        (
            "species A = 1, B = 0\nparam k = 1\nwrong: A -> B @= k\n",
            "`wrong` fired",
        ),
        (
            "species A = 1, B, C, D, E, F, G, H, I\nparam k = 1\nwrong: A -> B @= k\n",
            "`wrong` fired",
        ),
        (
            "species A = 9223372036854774784\nparam k = 1\n0 -> 1000000 A @ k\n",
            "passed the largest count, 2^63 - 1, by t = ",
        ),
        (
            "species A = 9223372036854774784\nparam k = 1\n0 -> 1000000 A @ k\n",
            "(state: A = 92233720368",
        ),
    ];
    let estimators: [&[&str]; 5] = [
        &["--estimator", "gs-st"],
        &["--estimator", "gs-st", "--temperature", "0.5"],
        &["--estimator", "score"],
        &["--estimator", "alt-path"],
        &["--estimator", "fd"],
    ];
    for (k, (model, says)) in cases.iter().enumerate() {
        let file = write(&dir, &format!("m{k}.rxn"), model);
        for estimator in estimators {
            let r = grad(&file, "mean(A)", "5", "4", estimator);
            let what = format!("{model} {estimator:?}");
            assert_eq!(r.code, 1, "{what}: {}", r.stderr);
            assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
            assert!(
                r.stderr.contains(says),
                "{what}: no `{says}` in\n{}",
                r.stderr
            );
        }
    }
}

/// A reaction that cannot fire although its propensity depends on a parameter (a probability of
/// 0) is invisible to gs-st and score, and to alt-path when nothing else can fire: the derivative
/// then comes out 0 ± 0, with a warning saying why (on standard error: --json stays the object).
#[test]
fn reactions_that_cannot_fire_are_warned_about() {
    let dir = scratch("unseen");
    let alone = write(
        &dir,
        "alone.rxn",
        "species X = 0\nparam p = 0 in [0, 1]\nconst k = 10\nb: 0 -> X @ k * p\n",
    );
    let with_other = write(
        &dir,
        "other.rxn",
        "species X = 0\nparam p = 0 in [0, 1]\nconst k = 10\nb: 0 -> X @ k * p\nc: 0 -> X @ 1\n",
    );
    let says = "warning: reaction `b` cannot fire at the initial state";
    for (file, estimator, warned) in [
        (&alone, "gs-st", true),
        (&alone, "score", true),
        (&alone, "alt-path", true),
        (&with_other, "score", true),
        (&with_other, "alt-path", false),
    ] {
        let r = grad(
            file,
            "mean(X)",
            "1",
            "20",
            &["--estimator", estimator, "--json"],
        );
        let v = json(&r);
        assert_eq!(
            r.stderr.contains(says),
            warned,
            "{file} {estimator}: {}",
            r.stderr
        );
        assert!(v["gradient"]["p"]["estimate"].is_number(), "{}", r.stdout);
    }
}

/// A derivative that is exactly 0 in every trajectory is warned about when the parameter can
/// affect the objective (the estimator saw nothing), not when it structurally cannot.
#[test]
fn derivatives_that_are_exactly_zero_are_warned_about() {
    let dir = scratch("exact-zero");
    let two = write(
        &dir,
        "two.rxn",
        "species X = 0, Y = 0\nparam k = 10, ky = 3\n0 -> X @ k\nX -> 0 @ 1\n0 -> Y @ ky\nY -> 0 @ 1\n",
    );
    let says = |name: &str| format!("warning: d/d{name} is exactly 0 in every trajectory");
    for (objective, extra, warned_k, warned_ky) in [
        ("mean(X)", &["--temperature", "1e-300"][..], true, false),
        (
            "mean(X)",
            &["--estimator", "fd", "--sigma", "1e-12"][..],
            true,
            false,
        ),
        ("mean(X)", &["--estimator", "score"][..], false, false),
        (
            "mean(X) + mean(Y)",
            &["--temperature", "1e-300"][..],
            true,
            true,
        ),
    ] {
        let r = grad(&two, objective, "2", "40", extra);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            r.stderr.contains(&says("k")),
            warned_k,
            "{objective} {extra:?}: {}",
            r.stderr
        );
        assert_eq!(
            r.stderr.contains(&says("ky")),
            warned_ky,
            "{objective} {extra:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("likely the true"), "{}", r.stderr);
    }
    // A propensity that does not change with the parameter where the trajectories start (a max
    // on its other branch): the warning says the 0 is likely true.
    let flat = write(
        &dir,
        "flat.rxn",
        "species X\nparam a = 1\n0 -> X @= max(a, 2)\nX -> 0 @ 1\n",
    );
    for estimator in ["gs-st", "score", "alt-path", "fd"] {
        let r = grad(&flat, "mean(X)", "1", "40", &["--estimator", estimator]);
        assert!(r.stderr.contains(&says("a")), "{estimator}: {}", r.stderr);
        assert!(
            r.stderr.contains("likely the true local derivative"),
            "{}",
            r.stderr
        );
    }
}

/// A parameter that cannot affect the objective gets its exact derivative, 0 ± 0, from every
/// estimator (not the estimator's noise around 0), without a warning; the others are estimated.
#[test]
fn parameters_that_cannot_affect_the_objective_have_derivative_zero() {
    let dir = scratch("structural-zero");
    let two = write(
        &dir,
        "two.rxn",
        "species X = 0, Y = 0\nparam k = 10, ky = 3\n0 -> X @ k\nX -> 0 @ 1\n0 -> Y @ ky\nY -> 0 @ 1\n",
    );
    for estimator in ["gs-st", "score", "alt-path", "fd"] {
        let r = grad(
            &two,
            "mean(X)",
            "1",
            "200",
            &["--estimator", estimator, "--json"],
        );
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{estimator}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let (ky, k) = (&v["gradient"]["ky"], &v["gradient"]["k"]);
        assert_eq!(
            (ky["estimate"].as_f64(), ky["stderr"].as_f64()),
            (Some(0.0), Some(0.0))
        );
        assert!(
            k["estimate"].as_f64().unwrap() > 0.0,
            "{estimator}: {}",
            r.stdout
        );
    }
}

/// A parameter that sets an initial count is warned about by every estimator and by fits: the
/// count stays at the file's value, so its effect through it is left out (0 ± 0 here, where the
/// true derivative is e^-1 per molecule).
#[test]
fn parameters_setting_initial_counts_are_warned_about() {
    let dir = scratch("initial-count-param");
    let ic = write(
        &dir,
        "ic.rxn",
        "species X = n0\nparam n0 = 5 in [0, 100]\nparam k = 10, g = 1\n0 -> X @ k\nX -> 0 @ g\n",
    );
    let says = "warning: `n0` sets initial counts (X = 5), which stay at the file's values";
    for estimator in ["gs-st", "score", "alt-path", "fd"] {
        let r = grad(&ic, "mean(X)", "1", "40", &["--estimator", estimator]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{estimator}: {}", r.stderr);
    }
    let r = grad(
        &write(&dir, "bd.rxn", BIRTH_DEATH),
        "mean(X)",
        "1",
        "40",
        &[],
    );
    assert!(!r.stderr.contains("initial counts"), "{}", r.stderr);
    let data = write(&dir, "data.csv", "time,X\n1,7\n1,8\n1,9\n");
    let r = rxnc(&["run", &ic, "--fit", &data, "-n", "20", "--steps", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(says), "{}", r.stderr);
}

/// A statistic of something infinite or NaN in some trajectory names that expression.
#[test]
fn non_finite_statistic_arguments_are_named() {
    let dir = scratch("ratio");
    let ratio = write(
        &dir,
        "ratio.rxn",
        "species X = 0, Y = 0\nparam k = 5\nobservable r = Y / X\n0 -> X @ k\n0 -> Y @ k\n",
    );
    for estimator in ["gs-st", "score", "alt-path", "fd"] {
        let r = grad(&ratio, "mean(r)", "0.05", "50", &["--estimator", estimator]);
        assert_input_error(estimator, &r, &["`Y / X` is infinite or NaN at t = 0.05"]);
    }
}

/// Statistics of observables, parameters and time inside a statistic, and `t` at the horizon.
#[test]
fn objectives_over_observables_parameters_and_time() {
    let dir = scratch("leaves");
    let bd = write(&dir, "bd.rxn", BIRTH_DEATH);
    for objective in [
        "mean(twice)",
        "mean(k * X) / 10",
        "mean(X + t) - mean(t)",
        "var(twice) / 4",
    ] {
        let r = grad(
            &bd,
            objective,
            "2",
            "50",
            &["--estimator", "score", "--json"],
        );
        let v = json(&r);
        assert_estimate(objective, &v["objective"]);
    }
    // With k = 10, mean(k X)/10 = mean(X) on the same paths, and its derivative adds the direct
    // term: d/dk = d mean(X)/dk + mean(X)/10, d/dg = d mean(X)/dg.
    let get = |objective: &str| {
        let r = grad(
            &bd,
            objective,
            "2",
            "50",
            &["--estimator", "score", "--json"],
        );
        let v = json(&r);
        let f = |p: &[&str]| p.iter().fold(&v, |v, k| &v[*k]).as_f64().unwrap();
        (
            f(&["objective", "estimate"]),
            f(&["gradient", "k", "estimate"]),
            f(&["gradient", "g", "estimate"]),
        )
    };
    let (m, dk, dg) = get("mean(X)");
    let (m2, dk2, dg2) = get("mean(k * X) / 10");
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
    assert!(close(m, m2), "{m} vs {m2}");
    assert!(close(dk + m / 10.0, dk2), "d/dk: {dk} + {m}/10 vs {dk2}");
    assert!(close(dg, dg2), "d/dg: {dg} vs {dg2}");
}

/// Compiled kernels are kept in the code cache and loaded by later runs; the output is the same
/// with no cache, a cold one, a warm one, one whose entries are damaged or swapped (they are
/// compiled and written again), one that cannot be written, and one that others could write to
/// (then it is not used).
#[test]
fn the_code_cache_never_changes_the_output() {
    let dir = scratch("cache");
    let model = write(&dir, "bd.rxn", BIRTH_DEATH);
    // A gradient (one kernel) and a simulation (three): several entries.
    let run = |cache: &Path| {
        let mut outputs = String::new();
        for args in [
            &[
                "grad",
                &model,
                "--objective",
                "mean(X)",
                "--t-end",
                "1",
                "-n",
                "50",
                "--json",
            ][..],
            &[
                "simulate", &model, "--t-end", "1", "-n", "3", "--every", "0.5",
            ][..],
        ] {
            let out = Command::new(BIN)
                .args(args)
                .env("RXNC_CACHE_DIR", cache)
                .output()
                .expect("rxnc runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            outputs += &String::from_utf8(out.stdout).expect("UTF-8");
        }
        outputs
    };
    // Entries live in a directory per Cranelift version, next to the sweep's marker.
    let entries = |cache: &Path| -> Vec<PathBuf> {
        let list = |d: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(d)
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        };
        let mut files: Vec<_> = list(cache)
            .into_iter()
            .filter(|p| p.is_dir())
            .flat_map(|d| list(&d))
            .collect();
        files.sort();
        files
    };
    let contents = |files: &[PathBuf]| -> Vec<Vec<u8>> {
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    };
    let reference = run(Path::new("off"));
    let cache = dir.join("cache");
    assert_eq!(run(&cache), reference, "cold cache");
    let written = entries(&cache);
    assert!(written.len() >= 2, "entries: {written:?}");
    let good = contents(&written);
    assert_eq!(run(&cache), reference, "warm cache");
    assert_eq!(
        contents(&entries(&cache)),
        good,
        "a warm run rewrote entries"
    );
    // Damaged entries, then two entries swapped: compiled and written again.
    for entry in &written {
        let mut bytes = std::fs::read(entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(entry, bytes).unwrap();
    }
    assert_eq!(run(&cache), reference, "damaged cache");
    assert_eq!(
        contents(&entries(&cache)),
        good,
        "damaged entries not rewritten"
    );
    std::fs::copy(&written[0], &written[1]).unwrap();
    assert_eq!(run(&cache), reference, "swapped entries");
    assert_eq!(
        contents(&entries(&cache)),
        good,
        "swapped entry not rewritten"
    );
    let blocked = dir.join("blocked");
    std::fs::write(&blocked, "a file where the cache directory should be").unwrap();
    assert_eq!(run(&blocked), reference, "unwritable cache");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(run(&shared), reference, "cache others can write to");
        assert!(
            std::fs::read_dir(&shared).unwrap().next().is_none(),
            "a cache others can write to was used"
        );
    }
}
