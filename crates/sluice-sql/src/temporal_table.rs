//! `FOR SYSTEM_TIME AS OF`: a table joined as of a time of the other input (Flink's temporal
//! table join).
//!
//! sqlparser reads the clause only for dialects with table versioning, which the generic
//! dialect Sluice parses with is not; and DataFusion would not plan it. So, as window table
//! functions are, the clause is taken out of the query's tokens before parsing: the table's
//! name is replaced by the name of a temporal relation (`__sluice_temporal_N`, aliased to
//! what the query calls the table), and the relation remembers the table and the time
//! expression. The planner turns a join whose right input scans such a relation into a
//! temporal join (see [`crate::operators::temporal_join`]).

use crate::parser::err_at;
use sluice_common::Result;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

/// A table read `FOR SYSTEM_TIME AS OF` a time, as the query wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalTable {
    /// The table or view (the name as written, its parts joined by `.`).
    pub table: String,
    /// The time it is read as of: a column reference (`o.ts`: its parts).
    pub period: Vec<String>,
    /// Where `FOR` is, for messages.
    pub location: Location,
}

/// What the time after `AS OF` must be.
const PERIOD_HELP: &str =
    "FOR SYSTEM_TIME AS OF takes a time attribute column of the other input, such as o.order_time";

fn temporal_relation_name(n: usize) -> String {
    format!("__sluice_temporal_{n}")
}

fn word(t: &TokenWithSpan) -> Option<&sqlparser::tokenizer::Word> {
    match &t.token {
        Token::Word(w) => Some(w),
        _ => None,
    }
}

fn is_keyword(t: &TokenWithSpan, k: &str) -> bool {
    word(t).is_some_and(|w| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k))
}

/// Takes every `name FOR SYSTEM_TIME AS OF time [[AS] alias]` out of `tokens` (whitespace
/// and comments already removed), leaving `__sluice_temporal_N [AS] alias` (the alias being
/// the table's own name when there was none); returns the tokens left.
pub fn extract(
    mut tokens: Vec<TokenWithSpan>,
    counter: &mut usize,
    out: &mut Vec<(String, TemporalTable)>,
) -> Result<Vec<TokenWithSpan>> {
    let mut i = 0;
    while i + 3 < tokens.len() {
        let is_clause = ["FOR", "SYSTEM_TIME", "AS", "OF"]
            .iter()
            .enumerate()
            .all(|(k, w)| is_keyword(&tokens[i + k], w));
        if !is_clause {
            i += 1;
            continue;
        }
        let location = tokens[i].span.start;
        // The table's name before it: `a`, `a.b` or `a.b.c`.
        let mut start = i;
        if start > 0 && word(&tokens[start - 1]).is_some() {
            start -= 1;
            while start >= 2
                && tokens[start - 1].token == Token::Period
                && word(&tokens[start - 2]).is_some()
            {
                start -= 2;
            }
        }
        if start == i {
            return Err(err_at(
                location,
                "FOR SYSTEM_TIME AS OF must follow the name of a table or view",
            ));
        }
        let name_parts: Vec<&TokenWithSpan> = tokens[start..i]
            .iter()
            .filter(|t| t.token != Token::Period)
            .collect();
        let table = name_parts
            .iter()
            .filter_map(|t| word(t).map(|w| w.value.clone()))
            .collect::<Vec<_>>()
            .join(".");
        let last_name = (*name_parts.last().unwrap_or(&&tokens[i])).clone();
        // The time: a column reference.
        let mut end = i + 4;
        let mut period = Vec::new();
        loop {
            match tokens.get(end).and_then(word) {
                Some(w) => period.push(w.value.clone()),
                None => {
                    return Err(err_at(
                        tokens.get(end).map_or(location, |t| t.span.start),
                        PERIOD_HELP,
                    ))
                }
            }
            end += 1;
            if tokens.get(end).map(|t| &t.token) == Some(&Token::Period) {
                end += 1;
                continue;
            }
            break;
        }
        if matches!(
            tokens.get(end).map(|t| &t.token),
            Some(Token::SingleQuotedString(_) | Token::LParen)
        ) {
            return Err(err_at(tokens[i + 4].span.start, PERIOD_HELP));
        }
        // An alias after it, or the table's name as the alias.
        let has_alias = tokens.get(end).is_some_and(|t| {
            is_keyword(t, "AS")
                || word(t)
                    .is_some_and(|w| w.quote_style.is_some() || w.keyword == Keyword::NoKeyword)
        });
        let name = temporal_relation_name(*counter);
        *counter += 1;
        out.push((
            name.clone(),
            TemporalTable {
                table,
                period,
                location,
            },
        ));
        let span = tokens[start].span;
        let mut replacement = vec![TokenWithSpan {
            token: Token::make_word(&name, None),
            span,
        }];
        if !has_alias {
            replacement.push(TokenWithSpan {
                token: Token::make_keyword("AS"),
                span,
            });
            replacement.push(last_name);
        }
        let taken = replacement.len();
        tokens.splice(start..end, replacement);
        i = start + taken;
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn run(sql: &str) -> Result<(String, Vec<(String, TemporalTable)>)> {
        // As the script parser hands them on: without whitespace.
        let mut tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        tokens.retain(|t| !matches!(t.token, Token::Whitespace(_)));
        let mut out = Vec::new();
        let mut counter = 0;
        let left = extract(tokens, &mut counter, &mut out)?;
        let text = left
            .iter()
            .map(|t| t.token.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Ok((text, out))
    }

    #[test]
    fn the_clause_becomes_a_relation_with_the_alias_kept() {
        let (text, found) =
            run("SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.c = r.c").unwrap();
        assert_eq!(
            text,
            "SELECT * FROM o JOIN __sluice_temporal_0 AS r ON o . c = r . c"
        );
        assert_eq!(found[0].1.table, "rates");
        assert_eq!(found[0].1.period, vec!["o", "ts"]);
        assert_eq!(
            (found[0].1.location.line, found[0].1.location.column),
            (1, 28)
        );
        // An alias without AS, none at all, a qualified name.
        let (text, _) =
            run("SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF ts r ON o.c = r.c").unwrap();
        assert!(text.contains("JOIN __sluice_temporal_0 r ON"), "{text}");
        let (text, found) =
            run("SELECT * FROM o LEFT JOIN db.rates FOR SYSTEM_TIME AS OF o.ts ON o.c = rates.c")
                .unwrap();
        assert!(
            text.contains("JOIN __sluice_temporal_0 AS rates ON"),
            "{text}"
        );
        assert_eq!(found[0].1.table, "db.rates");
    }

    #[test]
    fn a_clause_without_a_table_or_a_time_is_an_error_where_it_is() {
        let e = run("SELECT * FROM o JOIN (SELECT 1) FOR SYSTEM_TIME AS OF o.ts ON true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 33") && e.contains("must follow"), "{e}");
        let e = run("SELECT * FROM o JOIN r FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01' ON true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 46"), "{e}");
    }
}
