//! Columns renamed inside a table rebuild: the copy step says which old
//! column each new one was filled from.
//!
//! ```sql
//! -- Alembic's batch_alter_table(...).alter_column("description", new_column_name="summary")
//! CREATE TABLE _alembic_tmp_tags (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, summary TEXT);
//! INSERT INTO _alembic_tmp_tags (id, uuid, summary) SELECT tags.id, tags.uuid, tags.description FROM tags;
//! DROP TABLE tags;
//! ALTER TABLE _alembic_tmp_tags RENAME TO tags;
//! -- re-tracked: summary keeps description's mask bit and versions, as
//! -- after ALTER TABLE tags RENAME COLUMN description TO summary.
//! ```
//!
//! A rebuild drops the capture triggers with the old table, so
//! [`super::renames::read`] finds nothing there; without more, `summary` was
//! a new column whose values re-tracking stamped as this device's new
//! changes, which beat what peers wrote to `description` meanwhile (the
//! loss `RENAME COLUMN` had before session 22). SQLite tells no one which
//! column an `INSERT … SELECT` fills from which, so the connection's trace
//! callback (`migrate::watch`) reads the text of each statement run in a
//! transaction that ran DDL, and [`parse`] keeps the ones of the rebuild's
//! shape: `INSERT INTO new (c, …) SELECT [t.]c, … FROM old` (Alembic's batch
//! mode, Django's `_remake_table`, sqlite-utils `transform(rename=…)`).
//! A column filled by any expression other than a plain column is new data,
//! not a rename.

use std::cell::RefCell;

use sdsync_core::schema::TableSpec;

/// One `INSERT … SELECT` copy between tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCopy {
    /// The table filled.
    pub target: String,
    /// The table read.
    pub source: String,
    /// Each filled column, with the source column it is a plain copy of.
    pub columns: Vec<(String, Option<String>)>,
}

thread_local! {
    /// The copies of the transaction being repaired (see [`during`]).
    static COPIES: RefCell<Vec<TableCopy>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` (a repair) with `copies` known to [`renames`]; returns them
/// after, for a repair tried again later.
pub fn during<T>(copies: Vec<TableCopy>, f: impl FnOnce() -> T) -> (T, Vec<TableCopy>) {
    COPIES.with(|c| *c.borrow_mut() = copies);
    let out = f();
    (out, COPIES.with(|c| c.take()))
}

/// `(former, current)` for each synced column of `old` that a copy out of
/// the old table moved under another name among `names` (the table's
/// columns now). A column the table still has under its old name, or a name
/// the old table had already, is not a rename.
pub fn renames(old: &TableSpec, names: &[&str]) -> Vec<(String, String)> {
    COPIES.with(|copies| {
        let copies = copies.borrow();
        let was_old = |t: &str| {
            std::iter::once(&old.name)
                .chain(&old.aliases)
                .any(|n| n.eq_ignore_ascii_case(t))
        };
        let Some(copy) = copies.iter().rev().find(|c| was_old(&c.source)) else {
            return Vec::new();
        };
        let has = |name: &str| names.iter().any(|n| n.eq_ignore_ascii_case(name));
        let had = |name: &str| {
            old.columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(name))
                || old.uuid_column.eq_ignore_ascii_case(name)
                || old.local_id.eq_ignore_ascii_case(name)
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for (to, from) in &copy.columns {
            let Some(from) = from else { continue };
            let Some(former) = old
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(from))
            else {
                continue;
            };
            let Some(current) = names.iter().find(|n| n.eq_ignore_ascii_case(to)) else {
                continue;
            };
            let taken = out.iter().any(|(f, c)| *f == former.name || c == current);
            if has(from) || had(to) || taken {
                continue;
            }
            out.push((former.name.clone(), current.to_string()));
        }
        out
    })
}

/// The copy an `INSERT … SELECT` statement makes, if it has the rebuild's
/// shape (see the module docs); `None` for any other statement. Reads the
/// text lazily: any other statement is told from its first few tokens.
pub fn parse(sql: &str) -> Option<TableCopy> {
    let mut t = Lexer {
        chars: sql.chars().peekable(),
    }
    .peekable();
    keyword(&t.next()?, "insert")?;
    if keyword(t.peek()?, "or").is_some() {
        t.next();
        t.next();
    }
    keyword(&t.next()?, "into")?;
    let target = qualified(&mut t)?;
    (t.next()? == Token::Open).then_some(())?;
    let mut filled = Vec::new();
    loop {
        filled.push(ident(t.next()?)?);
        match t.next()? {
            Token::Comma => {}
            Token::Close => break,
            _ => return None,
        }
    }
    keyword(&t.next()?, "select")?;
    let mut sources = Vec::new();
    loop {
        let (expr, end) = expression(&mut t)?;
        sources.push(expr);
        if end {
            break;
        }
    }
    let source = qualified(&mut t)?;
    (filled.len() == sources.len()).then(|| TableCopy {
        target,
        source,
        columns: filled.into_iter().zip(sources).collect(),
    })
}

/// A lexical token: what [`parse`] needs to tell apart.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An identifier, bare (possibly a keyword) or quoted (unquoted here).
    Word {
        text: String,
        quoted: bool,
    },
    Open,
    Close,
    Comma,
    Dot,
    /// Anything else: literals, operators, `*`.
    Other,
}

type Tokens<'a> = std::iter::Peekable<Lexer<'a>>;

/// SQL text as tokens, skipping whitespace and comments.
struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let c = self.chars.next()?;
            return Some(match c {
                c if c.is_whitespace() => continue,
                '-' if self.chars.peek() == Some(&'-') => {
                    self.chars.by_ref().find(|&c| c == '\n');
                    continue;
                }
                '/' if self.chars.peek() == Some(&'*') => {
                    self.chars.next();
                    let mut last = ' ';
                    for c in self.chars.by_ref() {
                        if last == '*' && c == '/' {
                            break;
                        }
                        last = c;
                    }
                    continue;
                }
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                '.' => Token::Dot,
                '"' | '`' | '[' | '\'' => self.quoted(c),
                c if c.is_ascii_digit() => {
                    while self
                        .chars
                        .next_if(|c| c.is_alphanumeric() || *c == '.')
                        .is_some()
                    {}
                    Token::Other
                }
                c if c.is_alphabetic() || c == '_' => {
                    let mut text = c.to_string();
                    while let Some(c) = self
                        .chars
                        .next_if(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    {
                        text.push(c);
                    }
                    Token::Word {
                        text,
                        quoted: false,
                    }
                }
                _ => Token::Other,
            });
        }
    }
}

impl Lexer<'_> {
    /// A quoted identifier (or a string literal: `Other`) after its `open`.
    fn quoted(&mut self, open: char) -> Token {
        let close = if open == '[' { ']' } else { open };
        let mut text = String::new();
        while let Some(c) = self.chars.next() {
            if c == close {
                if close != ']' && self.chars.peek() == Some(&close) {
                    self.chars.next();
                } else {
                    break;
                }
            }
            text.push(c);
        }
        if open == '\'' {
            Token::Other
        } else {
            Token::Word { text, quoted: true }
        }
    }
}

fn keyword(token: &Token, word: &str) -> Option<()> {
    match token {
        Token::Word {
            text,
            quoted: false,
        } if text.eq_ignore_ascii_case(word) => Some(()),
        _ => None,
    }
}

fn ident(token: Token) -> Option<String> {
    match token {
        Token::Word { text, .. } => Some(text),
        _ => None,
    }
}

/// `[schema.]name`: the name.
fn qualified(t: &mut Tokens) -> Option<String> {
    let mut name = ident(t.next()?)?;
    while t.next_if_eq(&Token::Dot).is_some() {
        name = ident(t.next()?)?;
    }
    Some(name)
}

/// One result expression up to its `,` or the `FROM` after it: the column
/// when it is a plain (possibly qualified) column, and whether `FROM` ended it.
fn expression(t: &mut Tokens) -> Option<(Option<String>, bool)> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    loop {
        let token = t.next()?;
        match token {
            Token::Open => depth += 1,
            Token::Close => depth = depth.checked_sub(1)?,
            Token::Comma if depth == 0 => return Some((column(parts), false)),
            _ if depth == 0 && keyword(&token, "from").is_some() => {
                return Some((column(parts), true));
            }
            _ => {}
        }
        parts.push(token);
    }
}

/// `c` or `t.c` (or `s.t.c`): the column; anything else: `None`.
fn column(mut parts: Vec<Token>) -> Option<String> {
    let last = parts.pop()?;
    let plain = parts
        .chunks(2)
        .all(|pair| matches!(pair, [Token::Word { .. }, Token::Dot]));
    (plain && parts.len().is_multiple_of(2))
        .then(|| ident(last))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsync_core::schema::{Affinity, Class, ColumnSpec};

    fn copy(target: &str, source: &str, columns: &[(&str, Option<&str>)]) -> TableCopy {
        TableCopy {
            target: target.into(),
            source: source.into(),
            columns: columns
                .iter()
                .map(|(t, s)| (t.to_string(), s.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn the_copy_steps_of_the_tools_are_read() {
        assert_eq!(
            parse(
                "INSERT INTO _alembic_tmp_tags (id, uuid, summary) SELECT tags.id, tags.uuid, tags.description \nFROM tags"
            ),
            Some(copy(
                "_alembic_tmp_tags",
                "tags",
                &[
                    ("id", Some("id")),
                    ("uuid", Some("uuid")),
                    ("summary", Some("description"))
                ]
            ))
        );
        assert_eq!(
            parse(
                r#"INSERT INTO "new__tags" ("id", "uuid", "summary", "n") SELECT "id", "uuid", "description", coalesce("n", 0) FROM "tags""#
            ),
            Some(copy(
                "new__tags",
                "tags",
                &[
                    ("id", Some("id")),
                    ("uuid", Some("uuid")),
                    ("summary", Some("description")),
                    ("n", None)
                ]
            ))
        );
        assert_eq!(
            parse(
                "-- copy\n insert or replace into main.[t new] ([a b], `c`) select x.\"a b\", 'lit' from main.t AS x;"
            ),
            Some(copy("t new", "t", &[("a b", Some("a b")), ("c", None)]))
        );
        for other in [
            "INSERT INTO t (a) VALUES (1)",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t (a, b) SELECT a FROM u",
            "UPDATE t SET a = 1",
            "INSERT INTO t (a) SELECT (a FROM u",
            "",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn only_a_synced_column_moved_to_a_new_name_is_a_rename() {
        let col = |n: &str| ColumnSpec {
            name: n.into(),
            affinity: Affinity::Text,
            required: false,
            reference: None,
        };
        let old = TableSpec {
            id: 1,
            name: "tags".into(),
            class: Class::Shared,
            uuid_column: "uuid".into(),
            local_id: "id".into(),
            columns: vec![col("description"), col("name"), col("color")],
            options: Default::default(),
            aliases: vec![],
            column_aliases: vec![],
        };
        let copies = vec![copy(
            "tmp",
            "Tags",
            &[
                ("id", Some("id")),
                ("summary", Some("description")),
                ("name", Some("name")),
                ("label", Some("name")),
                ("hue", Some("color")),
                ("icon", None),
            ],
        )];
        let names = ["id", "uuid", "summary", "name", "label", "hue", "icon"];
        let (found, _) = during(copies, || renames(&old, &names));
        // `label` copies `name`, which the table still has: not a rename.
        assert_eq!(
            found,
            vec![
                ("description".to_string(), "summary".to_string()),
                ("color".to_string(), "hue".to_string())
            ]
        );
        let (none, _) = during(Vec::new(), || renames(&old, &names));
        assert!(none.is_empty());
    }
}
