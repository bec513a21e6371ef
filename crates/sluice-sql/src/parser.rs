//! Flink SQL scripts: splitting into statements and reading Flink's DDL extensions
//! (`WATERMARK FOR`, computed columns, `PRIMARY KEY ... NOT ENFORCED`, `WITH (...)`, `SET`),
//! around `sqlparser`, which reads every query.
//!
//! Window table functions (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))`) are taken out of a
//! query's tokens here and replaced by the name of a window relation, and the legacy group
//! windows (`GROUP BY TUMBLE(ts, ...)`) are rewritten into the same relations, so that the
//! rest of the planner sees plain relations and columns.

use crate::types::parse_column_type;
use crate::window::{interval_millis, WindowKind};
use arrow::datatypes::DataType;
use sluice_common::{Result, SluiceError};
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, SetExpr, TableFactor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// One column of a `CREATE TABLE`.
#[derive(Debug, Clone)]
pub enum ColumnDef {
    /// `name TYPE [NOT NULL]`.
    Physical {
        name: String,
        data_type: DataType,
        /// Declared `NOT NULL`.
        not_null: bool,
    },
    /// `name AS expr`.
    Computed { name: String, expr: Box<Expr> },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`.
    Metadata {
        name: String,
        data_type: DataType,
        key: Option<String>,
        is_virtual: bool,
    },
}

impl ColumnDef {
    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            ColumnDef::Physical { name, .. }
            | ColumnDef::Computed { name, .. }
            | ColumnDef::Metadata { name, .. } => name,
        }
    }
}

/// A `CREATE TABLE` statement.
#[derive(Debug, Clone)]
pub struct CreateTable {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(String, Expr)>,
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY (a, b)`: the columns a filesystem table's directories are named by.
    pub partition_keys: Vec<String>,
    pub options: BTreeMap<String, String>,
    pub if_not_exists: bool,
    pub temporary: bool,
    /// Where the statement starts, for messages.
    pub location: Location,
}

/// A window table function found in a query.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    /// The table or view it windows.
    pub input: String,
    /// `PARTITION BY` columns (session windows).
    pub partition_by: Vec<String>,
    /// The time attribute column.
    pub time_column: String,
    pub kind: WindowKind,
    /// The names of the three window columns (`window_start`, `window_end`, `window_time`).
    pub column_names: [String; 3],
}

/// A query with the window relations it uses.
#[derive(Debug, Clone)]
pub struct ParsedQuery {
    pub query: Box<Query>,
    /// Window relations by the name that replaced them in the query.
    pub windows: Vec<(String, WindowTvf)>,
    /// `MATCH_RECOGNIZE` relations by the name that replaced them, innermost first.
    pub matches: Vec<(String, crate::match_recognize::MatchRecognizeSpec)>,
    /// Tables read `FOR SYSTEM_TIME AS OF` a time, by the name that replaced them.
    pub temporals: Vec<(String, crate::temporal_table::TemporalTable)>,
}

/// A statement of a script.
#[derive(Debug, Clone)]
pub enum Statement {
    Set {
        key: String,
        value: String,
    },
    Reset {
        key: Option<String>,
    },
    CreateTable(Box<CreateTable>),
    CreateView {
        name: String,
        query: ParsedQuery,
        if_not_exists: bool,
    },
    DropTable {
        name: String,
        if_exists: bool,
    },
    DropView {
        name: String,
        if_exists: bool,
    },
    Insert {
        table: String,
        query: ParsedQuery,
    },
    Query(ParsedQuery),
    Explain(Box<Statement>),
    ShowTables,
}

/// A statement with where it starts in the script.
#[derive(Debug, Clone)]
pub struct Located {
    pub statement: Statement,
    pub location: Location,
}

pub(crate) fn err_at(loc: Location, message: impl Into<String>) -> SluiceError {
    SluiceError::Sql {
        line: loc.line,
        column: loc.column,
        message: message.into(),
    }
}

fn parser_error(e: sqlparser::parser::ParserError, fallback: Location) -> SluiceError {
    // sqlparser puts " at Line: L, Column: C" into its messages; lift it out.
    let text = e.to_string();
    let text = text
        .strip_prefix("sql parser error: ")
        .unwrap_or(&text)
        .to_string();
    if let Some(pos) = text.rfind(" at Line: ") {
        let tail = &text[pos + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let col = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, col) {
            return SluiceError::Sql {
                line,
                column,
                message: text[..pos].to_string(),
            };
        }
    }
    err_at(fallback, text)
}

/// A cursor over one statement's tokens (whitespace and comments removed).
struct Cursor {
    tokens: Vec<TokenWithSpan>,
    pos: usize,
    end: Location,
}

impl Cursor {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    fn loc(&self) -> Location {
        self.tokens
            .get(self.pos)
            .map(|t| t.span.start)
            .unwrap_or(self.end)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|t| t.token.clone());
        self.pos += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
    }

    fn is_words(&self, ws: &[&str]) -> bool {
        ws.iter().enumerate().all(|(i, w)| {
            matches!(self.tokens.get(self.pos + i).map(|t| &t.token), Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
        })
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_words(&mut self, ws: &[&str]) -> bool {
        if self.is_words(ws) {
            self.pos += ws.len();
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(err_at(
                self.loc(),
                format!("expected {w}, found {}", self.found()),
            ))
        }
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Token) -> Result<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(err_at(
                self.loc(),
                format!("expected '{t}', found {}", self.found()),
            ))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("'{t}'"),
            None => "the end of the statement".into(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    /// An identifier (possibly dotted: `cat.db.t`), as written (quotes removed).
    fn ident(&mut self) -> Result<String> {
        let mut parts = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => parts.push(w.value),
                _ => {
                    self.pos -= 1;
                    return Err(err_at(
                        self.loc(),
                        format!("expected a name, found {}", self.found()),
                    ));
                }
            }
            if !self.eat(&Token::Period) {
                break;
            }
        }
        Ok(parts.join("."))
    }

    fn string(&mut self) -> Result<String> {
        match self.next() {
            Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => Ok(s),
            Some(Token::Word(w)) => Ok(w.value),
            Some(Token::Number(n, _)) => Ok(n),
            _ => {
                self.pos -= 1;
                Err(err_at(
                    self.loc(),
                    format!("expected a quoted string, found {}", self.found()),
                ))
            }
        }
    }

    /// The tokens up to (not including) a `,` or `)` at nesting depth 0.
    fn until_separator(&mut self) -> Vec<TokenWithSpan> {
        let start = self.pos;
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            match t {
                Token::LParen | Token::Lt | Token::LBracket => depth += 1,
                Token::RParen | Token::Gt | Token::RBracket if depth > 0 => depth -= 1,
                Token::ShiftRight if depth > 0 => depth -= 2,
                Token::Comma | Token::RParen if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        self.tokens[start..self.pos].to_vec()
    }

    fn rest(&mut self) -> Vec<TokenWithSpan> {
        let r = self.tokens[self.pos..].to_vec();
        self.pos = self.tokens.len();
        r
    }
}

fn tokens_text(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| t.token.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_expr_tokens(tokens: Vec<TokenWithSpan>, fallback: Location) -> Result<Expr> {
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let e = p.parse_expr().map_err(|e| parser_error(e, fallback))?;
    if p.peek_token().token != Token::EOF {
        let t = p.peek_token();
        return Err(err_at(t.span.start, format!("unexpected '{}'", t.token)));
    }
    Ok(e)
}

/// Splits a script into statements and parses each.
pub fn parse_script(sql: &str) -> Result<Vec<Located>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SluiceError::Sql {
            line: e.location.line,
            column: e.location.column,
            message: e.message,
        })?;
    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut window_counter = 0usize;
    let flush = |current: &mut Vec<TokenWithSpan>,
                 statements: &mut Vec<Located>,
                 window_counter: &mut usize,
                 end: Location|
     -> Result<()> {
        let toks: Vec<TokenWithSpan> = std::mem::take(current);
        if toks.is_empty() {
            return Ok(());
        }
        let location = toks[0].span.start;
        let mut c = Cursor {
            tokens: toks,
            pos: 0,
            end,
        };
        // Flink's statement sets: the INSERTs inside simply run together, as all do here.
        let opens_set = c.eat_words(&["EXECUTE", "STATEMENT", "SET", "BEGIN"])
            || c.eat_words(&["BEGIN", "STATEMENT", "SET"]);
        if opens_set && c.at_end() {
            return Ok(());
        }
        if c.is_word("END") && c.tokens.len() == c.pos + 1 {
            return Ok(());
        }
        let statement = parse_statement(&mut c, window_counter)?;
        statements.push(Located {
            statement,
            location,
        });
        Ok(())
    };
    let mut last = Location::new(1, 1);
    for t in tokens {
        last = t.span.end;
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => flush(&mut current, &mut statements, &mut window_counter, last)?,
            Token::EOF => {}
            _ => current.push(t),
        }
    }
    flush(&mut current, &mut statements, &mut window_counter, last)?;
    Ok(statements)
}

fn parse_statement(c: &mut Cursor, windows: &mut usize) -> Result<Statement> {
    let start = c.loc();
    if c.eat_word("EXPLAIN") {
        c.eat_words(&["PLAN", "FOR"]);
        return Ok(Statement::Explain(Box::new(parse_statement(c, windows)?)));
    }
    if c.eat_word("SET") {
        if c.at_end() {
            return Err(err_at(
                start,
                "SET needs a key and a value: SET 'parallelism.default' = '2'",
            ));
        }
        let key = c.string()?;
        c.expect(&Token::Eq)?;
        let value = c.string()?;
        return Ok(Statement::Set { key, value });
    }
    if c.eat_word("RESET") {
        let key = if c.at_end() { None } else { Some(c.string()?) };
        return Ok(Statement::Reset { key });
    }
    if c.eat_words(&["SHOW", "TABLES"]) {
        return Ok(Statement::ShowTables);
    }
    if c.eat_word("CREATE") {
        let temporary = c.eat_word("TEMPORARY");
        if c.eat_word("TABLE") {
            return parse_create_table(c, temporary, start)
                .map(|t| Statement::CreateTable(Box::new(t)));
        }
        if c.eat_word("VIEW") {
            let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
            let name = c.ident()?;
            if c.peek() == Some(&Token::LParen) {
                return Err(err_at(
                    c.loc(),
                    "a column list on CREATE VIEW is not supported; alias the columns in the query",
                ));
            }
            c.expect_word("AS")?;
            let query = parse_query_tokens(c.rest(), windows, start)?;
            return Ok(Statement::CreateView {
                name,
                query,
                if_not_exists,
            });
        }
        return Err(err_at(
            c.loc(),
            format!("expected TABLE or VIEW after CREATE, found {}", c.found()),
        ));
    }
    if c.eat_word("DROP") {
        c.eat_word("TEMPORARY");
        let is_table = if c.eat_word("TABLE") {
            true
        } else if c.eat_word("VIEW") {
            false
        } else {
            return Err(err_at(
                c.loc(),
                format!("expected TABLE or VIEW after DROP, found {}", c.found()),
            ));
        };
        let if_exists = c.eat_words(&["IF", "EXISTS"]);
        let name = c.ident()?;
        return Ok(if is_table {
            Statement::DropTable { name, if_exists }
        } else {
            Statement::DropView { name, if_exists }
        });
    }
    if c.eat_word("INSERT") {
        if c.is_word("OVERWRITE") {
            return Err(err_at(
                c.loc(),
                "INSERT OVERWRITE is for batch mode; use INSERT INTO",
            ));
        }
        c.expect_word("INTO")?;
        let table = c.ident()?;
        if c.peek() == Some(&Token::LParen) {
            return Err(err_at(c.loc(), "a column list on INSERT INTO is not supported yet; select the sink's columns in order"));
        }
        let query = parse_query_tokens(c.rest(), windows, start)?;
        return Ok(Statement::Insert { table, query });
    }
    if c.is_word("SELECT") || c.is_word("WITH") || c.peek() == Some(&Token::LParen) {
        let query = parse_query_tokens(c.rest(), windows, start)?;
        return Ok(Statement::Query(query));
    }
    Err(err_at(
        start,
        format!(
            "unsupported statement starting with {}; Sluice runs SET, RESET, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW, INSERT INTO, SELECT and EXPLAIN",
            c.found()
        ),
    ))
}

fn parse_create_table(c: &mut Cursor, temporary: bool, location: Location) -> Result<CreateTable> {
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = c.ident()?;
    c.expect(&Token::LParen)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        let item_loc = c.loc();
        if c.eat_word("WATERMARK") {
            c.expect_word("FOR")?;
            let col = c.ident()?;
            c.expect_word("AS")?;
            let expr_loc = c.loc();
            let expr = parse_expr_tokens(c.until_separator(), expr_loc)?;
            if watermark.is_some() {
                return Err(err_at(item_loc, "a table can have only one WATERMARK"));
            }
            watermark = Some((col, expr));
        } else if c.is_word("PRIMARY") || c.is_word("CONSTRAINT") {
            if c.eat_word("CONSTRAINT") {
                c.ident()?;
            }
            c.expect_word("PRIMARY")?;
            c.expect_word("KEY")?;
            c.expect(&Token::LParen)?;
            loop {
                primary_key.push(c.ident()?);
                if !c.eat(&Token::Comma) {
                    break;
                }
            }
            c.expect(&Token::RParen)?;
            expect_not_enforced(c)?;
        } else {
            let col = c.ident()?;
            if c.eat_word("AS") {
                let expr_loc = c.loc();
                let mut toks = c.until_separator();
                // A trailing COMMENT '...' is not part of the expression.
                if let Some(p) = toks.iter().position(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("COMMENT"))) {
                    toks.truncate(p);
                }
                let expr = parse_expr_tokens(toks, expr_loc)?;
                columns.push(ColumnDef::Computed {
                    name: col,
                    expr: Box::new(expr),
                });
            } else {
                let toks = c.until_separator();
                let mut inner = Cursor {
                    tokens: toks,
                    pos: 0,
                    end: c.loc(),
                };
                // The type runs until a column constraint.
                let type_start = inner.pos;
                while !inner.at_end()
                    && !inner.is_word("PRIMARY")
                    && !inner.is_word("METADATA")
                    && !inner.is_word("COMMENT")
                {
                    inner.pos += 1;
                }
                let type_tokens = &inner.tokens[type_start..inner.pos];
                let type_loc = type_tokens
                    .first()
                    .map(|t| t.span.start)
                    .unwrap_or(item_loc);
                let (data_type, not_null) = parse_column_type(&tokens_text(type_tokens))
                    .map_err(|e| err_at(type_loc, e.to_string()))?;
                let mut metadata = None;
                while !inner.at_end() {
                    if inner.eat_word("PRIMARY") {
                        inner.expect_word("KEY")?;
                        expect_not_enforced(&mut inner)?;
                        primary_key.push(col.clone());
                    } else if inner.eat_word("METADATA") {
                        let key = if inner.eat_word("FROM") {
                            Some(inner.string()?)
                        } else {
                            None
                        };
                        let is_virtual = inner.eat_word("VIRTUAL");
                        metadata = Some((key, is_virtual));
                    } else if inner.eat_word("COMMENT") {
                        inner.string()?;
                    } else {
                        return Err(err_at(
                            inner.loc(),
                            format!(
                                "unexpected {} in the definition of column '{col}'",
                                inner.found()
                            ),
                        ));
                    }
                }
                columns.push(match metadata {
                    None => ColumnDef::Physical {
                        name: col,
                        data_type,
                        not_null,
                    },
                    Some((key, is_virtual)) => ColumnDef::Metadata {
                        name: col,
                        data_type,
                        key,
                        is_virtual,
                    },
                });
            }
        }
        if c.eat(&Token::Comma) {
            continue;
        }
        c.expect(&Token::RParen)?;
        break;
    }
    let mut options = BTreeMap::new();
    let mut partition_keys = Vec::new();
    while !c.at_end() {
        if c.eat_word("COMMENT") {
            c.string()?;
        } else if c.eat_words(&["PARTITIONED", "BY"]) {
            c.expect(&Token::LParen)?;
            partition_keys.push(c.ident()?);
            while c.eat(&Token::Comma) {
                partition_keys.push(c.ident()?);
            }
            c.expect(&Token::RParen)?;
        } else if c.eat_word("WITH") {
            c.expect(&Token::LParen)?;
            if !c.eat(&Token::RParen) {
                loop {
                    let key_loc = c.loc();
                    let key = c.string()?;
                    c.expect(&Token::Eq)?;
                    let value = c.string()?;
                    if options.insert(key.clone(), value).is_some() {
                        return Err(err_at(key_loc, format!("option '{key}' is given twice")));
                    }
                    if c.eat(&Token::Comma) {
                        continue;
                    }
                    c.expect(&Token::RParen)?;
                    break;
                }
            }
        } else if c.is_word("LIKE") {
            return Err(err_at(
                c.loc(),
                "CREATE TABLE ... LIKE is not supported yet",
            ));
        } else {
            return Err(err_at(
                c.loc(),
                format!("expected WITH (...), found {}", c.found()),
            ));
        }
    }
    Ok(CreateTable {
        name,
        columns,
        watermark,
        primary_key,
        partition_keys,
        options,
        if_not_exists,
        temporary,
        location,
    })
}

fn expect_not_enforced(c: &mut Cursor) -> Result<()> {
    if c.eat_words(&["NOT", "ENFORCED"]) {
        Ok(())
    } else {
        Err(err_at(
            c.loc(),
            "Flink does not enforce primary keys: write PRIMARY KEY (...) NOT ENFORCED",
        ))
    }
}

/// Parses a query, taking out its window table functions and temporal tables and rewriting
/// legacy group windows.
fn parse_query_tokens(
    tokens: Vec<TokenWithSpan>,
    counter: &mut usize,
    fallback: Location,
) -> Result<ParsedQuery> {
    let mut temporals = Vec::new();
    let tokens = crate::temporal_table::extract(tokens, counter, &mut temporals)?;
    let mut windows = Vec::new();
    let tokens = extract_window_tvfs(tokens, counter, &mut windows)?;
    let mut match_inputs = Vec::new();
    let tokens = crate::match_recognize::prepare(tokens, &mut match_inputs)?;
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut query = p.parse_query().map_err(|e| parser_error(e, fallback))?;
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(err_at(
            next.span.start,
            format!("unexpected '{}' after the query", next.token),
        ));
    }
    rewrite_group_windows(&mut query, counter, &mut windows, fallback)?;
    quote_time_units(&mut query);
    approximate_literals_as_double(&mut query);
    let mut matches = Vec::new();
    crate::match_recognize::extract(&mut query, counter, &match_inputs, &mut matches)?;
    Ok(ParsedQuery {
        query,
        windows,
        matches,
        temporals,
    })
}

/// A number with an exponent (`1e3`, `2.5E-1`) is an approximate literal, a `DOUBLE` in
/// Flink; other numbers with a point are `DECIMAL`s (DataFusion's `parse_float_as_decimal`).
fn approximate_literals_as_double(query: &mut sqlparser::ast::Query) {
    use sqlparser::ast::{CastKind, DataType as SqlType, ExactNumberInfo, Expr as E, Value};
    let _ = sqlparser::ast::visit_expressions_mut(query, |e: &mut E| {
        let approximate = matches!(e, E::Value(v)
            if matches!(&v.value, Value::Number(n, _) if n.contains(['e', 'E'])));
        if approximate {
            let number = std::mem::replace(e, E::Value(Value::Null.into()));
            *e = E::Cast {
                kind: CastKind::Cast,
                expr: Box::new(number),
                data_type: SqlType::Double(ExactNumberInfo::None),
                array: false,
                format: None,
            };
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `TIMESTAMPDIFF(SECOND, a, b)` and `TIMESTAMPADD(DAY, n, t)`: the unit, a bare word, becomes
/// the string `'SECOND'` that the functions take.
fn quote_time_units(query: &mut sqlparser::ast::Query) {
    use sqlparser::ast::{
        Expr as E, FunctionArg, FunctionArgExpr, FunctionArguments, Value, ValueWithSpan,
    };
    const UNITS: &[&str] = &[
        "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR",
    ];
    let _ = sqlparser::ast::visit_expressions_mut(query, |e: &mut E| {
        if let E::Function(f) = e {
            let name = f.name.to_string().to_ascii_uppercase();
            if name == "TIMESTAMPDIFF" || name == "TIMESTAMPADD" {
                if let FunctionArguments::List(list) = &mut f.args {
                    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) =
                        list.args.first_mut()
                    {
                        if let E::Identifier(id) = first {
                            let unit = id.value.to_ascii_uppercase();
                            if id.quote_style.is_none() && UNITS.contains(&unit.as_str()) {
                                *first =
                                    E::Value(ValueWithSpan::from(Value::SingleQuotedString(unit)));
                            }
                        }
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

pub(crate) fn word_is(t: Option<&TokenWithSpan>, w: &str) -> bool {
    matches!(t.map(|t| &t.token), Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

/// The index of the `)` matching the `(` at `open`.
pub(crate) fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    balanced(tokens, open..tokens.len(), &Token::LParen, &Token::RParen)
}

/// The index of the `(` matching the `)` at `close`.
pub(crate) fn opening_paren(tokens: &[TokenWithSpan], close: usize) -> Option<usize> {
    balanced(tokens, (0..=close).rev(), &Token::RParen, &Token::LParen)
}

/// Walks `order` from a `deeper` token to the `shallower` one that balances it.
fn balanced(
    tokens: &[TokenWithSpan],
    order: impl Iterator<Item = usize>,
    deeper: &Token,
    shallower: &Token,
) -> Option<usize> {
    let mut depth = 0;
    for i in order {
        let t = &tokens.get(i)?.token;
        if t == deeper {
            depth += 1;
        } else if t == shallower {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn window_relation_name(n: usize) -> String {
    format!("__sluice_window_{n}")
}

fn extract_window_tvfs(
    mut tokens: Vec<TokenWithSpan>,
    counter: &mut usize,
    out: &mut Vec<(String, WindowTvf)>,
) -> Result<Vec<TokenWithSpan>> {
    let mut i = 0;
    while i + 3 < tokens.len() {
        let is_tvf = word_is(tokens.get(i), "TABLE")
            && tokens[i + 1].token == Token::LParen
            && ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
                .iter()
                .any(|w| word_is(tokens.get(i + 2), w))
            && tokens[i + 3].token == Token::LParen;
        if !is_tvf {
            i += 1;
            continue;
        }
        let loc = tokens[i].span.start;
        let func = match &tokens[i + 2].token {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => unreachable!("checked above"),
        };
        let close_outer = matching_paren(&tokens, i + 1)
            .ok_or_else(|| err_at(loc, "unbalanced parentheses in TABLE(...)"))?;
        let close_inner = matching_paren(&tokens, i + 3)
            .ok_or_else(|| err_at(loc, "unbalanced parentheses in the window function"))?;
        if close_inner + 1 != close_outer {
            return Err(err_at(
                tokens[close_inner].span.start,
                "expected ')' after the window function",
            ));
        }
        let mut c = Cursor {
            tokens: tokens[i + 4..close_inner].to_vec(),
            pos: 0,
            end: tokens[close_inner].span.start,
        };
        let tvf = parse_window_args(&func, &mut c, loc)?;
        let name = window_relation_name(*counter);
        *counter += 1;
        out.push((name.clone(), tvf));
        let replacement = TokenWithSpan {
            token: Token::make_word(&name, None),
            span: Span::new(loc, tokens[close_outer].span.end),
        };
        tokens.splice(i..=close_outer, [replacement]);
        i += 1;
    }
    Ok(tokens)
}

fn parse_window_args(func: &str, c: &mut Cursor, loc: Location) -> Result<WindowTvf> {
    let mut input = None;
    let mut partition_by = Vec::new();
    let mut time_column = None;
    let mut intervals: Vec<(Option<String>, i64)> = Vec::new();
    loop {
        let arg_loc = c.loc();
        let name = if matches!(
            c.tokens.get(c.pos + 1).map(|t| &t.token),
            Some(Token::RArrow)
        ) {
            let n = c.ident()?.to_ascii_uppercase();
            c.next();
            Some(n)
        } else {
            None
        };
        if c.eat_word("TABLE") {
            input = Some(c.ident()?);
            if c.eat_words(&["PARTITION", "BY"]) {
                if c.eat(&Token::LParen) {
                    loop {
                        partition_by.push(c.ident()?);
                        if !c.eat(&Token::Comma) {
                            break;
                        }
                    }
                    c.expect(&Token::RParen)?;
                } else {
                    partition_by.push(c.ident()?);
                }
            }
        } else if c.eat_word("DESCRIPTOR") {
            c.expect(&Token::LParen)?;
            time_column = Some(c.ident()?);
            c.expect(&Token::RParen)?;
        } else {
            let expr = parse_expr_tokens(c.until_separator(), arg_loc)?;
            let ms = interval_millis(&expr).map_err(|m| err_at(arg_loc, m))?;
            intervals.push((name, ms));
        }
        if !c.eat(&Token::Comma) {
            break;
        }
    }
    if !c.at_end() {
        return Err(err_at(
            c.loc(),
            format!("unexpected {} in {func}(...)", c.found()),
        ));
    }
    let input = input.ok_or_else(|| {
        err_at(
            loc,
            format!("{func}(...) needs its table first: {func}(TABLE t, DESCRIPTOR(ts), ...)"),
        )
    })?;
    let time_column = time_column.ok_or_else(|| {
        err_at(
            loc,
            format!("{func}(...) needs the time attribute: DESCRIPTOR(ts)"),
        )
    })?;
    let get = |pos: usize, key: &str| -> Option<i64> {
        intervals
            .iter()
            .find(|(n, _)| n.as_deref() == Some(key))
            .or_else(|| intervals.get(pos).filter(|(n, _)| n.is_none()))
            .map(|(_, v)| *v)
    };
    let need = |v: Option<i64>, what: &str| {
        v.ok_or_else(|| err_at(loc, format!("{func}(...) needs the {what} interval")))
    };
    let kind = match func {
        "TUMBLE" => WindowKind::Tumble {
            size: need(get(0, "SIZE"), "size")?,
            offset: get(1, "OFFSET").unwrap_or(0),
        },
        "HOP" => WindowKind::Hop {
            slide: need(get(0, "SLIDE"), "slide")?,
            size: need(get(1, "SIZE"), "size")?,
            offset: get(2, "OFFSET").unwrap_or(0),
        },
        "CUMULATE" => WindowKind::Cumulate {
            step: need(get(0, "STEP"), "step")?,
            size: need(get(1, "SIZE"), "size")?,
            offset: get(2, "OFFSET").unwrap_or(0),
        },
        _ => WindowKind::Session {
            gap: need(get(0, "GAP"), "gap")?,
        },
    };
    kind.validate().map_err(|m| err_at(loc, m))?;
    Ok(WindowTvf {
        input,
        partition_by,
        time_column,
        kind,
        column_names: [
            "window_start".into(),
            "window_end".into(),
            "window_time".into(),
        ],
    })
}

fn function_name(f: &sqlparser::ast::Function) -> String {
    f.name.to_string().to_ascii_uppercase()
}

fn function_args(f: &sqlparser::ast::Function) -> Vec<Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn expr_location(e: &Expr) -> Option<Location> {
    use sqlparser::ast::Spanned;
    let s = e.span();
    (s.start.line > 0).then_some(s.start)
}

/// Rewrites `GROUP BY TUMBLE(ts, size)` (and HOP, SESSION) into a window relation, and
/// `TUMBLE_START(...)`, `TUMBLE_END(...)`, `TUMBLE_ROWTIME(...)` into its columns.
fn rewrite_group_windows(
    query: &mut Query,
    counter: &mut usize,
    out: &mut Vec<(String, WindowTvf)>,
    fallback: Location,
) -> Result<()> {
    rewrite_set_expr(&mut query.body, counter, out, fallback)
}

fn rewrite_set_expr(
    body: &mut SetExpr,
    counter: &mut usize,
    out: &mut Vec<(String, WindowTvf)>,
    fallback: Location,
) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for twj in select.from.iter_mut() {
                if let TableFactor::Derived { subquery, .. } = &mut twj.relation {
                    rewrite_group_windows(subquery, counter, out, fallback)?;
                }
            }
            let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
                return Ok(());
            };
            let Some(pos) = exprs.iter().position(|e| {
                matches!(e, Expr::Function(f) if ["TUMBLE", "HOP", "SESSION"].contains(&function_name(f).as_str()))
            }) else {
                return Ok(());
            };
            let Expr::Function(f) = exprs[pos].clone() else {
                return Ok(());
            };
            let loc = expr_location(&exprs[pos]).unwrap_or(fallback);
            let func = function_name(&f);
            let args = function_args(&f);
            let time_column = match args.first() {
                Some(Expr::Identifier(id)) => id.value.clone(),
                Some(Expr::CompoundIdentifier(ids)) => {
                    ids.last().map(|i| i.value.clone()).unwrap_or_default()
                }
                _ => {
                    return Err(err_at(
                        loc,
                        format!("{func}(...) takes the time attribute column first"),
                    ))
                }
            };
            let mut ivs = Vec::new();
            for a in &args[1..] {
                ivs.push(interval_millis(a).map_err(|m| err_at(loc, m))?);
            }
            let kind = match (func.as_str(), ivs.as_slice()) {
                ("TUMBLE", [size]) => WindowKind::Tumble {
                    size: *size,
                    offset: 0,
                },
                ("TUMBLE", [size, offset]) => WindowKind::Tumble {
                    size: *size,
                    offset: *offset,
                },
                ("HOP", [slide, size]) => WindowKind::Hop {
                    slide: *slide,
                    size: *size,
                    offset: 0,
                },
                ("HOP", [slide, size, offset]) => WindowKind::Hop {
                    slide: *slide,
                    size: *size,
                    offset: *offset,
                },
                ("SESSION", [gap]) => WindowKind::Session { gap: *gap },
                _ => {
                    return Err(err_at(
                        loc,
                        format!("wrong number of arguments to {func}(...)"),
                    ))
                }
            };
            kind.validate().map_err(|m| err_at(loc, m))?;
            if select.from.len() != 1 || !select.from[0].joins.is_empty() {
                return Err(err_at(
                    loc,
                    format!("GROUP BY {func}(...) needs a single table or view in FROM"),
                ));
            }
            let relation = &mut select.from[0].relation;
            let TableFactor::Table { name, alias, .. } = relation else {
                return Err(err_at(loc, format!("GROUP BY {func}(...) over a subquery is not supported yet; put the subquery in a view")));
            };
            let input = name.to_string();
            let n = *counter;
            *counter += 1;
            let rel = window_relation_name(n);
            let cols = [
                format!("__sluice_w{n}_start"),
                format!("__sluice_w{n}_end"),
                format!("__sluice_w{n}_time"),
            ];
            let qualifier = alias.as_ref().map(|a| a.name.clone());
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(rel.clone()))]);
            if alias.is_none() {
                // Keep `t.col` references working.
                *alias = Some(sqlparser::ast::TableAlias {
                    explicit: true,
                    name: Ident::new(input.rsplit('.').next().unwrap_or(&input)),
                    columns: vec![],
                    at: None,
                });
            }
            let col_expr = |c: &str| -> Expr {
                match &qualifier {
                    Some(q) => Expr::CompoundIdentifier(vec![q.clone(), Ident::with_quote('"', c)]),
                    None => Expr::Identifier(Ident::with_quote('"', c)),
                }
            };
            exprs.remove(pos);
            for c in &cols {
                exprs.push(col_expr(c));
            }
            let prefix = func.clone();
            let mut replace = |e: &mut Expr| {
                if let Expr::Function(f) = e {
                    let n = function_name(f);
                    if let Some(suffix) = n.strip_prefix(&format!("{prefix}_")) {
                        let idx = match suffix {
                            "START" => Some(0),
                            "END" => Some(1),
                            "ROWTIME" => Some(2),
                            _ => None,
                        };
                        if let Some(idx) = idx {
                            *e = col_expr(&cols[idx]);
                        }
                    }
                }
                ControlFlow::<()>::Continue(())
            };
            for item in select.projection.iter_mut() {
                let _ = sqlparser::ast::visit_expressions_mut(item, &mut replace);
            }
            if let Some(h) = select.having.as_mut() {
                let _ = sqlparser::ast::visit_expressions_mut(h, &mut replace);
            }
            out.push((
                rel,
                WindowTvf {
                    input,
                    partition_by: Vec::new(),
                    time_column,
                    kind,
                    column_names: cols,
                },
            ));
            Ok(())
        }
        SetExpr::Query(q) => rewrite_group_windows(q, counter, out, fallback),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, counter, out, fallback)?;
            rewrite_set_expr(right, counter, out, fallback)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_with_an_exponent_is_a_double() {
        let parsed = parse_script("SELECT 1e3, 2.5E-1, 1.5, 7 FROM t;").unwrap();
        let Statement::Query(q) = &parsed[0].statement else {
            panic!("not a query");
        };
        let text = q.query.to_string();
        assert!(
            text.contains("CAST(1e3 AS DOUBLE)") && text.contains("CAST(2.5E-1 AS DOUBLE)"),
            "{text}"
        );
        assert!(text.contains(", 1.5, 7 FROM"), "{text}");
    }

    #[test]
    fn create_table_with_flink_extensions() {
        let s = parse_script(
            "CREATE TEMPORARY TABLE sensor_data (
               sensor_id STRING,
               temperature DOUBLE,
               event_time TIMESTAMP(3),
               ts AS event_time,
               WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND,
               PRIMARY KEY (sensor_id) NOT ENFORCED
             ) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'json');",
        )
        .unwrap();
        let Statement::CreateTable(t) = &s[0].statement else {
            panic!("{s:?}")
        };
        assert_eq!(t.columns.len(), 4);
        assert!(t.temporary);
        assert_eq!(t.watermark.as_ref().unwrap().0, "event_time");
        assert_eq!(t.primary_key, vec!["sensor_id"]);
        assert_eq!(t.options["format"], "json");
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse_script("SET 'a' = 'b';\nCREATE TABLE t (a INTT) WITH ();").unwrap_err();
        match err {
            SluiceError::Sql {
                line,
                column,
                message,
            } => {
                assert_eq!((line, column), (2, 19), "{message}");
                assert!(message.contains("unknown type INTT"), "{message}");
            }
            other => panic!("{other}"),
        }
        let err = parse_script("SELECT a FROM t WHERE")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn window_tvf_becomes_a_relation() {
        let s = parse_script(
            "SELECT window_start, COUNT(*) FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end",
        )
        .unwrap();
        let Statement::Query(q) = &s[0].statement else {
            panic!()
        };
        assert_eq!(q.windows.len(), 1);
        assert_eq!(
            q.windows[0].1.kind,
            WindowKind::Hop {
                slide: 5000,
                size: 10000,
                offset: 0
            }
        );
        assert!(
            q.query.to_string().contains("FROM __sluice_window_0"),
            "{}",
            q.query
        );
    }

    #[test]
    fn legacy_group_window_is_rewritten() {
        let s = parse_script(
            "SELECT id, COUNT(*), TUMBLE_END(ts, INTERVAL '10' SECOND) AS we FROM t GROUP BY id, TUMBLE(ts, INTERVAL '10' SECOND) HAVING COUNT(*) > 5",
        )
        .unwrap();
        let Statement::Query(q) = &s[0].statement else {
            panic!()
        };
        let text = q.query.to_string();
        assert!(text.contains("\"__sluice_w0_end\" AS we"), "{text}");
        assert!(
            text.contains("GROUP BY id, \"__sluice_w0_start\""),
            "{text}"
        );
        assert_eq!(
            q.windows[0].1.kind,
            WindowKind::Tumble {
                size: 10000,
                offset: 0
            }
        );
    }
}
