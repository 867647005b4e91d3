//! The intermediate representation: a checked model with resolved indices.
//!
//! Constants and observables are inlined into the expressions that use them, so an IR expression
//! reads only species, free parameters, numbers and time. Parameters stay symbolic because fitting
//! and design change them between runs; everything else is fixed at lowering.

pub mod derive;
pub mod display;
mod lower;

pub use derive::{Var, derive, is_zero};
pub use lower::lower;

use crate::syntax::ast::Span;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// `exp(x)`
    Exp,
    /// `log(x)`, natural logarithm
    Log,
    /// `sqrt(x)`
    Sqrt,
    /// `abs(x)`
    Abs,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
    /// `pow(a, b)`, the same as `a ^ b`
    Pow,
    /// `hill(x, K, n) = x^n / (K^n + x^n)`
    Hill,
    /// `hillr(x, K, n) = K^n / (K^n + x^n)`
    Hillr,
    /// The sign of `x` (-1, 0 or 1): appears only in derivatives, not in the language.
    Sign,
    /// `xlogy(u, a) = u ln(a)`, and 0 when `u` is 0: appears only in derivatives of powers.
    Xlogy,
}

impl Func {
    /// Every built-in function with its name and arity.
    pub const ALL: [(Func, &'static str, usize); 9] = [
        (Func::Exp, "exp", 1),
        (Func::Log, "log", 1),
        (Func::Sqrt, "sqrt", 1),
        (Func::Abs, "abs", 1),
        (Func::Min, "min", 2),
        (Func::Max, "max", 2),
        (Func::Pow, "pow", 2),
        (Func::Hill, "hill", 3),
        (Func::Hillr, "hillr", 3),
    ];
    /// The function called `name`, if there is one.
    pub fn by_name(name: &str) -> Option<(Func, usize)> {
        Func::ALL
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, a)| (*f, *a))
    }
    /// The name as written in `.rxn` files.
    pub fn name(self) -> &'static str {
        match self {
            Func::Sign => "sign",
            Func::Xlogy => "xlogy",
            _ => Func::ALL
                .iter()
                .find(|(f, _, _)| *f == self)
                .map_or("?", |(_, n, _)| *n),
        }
    }
}

/// A binary operator of the IR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^`
    Pow,
}

/// An IR expression: names resolved to indices, constants and observables inlined.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// The copy number of species `i`.
    Species(usize),
    /// Free parameter `i`.
    Param(usize),
    /// Time.
    Time,
    /// `-e`
    Neg(Box<Expr>),
    /// `a op b`
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// A built-in function call.
    Call(Func, Vec<Expr>),
    /// `x choose s` for species `x`, written as the falling factorial
    /// `x (x-1) ... (x-s+1) / s!`: exact on counts (zero when `x < s`), and a smooth polynomial
    /// extension between them for gradient estimators that relax the state.
    Choose(usize, u32),
}

impl Expr {
    /// The number of nodes and the depth of the expression (a lone number: 1 and 1).
    pub fn extent(&self) -> (usize, usize) {
        let below = |(nodes, depth): (usize, usize), child: &Expr| {
            let (n, d) = child.extent();
            (nodes + n, depth.max(d + 1))
        };
        match self {
            Expr::Num(_) | Expr::Species(_) | Expr::Param(_) | Expr::Time | Expr::Choose(..) => {
                (1, 1)
            }
            Expr::Neg(a) => below((1, 1), a),
            Expr::Bin(_, a, b) => below(below((1, 1), a), b),
            Expr::Call(_, args) => args.iter().fold((1, 1), below),
        }
    }

    /// Evaluates the expression on a state, parameter vector and time (the reference semantics the
    /// JIT is tested against).
    pub fn eval(&self, x: &[f64], p: &[f64], t: f64) -> f64 {
        match self {
            Expr::Num(v) => *v,
            Expr::Species(i) => x[*i],
            Expr::Param(i) => p[*i],
            Expr::Time => t,
            Expr::Neg(a) => -a.eval(x, p, t),
            Expr::Bin(op, a, b) => {
                let a = a.eval(x, p, t);
                if *op == BinOp::Pow {
                    return pow_by(a, b, x, p, t);
                }
                let b = b.eval(x, p, t);
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Pow => unreachable!("handled above"),
                }
            }
            Expr::Call(Func::Pow, args) => pow_by(args[0].eval(x, p, t), &args[1], x, p, t),
            Expr::Call(f @ (Func::Hill | Func::Hillr), args) => {
                let xn = pow_by(args[0].eval(x, p, t), &args[2], x, p, t);
                let kn = pow_by(args[1].eval(x, p, t), &args[2], x, p, t);
                let top = if *f == Func::Hill { xn } else { kn };
                top / (kn + xn)
            }
            Expr::Call(f, args) => {
                let v: Vec<f64> = args.iter().map(|a| a.eval(x, p, t)).collect();
                apply(*f, &v)
            }
            Expr::Choose(i, s) => choose(x[*i], *s),
        }
    }

    /// Calls `f` on every species index the expression reads.
    pub fn visit_species(&self, f: &mut impl FnMut(usize)) {
        match self {
            Expr::Species(i) | Expr::Choose(i, _) => f(*i),
            Expr::Num(_) | Expr::Param(_) | Expr::Time => {}
            Expr::Neg(a) => a.visit_species(f),
            Expr::Bin(_, a, b) => {
                a.visit_species(f);
                b.visit_species(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.visit_species(f)),
        }
    }

    /// Calls `f` on every parameter index the expression reads.
    pub fn visit_params(&self, f: &mut impl FnMut(usize)) {
        match self {
            Expr::Param(q) => f(*q),
            Expr::Num(_) | Expr::Species(_) | Expr::Choose(..) | Expr::Time => {}
            Expr::Neg(a) => a.visit_params(f),
            Expr::Bin(_, a, b) => {
                a.visit_params(f);
                b.visit_params(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.visit_params(f)),
        }
    }

    /// Whether the expression reads parameter `q`.
    pub fn reads_param(&self, q: usize) -> bool {
        let mut found = false;
        self.visit_params(&mut |p| found |= p == q);
        found
    }

    /// Whether the expression reads time.
    pub fn uses_time(&self) -> bool {
        match self {
            Expr::Time => true,
            Expr::Num(_) | Expr::Param(_) | Expr::Species(_) | Expr::Choose(..) => false,
            Expr::Neg(a) => a.uses_time(),
            Expr::Bin(_, a, b) => a.uses_time() || b.uses_time(),
            Expr::Call(_, args) => args.iter().any(Expr::uses_time),
        }
    }
}

/// The whole exponent in `1..=16` of a literal, for which powers are computed by repeated squaring
/// (faster than `pow`, and the same operations in the interpreter and the JIT).
pub fn small_whole_exponent(e: &Expr) -> Option<u32> {
    match e {
        Expr::Num(n) if n.fract() == 0.0 && (1.0..=16.0).contains(n) => Some(*n as u32),
        _ => None,
    }
}

/// `base^n` by repeated squaring, in the order the JIT emits it.
pub fn powi_by_squaring(base: f64, mut n: u32) -> f64 {
    let mut result: Option<f64> = None;
    let mut square = base;
    loop {
        if n & 1 == 1 {
            result = Some(result.map_or(square, |r| r * square));
        }
        n >>= 1;
        if n == 0 {
            return result.unwrap_or(1.0);
        }
        square *= square;
    }
}

fn pow_by(base: f64, exponent: &Expr, x: &[f64], p: &[f64], t: f64) -> f64 {
    match small_whole_exponent(exponent) {
        Some(n) => powi_by_squaring(base, n),
        None => base.powf(exponent.eval(x, p, t)),
    }
}

/// Above this many molecules of one species in a reaction, `x choose s` is computed step by step,
/// C(x, j + 1) = C(x, j) (x - j) / (j + 1): the falling factorial and s! would overflow (s! does
/// from s = 171, x^s sooner) where the coefficient itself is finite. Every step is a whole number
/// for a whole x, so the result is exact while C(x, j) (x - j) stays below 2^53.
pub const CHOOSE_EXACT_UP_TO: u32 = 20;

/// The falling-factorial binomial coefficient `x (x-1) ... (x-s+1) / s!`.
pub fn choose(x: f64, s: u32) -> f64 {
    if s > CHOOSE_EXACT_UP_TO {
        return (0..s).fold(1.0, |c, j| c * (x - j as f64) / (j + 1) as f64);
    }
    // The product first, then one division: exact for counts below 2^53 when the result is whole
    // (20! is exact in a double).
    let mut product = x;
    let mut factorial = 1.0;
    for j in 1..s {
        product *= x - j as f64;
        factorial *= (j + 1) as f64;
    }
    if factorial == 1.0 {
        product
    } else {
        product / factorial
    }
}

/// Applies a built-in function to evaluated arguments.
pub fn apply(f: Func, v: &[f64]) -> f64 {
    match f {
        Func::Exp => v[0].exp(),
        Func::Log => v[0].ln(),
        Func::Sqrt => v[0].sqrt(),
        Func::Abs => v[0].abs(),
        // NaN-propagating, like the JIT's fmin/fmax: a NaN must never be silently dropped.
        Func::Min if v[0].is_nan() || v[1].is_nan() => f64::NAN,
        Func::Max if v[0].is_nan() || v[1].is_nan() => f64::NAN,
        Func::Min => v[0].min(v[1]),
        Func::Max => v[0].max(v[1]),
        Func::Pow => v[0].powf(v[1]),
        Func::Hill => hill(v[0], v[1], v[2]),
        Func::Hillr => hillr(v[0], v[1], v[2]),
        Func::Sign if v[0].is_nan() => f64::NAN,
        Func::Sign => (v[0] > 0.0) as i32 as f64 - (v[0] < 0.0) as i32 as f64,
        Func::Xlogy if v[0] == 0.0 => 0.0,
        Func::Xlogy => v[0] * v[1].ln(),
    }
}

/// `x^n / (K^n + x^n)`.
pub fn hill(x: f64, k: f64, n: f64) -> f64 {
    let xn = x.powf(n);
    xn / (k.powf(n) + xn)
}

/// `K^n / (K^n + x^n)`.
pub fn hillr(x: f64, k: f64, n: f64) -> f64 {
    let kn = k.powf(n);
    kn / (kn + x.powf(n))
}

/// A species.
#[derive(Debug, Clone, PartialEq)]
pub struct Species {
    /// Its name.
    pub name: String,
    /// Initial copy number.
    pub initial: i64,
    /// The free parameters the initial copy number was computed from, at their values in the
    /// file: gradients and fits do not move initial counts (see
    /// [`Model::initial_count_note`]).
    pub initial_params: Vec<usize>,
    /// Where it was declared.
    pub span: Span,
}

/// A free parameter: fitted or designed.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value in the file.
    pub value: f64,
    /// `in [lo, hi]`; without bounds the parameter is a positive rate.
    pub bounds: Option<(f64, f64)>,
    /// Where it was declared.
    pub span: Span,
}

/// A named constant, kept for display: its uses are inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    /// Its name.
    pub name: String,
    /// Its definition over parameters and numbers.
    pub expr: Expr,
    /// Its value at the file's parameter values.
    pub value: f64,
}

/// A named expression over species, parameters and constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Observable {
    /// Its name.
    pub name: String,
    /// Its definition.
    pub expr: Expr,
}

/// How a reaction's propensity was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLaw {
    /// `@ k`: `k` times the binomial coefficients of the reactants.
    MassAction,
    /// `@= e`: `e` is the propensity.
    Full,
}

/// One (irreversible) reaction channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction {
    /// Its label, or a generated name (`R3`, `r.fwd`, `R4.rev`).
    pub name: String,
    /// (species, coefficient) consumed.
    pub reactants: Vec<(usize, u32)>,
    /// (species, coefficient) produced.
    pub products: Vec<(usize, u32)>,
    /// Net change of the state: (species, change), non-zero entries only, by species index.
    pub net: Vec<(usize, i64)>,
    /// How the rate was written.
    pub law: RateLaw,
    /// The rate as written (the rate constant for mass action).
    pub rate: Expr,
    /// The whole propensity.
    pub propensity: Expr,
    /// The reaction statement it came from.
    pub span: Span,
}

/// A checked model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Species in declaration order.
    pub species: Vec<Species>,
    /// Free parameters in declaration order.
    pub params: Vec<Param>,
    /// Constants in declaration order (inlined everywhere; kept for display).
    pub consts: Vec<Const>,
    /// Observables in declaration order.
    pub observables: Vec<Observable>,
    /// Reaction channels (a reversible reaction gives two, forward then reverse).
    pub reactions: Vec<Reaction>,
    /// For each reaction `j`, the reactions whose propensities read a species that `j` changes
    /// (including `j` itself when it does), in increasing order.
    pub dependents: Vec<Vec<usize>>,
    /// Whether any propensity reads time.
    pub time_dependent: bool,
}

impl Model {
    /// Initial state as floating-point counts.
    pub fn initial_state(&self) -> Vec<i64> {
        self.species.iter().map(|s| s.initial).collect()
    }
    /// The parameter values written in the file.
    pub fn param_values(&self) -> Vec<f64> {
        self.params.iter().map(|p| p.value).collect()
    }
    /// Index of a species by name.
    pub fn species_index(&self, name: &str) -> Option<usize> {
        self.species.iter().position(|s| s.name == name)
    }
    /// Index of a parameter by name.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }
    /// Index of a reaction by name.
    pub fn reaction_index(&self, name: &str) -> Option<usize> {
        self.reactions.iter().position(|r| r.name == name)
    }

    /// Whether a reaction with a full propensity (`@=`) consumes species `i`: only such a
    /// reaction can fire without its reactants and take the count below zero.
    pub fn full_propensity_consumes(&self, i: usize) -> bool {
        self.reactions
            .iter()
            .any(|r| r.law == RateLaw::Full && r.net.iter().any(|&(s, d)| s == i && d < 0))
    }

    /// For a parameter that initial counts are computed from, a sentence saying that those stay
    /// at their values in the file, so that gradients and fits leave that effect out.
    pub fn initial_count_note(&self, q: usize) -> Option<String> {
        let counts: Vec<String> = (self.species.iter())
            .filter(|s| s.initial_params.contains(&q))
            .map(|s| format!("{} = {}", s.name, s.initial))
            .collect();
        (!counts.is_empty()).then(|| {
            let name = &self.params[q].name;
            format!(
                "`{name}` sets initial counts ({}), which stay at the file's values: the \
                 derivative with respect to `{name}` leaves out its effect through them, and a \
                 fit does not move them (docs/language.md, species)",
                counts.join(", ")
            )
        })
    }

    /// For each parameter, whether it can change any of `exprs` (expressions over species and
    /// parameters, such as the columns of data): by being read there, or through the reactions
    /// whose propensities read it, the species they change, the reactions whose propensities
    /// read those, and so on. A parameter that cannot is not identifiable from them.
    pub fn params_affecting(&self, exprs: &[Expr]) -> Vec<bool> {
        let mut affects = vec![false; self.params.len()];
        for q in 0..self.params.len() {
            // The reactions whose propensities q reaches, to a fixed point.
            let mut reached: Vec<bool> = self
                .reactions
                .iter()
                .map(|r| r.propensity.reads_param(q))
                .collect();
            let mut frontier: Vec<usize> = (0..reached.len()).filter(|&j| reached[j]).collect();
            while let Some(j) = frontier.pop() {
                for &k in &self.dependents[j] {
                    if !reached[k] {
                        reached[k] = true;
                        frontier.push(k);
                    }
                }
            }
            let mut changed = vec![false; self.species.len()];
            for (r, _) in self.reactions.iter().zip(&reached).filter(|(_, hit)| **hit) {
                for &(i, _) in &r.net {
                    changed[i] = true;
                }
            }
            affects[q] = exprs.iter().any(|e| {
                let mut via_state = false;
                e.visit_species(&mut |i| via_state |= changed[i]);
                via_state || e.reads_param(q)
            });
        }
        affects
    }

    /// Computes the dependency graph from the reactions' net changes and the species their
    /// propensities read.
    pub(crate) fn dependency_graph(reactions: &[Reaction], n_species: usize) -> Vec<Vec<usize>> {
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n_species];
        for (k, r) in reactions.iter().enumerate() {
            r.propensity.visit_species(&mut |i| {
                if readers[i].last() != Some(&k) {
                    readers[i].push(k);
                }
            });
        }
        reactions
            .iter()
            .map(|r| {
                let mut deps: Vec<usize> = r
                    .net
                    .iter()
                    .flat_map(|(i, _)| readers[*i].iter().copied())
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                deps
            })
            .collect()
    }
}
