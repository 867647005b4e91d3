//! The diagnostics corpus and the valid-input table.
//!
//! Every `tests/diagnostics/*.rxn` file is a broken model. Each is parsed and checked; the plain
//! rendering of its diagnostics is snapshotted (`tests/snapshots/diagnostics__<file>.snap`, with the
//! model text as the snapshot's description), and a few properties that every diagnostic must have
//! are asserted: a class that matches the file name, a place in the file, a label with text under
//! the offending text, a help line, and, unless the file is named `several_*`, exactly one
//! diagnostic (one mistake must not cascade into several reports).
//!
//! A file that turns out to be valid fails the test.

use rxnc::Model;
use rxnc::diagnostics::{ModelError, Style};
use rxnc::ir::RateLaw;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every class of problem the checker reports about a model file.
const ALL_CODES: [&str; 16] = [
    "rxn::syntax",
    "rxn::too_large",
    "rxn::undeclared",
    "rxn::duplicate",
    "rxn::reserved",
    "rxn::count",
    "rxn::bounds",
    "rxn::cycle",
    "rxn::arity",
    "rxn::unknown_function",
    "rxn::rate_count",
    "rxn::coefficient",
    "rxn::non_finite",
    "rxn::context",
    "rxn::not_species",
    "rxn::no_reactions",
];

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/diagnostics exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rxn"))
        .collect();
    files.sort();
    files
}

/// The class a corpus file's first diagnostic must have, from its name.
fn expected_code(stem: &str) -> Option<&'static str> {
    if stem.starts_with("several_") {
        return None;
    }
    let code = ALL_CODES
        .iter()
        .copied()
        .filter(|code| stem.starts_with(&code["rxn::".len()..]))
        .max_by_key(|code| code.len())
        .unwrap_or_else(|| panic!("{stem}.rxn: the file name must start with a diagnostic class"));
    Some(code)
}

/// Properties every rendered model error must have.
fn check_shape(name: &str, err: &ModelError) {
    assert!(
        !err.diagnostics.is_empty(),
        "{name}: an error without diagnostics"
    );
    let text = &err.source.text;
    let mut previous = 0;
    for d in &err.diagnostics {
        assert!(d.code.starts_with("rxn::"), "{name}: code {}", d.code);
        assert!(!d.message.is_empty(), "{name}: empty message");
        assert!(
            d.help.as_deref().is_some_and(|h| !h.trim().is_empty()),
            "{name}: `{}` has no help line",
            d.message
        );
        assert!(!d.labels.is_empty(), "{name}: `{}` has no label", d.message);
        for (span, label) in &d.labels {
            assert!(
                !label.is_empty(),
                "{name}: `{}` has an empty label",
                d.message
            );
            assert!(
                span.start <= span.end && span.end <= text.len(),
                "{name}: span {span:?}"
            );
            assert!(
                text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
                "{name}: span {span:?} cuts a character"
            );
        }
        // In the order of the text.
        assert!(
            d.span().start >= previous,
            "{name}: diagnostics out of order"
        );
        previous = d.span().start;
    }
    let rendered = err.render(Style::Plain);
    for d in &err.diagnostics {
        let (line, col) = err.source.line_col(d.span().start);
        let place = format!("[{}:{line}:{col}]", err.source.name);
        assert!(
            rendered.contains(&place),
            "{name}: no {place} in\n{rendered}"
        );
        assert!(rendered.contains(d.code), "{name}: no code in\n{rendered}");
    }
    let summary = err.to_string();
    assert_eq!(
        summary.lines().count(),
        err.diagnostics.len(),
        "{name}: one line per problem"
    );
}

#[test]
fn every_broken_model_is_reported_as_snapshotted() {
    let files = corpus();
    assert!(
        files.len() >= 60,
        "the corpus has only {} files",
        files.len()
    );
    let mut valid = Vec::new();
    let mut seen_codes = BTreeSet::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let err = match Model::parse(&name, &text) {
            Ok(_) => {
                valid.push(name);
                continue;
            }
            Err(e) => e,
        };
        check_shape(&name, &err);
        seen_codes.extend(err.diagnostics.iter().map(|d| d.code));
        if let Some(code) = expected_code(&stem) {
            assert_eq!(err.diagnostics[0].code, code, "{name}: wrong class");
            assert_eq!(
                err.diagnostics.len(),
                1,
                "{name}: one mistake must give one diagnostic, got\n{}",
                err.render(Style::Plain)
            );
        } else {
            assert!(
                err.diagnostics.len() > 1,
                "{name}: `several_` files have several mistakes"
            );
        }
        insta::with_settings!({ description => text.clone(), omit_expression => true }, {
            insta::assert_snapshot!(stem.clone(), err.render(Style::Plain));
        });
    }
    assert!(
        valid.is_empty(),
        "these corpus files are valid models: {valid:?}"
    );
    // `rxn::too_large` is exercised by `oversized_expressions_are_diagnosed_not_crashed` below.
    seen_codes.insert("rxn::too_large");
    let missing: Vec<_> = ALL_CODES
        .iter()
        .filter(|c| !seen_codes.contains(*c))
        .collect();
    assert!(missing.is_empty(), "no corpus file exercises {missing:?}");
}

/// Inputs that are not convenient as files: other line endings, a BOM, generated sizes.
#[test]
fn crlf_line_endings_in_errors() {
    let text = "species A = 10, B = 0\r\nparam k = 1\r\nA -> B\r\n";
    let err = Model::parse("crlf.rxn", text).unwrap_err();
    check_shape("crlf.rxn", &err);
    let rendered = err.render(Style::Plain);
    assert!(
        !rendered.contains('\r'),
        "a carriage return leaked into\n{rendered}"
    );
    insta::with_settings!({ description => text.escape_debug().to_string(), omit_expression => true }, {
        insta::assert_snapshot!("crlf_missing_rate", rendered);
    });
}

#[test]
fn several_uses_of_one_undeclared_species_are_one_diagnostic() {
    let text = "species A = 1\nparam k = 1\nA -> C @ k\nC -> A @ k\n2C -> A @ k\n";
    let err = Model::parse("m.rxn", text).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{}", err.render(Style::Plain));
    assert_eq!(err.diagnostics[0].labels.len(), 3);
}

#[test]
fn oversized_expressions_are_diagnosed_not_crashed() {
    let limit = rxnc::syntax::MAX_EXPRESSION_NODES;
    let nesting = rxnc::syntax::MAX_NESTING;
    let cases = [
        format!("A -> 0 @ {}1{}", "(".repeat(50_000), ")".repeat(50_000)),
        format!(
            "A -> 0 @ {}1{}",
            "(".repeat(nesting + 1),
            ")".repeat(nesting + 1)
        ),
        format!("A -> 0 @ {}", vec!["1"; 100_000].join("+")),
        format!("A -> 0 @ {}1", "-".repeat(100_000)),
        format!("A -> 0 @ {}", vec!["2"; 100_000].join("^")),
        format!("A -> 0 @ {}", vec!["exp(1)"; 5_000].join("*")),
    ];
    // Run where the stack is the size of a test thread's or a worker thread's (2 MiB).
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for body in cases {
                let text = format!("species A = 1\n{body}\n");
                let err = Model::parse("big.rxn", &text).unwrap_err();
                assert_eq!(err.diagnostics.len(), 1);
                let d = &err.diagnostics[0];
                assert_eq!(d.code, "rxn::too_large", "{}", d.message);
                assert!(d.help.is_some());
            }
            // Definitions substituted into one another: too deep, and too many operations.
            let chain = |n: usize, step: &str| {
                let lines: Vec<String> = (1..n)
                    .map(|i| {
                        format!(
                            "observable o{i} = {}",
                            step.replace("PREV", &format!("o{}", i - 1))
                        )
                    })
                    .collect();
                format!(
                    "species A = 1\nparam k = 1\nobservable o0 = A\n{}\nA -> 0 @= k * o{}\n",
                    lines.join("\n"),
                    n - 1
                )
            };
            for text in [chain(20_000, "PREV + A"), chain(40, "PREV * PREV + 1")] {
                let err = Model::parse("big.rxn", &text).unwrap_err();
                assert_eq!(err.diagnostics.len(), 1);
                assert_eq!(
                    err.diagnostics[0].code, "rxn::too_large",
                    "{}",
                    err.diagnostics[0].message
                );
            }
            // Each observable within the limit, but a thousand copies of a large one in all.
            let copies: String = (0..1000)
                .map(|i| format!("observable copy{i} = o11 + A\n"))
                .collect();
            let text = chain(12, "PREV * PREV * 0.5") + &copies;
            let err = Model::parse("big.rxn", &text).unwrap_err();
            assert_eq!(err.diagnostics.len(), 1);
            assert!(
                err.diagnostics[0].message.contains("in all"),
                "{}",
                err.diagnostics[0].message
            );
            // Just under the limits, the whole pipeline (checker, code generator) copes.
            let depth = rxnc::syntax::MAX_INLINED_DEPTH;
            for text in [chain(depth - 5, "PREV + A"), chain(12, "PREV * PREV * 0.5")] {
                let model = Model::parse("big.rxn", &text)
                    .unwrap_or_else(|e| panic!("{}", e.render(Style::Plain)));
                rxnc::jit::CompiledModel::new(&model.ir).unwrap();
            }
            let parts = limit / 2 - 2;
            for body in [
                format!("A -> 0 @ {}", vec!["A"; parts].join("+")),
                format!("A -> 0 @ {}A{}", "(".repeat(nesting), ")".repeat(nesting)),
                format!("A -> 0 @= {}A", "-".repeat(limit - 10)),
            ] {
                let text = format!("species A = 1\n{body}\n");
                let model = Model::parse("big.rxn", &text)
                    .unwrap_or_else(|e| panic!("{}", e.render(Style::Plain)));
                rxnc::jit::CompiledModel::new(&model.ir).unwrap();
            }
            // A tower of powers simulates, but its derivative (3 M operations) is refused
            // rather than compiled for 16 s into 4 GB.
            let text = format!("species A = 1\nA -> 0 @ {}\n", vec!["A"; parts].join("^"));
            let model = Model::parse("big.rxn", &text).unwrap();
            rxnc::jit::CompiledModel::for_simulation(&model.ir).unwrap();
            let err = rxnc::jit::CompiledModel::new(&model.ir).unwrap_err();
            assert_eq!(err.too_large_reaction(), Some("R1"), "{err}");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn every_prefix_of_a_model_is_a_clean_diagnostic_or_a_model() {
    // Cutting a valid model anywhere must never panic, and every error must be well formed.
    let text = "# telegraph\nspecies Goff = 1, Gon = 0, M = 0\nparam kon = 0.5 in [0.01, 10], koff = 1\n\
                const kdeg = 1\nobservable total = Gon + M\nswitch: Goff <-> Gon @ kon, koff\n\
                tx: Gon -> Gon + M @= 10 * hill(Gon, 0.5, 2)\nM -> 0 @ kdeg\n2 M -> 0 @ 1e-3 * (1 + -M^2)\n";
    for (end, _) in text.char_indices().chain([(text.len(), ' ')]) {
        if let Err(e) = Model::parse("cut.rxn", &text[..end]) {
            check_shape(&format!("prefix of {end} bytes"), &e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Valid inputs.

fn parse(text: &str) -> Model {
    Model::parse("valid.rxn", text).unwrap_or_else(|e| panic!("{}", e.render(Style::Plain)))
}

fn eval_const(model: &Model, name: &str) -> f64 {
    model
        .ir
        .consts
        .iter()
        .find(|c| c.name == name)
        .unwrap()
        .value
}

#[test]
fn valid_inputs_summaries() {
    let cases: &[(&str, &str)] = &[
        (
            "comments_and_blank_lines",
            "# a comment on its own line\n\n   \nspecies A = 3   # trailing comment\n\n# another\nparam k = 2\nA -> 0 @ k # degradation\n# last line without newline",
        ),
        (
            "tabs",
            "species\tA = 3,\tB\nparam\tk = 2\n\tA\t->\tB\t@\tk\n",
        ),
        ("no_trailing_newline", "species A = 3\nA -> 0 @ 1"),
        (
            "coefficients",
            "species A = 5, B = 5, C\n2A + B -> C @ 1\nA + 2 B -> 3 C @ 1\nA + A -> C @ 1\n",
        ),
        (
            "empty_complex",
            "species M\nparam k = 10\n0 -> M @ k\nM -> 0 @ 1\n0 -> 0 @ 1\n",
        ),
        (
            "full_propensity",
            "species P = 2\nparam a = 10, K = 5\n0 -> P @= a * hillr(P, K, 2)\nP -> 0 @= P\n",
        ),
        (
            "reversible_labelled_and_generated_names",
            "species A = 1, B\nr: A <-> B @ 1, 2\nA -> B @ 3\nA <-> B @ 4, 5\nR2: B -> A @ 6\n",
        ),
        (
            "constants_from_parameters",
            "species A = 10\nparam kon = 2, koff = 6\nconst kd = koff / kon, twice = 2 * kd\nA -> 0 @ kd\nA -> 0 @= twice * A\n",
        ),
        (
            "observables",
            "species A = 1, B = 2\nconst w = 3\nobservable total = A + B, weighted = w * A + total\nA -> B @= 0.1 * total\nB -> A @ 1\n",
        ),
        (
            "initial_counts_from_constants",
            "species A = n0, B = 2 * n0 + 1\nconst n0 = 5\nparam k = 1\nA -> B @ k\n",
        ),
        ("time_in_rates", "species A\n0 -> A @= 1 + t\nA -> 0 @ 1\n"),
        (
            "names_spelled_like_non_finite_numbers",
            "species Sus = 99, Inf = 1, Rec\nparam beta = 0.1, NaN = 1\nSus + Inf -> 2 Inf @ beta\nInf -> Rec @ NaN\n",
        ),
        (
            "bounds",
            "species A\nparam k = 0.5 in [0.001, 100], shift = 0 in [-1, 1]\n0 -> A @= k + shift\n",
        ),
        (
            "numbers",
            "species A\nconst a = 1, b = 0.5, c = 1e-3, d = 2.5E+4, e = .25, f = 3.\n0 -> A @= a + b + c + d + e + f\n",
        ),
    ];
    for (name, text) in cases {
        let model = parse(text);
        insta::with_settings!({ description => text.to_string(), omit_expression => true }, {
            insta::assert_snapshot!(format!("valid_{name}"), model.ir.summary());
        });
    }
}

#[test]
fn line_endings_tabs_and_bom_do_not_change_the_model() {
    let lf = "species A = 3, B\nparam k = 2\n# comment\nr: A <-> B @ k, 1\n";
    let base = parse(lf).ir;
    for variant in [
        lf.replace('\n', "\r\n"),
        lf.replace(' ', "\t"),
        lf.replace(' ', "  \t "),
        format!("\u{feff}{lf}"),
        lf.trim_end().to_string(),
        lf.replace('\n', "\n\n"),
    ] {
        let ir = parse(&variant).ir;
        // Spans differ; everything else is the same.
        assert_eq!(ir.species.len(), base.species.len(), "{variant:?}");
        for (a, b) in ir.species.iter().zip(&base.species) {
            assert_eq!((&a.name, a.initial), (&b.name, b.initial), "{variant:?}");
        }
        for (a, b) in ir.reactions.iter().zip(&base.reactions) {
            assert_eq!(
                (&a.name, &a.net, &a.propensity),
                (&b.name, &b.net, &b.propensity),
                "{variant:?}"
            );
        }
        assert_eq!(ir.summary(), base.summary(), "{variant:?}");
    }
}

#[test]
fn coefficients_with_and_without_space() {
    let m = parse("species A = 5, B = 5\nx: 2A -> B @ 1\ny: 2 A -> B @ 1\nz: A + A -> B @ 1\n").ir;
    for r in &m.reactions {
        assert_eq!(r.reactants, vec![(0, 2)], "{}", r.name);
        assert_eq!(r.net, vec![(0, -2), (1, 1)], "{}", r.name);
        // Mass action: 1 * C(5, 2) = 10.
        assert_eq!(r.propensity.eval(&[5.0, 5.0], &[], 0.0), 10.0, "{}", r.name);
    }
}

/// Many molecules of one species: the coefficient is finite where the falling factorial and s!
/// overflow (s! from s = 171, x^s sooner), and exact whole numbers up to 20 molecules.
#[test]
fn binomial_coefficients_of_many_molecules() {
    let m = parse("species A = 171, B = 10000, C = 50\n171 A -> 0 @ 1\n100 B -> 0 @ 1e-250\n25 C -> 0 @ 1\n20 C -> 0 @ 1\n").ir;
    let x = [171.0, 10000.0, 50.0];
    let a = |j: usize, x: &[f64]| m.reactions[j].propensity.eval(x, &[], 0.0);
    let close = |v: f64, exact: f64| (v - exact).abs() <= 1e-12 * exact;
    assert!(close(a(0, &x), 1.0), "C(171, 171) = {}", a(0, &x));
    // C(10000, 100) = 6.520846924547257e241 (Python's math.comb).
    assert!(
        close(a(1, &x), 6.520846924547257e241 * 1e-250),
        "{}",
        a(1, &x)
    );
    assert!(
        close(a(2, &x), 126410606437752.0),
        "C(50, 25) = {}",
        a(2, &x)
    );
    assert_eq!(a(3, &x), 47129212243960.0, "C(50, 20), exactly");
    assert_eq!(a(0, &[170.0, 0.0, 0.0]), 0.0, "too few molecules");
    // Step by step, whole numbers stay exact: C(23, 21), C(26, 21), C(30, 21).
    let m = parse("species A = 23\n21 A -> 0 @ 1\n").ir;
    for (x, exact) in [(23.0, 253.0), (26.0, 65780.0), (30.0, 14307150.0)] {
        assert_eq!(
            m.reactions[0].propensity.eval(&[x], &[], 0.0),
            exact,
            "C({x}, 21)"
        );
    }
}

#[test]
fn mass_action_uses_binomial_coefficients() {
    let m = parse("species A = 5, B = 4\nparam k = 2\n3A + 2B -> 0 @ k\n2A -> A @ 1\n").ir;
    let x = [5.0, 4.0];
    // k * C(5,3) * C(4,2) = 2 * 10 * 6
    assert_eq!(m.reactions[0].propensity.eval(&x, &[2.0], 0.0), 120.0);
    // C(5,2) = 10: the 1/2 of the falling factorial 5*4/2
    assert_eq!(m.reactions[1].propensity.eval(&x, &[2.0], 0.0), 10.0);
    // Zero when there are too few molecules.
    assert_eq!(
        m.reactions[0].propensity.eval(&[2.0, 4.0], &[2.0], 0.0),
        0.0
    );
    assert_eq!(
        m.reactions[1].propensity.eval(&[1.0, 0.0], &[2.0], 0.0),
        0.0
    );
}

#[test]
fn empty_complex_and_full_propensity() {
    let m = parse("species M = 3\n0 -> M @ 4\nM -> 0 @= 0.5 * M\n0 -> 0 @ 1\n").ir;
    assert!(m.reactions[0].reactants.is_empty());
    assert_eq!(m.reactions[0].net, vec![(0, 1)]);
    assert_eq!(m.reactions[1].law, RateLaw::Full);
    assert_eq!(m.reactions[1].propensity, m.reactions[1].rate);
    assert_eq!(m.reactions[1].propensity.eval(&[3.0], &[], 0.0), 1.5);
    assert!(m.reactions[1].products.is_empty());
    assert!(m.reactions[2].net.is_empty());
}

#[test]
fn reaction_names() {
    let m = parse(
        "species A = 1, B\nr: A <-> B @ 1, 2\nA -> B @ 3\nA <-> B @ 4, 5\nR2: B -> A @ 6\nlast: B -> A @ 7\n",
    )
    .ir;
    let names: Vec<&str> = m.reactions.iter().map(|r| r.name.as_str()).collect();
    // Reversible reactions give forward then reverse; unlabelled ones are named after their
    // position among the reaction statements, avoiding the labels in use.
    assert_eq!(
        names,
        ["r.fwd", "r.rev", "R2_", "R3.fwd", "R3.rev", "R2", "last"]
    );
    assert_eq!(m.reaction_index("r.rev"), Some(1));
    assert_eq!(m.reactions[1].reactants, vec![(1, 1)]);
    assert_eq!(m.reactions[1].products, vec![(0, 1)]);
    // Stable: the same text gives the same names.
    let again = parse(
        "species A = 1, B\nr: A <-> B @ 1, 2\nA -> B @ 3\nA <-> B @ 4, 5\nR2: B -> A @ 6\nlast: B -> A @ 7\n",
    )
    .ir;
    assert_eq!(m.reactions, again.reactions);
}

#[test]
fn precedence_and_associativity() {
    let m = parse(
        "species A\nconst a = -2^2, b = 2^3^2, c = 2 - 3 - 4, d = 8 / 4 / 2, e = -2 * 3, f = (1 + 2) * 3, g = 2 * -3, h = --2, i = -(2)^2\n0 -> A @ 1\n",
    );
    for (name, value) in [
        ("a", -4.0),
        ("b", 512.0),
        ("c", -5.0),
        ("d", 1.0),
        ("e", -6.0),
        ("f", 9.0),
        ("g", -6.0),
        ("h", 2.0),
        ("i", -4.0),
    ] {
        assert_eq!(eval_const(&m, name), value, "{name}");
    }
}

/// The summary prints expressions that read back to the same values: a negative number under a
/// power keeps its parentheses, tiny and huge numbers are in scientific notation.
#[test]
fn printed_expressions_read_back_the_same() {
    let consts = "a = (-2)^2, b = -2^2, c = (-1.5)^3 * -(2)^2, d = 1e-320 * 1e300, e = 2^-2, \
                  f = 1e308 / 1e300, g = 0.1 + 0.2, h = -(-3)";
    let m = parse(&format!(
        "species A\nparam k = 2\nconst {consts}\n0 -> A @= k * 0.5\n"
    ));
    let summary = m.ir.summary();
    for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let line = summary
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no `{name}` in\n{summary}"));
        let printed = line.split_once("= ").unwrap().1;
        let printed = printed.split("  (=").next().unwrap().trim();
        let again = parse(&format!("species A\nconst x = {printed}\n0 -> A @ 1\n"));
        assert_eq!(
            eval_const(&again, "x"),
            eval_const(&m, name),
            "{name} = {printed}"
        );
    }
    assert!(summary.contains("(-2) ^ 2"), "{summary}");
    assert!(summary.contains("1e-320"), "{summary}");
}

#[test]
fn functions() {
    let m = parse(
        "species A\nconst a = exp(0), b = log(1), c = sqrt(16), d = abs(-3), e = min(2, 3), f = max(2, 3), g = pow(2, 10), h = hill(2, 2, 3), i = hillr(2, 2, 3)\n0 -> A @ 1\n",
    );
    for (name, value) in [
        ("a", 1.0),
        ("b", 0.0),
        ("c", 4.0),
        ("d", 3.0),
        ("e", 2.0),
        ("f", 3.0),
        ("g", 1024.0),
        ("h", 0.5),
        ("i", 0.5),
    ] {
        assert!((eval_const(&m, name) - value).abs() < 1e-12, "{name}");
    }
}

#[test]
fn constants_follow_parameters() {
    let m = parse("species A = 10\nparam kon = 2, koff = 6\nconst kd = koff / kon\nA -> 0 @ kd\n");
    assert_eq!(eval_const(&m, "kd"), 3.0);
    // A constant defined from parameters stays symbolic in rates: fitting changes it.
    let r = &m.ir.reactions[0];
    assert_eq!(r.propensity.eval(&[10.0], &[2.0, 6.0], 0.0), 30.0);
    assert_eq!(r.propensity.eval(&[10.0], &[3.0, 6.0], 0.0), 20.0);
}

#[test]
fn declarations_may_come_in_any_order() {
    let m = parse(
        "A -> 0 @ kd\nconst kd = koff / kon\nparam kon = 2, koff = 6\nspecies A = n\nconst n = 4\n",
    );
    assert_eq!(m.ir.species[0].initial, 4);
    assert_eq!(eval_const(&m, "kd"), 3.0);
}

#[test]
fn observables_inside_rates_and_initial_counts_from_constants() {
    let m = parse(
        "species A = n0, B = 2 * n0 + 1\nconst n0 = 5\nobservable total = A + B\nA -> B @= 0.5 * total\n",
    )
    .ir;
    assert_eq!(m.initial_state(), vec![5, 11]);
    assert_eq!(m.observables[0].expr.eval(&[5.0, 11.0], &[], 0.0), 16.0);
    assert_eq!(m.reactions[0].propensity.eval(&[5.0, 11.0], &[], 0.0), 8.0);
    // The propensity reads both species through the observable.
    assert_eq!(m.dependents[0], vec![0]);
}

#[test]
fn time_makes_a_model_time_dependent() {
    assert!(parse("species A\n0 -> A @= 1 + t\n").ir.time_dependent);
    assert!(
        parse("species A\nobservable s = sin_free + t\nconst sin_free = 1\n0 -> A @= s\n")
            .ir
            .time_dependent
    );
    assert!(!parse("species A\n0 -> A @ 1\n").ir.time_dependent);
}

/// Integer literals are exact up to 2^63 - 1 (an `f64` is not above 2^53); expressions are
/// evaluated in floating point.
#[test]
fn large_but_valid_counts() {
    let initial = |text: &str| {
        parse(&format!("species A = {text}\nA -> 0 @ 1\n"))
            .ir
            .species[0]
            .initial
    };
    assert_eq!(initial("4611686018427387904"), 1 << 62);
    assert_eq!(initial("9007199254740993"), (1 << 53) + 1);
    assert_eq!(initial("9223372036854775807"), i64::MAX);
    assert_eq!(initial("2^62"), 1 << 62);
    assert_eq!(initial("1e18"), 1_000_000_000_000_000_000);
}

/// The rendered examples in docs/language.md are the snapshots of the corpus files they name.
#[test]
fn documented_diagnostics_match_the_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/language.md")).unwrap();
    let mut checked = 0;
    for block in doc.split("```").skip(1).step_by(2) {
        let block = block.trim_matches('\n');
        let Some(file) = block
            .split(",-[")
            .nth(1)
            .and_then(|rest| rest.split(".rxn:").next())
        else {
            continue;
        };
        let snap = root.join(format!("tests/snapshots/diagnostics__{file}.snap"));
        let Ok(text) = std::fs::read_to_string(&snap) else {
            continue;
        };
        let body = text
            .splitn(3, "---\n")
            .nth(2)
            .unwrap()
            .trim_end_matches('\n');
        assert_eq!(
            block, body,
            "docs/language.md shows an outdated rendering of {file}.rxn"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} documented examples found");
}
