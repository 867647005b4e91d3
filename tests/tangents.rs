//! The JIT `partials` kernel against finite differences.
//!
//! For generated rate laws (the generator of `tests/jit_oracle.rs`), the kernel's ∂a/∂θ and ∂a/∂t
//! must agree with central differences of the primal `propensities` kernel, and its ∂a/∂x with
//! central differences of the IR interpreter on the relaxed (f64) state, since the kernels read
//! whole counts. Points where the rate law is not finite or not smooth (abs/min/max near a tie,
//! log/sqrt near zero, overflow) are skipped, and the tests count what they skipped so that they
//! cannot pass by skipping everything.
//!
//! Besides the derivatives: the kernel's propensities equal the primal kernel's exactly, every
//! written partial equals the interpreter on `ir::derive` exactly, entries outside
//! `compiled.pattern` are never written (the buffers are filled with a sentinel), and every
//! pattern entry is a derivative that is not structurally zero, of a variable the rate law reads.

// `!(a <= b)` is meant: it holds when either side is NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rxnc::Model;
use rxnc::ir::{self, Expr, Var};
use rxnc::jit::CompiledModel;
use std::cell::RefCell;
use std::collections::BTreeMap;

mod common;
use common::{PARAMS, SPECIES, expression};

fn compile(text: &str) -> CompiledModel {
    let model = Model::parse("generated.rxn", text)
        .unwrap_or_else(|e| panic!("{text}\n{}", e.render(rxnc::diagnostics::Style::Plain)));
    // `with_clif` also runs Cranelift's verifier on the generated kernels.
    CompiledModel::with_clif(&model.ir).expect("every checked model compiles")
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// A NaN with a payload no computation produces: marks entries the kernel must not write.
const SENTINEL: u64 = 0x7ff4_dead_beef_0001;

fn sentinel() -> f64 {
    f64::from_bits(SENTINEL)
}

fn untouched(v: f64) -> bool {
    v.to_bits() == SENTINEL
}

/// Whether `e` reads the variable `v` at all.
fn reads(e: &Expr, v: Var) -> bool {
    match e {
        Expr::Num(_) => false,
        Expr::Species(i) | Expr::Choose(i, _) => v == Var::Species(*i),
        Expr::Param(q) => v == Var::Param(*q),
        Expr::Time => v == Var::Time,
        Expr::Neg(a) => reads(a, v),
        Expr::Bin(_, a, b) => reads(a, v) || reads(b, v),
        Expr::Call(_, args) => args.iter().any(|a| reads(a, v)),
    }
}

/// Whether some `abs`, `min` or `max` in `e` has its kink within the finite-difference stencil
/// along `v` (steps up to `2h`), on the point included. Central differences average the two
/// sides of a kink, while the kernel takes the side the point is on, or at a tie the average of
/// the one-sided derivatives of each `abs`, `min` or `max` separately, which differs from the
/// average of the whole function's when ties nest (`min(-A, -min(A, 2))` at A = 2):
/// `exact_ties_take_the_average_of_both_sides` checks the convention on single ties.
fn kink_near(e: &Expr, v: Var, h: f64, x: &[f64], p: &[f64], t: f64) -> bool {
    let near = |gap: &Expr| {
        let slope = ir::derive(gap, v).eval(x, p, t);
        slope != 0.0 && !(gap.eval(x, p, t).abs() > 4.0 * h * slope.abs())
    };
    match e {
        Expr::Num(_) | Expr::Species(_) | Expr::Param(_) | Expr::Time | Expr::Choose(..) => false,
        Expr::Neg(a) => kink_near(a, v, h, x, p, t),
        Expr::Bin(_, a, b) => kink_near(a, v, h, x, p, t) || kink_near(b, v, h, x, p, t),
        Expr::Call(f, args) => {
            let here = match f {
                ir::Func::Abs => near(&args[0]),
                ir::Func::Min | ir::Func::Max => near(&Expr::Bin(
                    ir::BinOp::Sub,
                    Box::new(args[0].clone()),
                    Box::new(args[1].clone()),
                )),
                _ => false,
            };
            here || args.iter().any(|a| kink_near(a, v, h, x, p, t))
        }
    }
}

/// Whether some subexpression of `e` overflows (is infinite) or nearly underflows (below 1e-250,
/// where precision runs out) at the point. In a derivative this happens where the result is
/// finite, e.g. `(a/b)' = a'/b - a b'/b^2` with `b^2` beyond 1e308 or below 1e-308 (see
/// `quotient_derivative_does_not_overflow`); in the primal it makes central differences
/// meaningless.
fn overflows(e: &Expr, x: &[f64], p: &[f64], t: f64) -> bool {
    let v = e.eval(x, p, t);
    v.is_infinite()
        || (v != 0.0 && v.abs() < 1e-250)
        || match e {
            Expr::Num(_) | Expr::Species(_) | Expr::Param(_) | Expr::Time | Expr::Choose(..) => {
                false
            }
            Expr::Neg(a) => overflows(a, x, p, t),
            Expr::Bin(_, a, b) => overflows(a, x, p, t) || overflows(b, x, p, t),
            Expr::Call(f @ (ir::Func::Hill | ir::Func::Hillr), args) => {
                let n = args[2].eval(x, p, t);
                args.iter().any(|a| overflows(a, x, p, t))
                    || ir::apply(*f, &[args[0].eval(x, p, t), args[1].eval(x, p, t), n]).is_nan()
                    || [args[0].eval(x, p, t), args[1].eval(x, p, t)]
                        .iter()
                        .any(|b| {
                            let v = b.powf(n);
                            v.is_infinite() || (v != 0.0 && v.abs() < 1e-250)
                        })
            }
            Expr::Call(_, args) => args.iter().any(|a| overflows(a, x, p, t)),
        }
}

/// Whether some `min` or `max` in `e` has an argument that is not selected but whose derivative
/// with respect to `v` dwarfs the selected one's: `ir::derive` writes `min(a, b)'` as
/// `(a' + b' - sign(a - b) (a' - b')) / 2`, which cancels catastrophically then (a known issue,
/// see `min_max_derivative_does_not_cancel`).
fn min_max_cancels(e: &Expr, v: Var, x: &[f64], p: &[f64], t: f64) -> bool {
    match e {
        Expr::Num(_) | Expr::Species(_) | Expr::Param(_) | Expr::Time | Expr::Choose(..) => false,
        Expr::Neg(a) => min_max_cancels(a, v, x, p, t),
        Expr::Bin(_, a, b) => min_max_cancels(a, v, x, p, t) || min_max_cancels(b, v, x, p, t),
        Expr::Call(f, args) => {
            let here = matches!(f, ir::Func::Min | ir::Func::Max) && {
                let (a, b) = (args[0].eval(x, p, t), args[1].eval(x, p, t));
                let da = ir::derive(&args[0], v).eval(x, p, t);
                let db = ir::derive(&args[1], v).eval(x, p, t);
                let picks_a = (a < b) == (*f == ir::Func::Min);
                let (chosen, other) = if picks_a { (da, db) } else { (db, da) };
                // The cancellation leaves an error of about ε |other| (none when the chosen
                // derivative is zero: then it is exact).
                a != b && chosen != 0.0 && !(other.abs() <= 1e6 * chosen.abs())
            };
            here || args.iter().any(|a| min_max_cancels(a, v, x, p, t))
        }
    }
}

/// How much rounding can move the value of `e` at this point: `e` is evaluated as
/// `Expr::eval` does, with every operation's result also perturbed by a random relative amount
/// of a few ε, and the largest deviation over several tries is returned. Central differences
/// cannot tell a rounding error that varies smoothly with the point (cancellation in `1 - δ`,
/// `u^N` with `u` near 1) from the derivative, so their tolerance grows with it.
fn rounding_sensitivity(e: &Expr, x: &[f64], p: &[f64], t: f64) -> f64 {
    struct Noisy<'a> {
        x: &'a [f64],
        p: &'a [f64],
        t: f64,
        state: u64,
    }
    impl Noisy<'_> {
        fn jitter(&mut self, v: f64) -> f64 {
            // xorshift64*: reproducible, and good enough for a perturbation.
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let r =
                (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            v * (1.0 + 4.0 * f64::EPSILON * (2.0 * r - 1.0))
        }
        fn pow(&mut self, base: f64, exponent: &Expr) -> f64 {
            let v = match ir::small_whole_exponent(exponent) {
                Some(n) => ir::powi_by_squaring(base, n),
                None => base.powf(self.eval(exponent)),
            };
            self.jitter(v)
        }
        fn eval(&mut self, e: &Expr) -> f64 {
            let v = match e {
                Expr::Num(v) => return *v,
                Expr::Species(i) => return self.x[*i],
                Expr::Param(q) => return self.p[*q],
                Expr::Time => return self.t,
                Expr::Neg(a) => return -self.eval(a),
                Expr::Choose(i, s) => ir::choose(self.x[*i], *s),
                Expr::Bin(ir::BinOp::Pow, a, b) => {
                    let a = self.eval(a);
                    return self.pow(a, b);
                }
                Expr::Call(ir::Func::Pow, args) => {
                    let a = self.eval(&args[0]);
                    return self.pow(a, &args[1]);
                }
                Expr::Bin(op, a, b) => {
                    let (a, b) = (self.eval(a), self.eval(b));
                    match op {
                        ir::BinOp::Add => a + b,
                        ir::BinOp::Sub => a - b,
                        ir::BinOp::Mul => a * b,
                        ir::BinOp::Div => a / b,
                        ir::BinOp::Pow => unreachable!("handled above"),
                    }
                }
                Expr::Call(f @ (ir::Func::Hill | ir::Func::Hillr), args) => {
                    let base = self.eval(&args[0]);
                    let xn = self.pow(base, &args[2]);
                    let k = self.eval(&args[1]);
                    let kn = self.pow(k, &args[2]);
                    let top = if *f == ir::Func::Hill { xn } else { kn };
                    let sum = self.jitter(kn + xn);
                    top / sum
                }
                Expr::Call(f, args) => {
                    let v: Vec<f64> = args.iter().map(|a| self.eval(a)).collect();
                    ir::apply(*f, &v)
                }
            };
            self.jitter(v)
        }
    }
    let exact = e.eval(x, p, t);
    let mut noisy = Noisy {
        x,
        p,
        t,
        state: 0x9E37_79B9_7F4A_7C15,
    };
    (0..8)
        .map(|_| (noisy.eval(e) - exact).abs())
        .fold(0.0, f64::max)
}

/// What became of one derivative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Compared against the finite difference, which was clearly non-zero.
    CheckedNonZero,
    /// Compared against the finite difference, which was (nearly) zero.
    CheckedZero,
    /// The function is not finite at the point or beside it.
    SkipNonFinite,
    /// The two step sizes disagree: a kink or an inflection of noise within the stencil.
    SkipNonSmooth,
    /// An `abs`, `min` or `max` with its kink within the stencil.
    SkipNearKink,
    /// A subexpression of the rate law or of its derivative overflows or nearly underflows.
    SkipOverflow,
    /// Rounding errors of the rate law at the point are too large for central differences
    /// (cancellation of nearly equal terms, `u^N` with `u` near 1 and `N` large).
    SkipIllConditioned,
    /// The kernel's derivative is not finite where the function looks smooth (`sqrt(x^2)` at 0).
    SkipKernelNonFinite,
    /// A `min` or `max` whose unselected argument's derivative dwarfs the selected one's.
    SkipMinMaxCancels,
}

/// Compares `got`, the kernel's derivative at `v`, with central differences of `f` around `v`.
/// Returns the outcome, or a message when they disagree.
fn compare(got: f64, v: f64, rounding: f64, f: impl Fn(f64) -> f64) -> Result<Outcome, String> {
    let f0 = f(v);
    if !f0.is_finite() || f0.abs() > 1e12 {
        return Ok(Outcome::SkipNonFinite);
    }
    let h = 1e-6 * v.abs().max(1.0);
    let stencil = |s: f64| {
        let (up, down) = (v + s * h, v - s * h);
        (f(up), f(down), up - down)
    };
    let (p1, m1, w1) = stencil(1.0);
    let (p2, m2, w2) = stencil(2.0);
    if ![p1, m1, p2, m2]
        .iter()
        .all(|y| y.is_finite() && y.abs() <= 1e12)
    {
        return Ok(Outcome::SkipNonFinite);
    }
    let fd1 = (p1 - m1) / w1;
    let fd2 = (p2 - m2) / w2;
    // Rounding noise of a central difference is about ε |f| / h.
    let atol = 1e-8 * f0.abs().max(1.0) / v.abs().max(1.0);
    let spread = (fd1 - fd2).abs();
    // The two step sizes must agree, and the function must be nearly linear over the stencil
    // (a jump or a spike at the point leaves the differences small but meaningless).
    let curvature = (p1 + m1 - 2.0 * f0).abs();
    if spread > 1e-3 * fd1.abs().max(fd2.abs()) + atol
        || curvature > 1e-2 * (p1 - m1).abs() + 1e-12 * f0.abs().max(1.0) + 4.0 * rounding
    {
        return Ok(Outcome::SkipNonSmooth);
    }
    // A rounding error of the primal that varies smoothly with the point shifts both differences
    // alike, by up to about its size over h.
    let conditioning = 4.0 * rounding / h;
    // Skipped when it makes the comparison meaningless: looser than 1% of the derivative and than
    // 1e-4 of the function's scale.
    if !(conditioning <= 1e-2 * fd1.abs()) && !(conditioning <= 1e4 * atol) {
        return Ok(Outcome::SkipIllConditioned);
    }
    if !got.is_finite() {
        return Ok(Outcome::SkipKernelNonFinite);
    }
    let tol = 1e-6 * got.abs().max(fd1.abs()) + atol + 4.0 * spread + conditioning;
    if (got - fd1).abs() <= tol {
        Ok(if fd1.abs() > 10.0 * atol {
            Outcome::CheckedNonZero
        } else {
            Outcome::CheckedZero
        })
    } else {
        Err(format!(
            "kernel {got:e}, central differences {fd1:e} (h) and {fd2:e} (2h), f = {f0:e}, tolerance {tol:e}"
        ))
    }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    non_finite_cases: usize,
    outcomes: BTreeMap<(&'static str, Outcome), usize>,
    kernel_non_finite: Vec<String>,
}

impl Tally {
    fn count(&self, pred: impl Fn(Outcome) -> bool) -> usize {
        self.outcomes
            .iter()
            .filter(|((_, o), _)| pred(*o))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The buffers of one `partials` call, filled with the sentinel, with one spare entry each to
/// catch writes past the end.
struct Buffers {
    a: Vec<f64>,
    dadp: Vec<f64>,
    dadx: Vec<f64>,
    dadt: Vec<f64>,
    sum: f64,
}

fn call_partials(c: &CompiledModel, x: &[i64], p: &[f64], t: f64) -> Buffers {
    let (nr, ns, np) = (c.n_reactions(), c.n_species(), c.model.params.len());
    let mut b = Buffers {
        a: vec![sentinel(); nr + 1],
        dadp: vec![sentinel(); nr * np + 1],
        dadx: vec![sentinel(); nr * ns + 1],
        dadt: vec![sentinel(); nr + 1],
        sum: 0.0,
    };
    b.sum = c.partials(x, p, t, &mut b.a, &mut b.dadp, &mut b.dadx, &mut b.dadt);
    b
}

/// The structural checks: exact agreement with the primal kernel and with the interpreter on the
/// symbolic derivatives, the pattern, and no write outside it.
fn check_structure(
    c: &CompiledModel,
    x: &[i64],
    p: &[f64],
    t: f64,
    b: &Buffers,
) -> Result<(), TestCaseError> {
    let model = &c.model;
    let (nr, ns, np) = (c.n_reactions(), c.n_species(), model.params.len());
    let mut a = vec![0.0; nr];
    let sum = c.propensities(x, p, t, &mut a);
    for k in 0..nr {
        prop_assert!(
            same(a[k], b.a[k]),
            "a[{k}]: partials {} propensities {}",
            b.a[k],
            a[k]
        );
    }
    prop_assert!(
        same(sum, b.sum),
        "sum: partials {} propensities {sum}",
        b.sum
    );
    prop_assert!(untouched(b.a[nr]), "wrote past the end of a");
    prop_assert!(untouched(b.dadp[nr * np]), "wrote past the end of dadp");
    prop_assert!(untouched(b.dadx[nr * ns]), "wrote past the end of dadx");
    prop_assert!(untouched(b.dadt[nr]), "wrote past the end of dadt");

    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let pat = &c.pattern;
    for (k, r) in model.reactions.iter().enumerate() {
        let e = &r.propensity;
        let mut entries: Vec<(Var, bool, f64)> = Vec::new();
        for q in 0..np {
            entries.push((
                Var::Param(q),
                pat.dparam.contains(&(k, q)),
                b.dadp[k * np + q],
            ));
        }
        for i in 0..ns {
            entries.push((
                Var::Species(i),
                pat.dspecies.contains(&(k, i)),
                b.dadx[k * ns + i],
            ));
        }
        entries.push((Var::Time, pat.dtime.contains(&k), b.dadt[k]));
        for (v, in_pattern, got) in entries {
            let d = ir::derive(e, v);
            prop_assert_eq!(
                in_pattern,
                !ir::is_zero(&d),
                "reaction {} d/d{:?}: pattern and symbolic derivative disagree",
                k,
                v
            );
            if in_pattern {
                prop_assert!(
                    reads(e, v),
                    "reaction {k} d/d{v:?} is in the pattern but the rate law does not read it"
                );
                prop_assert!(!untouched(got), "reaction {k} d/d{v:?} was not written");
                let want = d.eval(&xf, p, t);
                prop_assert!(
                    same(got, want),
                    "reaction {k} d/d{v:?}: kernel {got}, interpreter on the derivative {want}"
                );
            } else {
                prop_assert!(
                    untouched(got),
                    "reaction {k} d/d{v:?} is outside the pattern but was written ({got})"
                );
            }
        }
    }
    for &(k, q) in &pat.dparam {
        prop_assert!(k < nr && q < np);
    }
    for &(k, i) in &pat.dspecies {
        prop_assert!(k < nr && i < ns);
    }
    for &k in &pat.dtime {
        prop_assert!(k < nr);
    }
    Ok(())
}

/// Every derivative of every reaction against central differences; outcomes go to `tally`.
fn check_derivatives(
    text: &str,
    c: &CompiledModel,
    x: &[i64],
    p: &[f64],
    t: f64,
    b: &Buffers,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let model = &c.model;
    let (nr, ns, np) = (c.n_reactions(), c.n_species(), model.params.len());
    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    // Outside the pattern the kernel's derivative is zero.
    let value = |buf: &[f64], idx: usize| if untouched(buf[idx]) { 0.0 } else { buf[idx] };
    let primal = |p: &[f64], t: f64, k: usize| {
        let mut a = vec![0.0; nr];
        c.propensities(x, p, t, &mut a);
        a[k]
    };
    for (k, r) in model.reactions.iter().enumerate() {
        let e = &r.propensity;
        let rounding = rounding_sensitivity(e, &xf, p, t);
        // (kind, name, variable, its value, the kernel's derivative, the function along it)
        type Along<'a> = Box<dyn Fn(f64) -> f64 + 'a>;
        let mut vars: Vec<(&str, &str, Var, f64, f64, Along)> = Vec::new();
        for q in 0..np {
            vars.push((
                "param",
                PARAMS[q],
                Var::Param(q),
                p[q],
                value(&b.dadp, k * np + q),
                Box::new(move |v| {
                    let mut pp = p.to_vec();
                    pp[q] = v;
                    primal(&pp, t, k)
                }),
            ));
        }
        vars.push((
            "time",
            "t",
            Var::Time,
            t,
            value(&b.dadt, k),
            Box::new(move |v| primal(p, v, k)),
        ));
        for i in 0..ns {
            let xf = &xf;
            vars.push((
                "species",
                SPECIES[i],
                Var::Species(i),
                xf[i],
                value(&b.dadx, k * ns + i),
                Box::new(move |v| {
                    let mut xs = xf.clone();
                    xs[i] = v;
                    e.eval(&xs, p, t)
                }),
            ));
        }
        for (kind, name, var, at, got, along) in vars {
            let h = 1e-6 * at.abs().max(1.0);
            let outcome = if kink_near(e, var, h, &xf, p, t) {
                Outcome::SkipNearKink
            } else if min_max_cancels(e, var, &xf, p, t) {
                Outcome::SkipMinMaxCancels
            } else if overflows(e, &xf, p, t) || overflows(&ir::derive(e, var), &xf, p, t) {
                Outcome::SkipOverflow
            } else {
                compare(got, at, rounding, along)
                    .map_err(|m| TestCaseError::fail(format!("reaction {k} d/d{name}: {m}")))?
            };
            if outcome == Outcome::SkipKernelNonFinite && tally.kernel_non_finite.len() < 20 {
                tally.kernel_non_finite.push(format!(
                    "reaction {k} d/d{name} of {:?} at x = {x:?}, p = {p:?}, t = {t}",
                    text.lines().nth(2 + k).unwrap_or("")
                ));
            }
            *tally.outcomes.entry((kind, outcome)).or_default() += 1;
        }
    }
    Ok(())
}

fn report(name: &str, tally: &Tally) {
    let checked = tally.count(|o| matches!(o, Outcome::CheckedNonZero | Outcome::CheckedZero));
    eprintln!(
        "{name}: {} cases ({} more skipped: a rate law not finite), {checked} of {} derivatives checked",
        tally.cases,
        tally.non_finite_cases,
        tally.count(|_| true)
    );
    for ((kind, o), n) in &tally.outcomes {
        eprintln!("  {kind:<8} {o:?}: {n}");
    }
    for w in &tally.kernel_non_finite {
        eprintln!("  kernel derivative not finite where the function looks smooth: {w}");
    }
}

#[test]
fn generated_rate_laws_match_finite_differences() {
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        max_global_rejects: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        expression(),
        expression(),
        prop::array::uniform3(0i64..50),
        prop::array::uniform2(0.01f64..10.0),
        0.0f64..100.0,
    );
    let result = runner.run(&strategy, |(e1, e2, x, p, t)| {
        // Two reactions so that the row offsets of the output arrays are exercised.
        let text =
            format!("species A, B, C\nparam k1 = 1, k2 = 2\n0 -> A @= {e1}\nB -> C @= {e2}\n");
        let c = compile(&text);
        let b = call_partials(&c, &x, &p, t);
        check_structure(&c, &x, &p, t, &b).map_err(|e| {
            TestCaseError::fail(format!("{text}at x = {x:?}, p = {p:?}, t = {t}: {e}"))
        })?;
        // A rate law that is not finite at the point has nothing to compare.
        let mut tally = tally.borrow_mut();
        if !b.a[..2].iter().all(|v| v.is_finite()) {
            tally.non_finite_cases += 1;
        }
        prop_assume!(b.a[..2].iter().all(|v| v.is_finite()));
        tally.cases += 1;
        check_derivatives(&text, &c, &x, &p, t, &b, &mut tally).map_err(|e| {
            TestCaseError::fail(format!("{text}at x = {x:?}, p = {p:?}, t = {t}: {e}"))
        })
    });
    let tally = tally.into_inner();
    report("generated rate laws", &tally);
    if let Err(e) = result {
        panic!("{e}");
    }
    let checked = tally.count(|o| matches!(o, Outcome::CheckedNonZero | Outcome::CheckedZero));
    let nonzero = tally.count(|o| o == Outcome::CheckedNonZero);
    let total = tally.count(|_| true);
    // The generator produces many rate laws that are NaN or infinite (logs and roots of negative
    // numbers, overflowing powers); among the finite ones most derivatives must be checked.
    assert!(
        checked * 10 >= total * 6,
        "only {checked} of {total} derivatives were checked"
    );
    assert!(
        nonzero >= 3500,
        "only {nonzero} non-zero derivatives were checked"
    );
    for kind in ["param", "species", "time"] {
        let n = tally
            .outcomes
            .get(&(kind, Outcome::CheckedNonZero))
            .copied()
            .unwrap_or(0);
        assert!(
            n >= 1000,
            "only {n} non-zero {kind} derivatives were checked"
        );
    }
}

/// Mass action with coefficients 1 to 3: `k Π C(x_i, s_i)` with the falling factorial, whose
/// derivative is `Σ_j Π_{l≠j} (x - l) / s!`.
fn falling_factorial(x: f64, s: u32) -> f64 {
    (0..s).map(|l| x - l as f64).product::<f64>() / (1..=s).product::<u32>() as f64
}

fn falling_factorial_derivative(x: f64, s: u32) -> f64 {
    match s {
        1 => 1.0,
        2 => (2.0 * x - 1.0) / 2.0,
        3 => (3.0 * x * x - 6.0 * x + 2.0) / 6.0,
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mass_action_partials_are_falling_factorial_derivatives(
        reactions in prop::collection::vec(
            (prop::sample::subsequence(vec![0usize, 1, 2], 0..=3), prop::collection::vec(1u32..=3, 3), 0usize..4),
            1..5),
        x in prop::array::uniform3(0i64..40),
        p in prop::array::uniform2(0.01f64..10.0),
    ) {
        let rates = ["k1", "k2", "k1 * k2", "2.5"];
        let mut text = String::from("species A, B, C\nparam k1 = 1, k2 = 2\n");
        for (who, coef, rate) in &reactions {
            let lhs = if who.is_empty() {
                "0".to_string()
            } else {
                who.iter().map(|&i| format!("{} {}", coef[i], SPECIES[i])).collect::<Vec<_>>().join(" + ")
            };
            let rhs = if who.is_empty() { "A" } else { "0" };
            text.push_str(&format!("{lhs} -> {rhs} @ {}\n", rates[*rate]));
        }
        let c = compile(&text);
        let b = call_partials(&c, &x, &p, 0.0);
        check_structure(&c, &x, &p, 0.0, &b)?;
        let (ns, np) = (3, 2);
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (k, (who, coef, rate)) in reactions.iter().enumerate() {
            let k_value = [p[0], p[1], p[0] * p[1], 2.5][*rate];
            let binomials: Vec<f64> = (0..3).map(|i| if who.contains(&i) { falling_factorial(xf[i], coef[i]) } else { 1.0 }).collect();
            let want_a = k_value * binomials.iter().product::<f64>();
            prop_assert!((b.a[k] - want_a).abs() <= 1e-12 * want_a.abs(), "{text}a[{k}] = {} vs {want_a}", b.a[k]);
            prop_assert!(c.pattern.dtime.is_empty());
            for i in 0..ns {
                let in_pattern = c.pattern.dspecies.contains(&(k, i));
                prop_assert_eq!(in_pattern, who.contains(&i), "{}reaction {} species {}", text, k, i);
                if !in_pattern {
                    continue;
                }
                let others: f64 = (0..3).filter(|&j| j != i).map(|j| binomials[j]).product();
                let want = k_value * falling_factorial_derivative(xf[i], coef[i]) * others;
                let got = b.dadx[k * ns + i];
                prop_assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-300) + 1e-12,
                    "{text}reaction {k} d/d{}: kernel {got} vs falling factorial {want}", SPECIES[i]);
                // And against central differences of the interpreter on the relaxed state.
                let r = compare(got, xf[i], 0.0, |v| {
                    let mut xs = xf.clone();
                    xs[i] = v;
                    c.model.reactions[k].propensity.eval(&xs, &p, 0.0)
                });
                prop_assert!(r.is_ok(), "{text}reaction {k} d/d{}: {:?}", SPECIES[i], r);
            }
            for q in 0..np {
                let uses = match rate { 0 => q == 0, 1 => q == 1, 2 => true, _ => false };
                prop_assert_eq!(c.pattern.dparam.contains(&(k, q)), uses, "{}reaction {} param {}", text, k, q);
                if uses {
                    let dk = match rate { 2 => p[1 - q], _ => 1.0 };
                    let want = dk * binomials.iter().product::<f64>();
                    let got = b.dadp[k * np + q];
                    prop_assert!((got - want).abs() <= 1e-12 * want.abs(), "{text}reaction {k} d/d{}: {got} vs {want}", PARAMS[q]);
                }
            }
        }
    }
}

/// Below the coefficient the binomial coefficient is zero on counts, but the falling factorial's
/// slope there is not: `C(x, 2)' = x - 1/2`, so at x = 0 it is -1/2 and at x = 1 it is 1/2.
#[test]
fn falling_factorial_slopes_at_small_counts() {
    let c = compile("species A\nparam k = 3\n2 A -> 0 @ k\n3 A -> A @ k\n");
    for (x, want2, want3) in [
        (0i64, -0.5, 1.0 / 3.0),
        (1, 0.5, -1.0 / 6.0),
        (2, 1.5, 1.0 / 3.0),
        (5, 4.5, 47.0 / 6.0),
    ] {
        let b = call_partials(&c, &[x], &[3.0], 0.0);
        assert!(
            (b.dadx[0] - 3.0 * want2).abs() < 1e-12,
            "x = {x}: {}",
            b.dadx[0]
        );
        assert!(
            (b.dadx[1] - 3.0 * want3).abs() < 1e-12,
            "x = {x}: {}",
            b.dadx[1]
        );
    }
}

/// A power whose exponent is a parameter, at a zero base: x^n is 0 for every n > 0, so ∂/∂n is 0,
/// but `ir::derive` writes it as x^n ln(x) = 0 · (-∞) = NaN. This breaks `hill(P, K, n)` with a
/// free Hill coefficient whenever P = 0 (typically at t = 0), and with it every estimator that
/// reads ∂a/∂θ (score, alt-path, gs-st).
#[test]
fn parameter_exponent_at_zero_base_has_zero_derivative() {
    let c =
        compile("species P, Q = 1\nparam n = 2, a = 1.5\n0 -> P @= hill(P, 3, n)\n0 -> Q @= P^a\n");
    let b = call_partials(&c, &[0, 1], &[2.0, 1.5], 0.0);
    assert_eq!(b.a[..2], [0.0, 0.0]);
    assert_eq!(b.dadp[0], 0.0, "d hill(0, 3, n)/dn");
    assert_eq!(b.dadp[2 + 1], 0.0, "d 0^a/da");
}

/// `min(a, b)` picks one argument, so its derivative is that argument's, exactly. `ir::derive`
/// used to write it as `(a' + b' - sign(a - b) (a' - b')) / 2`, which loses the selected derivative when
/// the other is much larger: here `min(t + A, A^A)` at A = 14 selects `t + A` (slope 1) but the
/// slope of `A^A` is 1e17, and the kernel returns 0.
#[test]
fn min_max_derivative_does_not_cancel() {
    let c = compile("species A\nparam k = 1\n0 -> A @= k * min(t + A, A^A)\n");
    let b = call_partials(&c, &[14], &[1.0], 0.0);
    assert_eq!(b.a[0], 14.0);
    assert_eq!(b.dadx[0], 1.0, "d/dA");
    assert_eq!(b.dadt[0], 1.0, "d/dt");
}

/// The textbook `(a/b)' = a'/b - a b'/b^2` (which `ir::derive` used) overflows in `b^2` when |b| > 1e154 (underflows when |b| < 1e-154)
/// although the derivative is finite, and the kernel then returns a wrong finite value: here `hillr(4^t, 1, 4)` =
/// 1/(1 + 4^(4t)) at t = 78, whose log has slope -4 ln 4 ≈ -5.545, but the kernel says -0.
/// (Hill functions of large counts with large coefficients reach such denominators.)
#[test]
fn quotient_derivative_does_not_overflow() {
    let c = compile("species A = 1\nparam k = 1\n0 -> A @= k * -log(hillr(4^t, A, 4))\n");
    let b = call_partials(&c, &[1], &[1.0], 78.0);
    let want = 4.0 * 4f64.ln();
    assert!(
        (b.dadt[0] - want).abs() < 1e-9 * want,
        "d/dt = {}, want {want}",
        b.dadt[0]
    );
}

/// The same square underflows for tiny denominators: hillr(0, K, 4) = 1 for every K > 0, so
/// d/dk = 0, but with K^4 ≈ 1e-159 the square is subnormal and the kernel returns a non-zero slope.
#[test]
fn quotient_derivative_does_not_underflow() {
    let c =
        compile("species A\nparam k = 3.24\n0 -> A @= hillr(A, hill(0.49, k^4, 4) / 1e30, 4)\n");
    let b = call_partials(&c, &[0], &[3.24], 0.0);
    assert_eq!(b.a[0], 1.0);
    assert_eq!(b.dadp[0], 0.0, "d hillr(0, K(k), 4)/dk");
}

/// At an exact tie `abs`, `min` and `max` take the average of the one-sided derivatives (the
/// documented subgradient), which is also what central differences see at a single kink.
#[test]
fn exact_ties_take_the_average_of_both_sides() {
    let c = compile(
        "species A, B\nparam k = 2\n0 -> A @= min(A, k) + 10\n0 -> B @= max(3 * A, B)\n\
         A -> 0 @= abs(A - k) * B\n",
    );
    let b = call_partials(&c, &[2, 6], &[2.0], 0.0);
    // min(A, k) at A = k: d/dA = d/dk = 1/2.
    assert_eq!((b.dadx[0], b.dadp[0]), (0.5, 0.5));
    // max(3A, B) at 3A = B: d/dA = 3/2, d/dB = 1/2.
    assert_eq!((b.dadx[2], b.dadx[3]), (1.5, 0.5));
    // |A - k| B at A = k: d/dA = d/dk = 0, d/dB = 0.
    assert_eq!((b.dadx[4], b.dadp[2], b.dadx[5]), (0.0, 0.0, 0.0));
}
