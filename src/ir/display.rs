//! Human-readable forms of the IR: `rxnc check`'s summary and `--emit ir`.

use super::{BinOp, Expr, Model, RateLaw};
use std::fmt::Write;

impl Model {
    /// Writes an expression with the model's names, parenthesised only where needed.
    pub fn expr_to_string(&self, e: &Expr) -> String {
        self.fmt_expr(e, 0)
    }

    fn fmt_expr(&self, e: &Expr, parent: u8) -> String {
        let (s, prec) = match e {
            // A negative number binds like unary minus: (-2)^2 is not -2 ^ 2 (= -4).
            Expr::Num(v) if v.is_sign_negative() => (fmt_num(*v), 3),
            Expr::Num(v) => (fmt_num(*v), 9),
            Expr::Species(i) => (self.species[*i].name.clone(), 9),
            Expr::Param(i) => (self.params[*i].name.clone(), 9),
            Expr::Time => ("t".to_string(), 9),
            Expr::Neg(a) => (format!("-{}", self.fmt_expr(a, 4)), 3),
            Expr::Bin(op, a, b) => {
                let (sym, prec, lp, rp) = match op {
                    BinOp::Add => ("+", 1, 1, 2),
                    BinOp::Sub => ("-", 1, 1, 2),
                    BinOp::Mul => ("*", 2, 2, 3),
                    BinOp::Div => ("/", 2, 2, 3),
                    BinOp::Pow => ("^", 4, 5, 4),
                };
                (
                    format!("{} {sym} {}", self.fmt_expr(a, lp), self.fmt_expr(b, rp)),
                    prec,
                )
            }
            Expr::Call(f, args) => {
                let args: Vec<String> = args.iter().map(|a| self.fmt_expr(a, 0)).collect();
                (format!("{}({})", f.name(), args.join(", ")), 9)
            }
            Expr::Choose(i, 1) => (self.species[*i].name.clone(), 9),
            Expr::Choose(i, s) => (format!("choose({}, {s})", self.species[*i].name), 9),
        };
        if prec < parent { format!("({s})") } else { s }
    }

    fn complex_to_string(&self, terms: &[(usize, u32)]) -> String {
        if terms.is_empty() {
            return "0".to_string();
        }
        terms
            .iter()
            .map(|&(i, s)| {
                if s == 1 {
                    self.species[i].name.clone()
                } else {
                    format!("{s} {}", self.species[i].name)
                }
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The summary `rxnc check` prints: species, parameters, constants, observables, reactions
    /// with their names, propensities and net stoichiometry.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "species ({}):", self.species.len());
        for s in &self.species {
            let _ = writeln!(out, "  {:<12} initial {}", s.name, s.initial);
        }
        let _ = writeln!(out, "parameters ({} free):", self.params.len());
        for p in &self.params {
            let range = match p.bounds {
                Some((lo, hi)) => format!("in [{}, {}]", fmt_num(lo), fmt_num(hi)),
                None => "positive rate (log scale)".to_string(),
            };
            let _ = writeln!(out, "  {:<12} = {:<10} {range}", p.name, fmt_num(p.value));
        }
        if !self.consts.is_empty() {
            let _ = writeln!(out, "constants ({}):", self.consts.len());
            for c in &self.consts {
                let def = self.expr_to_string(&c.expr);
                let value = fmt_num(c.value);
                if def == value {
                    let _ = writeln!(out, "  {:<12} = {value}", c.name);
                } else {
                    let _ = writeln!(out, "  {:<12} = {def}  (= {value})", c.name);
                }
            }
        }
        if !self.observables.is_empty() {
            let _ = writeln!(out, "observables ({}):", self.observables.len());
            for o in &self.observables {
                let _ = writeln!(out, "  {:<12} = {}", o.name, self.expr_to_string(&o.expr));
            }
        }
        let _ = writeln!(out, "reactions ({}):", self.reactions.len());
        let width = self
            .reactions
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        for r in &self.reactions {
            let eq = format!(
                "{} -> {}",
                self.complex_to_string(&r.reactants),
                self.complex_to_string(&r.products)
            );
            let law = match r.law {
                RateLaw::MassAction => "mass action",
                RateLaw::Full => "propensity",
            };
            let net: Vec<String> = r
                .net
                .iter()
                .map(|&(i, c)| format!("{}{c:+}", self.species[i].name))
                .collect();
            let _ = writeln!(out, "  {:<width$}  {eq}", r.name);
            let _ = writeln!(
                out,
                "  {:<width$}    {law}: a = {}   change: {}",
                "",
                self.expr_to_string(&r.propensity),
                if net.is_empty() {
                    "none".to_string()
                } else {
                    net.join(" ")
                }
            );
        }
        if self.time_dependent {
            let _ = writeln!(
                out,
                "note: some propensities read time `t`; the simulator integrates them between events \
                 (slower; see docs/language.md)"
            );
        }
        out
    }

    /// The IR as `rxnc check --emit ir` shows it: indices, propensities and the dependency graph.
    pub fn ir_dump(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.species.iter().enumerate() {
            let _ = writeln!(out, "x[{i}] = {}  (initial {})", s.name, s.initial);
        }
        for (i, p) in self.params.iter().enumerate() {
            let _ = writeln!(out, "p[{i}] = {}  (value {})", p.name, fmt_num(p.value));
        }
        for (j, r) in self.reactions.iter().enumerate() {
            let _ = writeln!(out, "reaction {j} {}:", r.name);
            let _ = writeln!(out, "  a{j} = {}", ir_expr(&r.propensity));
            let net: Vec<String> = r
                .net
                .iter()
                .map(|&(i, c)| format!("x[{i}] += {c}"))
                .collect();
            let _ = writeln!(
                out,
                "  fire: {}",
                if net.is_empty() {
                    "no change".into()
                } else {
                    net.join("; ")
                }
            );
            let deps: Vec<String> = self.dependents[j].iter().map(|k| format!("a{k}")).collect();
            let _ = writeln!(
                out,
                "  then recompute: {}",
                if deps.is_empty() {
                    "none".into()
                } else {
                    deps.join(" ")
                }
            );
        }
        for o in &self.observables {
            let _ = writeln!(out, "observable {} = {}", o.name, ir_expr(&o.expr));
        }
        out
    }
}

/// An IR expression with raw indices (`x[0]`, `p[1]`).
pub fn ir_expr(e: &Expr) -> String {
    match e {
        Expr::Num(v) if v.is_sign_negative() => format!("({})", fmt_num(*v)),
        Expr::Num(v) => fmt_num(*v),
        Expr::Species(i) => format!("x[{i}]"),
        Expr::Param(i) => format!("p[{i}]"),
        Expr::Time => "t".into(),
        Expr::Neg(a) => format!("(-{})", ir_expr(a)),
        Expr::Bin(op, a, b) => {
            let sym = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                BinOp::Pow => "^",
            };
            format!("({} {sym} {})", ir_expr(a), ir_expr(b))
        }
        Expr::Call(f, args) => {
            format!(
                "{}({})",
                f.name(),
                args.iter().map(ir_expr).collect::<Vec<_>>().join(", ")
            )
        }
        Expr::Choose(i, s) => format!("choose(x[{i}], {s})"),
    }
}

/// A number in the shortest form that reads back to the same value, in scientific notation when
/// very large or small (`1e-320`, not 320 digits).
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && a.is_finite() && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}
