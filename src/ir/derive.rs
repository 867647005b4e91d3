//! Symbolic derivatives of IR expressions, simplified as they are built.
//!
//! Mass action on a relaxed state uses the falling factorial `x (x-1) ... (x-s+1) / s!` as the
//! smooth extension of "x choose s": it equals the binomial coefficient on whole counts (including
//! zero below `s`), and its derivative, `Σ_j Π_{l≠j} (x - l) / s!`, is what the pathwise gradient
//! estimators propagate through the state. `abs`, `min` and `max` are differentiated almost
//! everywhere, taking the average of the one-sided derivatives at ties (a subgradient).

use super::{BinOp, Expr, Func};

/// What to differentiate with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// A free parameter.
    Param(usize),
    /// A species (on the relaxed, continuous state).
    Species(usize),
    /// Time.
    Time,
}

fn num(e: &Expr) -> Option<f64> {
    if let Expr::Num(v) = e { Some(*v) } else { None }
}

/// `a + b`, simplified.
pub fn add(a: Expr, b: Expr) -> Expr {
    match (num(&a), num(&b)) {
        (Some(x), Some(y)) => Expr::Num(x + y),
        (Some(x), _) if x == 0.0 => b,
        (_, Some(y)) if y == 0.0 => a,
        _ => Expr::Bin(BinOp::Add, Box::new(a), Box::new(b)),
    }
}

/// `a - b`, simplified.
pub fn sub(a: Expr, b: Expr) -> Expr {
    match (num(&a), num(&b)) {
        (Some(x), Some(y)) => Expr::Num(x - y),
        (_, Some(y)) if y == 0.0 => a,
        (Some(x), _) if x == 0.0 => neg(b),
        _ => Expr::Bin(BinOp::Sub, Box::new(a), Box::new(b)),
    }
}

/// `a * b`, simplified (a structural zero absorbs, even if the other factor could be infinite:
/// derivatives of terms that do not depend on a variable are zero).
pub fn mul(a: Expr, b: Expr) -> Expr {
    match (num(&a), num(&b)) {
        (Some(x), Some(y)) => Expr::Num(x * y),
        (Some(x), _) | (_, Some(x)) if x == 0.0 => Expr::Num(0.0),
        (Some(x), _) if x == 1.0 => b,
        (_, Some(y)) if y == 1.0 => a,
        (Some(x), _) if x == -1.0 => neg(b),
        (_, Some(y)) if y == -1.0 => neg(a),
        _ => Expr::Bin(BinOp::Mul, Box::new(a), Box::new(b)),
    }
}

/// `a / b`, simplified.
pub fn div(a: Expr, b: Expr) -> Expr {
    match (num(&a), num(&b)) {
        (Some(x), _) if x == 0.0 => Expr::Num(0.0),
        (_, Some(y)) if y == 1.0 => a,
        (Some(x), Some(y)) => Expr::Num(x / y),
        _ => Expr::Bin(BinOp::Div, Box::new(a), Box::new(b)),
    }
}

/// `-a`, simplified.
pub fn neg(a: Expr) -> Expr {
    match a {
        Expr::Num(v) => Expr::Num(-v),
        Expr::Neg(inner) => *inner,
        a => Expr::Neg(Box::new(a)),
    }
}

fn pow(a: Expr, b: Expr) -> Expr {
    match num(&b) {
        Some(y) if y == 1.0 => a,
        Some(y) if y == 0.0 => Expr::Num(1.0),
        _ => Expr::Bin(BinOp::Pow, Box::new(a), Box::new(b)),
    }
}

fn call(f: Func, args: Vec<Expr>) -> Expr {
    Expr::Call(f, args)
}

/// Whether `e` is structurally zero.
pub fn is_zero(e: &Expr) -> bool {
    num(e) == Some(0.0)
}

/// The derivative of `e` with respect to `v`, simplified.
pub fn derive(e: &Expr, v: Var) -> Expr {
    match e {
        Expr::Num(_) => Expr::Num(0.0),
        Expr::Species(i) => Expr::Num(if v == Var::Species(*i) { 1.0 } else { 0.0 }),
        Expr::Param(i) => Expr::Num(if v == Var::Param(*i) { 1.0 } else { 0.0 }),
        Expr::Time => Expr::Num(if v == Var::Time { 1.0 } else { 0.0 }),
        Expr::Neg(a) => neg(derive(a, v)),
        Expr::Bin(op, a, b) => {
            let (da, db) = (derive(a, v), derive(b, v));
            let (a, b) = ((**a).clone(), (**b).clone());
            match op {
                BinOp::Add => add(da, db),
                BinOp::Sub => sub(da, db),
                BinOp::Mul => add(mul(da, b), mul(a, db)),
                // (a/b)' = (a' - (a/b) b') / b: never squares b, which would overflow or underflow.
                BinOp::Div => {
                    if is_zero(&db) {
                        div(da, b)
                    } else {
                        div(sub(da, mul(div(a, b.clone()), db)), b)
                    }
                }
                BinOp::Pow => derive_pow(a, b, da, db),
            }
        }
        Expr::Call(f, args) => derive_call(*f, args, v),
        Expr::Choose(i, s) => {
            if v != Var::Species(*i) {
                return Expr::Num(0.0);
            }
            let x = || Expr::Species(*i);
            let factor = |l: u32| {
                if l == 0 {
                    x()
                } else {
                    sub(x(), Expr::Num(l as f64))
                }
            };
            let mut total = Expr::Num(0.0);
            if *s > super::CHOOSE_EXACT_UP_TO {
                // Σ_j Π_{l≠j} (x − l) / s!, each product taken step by step with the divisors
                // 1 … s − 1 (and the last, s, once at the end), as `choose` does: s! and the
                // falling factorial overflow where the derivative is finite.
                for j in 0..*s {
                    let term = ((0..*s).filter(|&l| l != j).zip(1..))
                        .fold(Expr::Num(1.0), |acc, (l, k)| {
                            div(mul(acc, factor(l)), Expr::Num(f64::from(k)))
                        });
                    total = add(total, term);
                }
                return div(total, Expr::Num(f64::from(*s)));
            }
            for j in 0..*s {
                let term = (0..*s)
                    .filter(|&l| l != j)
                    .fold(Expr::Num(1.0), |acc, l| mul(acc, factor(l)));
                total = add(total, term);
            }
            let factorial: f64 = (1..=*s).map(|k| k as f64).product();
            div(total, Expr::Num(factorial))
        }
    }
}

fn derive_pow(a: Expr, b: Expr, da: Expr, db: Expr) -> Expr {
    // (a^b)' = b a^(b-1) a' + a^b ln(a) b'; the second term only when the exponent varies, so that
    // a negative base with a constant exponent stays differentiable.
    let base_term = if is_zero(&da) {
        Expr::Num(0.0)
    } else {
        let lowered = match num(&b) {
            Some(n) => pow(a.clone(), Expr::Num(n - 1.0)),
            None => pow(a.clone(), sub(b.clone(), Expr::Num(1.0))),
        };
        mul(mul(b.clone(), lowered), da)
    };
    let exponent_term = if is_zero(&db) {
        Expr::Num(0.0)
    } else {
        // a^b ln(a) b', written xlogy(a^b, a) so that a zero base gives 0, not 0 × (-inf).
        mul(call(Func::Xlogy, vec![pow(a.clone(), b), a]), db)
    };
    add(base_term, exponent_term)
}

fn derive_call(f: Func, args: &[Expr], v: Var) -> Expr {
    let d: Vec<Expr> = args.iter().map(|a| derive(a, v)).collect();
    if d.iter().all(is_zero) {
        return Expr::Num(0.0);
    }
    let a = |i: usize| args[i].clone();
    match f {
        Func::Exp => mul(call(Func::Exp, vec![a(0)]), d[0].clone()),
        Func::Log => div(d[0].clone(), a(0)),
        Func::Sqrt => div(
            d[0].clone(),
            mul(Expr::Num(2.0), call(Func::Sqrt, vec![a(0)])),
        ),
        Func::Abs => mul(call(Func::Sign, vec![a(0)]), d[0].clone()),
        Func::Min | Func::Max => {
            // With s = sign(a - b): min' = ((1 - s) a' + (1 + s) b')/2 and
            // max' = ((1 + s) a' + (1 - s) b')/2, exact on either side (no cancellation between
            // the branches) and the average of the two at ties.
            let s = || call(Func::Sign, vec![sub(a(0), a(1))]);
            let (wa, wb) = if f == Func::Min {
                (sub(Expr::Num(1.0), s()), add(Expr::Num(1.0), s()))
            } else {
                (add(Expr::Num(1.0), s()), sub(Expr::Num(1.0), s()))
            };
            div(
                add(mul(wa, d[0].clone()), mul(wb, d[1].clone())),
                Expr::Num(2.0),
            )
        }
        Func::Pow => derive_pow(a(0), a(1), d[0].clone(), d[1].clone()),
        Func::Hill | Func::Hillr => {
            let (x, k, n) = (a(0), a(1), a(2));
            let xn = Expr::Bin(BinOp::Pow, Box::new(x), Box::new(n.clone()));
            let kn = Expr::Bin(BinOp::Pow, Box::new(k), Box::new(n));
            let top = if f == Func::Hill {
                xn.clone()
            } else {
                kn.clone()
            };
            let expanded = Expr::Bin(
                BinOp::Div,
                Box::new(top),
                Box::new(Expr::Bin(BinOp::Add, Box::new(kn), Box::new(xn))),
            );
            derive(&expanded, v)
        }
        Func::Sign => Expr::Num(0.0),
        // Only the derivative of a constant exponent's power needs xlogy's derivative, which
        // never arises: derivatives are taken once.
        Func::Xlogy => add(
            mul(call(Func::Log, vec![a(1)]), d[0].clone()),
            mul(div(a(0), a(1)), d[1].clone()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    /// Every propensity's derivative against a central finite difference of the interpreter.
    fn check(rate_law: &str) {
        let text = format!("species A = 3, B = 5\nparam k = 1.3, K = 4.2\n0 -> A @= {rate_law}\n");
        let model = Model::parse("d.rxn", &text).unwrap();
        let e = &model.ir.reactions[0].propensity;
        let x = [3.0, 5.0];
        let p = [1.3, 4.2];
        let t = 0.7;
        for v in [
            Var::Param(0),
            Var::Param(1),
            Var::Species(0),
            Var::Species(1),
            Var::Time,
        ] {
            let h = 1e-6;
            let (fp, fm) = match v {
                Var::Param(i) => {
                    let (mut pp, mut pm) = (p, p);
                    pp[i] += h;
                    pm[i] -= h;
                    (e.eval(&x, &pp, t), e.eval(&x, &pm, t))
                }
                Var::Species(i) => {
                    let (mut xp, mut xm) = (x, x);
                    xp[i] += h;
                    xm[i] -= h;
                    (e.eval(&xp, &p, t), e.eval(&xm, &p, t))
                }
                Var::Time => (e.eval(&x, &p, t + h), e.eval(&x, &p, t - h)),
            };
            let fd = (fp - fm) / (2.0 * h);
            let sym = derive(e, v).eval(&x, &p, t);
            assert!(
                (sym - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{rate_law} d/d{v:?}: symbolic {sym}, fd {fd}"
            );
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        check("k * A * B");
        check("k * A^2 / (K + B)");
        check("exp(-k * t) * log(A + K) * sqrt(B)");
        check("hill(A, K, 2) * k + hillr(B, K, k)");
        check("pow(A, k) - abs(B - K) + min(A, K) * max(B, k)");
        check("A^B + k^(-2)");
    }

    /// Many molecules: the derivative of `x choose s` taken step by step stays finite where s!
    /// overflows, and matches a central difference of the coefficient (at whole and fractional
    /// counts, below and above s).
    #[test]
    fn falling_factorial_derivative_of_many_molecules() {
        for s in [25u32, 80, 180] {
            let model = Model::parse("d.rxn", &format!("species A = 1\n{s} A -> 0 @ 1\n")).unwrap();
            let d = derive(&model.ir.reactions[0].propensity, Var::Species(0));
            let s = f64::from(s);
            for x in [s - 0.5, s, s + 3.0, 2.0 * s + 0.25] {
                let h = 1e-7 * x;
                let fd = (crate::ir::choose(x + h, s as u32) - crate::ir::choose(x - h, s as u32))
                    / (2.0 * h);
                let sym = d.eval(&[x], &[], 0.0);
                assert!(sym.is_finite(), "s = {s}, x = {x}: {sym}");
                assert!(
                    (sym - fd).abs() <= 1e-5 * fd.abs().max(1e-300),
                    "s = {s}, x = {x}: {sym} vs {fd}"
                );
            }
        }
    }

    #[test]
    fn falling_factorial_derivative() {
        let model = Model::parse("d.rxn", "species A = 5\nconst k = 2\n3 A -> 0 @ k\n").unwrap();
        let d = derive(&model.ir.reactions[0].propensity, Var::Species(0));
        // d/dx [2 x (x-1) (x-2) / 6] = (3x^2 - 6x + 2) / 3
        for x in [0.0, 1.0, 2.0, 5.5] {
            let want = (3.0 * x * x - 6.0 * x + 2.0) / 3.0;
            assert!((d.eval(&[x], &[], 0.0) - want).abs() < 1e-12);
        }
    }
}
