//! Syntax: the pest grammar (`grammar/rxn.pest`) and the AST it is turned into.

pub mod ast;

use crate::diagnostics::Diagnostic;
use ast::*;
use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::LazyLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/rxn.pest"]
struct RxnParser;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
        .op(Op::prefix(Rule::neg) | Op::prefix(Rule::plus))
        .op(Op::infix(Rule::pow, Assoc::Right))
});

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span_of(&pair),
    }
}

/// Parses a whole file. A syntax error stops parsing (the checker reports semantic errors all at once).
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    let mut pairs = RxnParser::parse(Rule::file, text).map_err(|e| syntax_error(text, e))?;
    let file = pairs
        .next()
        .expect("the file rule always produces one pair");
    let mut statements = Vec::new();
    let mut ordinal = 0;
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::species_decl => statements.push(declarations(DeclKind::Species, pair)),
            Rule::param_decl => statements.push(declarations(DeclKind::Param, pair)),
            Rule::const_decl => statements.push(declarations(DeclKind::Const, pair)),
            Rule::observable_decl => statements.push(declarations(DeclKind::Observable, pair)),
            Rule::reaction => {
                ordinal += 1;
                statements.push(Statement::Reaction(reaction(pair, ordinal)));
            }
            _ => {}
        }
    }
    Ok(File { statements })
}

/// Parses a single expression (used for objectives given on the command line).
pub fn parse_expr(text: &str) -> Result<Expr, Diagnostic> {
    let mut pairs =
        RxnParser::parse(Rule::standalone_expr, text).map_err(|e| syntax_error(text, e))?;
    let top = pairs.next().expect("standalone_expr produces one pair");
    let e = top
        .into_inner()
        .next()
        .expect("standalone_expr holds an expr");
    Ok(expr(e))
}

fn declarations(kind: DeclKind, pair: Pair<'_, Rule>) -> Statement {
    let items = pair
        .into_inner()
        .filter(|item| {
            matches!(
                item.as_rule(),
                Rule::species_item | Rule::param_item | Rule::named_expr
            )
        })
        .map(|item| {
            let span = span_of(&item);
            let mut inner = item.into_inner();
            let name = ident(inner.next().expect("declaration starts with a name"));
            let mut value = None;
            let mut bounds = None;
            for p in inner {
                match p.as_rule() {
                    Rule::expr => value = Some(expr(p)),
                    Rule::bounds => {
                        let mut b = p.into_inner().filter(|x| x.as_rule() == Rule::expr);
                        let lo = expr(b.next().expect("bounds have lo"));
                        let hi = expr(b.next().expect("bounds have hi"));
                        bounds = Some((lo, hi));
                    }
                    _ => {}
                }
            }
            Declaration {
                name,
                value,
                bounds,
                span,
            }
        })
        .collect();
    Statement::Declarations(kind, items)
}

fn complex(pair: Pair<'_, Rule>) -> Vec<Term> {
    pair.into_inner()
        .filter(|p| p.as_rule() == Rule::term)
        .map(|t| {
            let mut coeff = None;
            let mut species = None;
            for p in t.into_inner() {
                match p.as_rule() {
                    // A coefficient too large for u64 is kept as u64::MAX and rejected by the checker.
                    Rule::coeff => {
                        coeff = Some((p.as_str().parse().unwrap_or(u64::MAX), span_of(&p)))
                    }
                    _ => species = Some(ident(p)),
                }
            }
            Term {
                coeff,
                species: species.expect("a term names a species"),
            }
        })
        .collect()
}

fn reaction(pair: Pair<'_, Rule>, ordinal: usize) -> Reaction {
    let span = span_of(&pair);
    let mut label = None;
    let mut sides = Vec::new();
    let mut reversible = false;
    let mut arrow_span = Span::default();
    let mut rate_kind = RateKind::MassAction;
    let mut rates = Vec::new();
    let mut rate_span = Span::default();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::label => label = Some(ident(p.into_inner().next().expect("label holds a name"))),
            Rule::complex => sides.push((span_of(&p), complex(p))),
            Rule::arrow => {
                arrow_span = span_of(&p);
                reversible = p.into_inner().next().map(|a| a.as_rule()) == Some(Rule::reversible);
            }
            Rule::rate => {
                rate_span = span_of(&p);
                let r = p.into_inner().next().expect("rate has a kind");
                rate_kind = if r.as_rule() == Rule::full_rate {
                    RateKind::Full
                } else {
                    RateKind::MassAction
                };
                let list = r.into_inner().next().expect("rate has an expression list");
                rates = list.into_inner().map(expr).collect();
            }
            _ => {}
        }
    }
    let (products_span, products) = sides.pop().expect("a reaction has a right side");
    let (reactants_span, reactants) = sides.pop().expect("a reaction has a left side");
    Reaction {
        label,
        reactants,
        reactants_span,
        products,
        products_span,
        reversible,
        arrow_span,
        rate_kind,
        rates,
        rate_span,
        span,
        ordinal,
    }
}

fn expr(pair: Pair<'_, Rule>) -> Expr {
    PRATT
        .map_primary(|p| primary(p))
        .map_prefix(|op, rhs| {
            let span = span_of(&op).join(rhs.span);
            match op.as_rule() {
                Rule::neg => Expr {
                    kind: ExprKind::Unary(UnaryOp::Neg, Box::new(rhs)),
                    span,
                },
                _ => Expr {
                    kind: rhs.kind,
                    span,
                },
            }
        })
        .map_infix(|lhs, op, rhs| {
            let span = lhs.span.join(rhs.span);
            let op = match op.as_rule() {
                Rule::add => BinaryOp::Add,
                Rule::sub => BinaryOp::Sub,
                Rule::mul => BinaryOp::Mul,
                Rule::div => BinaryOp::Div,
                _ => BinaryOp::Pow,
            };
            Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            }
        })
        .parse(pair.into_inner())
}

fn primary(p: Pair<'_, Rule>) -> Expr {
    let span = span_of(&p);
    match p.as_rule() {
        // Overflowing literals become inf; the checker rejects non-finite numbers with a diagnostic.
        Rule::number => Expr {
            kind: ExprKind::Number(p.as_str().parse().unwrap_or(f64::INFINITY)),
            span,
        },
        Rule::ident => Expr {
            kind: ExprKind::Name(ident(p)),
            span,
        },
        Rule::call => {
            let mut inner = p.into_inner();
            let f = ident(inner.next().expect("call has a name"));
            Expr {
                kind: ExprKind::Call(f, inner.map(expr).collect()),
                span,
            }
        }
        Rule::expr => {
            let mut e = expr(p);
            e.span = span; // include nothing more: parentheses are not part of the inner span
            e
        }
        r => unreachable!("unexpected primary {r:?}"),
    }
}

fn rule_name(rule: &Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::ident | Rule::label => "a name",
        Rule::number => "a number",
        Rule::expr | Rule::expr_list => "an expression",
        Rule::coeff => "a coefficient",
        Rule::term | Rule::complex => "a species or 0",
        Rule::arrow | Rule::reversible | Rule::irreversible => "`->` or `<->`",
        Rule::rate | Rule::mass_action | Rule::full_rate => "`@ rate` or `@= propensity`",
        Rule::bounds => "`in [lo, hi]`",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::pow => "an operator",
        Rule::neg | Rule::plus => "a sign",
        Rule::call => "a function call",
        Rule::species_decl
        | Rule::param_decl
        | Rule::const_decl
        | Rule::observable_decl
        | Rule::reaction => "a declaration or a reaction",
        Rule::species_item | Rule::param_item | Rule::named_expr => "a name",
        _ => return None,
    })
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found: String = text[pos..].chars().take_while(|c| *c != '\n').collect();
    let found_token: String = match found.chars().next() {
        None => "end of line".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let w: String = found
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            format!("`{w}`")
        }
        Some(c) => format!("`{c}`"),
    };
    let end = pos + found.chars().next().map_or(0, |c| c.len_utf8());
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(rule_name).collect();
            names.sort_unstable();
            names.dedup();
            names
        }
        ErrorVariant::CustomError { .. } => vec![],
    };
    let expected_text = match expected.len() {
        0 => String::new(),
        1 => expected[0].to_string(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let label = if expected_text.is_empty() {
        "unexpected".to_string()
    } else {
        format!("expected {expected_text}")
    };
    let help = syntax_help(text, pos);
    let mut d = Diagnostic::new(
        "rxn::syntax",
        format!("syntax error: unexpected {found_token}"),
        Span::new(pos, end.max(pos)),
        label,
    );
    if let Some(h) = help {
        d = d.with_help(h);
    }
    d
}

/// A hint for the commonest slips, judged from the line the error is on.
fn syntax_help(text: &str, pos: usize) -> Option<String> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = text[line_start..line_end].split('#').next().unwrap_or("");
    let trimmed = line.trim_start();
    let first_word: String = trimmed
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ["species", "param", "const", "observable"].contains(&first_word.as_str()) {
        return Some(format!(
            "declarations are `{first_word} name = value` items separated by commas{}",
            if first_word == "param" {
                ", optionally with `in [lo, hi]` bounds"
            } else {
                ""
            }
        ));
    }
    if line.contains("->") && !line.contains('@') {
        return Some("every reaction needs a rate: `A -> B @ k` (mass action) or `A -> B @= expr` (full propensity)".into());
    }
    if line.contains("=>") || line.contains("<=>") {
        return Some("reaction arrows are `->` and `<->`".into());
    }
    if line.contains('@') && !line.contains("->") {
        return Some(
            "a reaction is `reactants -> products @ rate`; write `0` for an empty side".into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Number(v) => format!("{v}"),
            ExprKind::Name(n) => n.name.clone(),
            ExprKind::Unary(_, a) => format!("(-{})", show(a)),
            ExprKind::Binary(op, a, b) => format!("({} {:?} {})", show(a), op, show(b)),
            ExprKind::Call(f, args) => {
                format!(
                    "{}({})",
                    f.name,
                    args.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            }
        }
    }

    fn check_expr(src: &str, expect: &str) {
        assert_eq!(show(&parse_expr(src).unwrap()), expect, "{src}");
    }

    #[test]
    fn precedence() {
        check_expr("-x^2", "(-(x Pow 2))");
        check_expr("2^3^2", "(2 Pow (3 Pow 2))");
        check_expr("a - b - c", "((a Sub b) Sub c)");
        check_expr("a + b * c", "(a Add (b Mul c))");
        check_expr("-a * b", "((-a) Mul b)");
        check_expr("hill(x, K, 2) / (1 + y)", "(hill(x, K, 2) Div (1 Add y))");
        check_expr("1e-3 * .5", "(0.001 Mul 0.5)");
    }
}
