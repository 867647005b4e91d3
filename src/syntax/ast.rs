//! The abstract syntax tree of a `.rxn` file. Every node keeps the byte span it came from so that
//! the checker can point at the offending text.

/// A half-open byte range `[start, end)` into the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.end - s.start).into()
    }
}

/// A name with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name as written.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
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

/// An expression as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// The whole expression's text.
    pub span: Span,
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal: its value, and for one written with digits only its exact value when it fits
    /// in 64 bits (copy numbers above 2^53 are not all representable in an `f64`).
    Number { value: f64, integer: Option<u64> },
    /// A name: species, parameter, constant, observable or `t`.
    Name(Ident),
    /// `-e`
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `f(args...)`
    Call(Ident, Vec<Expr>),
}

/// `name = value` with optional bounds `in [lo, hi]` (bounds only for parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// What is declared.
    pub name: Ident,
    /// Its value or defining expression, if one was written.
    pub value: Option<Expr>,
    /// `in [lo, hi]`, for parameters.
    pub bounds: Option<(Expr, Expr)>,
    /// The whole item.
    pub span: Span,
}

/// What a declaration declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclKind {
    /// `species`
    Species,
    /// `param`
    Param,
    /// `const`
    Const,
    /// `observable`
    Observable,
}

/// One term of a complex: `2 B`.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The coefficient as written (1 when omitted) and its span.
    pub coeff: Option<(u64, Span)>,
    /// The species.
    pub species: Ident,
}

/// How a reaction's rate is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// `@ k`: mass action with rate constant `k` (binomial convention).
    MassAction,
    /// `@= e`: `e` is the whole propensity.
    Full,
}

/// A reaction statement, possibly reversible.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction {
    /// `label:`
    pub label: Option<Ident>,
    /// Left-hand side; empty for `0`.
    pub reactants: Vec<Term>,
    /// The left complex's span.
    pub reactants_span: Span,
    /// Right-hand side; empty for `0`.
    pub products: Vec<Term>,
    /// The right complex's span.
    pub products_span: Span,
    /// `<->` rather than `->`.
    pub reversible: bool,
    /// The arrow's span.
    pub arrow_span: Span,
    /// `@` or `@=`.
    pub rate_kind: RateKind,
    /// The rate expressions as written (one, or two for `<->`).
    pub rates: Vec<Expr>,
    /// The span of the rate part, from `@` to the end.
    pub rate_span: Span,
    /// The whole statement.
    pub span: Span,
    /// 1-based ordinal among the file's reaction statements (for generated names).
    pub ordinal: usize,
}

/// A statement of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `species ...`, `param ...`, `const ...`, `observable ...`
    Declarations(DeclKind, Vec<Declaration>),
    /// A reaction line.
    Reaction(Reaction),
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    /// The statements in order.
    pub statements: Vec<Statement>,
}
