//! Objectives: arithmetic over `mean(x)`, `var(x)` and `sd(x)` of species or observable
//! expressions at the horizon, with the chain rule done by forward-mode dual numbers over the
//! estimated moments (a function of expectations is not the expectation of a function).

use crate::diagnostics::{Diagnostic, ModelError, SourceFile, closest};
use crate::engine::Shown;
use crate::ir::{self, Expr, Func};
use crate::syntax::{self, ast};

/// The help of an objective that does not parse.
const EXAMPLE: &str = "an objective is one expression over mean(x), var(x) and sd(x) of species or \
                       observable expressions, for example `(mean(M) - 3)^2 + var(M)`";

/// Functions allowed around statistics.
const OUTER: [&str; 7] = ["exp", "log", "sqrt", "abs", "pow", "min", "max"];

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Which statistic of a leaf expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// `mean(x)`
    Mean,
    /// `var(x)`: the sample variance (n - 1 denominator).
    Var,
    /// `sd(x)`: its square root.
    Sd,
}

/// An objective expression over statistics.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectiveExpr {
    /// A number.
    Num(f64),
    /// A statistic of leaf `i`.
    Stat(Statistic, usize),
    /// `-e`
    Neg(Box<ObjectiveExpr>),
    /// `a op b`
    Bin(ir::BinOp, Box<ObjectiveExpr>, Box<ObjectiveExpr>),
    /// `exp`, `log`, `sqrt`, `abs`, `pow`, `min`, `max` of statistics.
    Call(Func, Vec<ObjectiveExpr>),
}

/// A parsed and resolved objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// The text as given.
    pub text: String,
    /// The expression over statistics.
    pub expr: ObjectiveExpr,
    /// The distinct expressions statistics are taken of, over species, parameters and time.
    pub leaves: Vec<Expr>,
    /// Where each node of `expr` is written in `text`, in pre-order (see [`Objective::locate_non_finite`]).
    spans: Vec<ast::Span>,
}

/// A value with its gradient with respect to the free parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Dual {
    /// The value.
    pub v: f64,
    /// Its derivatives.
    pub d: Vec<f64>,
}

impl Dual {
    fn constant(v: f64, n: usize) -> Dual {
        Dual { v, d: vec![0.0; n] }
    }
    fn map(&self, v: f64, slope: f64) -> Dual {
        Dual {
            v,
            d: self.d.iter().map(|x| x * slope).collect(),
        }
    }
    fn combine(&self, other: &Dual, v: f64, da: f64, db: f64) -> Dual {
        Dual {
            v,
            d: self
                .d
                .iter()
                .zip(&other.d)
                .map(|(x, y)| da * x + db * y)
                .collect(),
        }
    }
}

/// The estimated moments of one leaf `f`: E\[f\], E\[(f − c)²\] and their gradients, for a
/// constant c near the mean (the variance is then E\[(f − c)²\] − (E\[f\] − c)², without
/// the cancellation of E\[f²\] − E\[f\]² when the mean is large against the sd).
#[derive(Debug, Clone, PartialEq)]
pub struct LeafMoments {
    /// E\[f\] and its gradient.
    pub m1: Dual,
    /// E\[(f − shift)²\] and its gradient.
    pub m2: Dual,
    /// The constant c.
    pub shift: f64,
    /// Number of samples (for the n - 1 correction of the variance).
    pub n: usize,
}

impl Objective {
    /// Parses `text` and resolves its names in `model`.
    pub fn parse(text: &str, model: &ir::Model) -> Result<Objective, ModelError> {
        let source = SourceFile::new("--objective", text);
        let fail = |diagnostics| ModelError {
            source: source.clone(),
            diagnostics,
        };
        if text.trim().is_empty() {
            return Err(fail(vec![
                Diagnostic::new(
                    "rxn::objective",
                    "the objective is empty",
                    ast::Span::new(0, text.len()),
                    "",
                )
                .with_help(EXAMPLE),
            ]));
        }
        let ast = syntax::parse_expr(text).map_err(|mut d| {
            // The syntax's generic advice is about the lines of a model file.
            if d.help
                .as_deref()
                .is_none_or(|h| h.contains("declaration") || h.contains("reaction"))
            {
                d.help = Some(EXAMPLE.to_string());
            }
            fail(vec![d])
        })?;
        let mut r = Resolver {
            model,
            leaves: vec![],
            diags: vec![],
            spans: vec![],
        };
        let expr = r.outer(&ast);
        if r.diags.is_empty() && r.leaves.is_empty() {
            r.diags.push(
                Diagnostic::new(
                    "rxn::objective",
                    "the objective takes no statistic",
                    ast.span,
                    "a constant",
                )
                .with_help(
                    "use mean(x), var(x) or sd(x) of a species or observable, e.g. `mean(M)`",
                ),
            );
        }
        if r.diags.is_empty() {
            Ok(Objective {
                text: text.to_string(),
                expr,
                leaves: r.leaves,
                spans: r.spans,
            })
        } else {
            Err(fail(r.diags))
        }
    }

    /// Whether the objective takes a `var` or `sd` (which need two samples in every jackknife
    /// subset).
    pub fn uses_spread(&self) -> bool {
        fn walk(e: &ObjectiveExpr) -> bool {
            match e {
                ObjectiveExpr::Num(_) => false,
                ObjectiveExpr::Stat(kind, _) => *kind != Statistic::Mean,
                ObjectiveExpr::Neg(a) => walk(a),
                ObjectiveExpr::Bin(_, a, b) => walk(a) || walk(b),
                ObjectiveExpr::Call(_, args) => args.iter().any(walk),
            }
        }
        walk(&self.expr)
    }

    /// Evaluates the objective and its gradient from the leaves' moments.
    pub fn evaluate(&self, moments: &[LeafMoments]) -> Dual {
        eval(&self.expr, moments)
    }

    /// The innermost part of the objective whose value or gradient is not finite at `moments`,
    /// as written, and why: "`0^mean(X)` has no derivative with respect to the power where the
    /// base is 0". None when every part is finite.
    pub(crate) fn locate_non_finite(&self, moments: &[LeafMoments]) -> Option<String> {
        let finite = |d: &Dual| d.v.is_finite() && d.d.iter().all(|x| x.is_finite());
        let text = |i: usize| {
            let span = self.spans[i];
            self.text[span.start..span.end].trim()
        };
        let mut found = None;
        eval_visiting(&self.expr, moments, &mut 0, &mut |node| {
            if found.is_some()
                || finite(node.value)
                || !node.children.iter().all(|(_, d)| finite(d))
            {
                return;
            }
            let why = non_finite_reason(&node, text);
            found = Some(format!("`{}` {why}", text(node.index)));
        });
        found
    }
}

pub(crate) fn stat(kind: Statistic, m: &LeafMoments) -> Dual {
    if kind == Statistic::Mean {
        return m.m1.clone();
    }
    let c = if m.n > 1 {
        m.n as f64 / (m.n as f64 - 1.0)
    } else {
        f64::NAN
    };
    // The mean less the shift: small when the shift is a typical value.
    let offset = m.m1.v - m.shift;
    let var = Dual {
        v: c * (m.m2.v - offset * offset),
        d: m.m2
            .d
            .iter()
            .zip(&m.m1.d)
            .map(|(d2, d1)| c * (d2 - 2.0 * offset * d1))
            .collect(),
    };
    match kind {
        Statistic::Var => var,
        _ => {
            let sd = var.v.max(0.0).sqrt();
            var.map(sd, 0.5 / sd)
        }
    }
}

fn eval(e: &ObjectiveExpr, m: &[LeafMoments]) -> Dual {
    eval_visiting(e, m, &mut 0, &mut |_| {})
}

/// A node of the objective just evaluated: its pre-order index, its children's indices and
/// values, its value.
struct Visit<'a> {
    node: &'a ObjectiveExpr,
    index: usize,
    children: &'a [(usize, Dual)],
    value: &'a Dual,
}

/// Evaluates `e`, numbering its nodes in pre-order from `next` and showing each to `visit` after
/// its children (so the innermost node comes first).
fn eval_visiting(
    e: &ObjectiveExpr,
    m: &[LeafMoments],
    next: &mut usize,
    visit: &mut dyn FnMut(Visit),
) -> Dual {
    let n = m.first().map_or(0, |l| l.m1.d.len());
    let index = *next;
    *next += 1;
    let mut child = |a: &ObjectiveExpr| (*next, eval_visiting(a, m, next, visit));
    let children: Vec<(usize, Dual)> = match e {
        ObjectiveExpr::Num(_) | ObjectiveExpr::Stat(..) => vec![],
        ObjectiveExpr::Neg(a) => vec![child(a)],
        ObjectiveExpr::Bin(_, a, b) => vec![child(a), child(b)],
        ObjectiveExpr::Call(_, args) => args.iter().map(child).collect(),
    };
    let arg = |i: usize| &children[i].1;
    let value = match e {
        ObjectiveExpr::Num(v) => Dual::constant(*v, n),
        ObjectiveExpr::Stat(kind, i) => stat(*kind, &m[*i]),
        ObjectiveExpr::Neg(_) => arg(0).map(-arg(0).v, -1.0),
        ObjectiveExpr::Bin(op, ..) => {
            let (a, b) = (arg(0), arg(1));
            match op {
                ir::BinOp::Add => a.combine(b, a.v + b.v, 1.0, 1.0),
                ir::BinOp::Sub => a.combine(b, a.v - b.v, 1.0, -1.0),
                ir::BinOp::Mul => a.combine(b, a.v * b.v, b.v, a.v),
                ir::BinOp::Div => a.combine(b, a.v / b.v, 1.0 / b.v, -a.v / (b.v * b.v)),
                ir::BinOp::Pow => pow(a, b),
            }
        }
        ObjectiveExpr::Call(f, _) => {
            let x = arg(0);
            match f {
                Func::Exp => x.map(x.v.exp(), x.v.exp()),
                Func::Log => x.map(x.v.ln(), 1.0 / x.v),
                Func::Sqrt => x.map(x.v.sqrt(), 0.5 / x.v.sqrt()),
                Func::Abs => x.map(x.v.abs(), x.v.signum()),
                Func::Pow => pow(x, arg(1)),
                Func::Min => {
                    if x.v <= arg(1).v {
                        x.clone()
                    } else {
                        arg(1).clone()
                    }
                }
                Func::Max => {
                    if x.v >= arg(1).v {
                        x.clone()
                    } else {
                        arg(1).clone()
                    }
                }
                Func::Hill | Func::Hillr | Func::Sign | Func::Xlogy => {
                    unreachable!("rejected when resolving")
                }
            }
        }
    };
    visit(Visit {
        node: e,
        index,
        children: &children,
        value: &value,
    });
    value
}

/// Why a node whose arguments are finite is not: what a user can change in the objective.
fn non_finite_reason<'t>(node: &Visit, text: impl Fn(usize) -> &'t str) -> String {
    let v = node.value.v;
    let arg = |i: usize| &node.children[i].1;
    let varies = |d: &Dual| d.d.iter().any(|x| *x != 0.0);
    let value_only = if v.is_finite() {
        "has no finite derivative here".to_string()
    } else {
        format!("is {}", Shown(v))
    };
    let pow_reason = || {
        let (base, power) = (arg(0), arg(1));
        let base_text = text(node.children[0].0);
        let where_zero = if base_text.parse::<f64>().is_ok() {
            "its base is 0".to_string()
        } else {
            format!("its base `{base_text}` is 0")
        };
        if base.v == 0.0 && varies(power) {
            format!("has no derivative with respect to its power where {where_zero}")
        } else if base.v == 0.0 && power.v < 0.0 {
            format!("divides by 0: {where_zero} and the power is negative")
        } else if base.v == 0.0 {
            format!("has an infinite derivative where {where_zero} and the power is below 1")
        } else if base.v < 0.0 && power.v.fract() != 0.0 {
            format!(
                "raises a negative base (`{}` is {}) to a power that is not a whole number",
                text(node.children[0].0),
                Shown(base.v)
            )
        } else {
            format!("{value_only}: too large for a number")
        }
    };
    match node.node {
        ObjectiveExpr::Stat(Statistic::Sd, _) if v == 0.0 => {
            "is 0 (every trajectory ends with the same value), where sd has no derivative; use var"
                .to_string()
        }
        ObjectiveExpr::Bin(ir::BinOp::Div, ..) if arg(1).v == 0.0 => {
            format!("divides by `{}`, which is 0 here", text(node.children[1].0))
        }
        ObjectiveExpr::Bin(ir::BinOp::Pow, ..) | ObjectiveExpr::Call(Func::Pow, _) => pow_reason(),
        ObjectiveExpr::Call(Func::Log, _) if arg(0).v <= 0.0 => format!(
            "takes the log of `{}`, which is {} here",
            text(node.children[0].0),
            Shown(arg(0).v)
        ),
        ObjectiveExpr::Call(Func::Sqrt, _) if arg(0).v < 0.0 => format!(
            "takes the square root of `{}`, which is {} here",
            text(node.children[0].0),
            Shown(arg(0).v)
        ),
        ObjectiveExpr::Call(Func::Sqrt, _) => format!(
            "has an infinite derivative where `{}` is 0",
            text(node.children[0].0)
        ),
        _ => format!("{value_only}: too large for a number"),
    }
}

fn pow(a: &Dual, b: &Dual) -> Dual {
    let v = a.v.powf(b.v);
    let da = b.v * a.v.powf(b.v - 1.0);
    let db = if b.d.iter().all(|x| *x == 0.0) {
        0.0
    } else {
        v * a.v.ln()
    };
    a.combine(b, v, da, db)
}

struct Resolver<'m> {
    model: &'m ir::Model,
    leaves: Vec<Expr>,
    diags: Vec<Diagnostic>,
    /// The spans of the objective's nodes, in the order `outer` builds them (pre-order).
    spans: Vec<ast::Span>,
}

impl Resolver<'_> {
    /// A literal too large for a number is an error where it is written (it would make the
    /// objective infinite, reported as the estimator's failure).
    fn number(&mut self, value: f64, span: ast::Span) -> f64 {
        if !value.is_finite() {
            self.diags.push(
                Diagnostic::new(
                    "rxn::objective",
                    "this number is too large: it overflows to infinity",
                    span,
                    "not a finite number",
                )
                .with_help("numbers must be below about 1.8e308"),
            );
        }
        value
    }

    fn outer(&mut self, e: &ast::Expr) -> ObjectiveExpr {
        use ast::ExprKind as K;
        self.spans.push(e.span);
        match &e.kind {
            K::Number { value, .. } => ObjectiveExpr::Num(self.number(*value, e.span)),
            K::Unary(_, a) => ObjectiveExpr::Neg(Box::new(self.outer(a))),
            K::Binary(op, a, b) => {
                if let (ast::BinaryOp::Div, K::Number { value, .. }) = (op, &b.kind)
                    && *value == 0.0
                {
                    self.diags.push(
                        Diagnostic::new("rxn::objective", "division by zero", b.span, "this is 0")
                            .with_help("divide by a non-zero number or a statistic"),
                    );
                }
                ObjectiveExpr::Bin(binop(*op), Box::new(self.outer(a)), Box::new(self.outer(b)))
            }
            K::Call(f, args) => {
                let kind = match f.name.as_str() {
                    "mean" => Some(Statistic::Mean),
                    "var" => Some(Statistic::Var),
                    "sd" => Some(Statistic::Sd),
                    _ => None,
                };
                if let Some(kind) = kind {
                    if args.len() != 1 {
                        self.diags.push(
                            Diagnostic::new(
                                "rxn::objective",
                                format!("`{}` takes one expression", f.name),
                                e.span,
                                "",
                            )
                            .with_help(format!(
                                "write {}(x) with x a species or observable expression",
                                f.name
                            )),
                        );
                        return ObjectiveExpr::Num(f64::NAN);
                    }
                    let leaf = self.inner(&args[0]);
                    // The same in every trajectory: its sd is 0, where sd has no derivative.
                    let mut varies = leaf.uses_time();
                    leaf.visit_species(&mut |_| varies = true);
                    if kind == Statistic::Sd && !varies {
                        self.diags.push(
                            Diagnostic::new(
                                "rxn::objective",
                                "the sd of an expression without species or time is 0, where sd has no derivative",
                                args[0].span,
                                "the same in every trajectory",
                            )
                            .with_help("take the sd of a species or observable expression; var of a constant is 0 if that is what you mean"),
                        );
                    }
                    let i = match self.leaves.iter().position(|l| *l == leaf) {
                        Some(i) => i,
                        None => {
                            self.leaves.push(leaf);
                            self.leaves.len() - 1
                        }
                    };
                    return ObjectiveExpr::Stat(kind, i);
                }
                let allowed = OUTER;
                match Func::by_name(&f.name).filter(|_| allowed.contains(&f.name.as_str())) {
                    Some((func, arity)) if arity == args.len() => {
                        ObjectiveExpr::Call(func, args.iter().map(|a| self.outer(a)).collect())
                    }
                    Some((_, arity)) => {
                        self.diags
                            .push(arity_error(&f.name, arity, args.len(), e.span, EXAMPLE));
                        ObjectiveExpr::Num(f64::NAN)
                    }
                    _ => {
                        let near =
                            closest(&f.name, ["mean", "var", "sd"].into_iter().chain(allowed));
                        self.diags.push(
                            Diagnostic::new("rxn::objective", format!("`{}(...)` cannot be used here", f.name), f.span, "not a statistic")
                                .with_help(match near {
                                    Some(n) => format!("did you mean `{n}`? Objectives combine mean(x), var(x), sd(x) with numbers, arithmetic and {}", allowed.join(", ")),
                                    None => format!("objectives combine mean(x), var(x), sd(x) with numbers, arithmetic and {}", allowed.join(", ")),
                                }),
                        );
                        ObjectiveExpr::Num(f64::NAN)
                    }
                }
            }
            K::Name(id) => {
                let m = self.model;
                let n = id.name.as_str();
                if m.species_index(n).is_some() || m.observables.iter().any(|o| o.name == n) {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::objective",
                            format!("`{n}` needs a statistic around it"),
                            id.span,
                            "a random quantity",
                        )
                        .with_help(format!("write mean({n}), var({n}) or sd({n})")),
                    );
                } else if m.param_index(n).is_some()
                    || m.consts.iter().any(|c| c.name == n)
                    || n == "t"
                {
                    let what = if m.param_index(n).is_some() {
                        "a parameter"
                    } else if n == "t" {
                        "time"
                    } else {
                        "a constant"
                    };
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::objective",
                            format!("`{n}` cannot be used outside a statistic"),
                            id.span,
                            what,
                        )
                        .with_help(format!(
                            "objectives combine mean(x), var(x) and sd(x) with numbers; `{n}` may \
                             appear inside a statistic, e.g. mean({n} * x)"
                        )),
                    );
                } else {
                    self.diags.push(unknown_name(m, n, id.span));
                }
                ObjectiveExpr::Num(f64::NAN)
            }
        }
    }

    /// An expression inside a statistic: species, observables, parameters, constants, `t`.
    fn inner(&mut self, e: &ast::Expr) -> Expr {
        use ast::ExprKind as K;
        let m = self.model;
        match &e.kind {
            K::Number { value, .. } => Expr::Num(self.number(*value, e.span)),
            K::Unary(_, a) => ir::derive::neg(self.inner(a)),
            K::Binary(op, a, b) => {
                Expr::Bin(binop(*op), Box::new(self.inner(a)), Box::new(self.inner(b)))
            }
            K::Call(f, args) => match Func::by_name(&f.name) {
                Some((func, arity)) if arity == args.len() => {
                    Expr::Call(func, args.iter().map(|a| self.inner(a)).collect())
                }
                Some((_, arity)) => {
                    self.diags.push(arity_error(
                        &f.name,
                        arity,
                        args.len(),
                        e.span,
                        FUNCTIONS_HELP,
                    ));
                    Expr::Num(f64::NAN)
                }
                None if ["mean", "var", "sd"].contains(&f.name.as_str()) => {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::objective",
                            "statistics cannot be nested",
                            f.span,
                            "a statistic inside a statistic",
                        )
                        .with_help(
                            "take statistics of species or observable expressions and combine \
                             them outside, e.g. mean(M^2) - mean(M)^2",
                        ),
                    );
                    Expr::Num(f64::NAN)
                }
                None => {
                    let near = closest(&f.name, Func::ALL.iter().map(|(_, n, _)| *n));
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::objective",
                            format!("unknown function `{}`", f.name),
                            f.span,
                            "not a function of the language",
                        )
                        .with_help(match near {
                            Some(n) => format!("did you mean `{n}`? {FUNCTIONS_HELP}"),
                            None => FUNCTIONS_HELP.to_string(),
                        }),
                    );
                    Expr::Num(f64::NAN)
                }
            },
            K::Name(id) => {
                let n = id.name.as_str();
                if let Some(i) = m.species_index(n) {
                    Expr::Species(i)
                } else if let Some(o) = m.observables.iter().find(|o| o.name == n) {
                    o.expr.clone()
                } else if let Some(i) = m.param_index(n) {
                    Expr::Param(i)
                } else if let Some(c) = m.consts.iter().find(|c| c.name == n) {
                    c.expr.clone()
                } else if n == "t" {
                    Expr::Time
                } else {
                    self.diags.push(unknown_name(m, n, id.span));
                    Expr::Num(f64::NAN)
                }
            }
        }
    }
}

const FUNCTIONS_HELP: &str = "inside a statistic use species, observables, parameters, numbers \
                              and the model's functions (exp, log, sqrt, abs, min, max, pow, \
                              hill, hillr)";

/// A name that is not declared in the model.
fn unknown_name(m: &ir::Model, n: &str, span: ast::Span) -> Diagnostic {
    let names: Vec<&str> = m
        .species
        .iter()
        .map(|s| s.name.as_str())
        .chain(m.observables.iter().map(|o| o.name.as_str()))
        .collect();
    let help = match closest(n, names.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if names.len() <= 12 => format!(
            "statistics are taken of the model's species and observables: {}",
            names.join(", ")
        ),
        None => "statistics are taken of species and observables declared in the model".to_string(),
    };
    Diagnostic::new(
        "rxn::objective",
        format!("`{n}` is not a species or observable of the model"),
        span,
        "unknown",
    )
    .with_help(help)
}

/// A call with the wrong number of arguments.
fn arity_error(name: &str, arity: usize, given: usize, span: ast::Span, help: &str) -> Diagnostic {
    Diagnostic::new(
        "rxn::objective",
        format!(
            "`{name}` takes {arity} argument{}, not {given}",
            plural(arity)
        ),
        span,
        "",
    )
    .with_help(help)
}

fn binop(op: ast::BinaryOp) -> ir::BinOp {
    match op {
        ast::BinaryOp::Add => ir::BinOp::Add,
        ast::BinaryOp::Sub => ir::BinOp::Sub,
        ast::BinaryOp::Mul => ir::BinOp::Mul,
        ast::BinaryOp::Div => ir::BinOp::Div,
        ast::BinaryOp::Pow => ir::BinOp::Pow,
    }
}
