//! Lowering the AST to the IR, finding every semantic error in one pass.

use super::{BinOp, Const, Expr, Func, Model, Observable, Param, RateLaw, Reaction, Species};
use crate::diagnostics::{Diagnostic, closest};
use crate::syntax::ast::{self, DeclKind, ExprKind, RateKind, Span, Statement};
use std::collections::HashMap;

const KEYWORDS: [&str; 5] = ["species", "param", "const", "observable", "in"];
/// 2^63: initial copy numbers must be below it (they are stored as `i64`).
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;

/// Checks a parsed file and lowers it to the IR. Returns every problem found, in text order.
pub fn lower(file: &ast::File) -> Result<Model, Vec<Diagnostic>> {
    let mut l = Lowerer::default();
    l.declare_all(file);
    let model = l.build(file);
    if l.diags.is_empty() {
        Ok(model)
    } else {
        l.diags.sort_by_key(|d| (d.span().start, d.span().end));
        Err(l.diags)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Species(usize),
    Param(usize),
    Const(usize),
    Observable(usize),
}

impl Entity {
    fn describe(self) -> &'static str {
        match self {
            Entity::Species(_) => "a species",
            Entity::Param(_) => "a parameter",
            Entity::Const(_) => "a constant",
            Entity::Observable(_) => "an observable",
        }
    }
}

/// Where an expression stands, which decides what it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    SpeciesInit,
    ParamValue,
    Bound,
    Const,
    Observable,
    Rate,
}

impl Ctx {
    fn reads_state(self) -> bool {
        matches!(self, Ctx::Observable | Ctx::Rate)
    }
    /// Parameters are replaced by their values where the result must be a number at load time.
    fn numeric(self) -> bool {
        matches!(self, Ctx::SpeciesInit | Ctx::ParamValue | Ctx::Bound)
    }
    fn what(self) -> &'static str {
        match self {
            Ctx::SpeciesInit => "an initial copy number",
            Ctx::ParamValue => "a parameter's value",
            Ctx::Bound => "a parameter's bounds",
            Ctx::Const => "a constant",
            Ctx::Observable => "an observable",
            Ctx::Rate => "a rate",
        }
    }
}

/// What [`within_limits`](Lowerer::within_limits) checks.
#[derive(Clone, Copy)]
enum Substituted<'n> {
    Constant(&'n str),
    Observable(&'n str),
    Rate,
}

impl Substituted<'_> {
    fn name(self) -> String {
        match self {
            Substituted::Constant(name) => format!("constant `{name}`"),
            Substituted::Observable(name) => format!("observable `{name}`"),
            Substituted::Rate => "this rate".into(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Substituted::Rate => "this rate",
            _ => "defined here",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Progress {
    #[default]
    Todo,
    Active,
    Done,
}

#[derive(Default)]
struct Lowerer<'a> {
    diags: Vec<Diagnostic>,
    names: HashMap<String, (Entity, Span)>,
    species: Vec<&'a ast::Declaration>,
    params: Vec<&'a ast::Declaration>,
    consts: Vec<&'a ast::Declaration>,
    observables: Vec<&'a ast::Declaration>,
    const_exprs: Vec<Option<Expr>>,
    const_progress: Vec<Progress>,
    obs_exprs: Vec<Option<Expr>>,
    obs_progress: Vec<Progress>,
    /// Whether the definition being resolved uses one that was too large to inline (reported
    /// once, where it is defined).
    uses_too_large: bool,
    /// Whether the definition being resolved uses a constant whose value is not finite (reported
    /// once, where that constant is defined).
    uses_non_finite: bool,
    /// The parameters read at their values in the file (initial counts, values, bounds), as
    /// they are resolved.
    params_read_as_numbers: Vec<usize>,
    /// The constants whose value is not finite.
    const_non_finite: Vec<bool>,
    /// The nodes of the rates and observables so far (see [`MAX_COMPILED_NODES`]).
    compiled_nodes: usize,
    param_values: Vec<Option<f64>>,
    /// Whether resolving a parameter's value produced a diagnostic (a non-finite result is then
    /// not reported again).
    param_value_reported: Vec<bool>,
    param_progress: Vec<Progress>,
    /// Names being resolved, innermost last, to describe cycles.
    stack: Vec<String>,
    /// Undeclared names already reported, with the index of their diagnostic: later uses become
    /// secondary labels of it instead of diagnostics of their own.
    undeclared_seen: HashMap<String, usize>,
}

fn reserved_reason(name: &str) -> Option<String> {
    if KEYWORDS.contains(&name) {
        Some(format!("`{name}` is a keyword"))
    } else if Func::by_name(name).is_some() {
        Some(format!("`{name}` is a built-in function"))
    } else if name == "t" {
        Some("`t` is time".to_string())
    } else {
        None
    }
}

fn is_non_finite_word(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "nan" | "inf" | "infinity"
    )
}

impl<'a> Lowerer<'a> {
    fn declare_all(&mut self, file: &'a ast::File) {
        for st in &file.statements {
            let Statement::Declarations(kind, items) = st else {
                continue;
            };
            for d in items {
                let entity = match kind {
                    DeclKind::Species => Entity::Species(self.species.len()),
                    DeclKind::Param => Entity::Param(self.params.len()),
                    DeclKind::Const => Entity::Const(self.consts.len()),
                    DeclKind::Observable => Entity::Observable(self.observables.len()),
                };
                match kind {
                    DeclKind::Species => self.species.push(d),
                    DeclKind::Param => self.params.push(d),
                    DeclKind::Const => self.consts.push(d),
                    DeclKind::Observable => self.observables.push(d),
                }
                if let Some(why) = reserved_reason(&d.name.name) {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::reserved",
                            format!("`{}` cannot be used as a name", d.name.name),
                            d.name.span,
                            why,
                        )
                        .with_help(format!(
                            "rename it, for example to `{}_`; keywords, function names and `t` \
                             are reserved",
                            d.name.name
                        )),
                    );
                    // Still declared, so that its uses are not reported again as undeclared.
                    self.names
                        .entry(d.name.name.clone())
                        .or_insert((entity, d.name.span));
                    continue;
                }
                if let Some((prev, prev_span)) = self.names.get(&d.name.name) {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::duplicate",
                            format!("`{}` is declared twice", d.name.name),
                            d.name.span,
                            "declared again here",
                        )
                        .with_label(
                            *prev_span,
                            format!("first declared here as {}", prev.describe()),
                        )
                        .with_help("every name is declared once; rename or remove one of them"),
                    );
                    continue;
                }
                self.names
                    .insert(d.name.name.clone(), (entity, d.name.span));
            }
        }
        self.const_exprs = vec![None; self.consts.len()];
        self.const_non_finite = vec![false; self.consts.len()];
        self.const_progress = vec![Progress::Todo; self.consts.len()];
        self.obs_exprs = vec![None; self.observables.len()];
        self.obs_progress = vec![Progress::Todo; self.observables.len()];
        self.param_values = vec![None; self.params.len()];
        self.param_value_reported = vec![false; self.params.len()];
        self.param_progress = vec![Progress::Todo; self.params.len()];
    }

    fn build(&mut self, file: &'a ast::File) -> Model {
        let params: Vec<Param> = (0..self.params.len()).map(|i| self.param(i)).collect();
        let consts: Vec<Const> = (0..self.consts.len())
            .map(|i| {
                let expr = self.const_expr(i, self.consts[i].name.span);
                let values: Vec<f64> = params.iter().map(|p| p.value).collect();
                Const {
                    name: self.consts[i].name.name.clone(),
                    value: expr.eval(&[], &values, 0.0),
                    expr,
                }
            })
            .collect();
        let observables = (0..self.observables.len())
            .map(|i| Observable {
                name: self.observables[i].name.name.clone(),
                expr: self.observable_expr(i, self.observables[i].name.span),
            })
            .collect();
        let species = (0..self.species.len())
            .map(|i| self.species_init(i))
            .collect();

        let mut reactions = Vec::new();
        let mut labels: HashMap<String, Span> = HashMap::new();
        let reaction_statements: Vec<&ast::Reaction> = file
            .statements
            .iter()
            .filter_map(|s| {
                if let Statement::Reaction(r) = s {
                    Some(r)
                } else {
                    None
                }
            })
            .collect();
        for r in &reaction_statements {
            if let Some(label) = &r.label {
                if let Some(prev) = labels.get(&label.name) {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::duplicate",
                            format!("reaction label `{}` is used twice", label.name),
                            label.span,
                            "used again here",
                        )
                        .with_label(*prev, "first used here")
                        .with_help(
                            "reaction labels name reactions in outputs; make each one unique",
                        ),
                    );
                } else {
                    labels.insert(label.name.clone(), label.span);
                }
            }
        }
        for r in reaction_statements {
            self.reaction(r, &labels, &mut reactions);
        }
        if !file
            .statements
            .iter()
            .any(|s| matches!(s, Statement::Reaction(_)))
        {
            let end = file.statements.last().map_or(0, |s| match s {
                Statement::Reaction(r) => r.span.end,
                Statement::Declarations(_, items) => items.last().map_or(0, |d| d.span.end),
            });
            let (message, label) = if file.statements.is_empty() {
                (
                    "the model is empty: it has no reactions",
                    "nothing but blank lines and comments",
                )
            } else {
                (
                    "the model has no reactions",
                    "the declarations end here, without any reaction",
                )
            };
            self.diags.push(
                Diagnostic::new("rxn::no_reactions", message, Span::new(end, end), label)
                    .with_help(
                        "a model needs at least one reaction, such as `A -> B @ k` or `0 -> A @= k`",
                    ),
            );
        }
        let dependents = Model::dependency_graph(&reactions, self.species.len());
        let time_dependent = reactions.iter().any(|r| r.propensity.uses_time());
        Model {
            species,
            params,
            consts,
            observables,
            reactions,
            dependents,
            time_dependent,
        }
    }

    fn species_init(&mut self, i: usize) -> Species {
        let d = self.species[i];
        let mut initial = 0;
        let mut initial_params = Vec::new();
        if let Some(v) = &d.value {
            let reported = self.diags.len();
            let outer = std::mem::take(&mut self.params_read_as_numbers);
            let e = self.resolve(v, Ctx::SpeciesInit);
            initial_params = std::mem::replace(&mut self.params_read_as_numbers, outer);
            initial_params.sort_unstable();
            initial_params.dedup();
            // A non-finite literal is reported where it is written; an expression that
            // overflows (`1e200 * 1e200`) is reported here.
            let reported = self.diags.len() > reported;
            // A literal is taken exactly; an expression is evaluated in floating point (exact up
            // to 2^53).
            let (fits, shown) = match v.kind {
                ExprKind::Number {
                    integer: Some(n), ..
                } => (i64::try_from(n).ok(), n.to_string()),
                _ => {
                    let x = e.eval(&[], &[], 0.0);
                    let whole = x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < TWO_TO_63;
                    let shown = if x.abs() >= 2f64.powi(53) {
                        format!("{x:e}")
                    } else {
                        x.to_string()
                    };
                    (whole.then_some(x as i64).or(reported.then_some(0)), shown)
                }
            };
            match fits {
                Some(n) => initial = n,
                None => self.diags.push(
                    Diagnostic::new(
                        "rxn::count",
                        format!(
                            "initial copy number of `{}` must be a whole number in [0, 2^63)",
                            d.name.name
                        ),
                        v.span,
                        format!("this is {shown}"),
                    )
                    .with_help("copy numbers count molecules: write a non-negative integer"),
                ),
            }
        }
        Species {
            name: d.name.name.clone(),
            initial,
            initial_params,
            span: d.name.span,
        }
    }

    fn param(&mut self, i: usize) -> Param {
        let d = self.params[i];
        let value = self.param_value(i, d.name.span);
        let before = self.diags.len();
        let bounds = d.bounds.as_ref().map(|(lo, hi)| {
            let lo_v = self.resolve(lo, Ctx::Bound).eval(&[], &[], 0.0);
            let hi_v = self.resolve(hi, Ctx::Bound).eval(&[], &[], 0.0);
            (lo_v, hi_v, lo.span.join(hi.span))
        });
        let bounds_reported = self.diags.len() > before;
        let value_span = d.value.as_ref().map_or(d.name.span, |v| v.span);
        // Values computed to infinity or NaN (`1e308 * 10`, `0/0`): a literal too large, an
        // undeclared `inf` or a cycle is reported where it is written instead.
        if !value.is_finite() && !self.param_value_reported[i] && d.value.is_some() {
            self.diags.push(non_finite_value(
                "a parameter's value",
                &d.name.name,
                value,
                value_span,
            ));
        }
        if let Some((lo, hi, span)) = bounds
            && !(lo.is_finite() && hi.is_finite())
            && !bounds_reported
        {
            self.diags.push(
                Diagnostic::new(
                    "rxn::bounds",
                    format!(
                        "the bounds of `{}` must be finite numbers: they are [{lo}, {hi}]",
                        d.name.name
                    ),
                    span,
                    "not finite",
                )
                .with_help("write finite bounds `in [lo, hi]`, or leave them out for a positive rate (fitted in log space)"),
            );
        }
        match bounds {
            Some((lo, hi, span)) if lo.is_finite() && hi.is_finite() && lo >= hi => {
                self.diags.push(
                    Diagnostic::new(
                        "rxn::bounds",
                        format!(
                            "bounds of `{}` are empty: {lo} is not below {hi}",
                            d.name.name
                        ),
                        span,
                        "lower bound must be below upper bound",
                    )
                    .with_help("write the bounds as `in [lo, hi]` with lo < hi"),
                );
            }
            Some((lo, hi, span))
                if value.is_finite()
                    && lo.is_finite()
                    && hi.is_finite()
                    && (value < lo || value > hi) =>
            {
                self.diags.push(
                    Diagnostic::new(
                        "rxn::bounds",
                        format!(
                            "`{}` = {value} lies outside its bounds [{lo}, {hi}]",
                            d.name.name
                        ),
                        value_span,
                        "outside the bounds",
                    )
                    .with_label(span, "bounds")
                    .with_help("move the value inside the bounds or widen them"),
                );
            }
            None if value.is_finite() && value <= 0.0 => {
                self.diags.push(
                    Diagnostic::new(
                        "rxn::bounds",
                        format!("`{}` = {value} must be positive: a parameter without bounds is a rate", d.name.name),
                        value_span,
                        "not positive",
                    )
                    .with_help(format!(
                        "give it bounds that allow this value (`param {} = {value} in [lo, hi]`) or make it `const`",
                        d.name.name
                    )),
                );
            }
            _ => {}
        }
        Param {
            name: d.name.name.clone(),
            value,
            bounds: bounds.map(|(lo, hi, _)| (lo, hi)),
            span: d.name.span,
        }
    }

    /// The value of parameter `i` (evaluated once), with cycle detection.
    fn param_value(&mut self, i: usize, use_span: Span) -> f64 {
        match self.param_progress[i] {
            Progress::Done => return self.param_values[i].unwrap_or(f64::NAN),
            Progress::Active => {
                self.cycle(&self.params[i].name.name.clone(), use_span);
                return f64::NAN;
            }
            Progress::Todo => {}
        }
        let d = self.params[i];
        self.param_progress[i] = Progress::Active;
        self.stack.push(d.name.name.clone());
        let before = self.diags.len();
        let (outer, outer_non_finite) = (
            std::mem::take(&mut self.uses_too_large),
            std::mem::take(&mut self.uses_non_finite),
        );
        let v = match &d.value {
            Some(e) => self.resolve(e, Ctx::ParamValue).eval(&[], &[], 0.0),
            None => f64::NAN,
        };
        self.param_value_reported[i] =
            self.diags.len() > before || self.uses_too_large || self.uses_non_finite;
        self.uses_too_large |= outer;
        self.uses_non_finite |= outer_non_finite;
        self.stack.pop();
        self.param_progress[i] = Progress::Done;
        self.param_values[i] = Some(v);
        v
    }

    fn const_expr(&mut self, i: usize, use_span: Span) -> Expr {
        match self.const_progress[i] {
            Progress::Done => {
                let e = self.const_exprs[i].clone();
                self.uses_too_large |= e.is_none();
                self.uses_non_finite |= self.const_non_finite[i];
                return e.unwrap_or(Expr::Num(f64::NAN));
            }
            Progress::Active => {
                self.cycle(&self.consts[i].name.name.clone(), use_span);
                return Expr::Num(f64::NAN);
            }
            Progress::Todo => {}
        }
        let d = self.consts[i];
        self.const_progress[i] = Progress::Active;
        self.stack.push(d.name.name.clone());
        let outer = std::mem::take(&mut self.uses_too_large);
        let outer_non_finite = std::mem::take(&mut self.uses_non_finite);
        let before = self.diags.len();
        let e = match &d.value {
            Some(v) => self.resolve(v, Ctx::Const),
            None => Expr::Num(f64::NAN),
        };
        // A constant of numbers alone computed to infinity or NaN (`1e308 * 10`, `0/0`); one
        // that reads parameters is checked where it is used, at their values then.
        let mut reads_params = false;
        e.visit_params(&mut |_| reads_params = true);
        let value = if reads_params {
            0.0
        } else {
            e.eval(&[], &[], 0.0)
        };
        self.const_non_finite[i] = !value.is_finite();
        if let Some(v) = &d.value
            && !value.is_finite()
            && self.diags.len() == before
            && !self.uses_too_large
            && !self.uses_non_finite
        {
            self.diags
                .push(non_finite_value("a constant", &d.name.name, value, v.span));
        }
        self.stack.pop();
        let e = self.within_limits(e, Substituted::Constant(&d.name.name), d.name.span);
        self.uses_too_large |= outer;
        self.uses_non_finite = outer_non_finite || self.const_non_finite[i];
        self.const_progress[i] = Progress::Done;
        self.const_exprs[i] = e.clone();
        e.unwrap_or(Expr::Num(f64::NAN))
    }

    fn observable_expr(&mut self, i: usize, use_span: Span) -> Expr {
        match self.obs_progress[i] {
            Progress::Done => {
                let e = self.obs_exprs[i].clone();
                self.uses_too_large |= e.is_none();
                return e.unwrap_or(Expr::Num(f64::NAN));
            }
            Progress::Active => {
                self.cycle(&self.observables[i].name.name.clone(), use_span);
                return Expr::Num(f64::NAN);
            }
            Progress::Todo => {}
        }
        let d = self.observables[i];
        self.obs_progress[i] = Progress::Active;
        self.stack.push(d.name.name.clone());
        let outer = std::mem::take(&mut self.uses_too_large);
        let e = match &d.value {
            Some(v) => self.resolve(v, Ctx::Observable),
            None => Expr::Num(f64::NAN),
        };
        self.stack.pop();
        let e = self.within_limits(e, Substituted::Observable(&d.name.name), d.name.span);
        self.uses_too_large |= outer;
        self.obs_progress[i] = Progress::Done;
        self.obs_exprs[i] = e.clone();
        e.unwrap_or(Expr::Num(f64::NAN))
    }

    /// `e`, or `None` and a diagnostic if it is too large once the constants and observables it
    /// uses are substituted. `None` also when it uses a definition already found too large (one
    /// mistake, one report): those who use it get a small placeholder instead.
    fn within_limits(&mut self, e: Expr, what: Substituted<'_>, span: Span) -> Option<Expr> {
        use crate::syntax::{MAX_COMPILED_NODES, MAX_INLINED_DEPTH, MAX_INLINED_NODES};
        // Constants are compiled only where they are used (in rates and observables).
        // Past the total, it is reported once.
        let counted =
            !matches!(what, Substituted::Constant(_)) && self.compiled_nodes <= MAX_COMPILED_NODES;
        if self.uses_too_large {
            return None;
        }
        let (nodes, depth) = e.extent();
        let problem = if nodes > MAX_INLINED_NODES {
            format!("{nodes} operations, more than the {MAX_INLINED_NODES} allowed")
        } else if depth > MAX_INLINED_DEPTH {
            format!("{depth} levels deep, more than the {MAX_INLINED_DEPTH} allowed")
        } else if counted && self.compiled_nodes + nodes > MAX_COMPILED_NODES {
            self.compiled_nodes += nodes;
            format!(
                "with it, the rates and observables come to more than the {MAX_COMPILED_NODES} operations allowed in all"
            )
        } else {
            self.compiled_nodes += if counted { nodes } else { 0 };
            return Some(e);
        };
        self.diags.push(
            Diagnostic::new(
                "rxn::too_large",
                format!(
                    "{} is too large to compile once the constants and observables it uses are substituted: {problem}",
                    what.name()
                ),
                span,
                what.label(),
            )
            .with_help(
                "every use of a constant or observable copies its whole definition: write `o^2` rather than `o * o`, and use fewer definitions built one on another",
            ),
        );
        self.uses_too_large = true;
        None
    }

    fn cycle(&mut self, name: &str, span: Span) {
        let start = self.stack.iter().position(|n| n == name).unwrap_or(0);
        let mut path: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
        path.push(name);
        self.diags.push(
            Diagnostic::new(
                "rxn::cycle",
                format!("`{name}` is defined in terms of itself: {}", path.join(" -> ")),
                span,
                "this use closes the cycle",
            )
            .with_help("define each constant, parameter and observable from names that do not depend on it"),
        );
    }

    fn resolve(&mut self, e: &ast::Expr, ctx: Ctx) -> Expr {
        match &e.kind {
            ExprKind::Number { value: v, .. } => {
                if !v.is_finite() {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::non_finite",
                            "this number is too large: it overflows to infinity",
                            e.span,
                            "larger than about 1.8e308",
                        )
                        .with_help(non_finite_help(ctx)),
                    );
                }
                Expr::Num(*v)
            }
            ExprKind::Name(id) => self.resolve_name(id, ctx),
            ExprKind::Unary(_, a) => {
                let a = self.resolve(a, ctx);
                match a {
                    Expr::Num(v) => Expr::Num(-v),
                    a => Expr::Neg(Box::new(a)),
                }
            }
            ExprKind::Binary(op, a, b) => {
                let op = match op {
                    ast::BinaryOp::Add => BinOp::Add,
                    ast::BinaryOp::Sub => BinOp::Sub,
                    ast::BinaryOp::Mul => BinOp::Mul,
                    ast::BinaryOp::Div => BinOp::Div,
                    ast::BinaryOp::Pow => BinOp::Pow,
                };
                let (a, b) = (self.resolve(a, ctx), self.resolve(b, ctx));
                Expr::Bin(op, Box::new(a), Box::new(b))
            }
            ExprKind::Call(f, args) => {
                let resolved: Vec<Expr> = args.iter().map(|a| self.resolve(a, ctx)).collect();
                match Func::by_name(&f.name) {
                    Some((func, arity)) if arity == args.len() => Expr::Call(func, resolved),
                    Some((_, arity)) => {
                        self.diags.push(
                            Diagnostic::new(
                                "rxn::arity",
                                format!(
                                    "`{}` takes {arity} argument{}, but {} {} given",
                                    f.name,
                                    if arity == 1 { "" } else { "s" },
                                    args.len(),
                                    if args.len() == 1 { "was" } else { "were" }
                                ),
                                e.span,
                                format!(
                                    "{} argument{}",
                                    args.len(),
                                    if args.len() == 1 { "" } else { "s" }
                                ),
                            )
                            .with_help(format!("call it as {}", signature(&f.name))),
                        );
                        Expr::Num(f64::NAN)
                    }
                    None => {
                        let mut d = Diagnostic::new(
                            "rxn::unknown_function",
                            format!("unknown function `{}`", f.name),
                            f.span,
                            "not a built-in function",
                        );
                        let help = match (
                            self.names.get(&f.name),
                            closest(&f.name, Func::ALL.iter().map(|x| x.1)),
                        ) {
                            (Some((entity, _)), _) => format!(
                                "`{}` is {}, not a function; multiplication is written with `*`",
                                f.name,
                                entity.describe()
                            ),
                            (None, Some(near)) => format!("did you mean `{}`?", signature(near)),
                            (None, None) => format!(
                                "the functions are {}",
                                Func::ALL.iter().map(|x| x.1).collect::<Vec<_>>().join(", ")
                            ),
                        };
                        d = d.with_help(help);
                        self.diags.push(d);
                        Expr::Num(f64::NAN)
                    }
                }
            }
        }
    }

    fn resolve_name(&mut self, id: &ast::Ident, ctx: Ctx) -> Expr {
        let bad = Expr::Num(f64::NAN);
        if id.name == "t" && !self.names.contains_key("t") {
            if ctx.reads_state() {
                return Expr::Time;
            }
            self.diags.push(
                Diagnostic::new(
                    "rxn::context",
                    format!("time `t` cannot be used in {}", ctx.what()),
                    id.span,
                    "time is not known here",
                )
                .with_help("time may appear in rates and observables only"),
            );
            return bad;
        }
        let Some(&(entity, _)) = self.names.get(&id.name) else {
            self.undeclared(id, ctx);
            return bad;
        };
        match entity {
            Entity::Species(i) if ctx.reads_state() => Expr::Species(i),
            Entity::Observable(i) if ctx.reads_state() => self.observable_expr(i, id.span),
            Entity::Species(_) | Entity::Observable(_) => {
                self.diags.push(
                    Diagnostic::new(
                        "rxn::context",
                        format!("{} `{}` cannot be used in {}", entity.describe(), id.name, ctx.what()),
                        id.span,
                        "depends on the state",
                    )
                    .with_help(if ctx == Ctx::Const {
                        format!(
                            "a constant is fixed before the simulation starts; for a quantity that \
                             follows the state, declare an observable: `observable name = ...{}...`",
                            id.name
                        )
                    } else {
                        format!(
                            "{} must be fixed before the simulation starts; use numbers, constants \
                             and parameters",
                            ctx.what()
                        )
                    }),
                );
                bad
            }
            Entity::Param(i) if ctx.numeric() => {
                self.params_read_as_numbers.push(i);
                Expr::Num(self.param_value(i, id.span))
            }
            Entity::Param(i) => Expr::Param(i),
            Entity::Const(i) => {
                let e = self.const_expr(i, id.span);
                if ctx.numeric() {
                    // Keep the constant on the stack while its parameters are evaluated, so that a
                    // cycle through it is described in full (`p -> c -> p`).
                    self.stack.push(id.name.clone());
                    let values: Vec<f64> = (0..self.params.len())
                        .map(|j| {
                            if e.reads_param(j) {
                                self.params_read_as_numbers.push(j);
                                self.param_value(j, id.span)
                            } else {
                                f64::NAN
                            }
                        })
                        .collect();
                    self.stack.pop();
                    Expr::Num(e.eval(&[], &values, 0.0))
                } else {
                    e
                }
            }
        }
    }

    fn undeclared(&mut self, id: &ast::Ident, ctx: Ctx) {
        if is_non_finite_word(&id.name) {
            self.diags.push(
                Diagnostic::new(
                    "rxn::non_finite",
                    format!("`{}` is not a finite number", id.name),
                    id.span,
                    "not finite",
                )
                .with_help(non_finite_help(ctx)),
            );
            return;
        }
        if Func::by_name(&id.name).is_some() {
            self.diags.push(
                Diagnostic::new(
                    "rxn::undeclared",
                    format!("`{}` is a function and needs arguments", id.name),
                    id.span,
                    "used without arguments",
                )
                .with_help(format!("call it as {}", signature(&id.name))),
            );
            return;
        }
        if self.also_used(id) {
            return;
        }
        let near = closest(&id.name, self.names.keys().map(String::as_str)).map(str::to_string);
        let declare = if ctx.reads_state() {
            format!(
                "declare it: `param {0} = 1` for a rate constant, or `species {0}` for a species",
                id.name
            )
        } else {
            format!(
                "declare it, for example `param {0} = 1` or `const {0} = 1`",
                id.name
            )
        };
        let help = match near {
            Some(n) => format!("did you mean `{n}`? Otherwise, {declare}"),
            None => declare,
        };
        self.report_undeclared(
            id,
            Diagnostic::new(
                "rxn::undeclared",
                format!("`{}` is not declared", id.name),
                id.span,
                "not declared",
            )
            .with_help(help),
        );
    }

    /// Adds a later use of an undeclared name to the diagnostic about its first use. Returns
    /// whether the name had been reported already.
    fn also_used(&mut self, id: &ast::Ident) -> bool {
        match self.undeclared_seen.get(&id.name) {
            Some(&k) => {
                let d = &mut self.diags[k];
                d.labels.push((id.span, "also used here".to_string()));
                true
            }
            None => false,
        }
    }

    fn report_undeclared(&mut self, id: &ast::Ident, d: Diagnostic) {
        self.undeclared_seen
            .insert(id.name.clone(), self.diags.len());
        self.diags.push(d);
    }

    fn complex(&mut self, terms: &[ast::Term]) -> Vec<(usize, u32)> {
        let mut out: Vec<(usize, u32)> = Vec::new();
        for term in terms {
            let coeff = match term.coeff {
                None => 1,
                Some((0, span)) => {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::coefficient",
                            "a stoichiometric coefficient must be positive",
                            span,
                            "zero",
                        )
                        .with_help("leave the species out, or write `0` for an empty side"),
                    );
                    continue;
                }
                Some((c, span)) if c > 1_000_000 => {
                    self.diags.push(
                        Diagnostic::new(
                            "rxn::coefficient",
                            "stoichiometric coefficient is too large",
                            span,
                            "too large",
                        )
                        .with_help("coefficients are small positive integers (at most 1000000)"),
                    );
                    continue;
                }
                Some((c, _)) => c as u32,
            };
            let name = &term.species;
            match self.names.get(&name.name) {
                Some(&(Entity::Species(i), _)) => match out.iter_mut().find(|(s, _)| *s == i) {
                    Some(entry) => entry.1 += coeff,
                    None => out.push((i, coeff)),
                },
                Some(&(entity, declared)) => self.diags.push(
                    Diagnostic::new(
                        "rxn::not_species",
                        format!("`{}` is {}, not a species", name.name, entity.describe()),
                        name.span,
                        "reactions consume and produce species only",
                    )
                    .with_label(declared, format!("declared as {} here", entity.describe()))
                    .with_help(format!(
                        "declare the molecule with `species`, under a name of its own (say `species {}_`), \
                         and use that name in the reaction",
                        name.name
                    )),
                ),
                None => {
                    if self.also_used(name) {
                        continue;
                    }
                    let add = format!(
                        "declare it with a `species` line: `species {0}` (initially 0) or `species {0} = 10`",
                        name.name
                    );
                    let species_names = self.species.iter().map(|d| d.name.name.as_str());
                    let near = closest(&name.name, species_names).map(str::to_string);
                    // `A2` for `2 A`: a coefficient written after the species.
                    let split = name.name.trim_end_matches(|c: char| c.is_ascii_digit());
                    let coefficient_after = (split.len() < name.name.len()
                        && matches!(self.names.get(split), Some((Entity::Species(_), _))))
                    .then(|| format!("{} {split}", &name.name[split.len()..]));
                    let help = match (coefficient_after, near) {
                        (Some(fixed), _) => format!(
                            "did you mean `{fixed}`? A coefficient goes before the species. \
                             Otherwise, {add}"
                        ),
                        (None, Some(n)) => format!("did you mean `{n}`? Otherwise, {add}"),
                        (None, None) => add,
                    };
                    self.report_undeclared(
                        name,
                        Diagnostic::new(
                            "rxn::undeclared",
                            format!("species `{}` is not declared", name.name),
                            name.span,
                            "not declared",
                        )
                        .with_help(help),
                    );
                }
            }
        }
        out
    }

    fn reaction(
        &mut self,
        r: &ast::Reaction,
        labels: &HashMap<String, Span>,
        out: &mut Vec<Reaction>,
    ) {
        let reactants = self.complex(&r.reactants);
        let products = self.complex(&r.products);
        let want = if r.reversible { 2 } else { 1 };
        let rates: Vec<Expr> = (r.rates.iter())
            .map(|e| {
                let outer = std::mem::take(&mut self.uses_too_large);
                let rate = self.resolve(e, Ctx::Rate);
                let rate = self.within_limits(rate, Substituted::Rate, e.span);
                self.uses_too_large = outer;
                rate.unwrap_or(Expr::Num(f64::NAN))
            })
            .collect();
        if rates.len() != want {
            let (message, help) = if r.reversible {
                (
                    format!(
                        "a reversible reaction needs two rates, forward and reverse; {} given",
                        rates.len()
                    ),
                    "write `A <-> B @ kf, kr`, or use `->` for a one-way reaction".to_string(),
                )
            } else {
                (
                    format!("a one-way reaction takes one rate; {} given", rates.len()),
                    "use `<->` for a reversible reaction with two rates, or remove the extra rates"
                        .to_string(),
                )
            };
            self.diags.push(
                Diagnostic::new(
                    "rxn::rate_count",
                    message,
                    r.rate_span,
                    match rates.len() {
                        1 => "1 rate given".to_string(),
                        n => format!("{n} rates given"),
                    },
                )
                .with_label(
                    r.arrow_span,
                    if r.reversible {
                        "reversible"
                    } else {
                        "one-way"
                    },
                )
                .with_help(help),
            );
            return;
        }
        let base = match &r.label {
            Some(l) => l.name.clone(),
            None => {
                let mut name = format!("R{}", r.ordinal);
                while labels.contains_key(&name) {
                    name.push('_');
                }
                name
            }
        };
        let law = match r.rate_kind {
            RateKind::MassAction => RateLaw::MassAction,
            RateKind::Full => RateLaw::Full,
        };
        let mut channel =
            |name: String, from: &[(usize, u32)], to: &[(usize, u32)], rate: &Expr| {
                let propensity = match law {
                    RateLaw::Full => rate.clone(),
                    RateLaw::MassAction => from.iter().fold(rate.clone(), |acc, &(i, s)| {
                        super::derive::mul(acc, Expr::Choose(i, s))
                    }),
                };
                let mut net: Vec<(usize, i64)> = Vec::new();
                for &(i, s) in from {
                    net.push((i, -(s as i64)));
                }
                for &(i, s) in to {
                    match net.iter_mut().find(|(j, _)| *j == i) {
                        Some(e) => e.1 += s as i64,
                        None => net.push((i, s as i64)),
                    }
                }
                net.retain(|(_, c)| *c != 0);
                net.sort_unstable();
                out.push(Reaction {
                    name,
                    reactants: from.to_vec(),
                    products: to.to_vec(),
                    net,
                    law,
                    rate: rate.clone(),
                    propensity,
                    span: r.span,
                });
            };
        if r.reversible {
            channel(format!("{base}.fwd"), &reactants, &products, &rates[0]);
            channel(format!("{base}.rev"), &products, &reactants, &rates[1]);
        } else {
            channel(base, &reactants, &products, &rates[0]);
        }
    }
}

fn non_finite_help(ctx: Ctx) -> &'static str {
    match ctx {
        Ctx::Bound => {
            "bounds must be finite numbers; for a generous bound write a large number such as `1e6`"
        }
        _ => "values must be finite numbers, such as `1`, `0.5`, `1e-3` or `2.5E+4`",
    }
}

/// A value computed to infinity or NaN; `subject` says whose (`a parameter's value`).
fn non_finite_value(subject: &str, name: &str, value: f64, span: Span) -> Diagnostic {
    Diagnostic::new(
        "rxn::non_finite",
        format!("the value of `{name}` is {value}, not a finite number"),
        span,
        format!("this is {value}"),
    )
    .with_help(format!(
        "{subject} must be a finite number: look for a division by zero or a product that \
         overflows"
    ))
}

fn signature(name: &str) -> String {
    match name {
        "min" | "max" | "pow" => format!("{name}(a, b)"),
        "hill" | "hillr" => format!("{name}(x, K, n)"),
        _ => format!("{name}(x)"),
    }
}
