//! The JIT against the IR interpreter: for generated expressions and networks, the compiled kernels
//! must compute exactly what `ir::Expr::eval` computes (the same floating-point operations in the
//! same order, so equality is exact, with NaN equal to NaN).

use proptest::prelude::*;
use rxnc::Model;
use rxnc::jit::CompiledModel;

mod common;
use common::{SPECIES, expression};

fn same(jit: f64, oracle: f64) -> bool {
    jit == oracle || (jit.is_nan() && oracle.is_nan())
}

fn compile(text: &str) -> (Model, CompiledModel) {
    let model = Model::parse("generated.rxn", text)
        .unwrap_or_else(|e| panic!("{text}\n{}", e.render(rxnc::diagnostics::Style::Plain)));
    // `with_clif` also runs Cranelift's verifier on the generated kernels.
    let compiled = CompiledModel::with_clif(&model.ir).expect("every checked model compiles");
    (model, compiled)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn propensity_kernel_matches_interpreter(
        e in expression(),
        x in prop::array::uniform3(0i64..50),
        p in prop::array::uniform2(0.01f64..10.0),
        t in 0.0f64..100.0,
    ) {
        let text = format!("species A, B, C\nparam k1 = 1, k2 = 2\n0 -> A @= {e}\n");
        let (model, compiled) = compile(&text);
        let mut a = [0.0];
        compiled.propensities(&x, &p, t, &mut a);
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let oracle = model.ir.reactions[0].propensity.eval(&xf, &p, t);
        prop_assert!(same(a[0], oracle), "{e}: jit {} interpreter {}", a[0], oracle);
    }

    #[test]
    fn observable_kernel_matches_interpreter(
        e in expression(),
        x in prop::array::uniform3(0i64..50),
        t in 0.0f64..100.0,
    ) {
        let text = format!("species A, B, C\nparam k1 = 1, k2 = 2\nobservable o = {e}\nA -> B @ k1\n");
        let (model, compiled) = compile(&text);
        let p = model.ir.param_values();
        let mut out = [0.0];
        compiled.observables(&x, &p, t, &mut out);
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let oracle = model.ir.observables[0].expr.eval(&xf, &p, t);
        prop_assert!(same(out[0], oracle), "{e}: jit {} interpreter {}", out[0], oracle);
    }

    /// Mass action with few or many molecules of a species (the product form up to 20, the
    /// ratios beyond) computes what the interpreter computes, at counts below, at and above it.
    #[test]
    fn binomial_coefficients_match_interpreter(s in 1u32..200, x in 0i64..100_000) {
        let text = format!("species A = 1\n{s} A -> 0 @ 1e-30\n");
        let model = Model::parse("generated.rxn", &text).expect("a valid model");
        // The simulation kernels only: the partial derivatives of `x choose s` grow as s².
        let compiled = CompiledModel::for_simulation(&model.ir).expect("every checked model compiles");
        let mut a = [0.0];
        for count in [x, i64::from(s) - 1, i64::from(s), i64::from(s) + x % 7] {
            compiled.propensities(&[count], &[], 0.0, &mut a);
            let oracle = model.ir.reactions[0].propensity.eval(&[count as f64], &[], 0.0);
            prop_assert!(same(a[0], oracle), "{s} A at {count}: jit {} interpreter {oracle}", a[0]);
        }
    }

    /// Firing reactions in any order keeps the dependency-updated propensities equal to a full
    /// recomputation, and the state equal to the stoichiometry applied by hand.
    #[test]
    fn fire_kernel_matches_full_recomputation(
        reactions in prop::collection::vec(
            (prop::collection::vec((0usize..3, 1u32..3), 0..3), prop::collection::vec((0usize..3, 1u32..3), 0..3), 0.1f64..5.0),
            1..6),
        firings in prop::collection::vec(0usize..6, 1..30),
    ) {
        let side = |terms: &Vec<(usize, u32)>| if terms.is_empty() { "0".to_string() } else {
            terms.iter().map(|(i, c)| format!("{c} {}", SPECIES[*i])).collect::<Vec<_>>().join(" + ")
        };
        let mut text = String::from("species A = 30, B = 20, C = 10\n");
        for (from, to, k) in &reactions {
            text.push_str(&format!("{} -> {} @ {k}\n", side(from), side(to)));
        }
        let (model, compiled) = compile(&text);
        let ir = &model.ir;
        let mut x = ir.initial_state();
        let mut a = vec![0.0; ir.reactions.len()];
        let mut a0 = compiled.propensities(&x, &[], 0.0, &mut a);
        for j in firings.into_iter().map(|f| f % ir.reactions.len()) {
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            if ir.reactions[j].propensity.eval(&xf, &[], 0.0) <= 0.0 {
                continue; // a reaction that cannot fire in this state
            }
            let mut expected = x.clone();
            for &(i, c) in &ir.reactions[j].net {
                expected[i] += c;
            }
            let delta = compiled.fire(j, &mut x, &[], 0.0, &mut a);
            prop_assert_eq!(&x, &expected);
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            for (k, r) in ir.reactions.iter().enumerate() {
                prop_assert!(same(a[k], r.propensity.eval(&xf, &[], 0.0)), "propensity {k} after firing {j}");
            }
            a0 += delta;
            let total: f64 = a.iter().sum();
            prop_assert!((a0 - total).abs() <= 1e-9 * total.max(1.0), "running total {a0} vs {total}");
        }
    }
}

#[test]
fn fire_reports_negative_counts_and_propensities() {
    let (_, compiled) = compile("species X = 0\nX -> 0 @= 1\n0 -> X @= 1 - X\n");
    let mut x = [0i64];
    let mut a = [0.0; 2];
    compiled.propensities(&x, &[], 0.0, &mut a);
    assert!(
        compiled.fire(0, &mut x, &[], 0.0, &mut a).is_nan(),
        "X went negative"
    );
    let mut x = [1i64];
    compiled.propensities(&x, &[], 0.0, &mut a);
    assert!(
        compiled.fire(1, &mut x, &[], 0.0, &mut a).is_nan(),
        "1 - X became negative"
    );
}
