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

/// Asks pest to record the literal tokens it expected where parsing failed (`=`, `,`, `)`), so that
/// syntax errors can say what was missing. The setting is process-wide and only ever turned on.
fn detailed_errors() {
    static ON: std::sync::Once = std::sync::Once::new();
    ON.call_once(|| pest::set_error_detail(true));
}

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
    detailed_errors();
    check_nesting(text)?;
    let mut pairs = RxnParser::parse(Rule::file, text).map_err(|e| syntax_error(text, e))?;
    check_expression_sizes(pairs.clone())?;
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
    detailed_errors();
    check_nesting(text)?;
    let mut pairs =
        RxnParser::parse(Rule::standalone_expr, text).map_err(|e| syntax_error(text, e))?;
    check_expression_sizes(pairs.clone())?;
    let top = pairs.next().expect("standalone_expr produces one pair");
    let e = top
        .into_inner()
        .next()
        .expect("standalone_expr holds an expr");
    Ok(expr(e))
}

/// The most parse-tree nodes one expression may have. The AST, the IR and the code generator are
/// recursive, so an expression with tens of thousands of nested parts (`((((...))))`,
/// `1+1+...+1`) would overflow the stack; this limit keeps any input well inside it while
/// leaving room for any rate law a person or a converter writes.
pub const MAX_EXPRESSION_NODES: usize = 2000;

/// The most nodes an expression may have once the constants and observables it uses are
/// substituted into it (the IR inlines them). Each use copies a whole definition, so a chain of
/// definitions that each use the previous one twice doubles at every step; without this limit
/// a few dozen lines exhausted memory. The symbolic derivatives of such an expression are larger
/// still, and the code generator's time grows with both.
pub const MAX_INLINED_NODES: usize = 20_000;

/// The most nodes all rates and observables together may have once constants and observables
/// are substituted: each definition within [`MAX_INLINED_NODES`], but thousands of them, would
/// still take gigabytes and minutes to compile (a chain of 1 000 observables, each the previous
/// one plus a species, comes to 1 M nodes; `rxnc simulate` on it took 0.2 s and 150 MB).
pub const MAX_COMPILED_NODES: usize = 5_000_000;

/// The deepest an expression may nest once constants and observables are substituted: the IR's
/// passes recurse, and this depth is within what the parser already allows one expression
/// ([`MAX_EXPRESSION_NODES`] nodes, so at most that deep).
pub const MAX_INLINED_DEPTH: usize = MAX_EXPRESSION_NODES;

/// The deepest nesting of parentheses allowed. The parser recurses on each level.
pub const MAX_NESTING: usize = 64;

/// Rejects parentheses nested more than [`MAX_NESTING`] deep, before the parser recurses into them.
fn check_nesting(text: &str) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => {
                depth = 0;
                in_comment = false;
            }
            '#' => in_comment = true,
            '(' if !in_comment => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::new(
                        "rxn::too_large",
                        format!("parentheses nest more than {MAX_NESTING} deep"),
                        Span::new(i, i + 1),
                        format!("level {depth}"),
                    )
                    .with_help(
                        "remove redundant parentheses, or split the expression into constants or observables",
                    ));
                }
            }
            ')' if !in_comment => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Rejects any expression with more than [`MAX_EXPRESSION_NODES`] nodes, without recursion.
fn check_expression_sizes(pairs: pest::iterators::Pairs<'_, Rule>) -> Result<(), Diagnostic> {
    // In pre-order, the nodes of an expression follow it and start before it ends.
    let mut top: Option<(usize, usize, usize)> = None;
    for p in pairs.flatten() {
        let span = p.as_span();
        match &mut top {
            Some((start, end, count)) if span.start() < *end => {
                *count += 1;
                if *count > MAX_EXPRESSION_NODES {
                    return Err(Diagnostic::new(
                        "rxn::too_large",
                        "this expression is too large to compile",
                        Span::new(*start, *end),
                        format!("more than {MAX_EXPRESSION_NODES} terms, operators and parentheses"),
                    )
                    .with_help(
                        "split it into constants or observables, each defined by a smaller expression",
                    ));
                }
            }
            _ if p.as_rule() == Rule::expr => top = Some((span.start(), span.end(), 0)),
            _ => {}
        }
    }
    Ok(())
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
            kind: ExprKind::Number {
                value: p.as_str().parse().unwrap_or(f64::INFINITY),
                integer: p.as_str().parse().ok(),
            },
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
            // The span takes in the parentheses (only spaces and tabs may stand between), so that
            // a diagnostic on an operation with a parenthesised operand underlines all of it:
            // `(a + b) * c`, not `a + b) * c`.
            let input = p.as_span().get_input();
            let open = input[..span.start].trim_end_matches([' ', '\t']).len() - 1;
            let after = &input[span.end..];
            let close = span.end + (after.len() - after.trim_start_matches([' ', '\t']).len()) + 1;
            let mut e = expr(p);
            e.span = Span::new(open, close);
            e
        }
        r => unreachable!("unexpected primary {r:?}"),
    }
}

fn rule_name(rule: &Rule) -> Option<&'static str> {
    Some(match rule {
        // Statements end at the end of a line, so the end of the input is the end of a line too.
        Rule::EOI => "end of line",
        Rule::ident | Rule::label => "a name",
        Rule::number => "a number",
        Rule::expr | Rule::expr_list => "an expression",
        Rule::coeff => "a coefficient",
        Rule::term | Rule::complex => "a species or 0",
        Rule::arrow | Rule::reversible | Rule::irreversible => "`->` or `<->`",
        Rule::rate | Rule::mass_action | Rule::full_rate => "`@ rate` or `@= propensity`",
        Rule::bounds | Rule::kw_in => "`in [lo, hi]`",
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

/// Literal tokens worth naming in "expected ..." (pest reports them only with error detail on).
fn literal_name(token: &str) -> Option<&'static str> {
    Some(match token {
        "=" => "`=`",
        "," => "`,`",
        ")" => "`)`",
        "]" => "`]`",
        "[" => "`[`",
        "\n" | "\r\n" | "\r" => "end of line",
        _ => return None,
    })
}

/// A character as diagnostics show it: quoted, or as its code point when it would not print.
fn show_char(c: char) -> String {
    if c.is_control() || (c.is_whitespace() && c != ' ') || c == '\u{feff}' {
        format!("character U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

/// Characters that can appear in a `.rxn` file outside comments.
fn is_language_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || "_#+-*/^(),=@:<>[].".contains(c)
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let rule_pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let rule_names: Vec<&str> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            positives.iter().filter_map(rule_name).collect()
        }
        ErrorVariant::CustomError { .. } => vec![],
    };
    // pest places the error where a rule last failed; a literal such as `=` or `)` can fail
    // further on (`param k 1` fails at `1`, which wanted `=`). Prefer that place when it names
    // something useful.
    let literals_at = |at: usize| -> Vec<&'static str> {
        e.parse_attempts()
            .filter(|a| a.max_position == at)
            .map(|a| {
                a.expected_tokens()
                    .iter()
                    // `ParsingToken` is not exported; its display is the token itself.
                    .filter_map(|t| literal_name(&t.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let furthest = e.parse_attempts().map_or(rule_pos, |a| a.max_position);
    let (pos, mut expected) = if furthest > rule_pos && !literals_at(furthest).is_empty() {
        (furthest, literals_at(furthest))
    } else {
        let mut names = rule_names;
        names.extend(literals_at(rule_pos));
        (rule_pos, names)
    };
    // Where a number can start, an expression can: say so rather than list its pieces.
    if expected.contains(&"a number") {
        expected.retain(|n| !matches!(*n, "a number" | "a name" | "a sign" | "a function call"));
        expected.push("an expression");
    }
    expected.sort_unstable();
    expected.dedup();
    let pos = pos.min(text.len());
    // An error at the end of a line that ends in a comment (`A -> 0 # @ 1`) is placed where the
    // code ends, not after the comment (`#` always starts one: the language has no strings).
    let pos = {
        let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
        let before = &text[line_start..pos];
        match before.find('#') {
            Some(hash) if text[pos..].starts_with(['\n', '\r']) || pos == text.len() => {
                line_start + before[..hash].trim_end().len()
            }
            _ => pos,
        }
    };
    let rest: &str = text[pos..].split(['\n', '\r']).next().unwrap_or("");
    // Only a comment left: the line has ended.
    let first = rest
        .chars()
        .next()
        .filter(|_| !rest.trim_start().starts_with('#'));
    let found_token: String = match first {
        None => "end of line".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let w: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            format!("`{w}`")
        }
        Some(c) => show_char(c),
    };
    let end = pos + first.map_or(0, char::len_utf8);
    let expected_text = match expected.len() {
        0 => String::new(),
        1 => expected[0].to_string(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let label = if expected_text.is_empty() {
        "unexpected here".to_string()
    } else {
        format!("expected {expected_text}")
    };
    if let ErrorVariant::CustomError { message } = &e.variant {
        // pest stops before its own stack runs out on absurdly deep nesting.
        return Diagnostic::new(
            "rxn::too_large",
            "the text nests too deeply to parse",
            Span::new(pos, end),
            format!("parsing stopped here ({message})"),
        )
        .with_help("use fewer nested parentheses or signs; split the expression into constants or observables");
    }
    let hint = syntax_help(text, pos, &expected, first);
    let mut d = Diagnostic::new(
        "rxn::syntax",
        format!("syntax error: unexpected {found_token}"),
        Span::new(pos, end),
        label,
    );
    if let Some((span, label)) = hint.label {
        d = d.with_label(span, label);
    }
    if let Some(h) = hint.help {
        d = d.with_help(h);
    }
    d
}

/// Advice on a syntax error: a help line and perhaps a second place to point at.
#[derive(Default)]
struct Hint {
    help: Option<String>,
    label: Option<(Span, String)>,
}

impl Hint {
    fn help(text: impl Into<String>) -> Hint {
        Hint {
            help: Some(text.into()),
            label: None,
        }
    }
}

const DECLARATION_KEYWORDS: [&str; 4] = ["species", "param", "const", "observable"];

/// A hint for the commonest slips, judged from the line the error is on, what was expected and
/// what was found (`None` at the end of the line, a trailing comment included).
fn syntax_help(text: &str, pos: usize, expected: &[&str], found: Option<char>) -> Hint {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let full_line = &text[line_start..line_end];
    let line = full_line
        .split('#')
        .next()
        .unwrap_or("")
        .trim_end_matches('\r');
    let before = &text[line_start..pos];
    let rest = &text[pos..line_end];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let prev = before.trim_end().chars().last();
    let first_word: String = line
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let is_declaration = DECLARATION_KEYWORDS.contains(&first_word.as_str());
    let has_arrow = line.contains("->");

    // Arrows from other tools.
    let arrow_like = [
        "=>", "<=>", "<-", "-->", "→", "⟶", "⇌", "↔", "⇄", "⟷", "=", "<>",
    ];
    if expected.contains(&"`->` or `<->`") && arrow_like.iter().any(|a| rest.starts_with(a)) {
        return Hint::help(
            "reaction arrows are `->` (one-way) and `<->` (reversible, with two rates)",
        );
    }
    // A number that runs into letters: `1.5x`, `1e`.
    if !before.is_empty()
        && !word.is_empty()
        && word.chars().next().is_some_and(char::is_alphabetic)
    {
        let number_before: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let starts_number = number_before.chars().any(|c| c.is_ascii_digit())
            && before[..before.len() - number_before.len()]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if starts_number {
            let number: String = number_before.chars().rev().collect();
            if word.len() == 1 && word.eq_ignore_ascii_case("e") {
                return Hint::help(format!(
                    "an exponent needs digits: `{number}e3` or `{number}e-3`"
                ));
            }
            if !has_arrow || prev != Some('@') {
                return Hint::help(format!(
                    "a number cannot run into a name; to multiply, write `{number} * {word}`"
                ));
            }
        }
    }
    // Parentheses.
    let mut open: Vec<usize> = Vec::new();
    for (i, c) in before.char_indices() {
        match c {
            '(' => open.push(line_start + i),
            ')' => {
                open.pop();
            }
            _ => {}
        }
    }
    if found == Some(')') && open.is_empty() {
        return Hint::help("this `)` has no matching `(`; remove it or add the `(` it closes");
    }
    if expected.contains(&"`)`")
        && let Some(&at) = open.last()
    {
        return Hint {
            help: Some("close the parenthesis with `)`".to_string()),
            label: Some((Span::new(at, at + 1), "this `(` is not closed".to_string())),
        };
    }
    // Characters that are not part of the language.
    if let Some(c) = found.filter(|c| !is_language_char(*c)) {
        let extra = if c == ';' {
            "; statements end at the end of the line"
        } else if c.is_alphabetic() {
            "; names use the letters A-Z and a-z, digits and `_`"
        } else {
            ""
        };
        return Hint::help(format!(
            "{} is not part of the .rxn language outside comments (which start with `#`){extra}",
            show_char(c)
        ));
    }
    // A misspelt keyword: `specie A = 1`.
    if !is_declaration
        && !has_arrow
        && !first_word.is_empty()
        && let Some(k) = crate::diagnostics::closest(&first_word, DECLARATION_KEYWORDS)
    {
        return Hint::help(format!(
            "did you mean `{k}`? Declarations start with `species`, `param`, `const` or `observable`"
        ));
    }
    if is_declaration {
        let example = match first_word.as_str() {
            "species" => "species A = 10, B",
            "param" => "param k = 0.5 in [0.01, 10], K = 2",
            "const" => "const kd = 1, kf = 2 * kd",
            _ => "observable total = A + B",
        };
        let what = match first_word.as_str() {
            "species" => "a species",
            "param" => "a parameter",
            "const" => "a constant",
            _ => "an observable",
        };
        let in_bounds = before
            .rfind('[')
            .is_some_and(|b| !before[b..].contains(']'));
        let specific = if in_bounds && first_word == "param" {
            "bounds are two values in brackets: `in [lo, hi]`. ".to_string()
        } else if word == "in" && first_word != "param" {
            let value = match first_word.as_str() {
                "species" => "a species' value is its initial count",
                "const" => "a constant is fixed",
                _ => "an observable is an expression",
            };
            format!("only parameters take bounds (`param k = 1 in [0, 2]`); {value}. ")
        } else if found == Some('(') && before.trim_end().ends_with(" in") {
            "bounds are written in square brackets: `in [lo, hi]`. ".to_string()
        } else if expected == ["`=`"] {
            format!("{what} needs a value: `{first_word} name = value`. ")
        } else if found.is_none() && prev == Some(',') {
            "remove the trailing comma, or add another item after it. ".to_string()
        } else if !word.is_empty() && expected.contains(&"`,`") {
            "separate the items with commas. ".to_string()
        } else {
            String::new()
        };
        return Hint::help(format!(
            "{specific}A declaration lists items separated by commas, for example `{example}`"
        ));
    }
    if has_arrow && !line.contains('@') {
        return Hint::help(
            "every reaction needs a rate: `A -> B @ k` (mass action) or `A -> B @= expr` (the whole propensity)",
        );
    }
    if expected.contains(&"a species or 0") {
        return Hint::help(
            "each side of a reaction lists species with optional coefficients (`A + 2 B`); write `0` for an empty side",
        );
    }
    if expected.contains(&"an expression") {
        if let Some(op) = prev.filter(|c| "+-*/^".contains(*c)) {
            return Hint::help(format!("`{op}` needs an operand after it"));
        }
        if prev == Some('@') || before.trim_end().ends_with("@=") {
            return Hint::help(
                "write the rate after `@` (mass action: `A -> B @ k`) or `@=` (the whole propensity)",
            );
        }
    }
    if has_arrow && word == "in" {
        return Hint::help(
            "bounds belong to a parameter's declaration: `param k = 0.5 in [0, 1]`, then `A -> 0 @ k`",
        );
    }
    if has_arrow && !word.is_empty() && expected.contains(&"an operator") {
        return Hint::help(
            "to multiply, write `*`; each reaction or declaration goes on a line of its own",
        );
    }
    if line.contains('@') && !has_arrow {
        return Hint::help(
            "a reaction is `reactants -> products @ rate`; write `0` for an empty side",
        );
    }
    Hint::help(
        "each line is a declaration (`species`, `param`, `const`, `observable`) or a reaction \
         such as `A + B -> C @ k`; see docs/language.md",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Number { value, .. } => format!("{value}"),
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
