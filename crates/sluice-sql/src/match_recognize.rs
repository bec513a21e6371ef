//! `MATCH_RECOGNIZE`: from sqlparser's syntax to what the operator runs.
//!
//! A query's `MATCH_RECOGNIZE` clauses are taken out of it after parsing and replaced by the
//! names of match relations (as window table functions are), so that DataFusion plans the rest
//! of the query over plain relations; the planner adds the operator where a match relation is
//! scanned. sqlparser does not read Flink's `WITHIN INTERVAL ...` after the pattern: its tokens
//! are moved into the `DEFINE` list under a reserved name before parsing.
//!
//! Compiling checks what Flink checks (unique variables, no alternation or groups, no greedy
//! quantifier last, no pattern that matches nothing, `PREV`/`NEXT` refused, `ORDER BY` the time
//! attribute first and ascending), builds the automaton, and turns each `DEFINE` condition and
//! measure into a DataFusion expression over the input's columns plus one column per
//! navigation term (see [`crate::operators::match_recognize`]).

use crate::catalog::{analyze, df_error, parser_options, Catalog};
use crate::operators::match_recognize::{AggArg, AggKind, Term};
use crate::operators::nfa::{Element, Program, Skip, Var};
use crate::parser::{err_at, matching_paren, opening_paren, word_is};
use crate::types::LTZ_ZONE;
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_common::{DFSchema, DFSchemaRef};
use datafusion_expr::logical_plan::builder::LogicalTableSource;
use datafusion_expr::{ExprSchemable, LogicalPlan, LogicalPlanBuilder};
use datafusion_sql::planner::{PlannerContext, SqlToRel};
use sluice_common::{Result, SluiceError};
use sqlparser::ast::{
    AfterMatchSkip, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    MatchRecognizePattern, MatchRecognizeSymbol, Measure, OrderByExpr, Query, RepetitionQuantifier,
    RowsPerMatch, SymbolDefinition, TableFactor, Value, VisitMut, VisitorMut,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Span, Token, TokenWithSpan};
use std::ops::ControlFlow;
use std::sync::Arc;

/// The `DEFINE` name `WITHIN`'s interval is carried under through sqlparser.
const WITHIN_SYMBOL: &str = "__sluice_within";

/// A `MATCH_RECOGNIZE` clause taken out of a query.
#[derive(Debug, Clone)]
pub struct MatchRecognizeSpec {
    /// The rows it reads: `SELECT * FROM table`, or the subquery it was applied to.
    pub input: Box<Query>,
    pub partition_by: Vec<Expr>,
    pub order_by: Vec<OrderByExpr>,
    pub measures: Vec<Measure>,
    pub rows_per_match: Option<RowsPerMatch>,
    pub after_match_skip: Option<AfterMatchSkip>,
    pub pattern: MatchRecognizePattern,
    pub symbols: Vec<SymbolDefinition>,
    /// `WITHIN INTERVAL ...`.
    pub within: Option<Expr>,
}

/// A match relation, planned: what the planner needs to add the operator.
#[derive(Debug, Clone)]
pub struct MatchRelation {
    /// The input, planned.
    pub input: LogicalPlan,
    pub partition: Vec<usize>,
    /// The time attribute (the first `ORDER BY` column).
    pub time_index: usize,
    /// Whether it is a processing-time attribute (`PROCTIME()`): rows are matched as they
    /// arrive.
    pub proctime: bool,
    /// The other `ORDER BY` columns.
    pub order: Vec<(usize, SortOptions)>,
    pub program: Program,
    /// Each variable's condition (`None`: true), over [`TermExprPlan::schema`].
    pub defines: Vec<Option<TermExprPlan>>,
    pub measures: Vec<TermExprPlan>,
    /// The partition columns, then the measures.
    pub schema: SchemaRef,
    /// The measure that is `MATCH_ROWTIME()`, as an index into `schema`: the output's time
    /// attribute.
    pub rowtime: Option<usize>,
}

/// A condition or measure as a logical expression over the input's columns and its terms.
#[derive(Debug, Clone)]
pub struct TermExprPlan {
    pub expr: datafusion_expr::Expr,
    pub schema: DFSchemaRef,
    pub terms: Vec<Term>,
    /// The arguments of aggregates over expressions, each over the input's columns.
    pub agg_args: Vec<(datafusion_expr::Expr, DFSchemaRef)>,
}

fn plan_err(message: impl Into<String>) -> SluiceError {
    SluiceError::Plan(format!("MATCH_RECOGNIZE: {}", message.into()))
}

/// An error at `span` when the parser gave it one, else at the statement.
fn plan_err_at(span: Span, message: impl Into<String>) -> SluiceError {
    if span.start.line == 0 {
        return plan_err(message);
    }
    err_at(span.start, format!("MATCH_RECOGNIZE: {}", message.into()))
}

/// The placeholder a subquery before `MATCH_RECOGNIZE` is replaced by.
const INPUT_PREFIX: &str = "__sluice_match_input_";

/// Token rewrites before sqlparser reads a query: `PATTERN (...) WITHIN INTERVAL ...` moves
/// into the `DEFINE` list, and a subquery before `MATCH_RECOGNIZE` (sqlparser reads the
/// clause only after a table name) is replaced by a placeholder name, its tokens kept in
/// `inputs`.
pub fn prepare(
    tokens: Vec<TokenWithSpan>,
    inputs: &mut Vec<Vec<TokenWithSpan>>,
) -> Result<Vec<TokenWithSpan>> {
    let mut tokens = move_within(tokens)?;
    // `FINAL f(...)` and `RUNNING f(...)` (the same in ONE ROW PER MATCH) read as `f(...)`;
    // `AFTER MATCH SKIP TO v` is `SKIP TO LAST v`.
    let mut i = 0;
    while i + 2 < tokens.len() {
        let next_is_call =
            matches!(tokens[i + 1].token, Token::Word(_)) && tokens[i + 2].token == Token::LParen;
        if (word_is(tokens.get(i), "FINAL") || word_is(tokens.get(i), "RUNNING")) && next_is_call {
            tokens.remove(i);
            continue;
        }
        if word_is(tokens.get(i), "SKIP")
            && word_is(tokens.get(i + 1), "TO")
            && !["FIRST", "LAST", "NEXT"]
                .iter()
                .any(|w| word_is(tokens.get(i + 2), w))
        {
            let span = tokens[i + 1].span;
            tokens.insert(
                i + 2,
                TokenWithSpan {
                    token: Token::make_keyword("LAST"),
                    span,
                },
            );
        }
        i += 1;
    }
    let mut i = 1;
    while i < tokens.len() {
        if !(tokens[i - 1].token == Token::RParen && word_is(tokens.get(i), "MATCH_RECOGNIZE")) {
            i += 1;
            continue;
        }
        let close = i - 1;
        let Some(open) = opening_paren(&tokens, close) else {
            return Err(err_at(
                tokens[close].span.start,
                "unbalanced parentheses before MATCH_RECOGNIZE",
            ));
        };
        let inner: Vec<TokenWithSpan> = tokens[open + 1..close].to_vec();
        let span = tokens[open].span;
        tokens.splice(
            open..=close,
            [TokenWithSpan {
                token: Token::make_word(&format!("{INPUT_PREFIX}{}", inputs.len()), None),
                span,
            }],
        );
        inputs.push(inner);
        i = open + 2;
    }
    Ok(tokens)
}

/// Moves `PATTERN (...) WITHIN INTERVAL ...` into the `DEFINE` list, where sqlparser reads it.
fn move_within(mut tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let mut i = 0;
    while i < tokens.len() {
        if !(word_is(tokens.get(i), "PATTERN")
            && tokens.get(i + 1).map(|t| &t.token) == Some(&Token::LParen))
        {
            i += 1;
            continue;
        }
        let Some(close) = matching_paren(&tokens, i + 1) else {
            return Err(err_at(
                tokens[i].span.start,
                "unbalanced parentheses in PATTERN (...)",
            ));
        };
        if !word_is(tokens.get(close + 1), "WITHIN") {
            i = close;
            continue;
        }
        let within_at = close + 1;
        let Some(define) = (within_at..tokens.len()).find(|&j| word_is(tokens.get(j), "DEFINE"))
        else {
            return Err(err_at(
                tokens[within_at].span.start,
                "expected DEFINE after PATTERN (...) WITHIN INTERVAL ...",
            ));
        };
        let interval: Vec<TokenWithSpan> = tokens[within_at + 1..define].to_vec();
        if interval.is_empty() {
            return Err(err_at(
                tokens[within_at].span.start,
                "expected an interval after WITHIN",
            ));
        }
        let span = tokens[within_at].span;
        let mut moved = vec![
            TokenWithSpan {
                token: Token::make_word(WITHIN_SYMBOL, None),
                span,
            },
            TokenWithSpan {
                token: Token::make_keyword("AS"),
                span,
            },
        ];
        moved.extend(interval);
        moved.push(TokenWithSpan {
            token: Token::Comma,
            span,
        });
        // Remove `WITHIN ...` and insert after DEFINE (the positions after it shift by the
        // removed length).
        let removed = define - within_at;
        tokens.drain(within_at..define);
        let at = define - removed + 1;
        tokens.splice(at..at, moved);
        i = at;
    }
    Ok(tokens)
}

fn relation_name(n: usize) -> String {
    format!("__sluice_match_{n}")
}

/// Replaces every `MATCH_RECOGNIZE` in `query` (innermost first) by a match relation;
/// returns them by name.
pub fn extract(
    query: &mut Query,
    counter: &mut usize,
    inputs: &[Vec<TokenWithSpan>],
    out: &mut Vec<(String, MatchRecognizeSpec)>,
) -> Result<()> {
    struct Extractor<'a> {
        counter: &'a mut usize,
        inputs: &'a [Vec<TokenWithSpan>],
        out: &'a mut Vec<(String, MatchRecognizeSpec)>,
        error: Option<SluiceError>,
    }
    impl VisitorMut for Extractor<'_> {
        type Break = ();
        fn post_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            if !matches!(tf, TableFactor::MatchRecognize { .. }) {
                return ControlFlow::Continue(());
            }
            let name = relation_name(*self.counter);
            *self.counter += 1;
            let taken = take_match(tf, &name, self.inputs).and_then(|mut spec| {
                // A subquery input was parsed apart: its own clauses come first.
                extract(&mut spec.input, self.counter, self.inputs, self.out)?;
                Ok(spec)
            });
            match taken {
                Ok(spec) => {
                    self.out.push((name, spec));
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    self.error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut x = Extractor {
        counter,
        inputs,
        out,
        error: None,
    };
    let _ = query.visit(&mut x);
    match x.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn parse_query(sql: &str) -> Result<Box<Query>> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| SluiceError::Plan(format!("internal: {e}")))
}

/// Takes the `MATCH_RECOGNIZE` out of `tf`, leaving a scan of the relation `name`.
fn take_match(
    tf: &mut TableFactor,
    name: &str,
    inputs: &[Vec<TokenWithSpan>],
) -> Result<MatchRecognizeSpec> {
    let mut scan = parse_query(&format!("SELECT * FROM {name}"))?;
    let sqlparser::ast::SetExpr::Select(select) = scan.body.as_mut() else {
        return Err(SluiceError::Plan(
            "internal: a scan that is not a SELECT".into(),
        ));
    };
    let mut replacement = select.from.remove(0).relation;
    let TableFactor::MatchRecognize {
        table,
        partition_by,
        order_by,
        measures,
        rows_per_match,
        after_match_skip,
        pattern,
        mut symbols,
        alias,
    } = std::mem::replace(tf, replacement.clone())
    else {
        return Err(SluiceError::Plan("internal: not a MATCH_RECOGNIZE".into()));
    };
    if let TableFactor::Table { alias: a, .. } = &mut replacement {
        *a = alias;
    }
    *tf = replacement;
    let input = match *table {
        TableFactor::Table { name, .. } => {
            let placeholder = name.to_string();
            match placeholder
                .strip_prefix(INPUT_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| inputs.get(n))
            {
                Some(tokens) => Parser::new(&GenericDialect {})
                    .with_tokens_with_locations(tokens.clone())
                    .parse_query()
                    .map_err(|e| SluiceError::Plan(format!("MATCH_RECOGNIZE input: {e}")))?,
                None => parse_query(&format!("SELECT * FROM {placeholder}"))?,
            }
        }
        TableFactor::Derived { subquery, .. } => subquery,
        other => {
            return Err(SluiceError::Plan(format!(
                "MATCH_RECOGNIZE reads a table, a view or a subquery, not {other}"
            )))
        }
    };
    let within = symbols
        .iter()
        .position(|s| s.symbol.value == WITHIN_SYMBOL)
        .map(|i| symbols.remove(i).definition);
    Ok(MatchRecognizeSpec {
        input,
        partition_by,
        order_by,
        measures,
        rows_per_match,
        after_match_skip,
        pattern,
        symbols,
        within,
    })
}

/// The pattern's elements, in order, checked as Flink checks them.
fn elements(pattern: &MatchRecognizePattern, vars: &mut Vec<String>) -> Result<Vec<Element>> {
    fn one(
        p: &MatchRecognizePattern,
        vars: &mut Vec<String>,
        out: &mut Vec<Element>,
    ) -> Result<()> {
        use MatchRecognizePattern as P;
        let add = |name: &Ident, vars: &mut Vec<String>| -> Result<Var> {
            if vars.iter().any(|v| v == &name.value) {
                return Err(plan_err_at(name.span, format!(
                    "pattern variable {} appears twice; as in Flink, pattern variables must be unique",
                    name.value
                )));
            }
            vars.push(name.value.clone());
            Ok(vars.len() - 1)
        };
        match p {
            P::Symbol(MatchRecognizeSymbol::Named(name)) => {
                let var = add(name, vars)?;
                out.push(Element {
                    var,
                    min: 1,
                    max: Some(1),
                    greedy: true,
                });
            }
            P::Concat(parts) => {
                for part in parts {
                    one(part, vars, out)?;
                }
            }
            P::Repetition(inner, q) => {
                // sqlparser reads `A*?` as `?` applied to `A*`: the reluctant form.
                let (inner, q, reluctant) = match inner.as_ref() {
                    P::Repetition(i2, q2) if *q == RepetitionQuantifier::AtMostOne => {
                        (i2.as_ref(), q2, true)
                    }
                    _ => (inner.as_ref(), q, false),
                };
                let P::Symbol(MatchRecognizeSymbol::Named(name)) = inner else {
                    return Err(plan_err(format!(
                        "a quantifier on {inner}: as in Flink, quantifiers apply to one variable (group patterns are not supported)"
                    )));
                };
                let (min, max) = match q {
                    RepetitionQuantifier::ZeroOrMore => (0, None),
                    RepetitionQuantifier::OneOrMore => (1, None),
                    RepetitionQuantifier::AtMostOne => (0, Some(1)),
                    RepetitionQuantifier::Exactly(n) => (*n, Some(*n)),
                    RepetitionQuantifier::AtLeast(n) => (*n, None),
                    RepetitionQuantifier::AtMost(m) => (0, Some(*m)),
                    RepetitionQuantifier::Range(n, m) => (*n, Some(*m)),
                };
                if max == Some(0) || max.is_some_and(|m| m < min) {
                    return Err(plan_err(format!(
                        "the quantifier {q} of {name} matches nothing"
                    )));
                }
                if min == 0 && max.is_some_and(|m| m > 1) {
                    return Err(plan_err(format!(
                        "{name}{q}: as in Flink, a range must start at 1 or more (use {name}? or {name}*)"
                    )));
                }
                if reluctant && min == 0 && max == Some(1) {
                    return Err(plan_err(format!(
                        "{name}??: as in Flink, reluctant optional variables are not supported"
                    )));
                }
                let var = add(name, vars)?;
                out.push(Element {
                    var,
                    min,
                    max,
                    greedy: !reluctant,
                });
            }
            P::Alternation(_) => {
                return Err(plan_err(format!(
                    "{p}: as in Flink, alternatives (A | B) are not supported in a pattern"
                )))
            }
            P::Group(inner) => one(inner, vars, out)?,
            P::Permute(_) => return Err(plan_err("PERMUTE is not supported, as in Flink")),
            P::Exclude(_) => return Err(plan_err("{- ... -} is not supported, as in Flink")),
            P::Symbol(_) => {
                return Err(plan_err(
                    "^ and $ are not supported in a pattern, as in Flink",
                ))
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    one(pattern, vars, &mut out)?;
    // Flink's pattern API: `?` and `*` (its `optional()`) may not follow a greedy quantifier.
    for pair in out.windows(2) {
        let (before, e) = (&pair[0], &pair[1]);
        let greedy = before.greedy
            && before.max != Some(before.min)
            && !(before.min == 0 && before.max == Some(1));
        let optional_call = e.min == 0 && matches!(e.max, None | Some(1));
        if greedy && optional_call {
            return Err(plan_err(format!(
                "{} cannot follow the greedy {}: as in Flink, an optional variable cannot be preceded by a greedy quantifier (make it reluctant: {}+? or {}*?)",
                vars[e.var], vars[before.var], vars[before.var], vars[before.var]
            )));
        }
    }
    if out.iter().all(|e| e.min == 0) {
        return Err(plan_err(
            "a pattern that can match no rows is not supported; at least one variable must be mandatory (as in Flink)",
        ));
    }
    if let Some(last) = out.last() {
        let greedy = last.greedy && last.max != Some(last.min) && last.max != Some(1);
        if greedy {
            return Err(plan_err(format!(
                "a greedy quantifier on the last variable ({}) is not supported (as in Flink): end the pattern with a single variable or a reluctant quantifier ({}+?)",
                vars[last.var], vars[last.var]
            )));
        }
    }
    Ok(out)
}

/// Where an expression is: a `DEFINE` condition of a variable, or a measure.
#[derive(Clone, Copy)]
enum Place {
    Define(Var),
    Measure,
}

/// Rewrites an expression's navigation into term columns.
struct Terms<'a> {
    vars: &'a [String],
    input: &'a Schema,
    /// The time attribute.
    time_index: usize,
    place: Place,
    terms: Vec<(Term, DataType)>,
    /// Arguments of aggregates over expressions, their qualifiers taken off.
    agg_args: Vec<Expr>,
    error: Option<SluiceError>,
}

impl Terms<'_> {
    fn var(&self, name: &str) -> Option<Var> {
        self.vars.iter().position(|v| v == name)
    }

    fn column(&self, name: &Ident) -> Result<usize> {
        self.input.index_of(&name.value).map_err(|_| {
            plan_err_at(
                name.span,
                format!(
                    "column {} not found; the input has {}",
                    name.value,
                    crate::catalog::column_names(self.input)
                ),
            )
        })
    }

    /// `v.col` or `col` as (variable, column).
    fn reference(&self, e: &Expr) -> Result<(Option<Var>, usize)> {
        match e {
            Expr::Identifier(c) => Ok((None, self.column(c)?)),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let var = self.var(&parts[0].value).ok_or_else(|| {
                    plan_err_at(
                        parts[0].span,
                        format!(
                            "{} is not a pattern variable (the pattern has {})",
                            parts[0].value,
                            self.vars.join(", ")
                        ),
                    )
                })?;
                Ok((Some(var), self.column(&parts[1])?))
            }
            other => Err(plan_err(format!(
                "expected a column of a pattern variable (var.column), found {other}"
            ))),
        }
    }

    /// An aggregate's argument expression with its variable's qualifiers taken off; as in
    /// Flink, it may use the columns of one variable only.
    fn one_variable(&self, x: &Expr, name: &str) -> Result<(Option<Var>, Expr)> {
        let mut stripped = x.clone();
        let mut found: Vec<Var> = Vec::new();
        let mut error = None;
        let _ = sqlparser::ast::visit_expressions_mut(&mut stripped, |e: &mut Expr| {
            if let Expr::CompoundIdentifier(parts) = e {
                if parts.len() == 2 {
                    match self.var(&parts[0].value) {
                        Some(v) => {
                            if !found.contains(&v) {
                                found.push(v);
                            }
                            *e = Expr::Identifier(parts[1].clone());
                        }
                        None => {
                            error = Some(plan_err_at(
                                parts[0].span,
                                format!("{} is not a pattern variable", parts[0].value),
                            ));
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = error {
            return Err(e);
        }
        if found.len() > 1 {
            return Err(plan_err(format!(
                "{name}({x}): as in Flink, an aggregate may use the columns of one pattern variable only"
            )));
        }
        Ok((found.first().copied(), stripped))
    }

    fn term(&mut self, term: Term, data_type: DataType) -> Expr {
        let name = format!("__mr{}", self.terms.len());
        self.terms.push((term, data_type));
        Expr::Identifier(Ident::new(name))
    }

    fn rewrite(&mut self, e: &mut Expr) -> Result<()> {
        match e {
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let (var, col) = self.reference(e)?;
                let current = matches!(self.place, Place::Define(v) if Some(v) == var);
                *e = if current {
                    Expr::Identifier(Ident::new(self.input.field(col).name()))
                } else {
                    let t = self.input.field(col).data_type().clone();
                    self.term(
                        Term::Nav {
                            var,
                            col,
                            first: false,
                            offset: 0,
                        },
                        t,
                    )
                };
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_uppercase();
                let args: Vec<FunctionArgExpr> = match &f.args {
                    FunctionArguments::List(l) => l
                        .args
                        .iter()
                        .map(|a| match a {
                            FunctionArg::Unnamed(x) => Ok(x.clone()),
                            other => Err(plan_err(format!("unexpected argument {other}"))),
                        })
                        .collect::<Result<_>>()?,
                    FunctionArguments::None => Vec::new(),
                    FunctionArguments::Subquery(_) => {
                        return Err(plan_err("a subquery in MEASURES or DEFINE"))
                    }
                };
                let distinct = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some());
                match name.as_str() {
                    "PREV" | "NEXT" if matches!(args.get(1), Some(FunctionArgExpr::Expr(Expr::Value(v))) if matches!(&v.value, Value::Number(n, _) if n == "0")) =>
                    {
                        // An offset of 0 is the row itself, as in Flink.
                        let FunctionArgExpr::Expr(x) = &args[0] else {
                            return Err(plan_err(format!("{name} takes (column, offset)")));
                        };
                        *e = x.clone();
                        return self.rewrite(e);
                    }
                    "PREV" | "NEXT" => {
                        return Err(plan_err(format!(
                            "{name}: as in Flink, physical offsets within the partition are not supported; use LAST(var.column, n) or FIRST(var.column, n)"
                        )))
                    }
                    "CLASSIFIER" | "MATCH_NUMBER" => {
                        return Err(plan_err(format!("{name}() is not supported, as in Flink")))
                    }
                    "MATCH_PROCTIME" => {
                        if matches!(self.place, Place::Define(_)) {
                            return Err(plan_err("MATCH_PROCTIME() is for MEASURES, not DEFINE"));
                        }
                        let ltz = DataType::Timestamp(TimeUnit::Millisecond, Some(LTZ_ZONE.into()));
                        *e = self.term(Term::MatchProctime, ltz);
                    }
                    "MATCH_ROWTIME" => {
                        if matches!(self.place, Place::Define(_)) {
                            return Err(plan_err("MATCH_ROWTIME() is for MEASURES, not DEFINE"));
                        }
                        // Flink: TIMESTAMP(3) without an argument, else the type of the
                        // time attribute named.
                        let time = match args.as_slice() {
                            [] => DataType::Timestamp(TimeUnit::Millisecond, None),
                            [FunctionArgExpr::Expr(x)] => {
                                let (_, col) = self.reference(x)?;
                                if col != self.time_index {
                                    return Err(plan_err(format!(
                                        "MATCH_ROWTIME({x}): the argument must be the time attribute {}",
                                        self.input.field(self.time_index).name()
                                    )));
                                }
                                self.input.field(col).data_type().clone()
                            }
                            _ => return Err(plan_err("MATCH_ROWTIME takes no argument or the time attribute")),
                        };
                        *e = self.term(Term::MatchRowtime { data_type: time.clone() }, time);
                    }
                    "FIRST" | "LAST" => {
                        let (Some(FunctionArgExpr::Expr(x)), 1..=2) = (args.first(), args.len()) else {
                            return Err(plan_err(format!("{name} takes (var.column [, offset])")));
                        };
                        let offset = match args.get(1) {
                            None => 0,
                            Some(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                                Value::Number(n, _) => n.parse::<usize>().map_err(|_| {
                                    plan_err(format!("{name}: the offset must be a non-negative integer, found {n}"))
                                })?,
                                other => {
                                    return Err(plan_err(format!(
                                        "{name}: the offset must be a non-negative integer, found {other}"
                                    )))
                                }
                            },
                            Some(other) => {
                                return Err(plan_err(format!(
                                    "{name}: the offset must be a non-negative integer, found {other}"
                                )))
                            }
                        };
                        let (var, col) = self.reference(x)?;
                        let t = self.input.field(col).data_type().clone();
                        *e = self.term(
                            Term::Nav {
                                var,
                                col,
                                first: name == "FIRST",
                                offset,
                            },
                            t,
                        );
                    }
                    "SUM" | "AVG" | "MIN" | "MAX" | "COUNT" => {
                        if distinct || f.filter.is_some() || f.over.is_some() {
                            return Err(plan_err(format!(
                                "{name}: DISTINCT, FILTER and OVER are not supported in MATCH_RECOGNIZE"
                            )));
                        }
                        let simple = |x: &Expr| {
                            matches!(x, Expr::Identifier(_))
                                || matches!(x, Expr::CompoundIdentifier(p) if p.len() == 2)
                        };
                        let (var, arg) = match args.as_slice() {
                            [FunctionArgExpr::Wildcard] if name == "COUNT" => (None, AggArg::Rows),
                            [FunctionArgExpr::QualifiedWildcard(q)] if name == "COUNT" => {
                                let v = q.to_string();
                                let var = self.var(&v).ok_or_else(|| {
                                    plan_err(format!("{v} is not a pattern variable"))
                                })?;
                                (Some(var), AggArg::Rows)
                            }
                            [FunctionArgExpr::Expr(x)] if simple(x) => {
                                let (var, col) = self.reference(x)?;
                                (var, AggArg::Column(col))
                            }
                            [FunctionArgExpr::Expr(x)] => {
                                let (var, stripped) = self.one_variable(x, &name)?;
                                self.agg_args.push(stripped);
                                (var, AggArg::Expr(self.agg_args.len() - 1))
                            }
                            _ => {
                                return Err(plan_err(format!(
                                    "{name} takes one argument over one pattern variable (var.column, or an expression of one variable's columns)"
                                )))
                            }
                        };
                        let kind = match (name.as_str(), arg) {
                            ("COUNT", AggArg::Rows) => AggKind::CountRows,
                            ("COUNT", _) => AggKind::Count,
                            ("SUM", _) => AggKind::Sum,
                            ("AVG", _) => AggKind::Avg,
                            ("MIN", _) => AggKind::Min,
                            _ => AggKind::Max,
                        };
                        // An expression's type is known once it is planned (see plan_expr).
                        let data_type = match arg {
                            AggArg::Column(c) => {
                                agg_type(kind, Some(self.input.field(c).data_type()))?
                            }
                            AggArg::Rows => DataType::Int64,
                            AggArg::Expr(_) => DataType::Null,
                        };
                        *e = self.term(
                            Term::Agg {
                                kind,
                                var,
                                arg,
                                data_type: data_type.clone(),
                            },
                            data_type,
                        );
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The type of an aggregate of a column or expression of type `arg`, as Flink types it.
fn agg_type(kind: AggKind, arg: Option<&DataType>) -> Result<DataType> {
    let numeric = |t: &DataType| {
        if t.is_numeric() {
            Ok(t.clone())
        } else {
            Err(plan_err(format!(
                "{kind:?} needs a numeric argument, not {t}"
            )))
        }
    };
    match (kind, arg) {
        (AggKind::Count | AggKind::CountRows, _) => Ok(DataType::Int64),
        (AggKind::Sum, Some(DataType::Decimal128(_, s))) => Ok(DataType::Decimal128(38, *s)),
        (AggKind::Avg, Some(DataType::Decimal128(..))) => {
            Err(plan_err("AVG of a DECIMAL column is not supported yet"))
        }
        (AggKind::Sum | AggKind::Avg, Some(t)) => numeric(t),
        (AggKind::Min | AggKind::Max, Some(t)) => Ok(t.clone()),
        (_, None) => Err(plan_err(format!("{kind:?} needs an argument"))),
    }
}

impl VisitorMut for Terms<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        match self.rewrite(e) {
            Ok(()) => ControlFlow::Continue(()),
            Err(x) => {
                self.error = Some(x);
                ControlFlow::Break(())
            }
        }
    }
}

/// Plans `e` (at `place`) over the input's columns and its terms.
fn plan_expr(
    e: &Expr,
    place: Place,
    vars: &[String],
    input: &Schema,
    time_index: usize,
    catalog: &Catalog,
) -> Result<TermExprPlan> {
    let mut e = e.clone();
    let mut terms = Terms {
        vars,
        input,
        time_index,
        place,
        terms: Vec::new(),
        agg_args: Vec::new(),
        error: None,
    };
    let _ = e.visit(&mut terms);
    if let Some(x) = terms.error {
        return Err(x);
    }
    let mut fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let input_only = Arc::new(Schema::new(fields.clone()));
    let mut agg_args = Vec::new();
    for a in std::mem::take(&mut terms.agg_args) {
        agg_args.push(plan_sql_expr(a, input_only.clone(), catalog)?);
    }
    for (term, t) in terms.terms.iter_mut() {
        if let Term::Agg {
            kind,
            arg: AggArg::Expr(k),
            data_type,
            ..
        } = term
        {
            let (e, schema) = &agg_args[*k];
            let arg_type = e.get_type(schema).map_err(df_error)?;
            *data_type = agg_type(*kind, Some(&arg_type))?;
            *t = data_type.clone();
        }
    }
    for (i, (_, t)) in terms.terms.iter().enumerate() {
        fields.push(Field::new(format!("__mr{i}"), t.clone(), true));
    }
    let (expr, schema) = plan_sql_expr(e, Arc::new(Schema::new(fields)), catalog)?;
    Ok(TermExprPlan {
        expr,
        schema,
        terms: terms.terms.into_iter().map(|(t, _)| t).collect(),
        agg_args,
    })
}

/// Plans an SQL expression over `schema`, types coerced as in a query.
fn plan_sql_expr(
    e: Expr,
    schema: SchemaRef,
    catalog: &Catalog,
) -> Result<(datafusion_expr::Expr, DFSchemaRef)> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(df_error)?;
    let provider = catalog.provider(vec![]);
    let planner = SqlToRel::new_with_options(&provider, parser_options());
    let logical = planner
        .sql_to_expr(e, &df_schema, &mut PlannerContext::new())
        .map_err(|x| plan_err(x.to_string()))?;
    // Type coercion, through a projection over the schema.
    let plan = LogicalPlanBuilder::scan("__mr", Arc::new(LogicalTableSource::new(schema)), None)
        .and_then(|b| b.project(vec![logical]))
        .and_then(|b| b.build())
        .map_err(df_error)?;
    let plan = analyze(plan, &catalog.config)?;
    let LogicalPlan::Projection(p) = &plan else {
        return Err(SluiceError::Plan(
            "internal: a projection was expected".into(),
        ));
    };
    Ok((p.expr[0].clone().unalias(), p.input.schema().clone()))
}

fn interval_ms(e: &Expr) -> Result<i64> {
    crate::window::interval_millis(e).map_err(|m| plan_err(format!("WITHIN: {m}")))
}

/// Compiles a match relation over its planned input.
pub fn compile(
    spec: &MatchRecognizeSpec,
    input: LogicalPlan,
    catalog: &Catalog,
) -> Result<MatchRelation> {
    let in_schema: Schema = input.schema().as_arrow().clone();
    let column = |e: &Expr, what: &str| -> Result<usize> {
        let name = match e {
            Expr::Identifier(i) => &i.value,
            Expr::CompoundIdentifier(p) if !p.is_empty() => &p[p.len() - 1].value,
            other => return Err(plan_err(format!("{what} must name columns, found {other}"))),
        };
        in_schema.index_of(name).map_err(|_| {
            plan_err(format!(
                "{what} {name}: no such column; the input has {}",
                crate::catalog::column_names(&in_schema)
            ))
        })
    };
    if matches!(spec.rows_per_match, Some(RowsPerMatch::AllRows(_))) {
        return Err(plan_err(
            "ALL ROWS PER MATCH is not supported (as in Flink): use ONE ROW PER MATCH",
        ));
    }
    let partition = spec
        .partition_by
        .iter()
        .map(|e| column(e, "PARTITION BY"))
        .collect::<Result<Vec<_>>>()?;
    let Some((first, rest)) = spec.order_by.split_first() else {
        return Err(plan_err(
            "ORDER BY is required: the time attribute, ascending",
        ));
    };
    let time_index = column(&first.expr, "ORDER BY")?;
    if first.options.asc == Some(false) {
        return Err(plan_err(
            "the time attribute must be ordered ascending (ORDER BY rowtime ASC)",
        ));
    }
    if !matches!(
        in_schema.field(time_index).data_type(),
        DataType::Timestamp(..)
    ) {
        return Err(plan_err(format!(
            "ORDER BY {} must start with the time attribute",
            in_schema.field(time_index).name()
        )));
    }
    let proctime = crate::catalog::is_proctime(&input, time_index, catalog);
    let order = rest
        .iter()
        .map(|o| {
            let descending = o.options.asc == Some(false);
            Ok((
                column(&o.expr, "ORDER BY")?,
                SortOptions {
                    descending,
                    // Flink: NULLS FIRST for ascending, NULLS LAST for descending.
                    nulls_first: o.options.nulls_first.unwrap_or(!descending),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut vars = Vec::new();
    let elements = elements(&spec.pattern, &mut vars)?;
    let mut defines: Vec<Option<TermExprPlan>> = vec![None; vars.len()];
    for s in &spec.symbols {
        let var = vars
            .iter()
            .position(|v| *v == s.symbol.value)
            .ok_or_else(|| {
                plan_err(format!(
                    "DEFINE {}: not a variable of the pattern ({})",
                    s.symbol.value,
                    vars.join(" ")
                ))
            })?;
        let planned = plan_expr(
            &s.definition,
            Place::Define(var),
            &vars,
            &in_schema,
            time_index,
            catalog,
        )?;
        let t = planned.expr.get_type(&planned.schema).map_err(df_error)?;
        if t != DataType::Boolean {
            return Err(plan_err(format!(
                "DEFINE {}: the condition must be BOOLEAN",
                s.symbol.value
            )));
        }
        defines[var] = Some(planned);
    }
    let skip = match &spec.after_match_skip {
        None | Some(AfterMatchSkip::ToNextRow) => Skip::ToNextRow,
        Some(AfterMatchSkip::PastLastRow) => Skip::PastLastRow,
        Some(AfterMatchSkip::ToFirst(v)) | Some(AfterMatchSkip::ToLast(v)) => {
            let var = vars.iter().position(|x| *x == v.value).ok_or_else(|| {
                plan_err(format!(
                    "AFTER MATCH SKIP TO {}: not a variable of the pattern",
                    v.value
                ))
            })?;
            if matches!(spec.after_match_skip, Some(AfterMatchSkip::ToFirst(_))) {
                Skip::ToFirst(var)
            } else {
                Skip::ToLast(var)
            }
        }
    };
    let within = spec.within.as_ref().map(interval_ms).transpose()?;
    let program = Program::compile(&elements, skip, within);
    let mut fields: Vec<Field> = partition
        .iter()
        .map(|&i| in_schema.field(i).clone())
        .collect();
    let mut measures = Vec::new();
    let mut rowtime = None;
    for m in &spec.measures {
        let planned = plan_expr(
            &m.expr,
            Place::Measure,
            &vars,
            &in_schema,
            time_index,
            catalog,
        )?;
        let t = planned.expr.get_type(&planned.schema).map_err(df_error)?;
        if matches!(&m.expr, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("MATCH_ROWTIME"))
        {
            rowtime = Some(fields.len());
        }
        if fields.iter().any(|f| f.name() == &m.alias.value) {
            return Err(plan_err(format!(
                "the output column {} appears twice",
                m.alias.value
            )));
        }
        fields.push(Field::new(&m.alias.value, t, true));
        measures.push(planned);
    }
    Ok(MatchRelation {
        input,
        partition,
        time_index,
        proctime,
        order,
        program,
        defines,
        measures,
        schema: Arc::new(Schema::new(fields)),
        rowtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::tokenizer::Tokenizer;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap()
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect()
    }

    fn parsed(sql: &str) -> (Box<Query>, Vec<(String, MatchRecognizeSpec)>) {
        let mut inputs = Vec::new();
        let t = prepare(tokens(sql), &mut inputs).unwrap();
        let mut q = Parser::new(&GenericDialect {})
            .with_tokens_with_locations(t)
            .parse_query()
            .unwrap();
        let mut out = Vec::new();
        extract(&mut q, &mut 0, &inputs, &mut out).unwrap();
        (q, out)
    }

    #[test]
    fn within_and_the_clause_are_taken_out() {
        let (q, out) = parsed(
            "SELECT * FROM t MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts MEASURES A.x AS ax \
             PATTERN (A B+? C) WITHIN INTERVAL '5' SECOND DEFINE A AS A.x > 1) AS m",
        );
        assert_eq!(q.to_string(), "SELECT * FROM __sluice_match_0 AS m");
        assert_eq!(out.len(), 1);
        let spec = &out[0].1;
        assert_eq!(spec.input.to_string(), "SELECT * FROM t");
        assert_eq!(spec.symbols.len(), 1);
        assert_eq!(interval_ms(spec.within.as_ref().unwrap()).unwrap(), 5000);
        let mut vars = Vec::new();
        let els = elements(&spec.pattern, &mut vars).unwrap();
        assert_eq!(vars, vec!["A", "B", "C"]);
        assert!(!els[1].greedy && els[1].max.is_none());
        // A subquery input, with a clause of its own.
        let (q, out) = parsed(
            "SELECT x FROM (SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x PATTERN (A) DEFINE A AS true)) \
             MATCH_RECOGNIZE (ORDER BY ts MEASURES B.x AS x PATTERN (B) DEFINE B AS B.x > 0)",
        );
        assert_eq!(q.to_string(), "SELECT x FROM __sluice_match_0");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.input.to_string(), "SELECT * FROM t");
        assert_eq!(out[1].0, "__sluice_match_0");
        assert_eq!(out[1].1.input.to_string(), "SELECT * FROM __sluice_match_1");
        // FINAL/RUNNING, and SKIP TO v as SKIP TO LAST v.
        let (_, out) = parsed(
            "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES FINAL LAST(A.x) AS x, RUNNING COUNT(A.x) AS n \
             AFTER MATCH SKIP TO A PATTERN (A B) DEFINE A AS true)",
        );
        assert_eq!(out[0].1.measures[0].expr.to_string(), "LAST(A.x)");
        assert_eq!(out[0].1.measures[1].expr.to_string(), "COUNT(A.x)");
        assert_eq!(
            out[0].1.after_match_skip,
            Some(AfterMatchSkip::ToLast(Ident::new("A")))
        );
    }

    #[test]
    fn flinks_restrictions() {
        let check = |pattern: &str| {
            let (_, out) = parsed(&format!(
                "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS ax PATTERN ({pattern}) DEFINE A AS true)"
            ));
            elements(&out[0].1.pattern, &mut Vec::new())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(check("A B").is_ok());
        assert!(check("A B{2,3}? C").is_ok());
        assert!(check("A B+")
            .unwrap_err()
            .contains("greedy quantifier on the last"));
        assert!(check("A B A").unwrap_err().contains("twice"));
        assert!(check("A? B*").unwrap_err().contains("no rows"));
        assert!(check("(A | B) C").unwrap_err().contains("alternatives"));
        assert!(check("A B?? C").unwrap_err().contains("reluctant optional"));
        assert!(check("A B{3}").is_ok());
        assert!(check("A+ B*? C")
            .unwrap_err()
            .contains("cannot follow the greedy A"));
        assert!(check("A+? B? C").is_ok());
        assert!(check("A{,2} B").unwrap_err().contains("must start at 1"));
        assert!(check("A{0,1} B").is_ok());
    }
}
