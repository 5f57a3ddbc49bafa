//! The statements of a schema change that say how its columns moved, read
//! from their SQL text (SQLite tells no one which column an `INSERT …
//! SELECT` fills from which). Used by [`super::copies`].
//!
//! ```text
//! INSERT INTO new_t (id, summary) SELECT t.id, t.description FROM t
//!   -> Copy { target: "new_t", source: "t",
//!             columns: [("id", Some("id")), ("summary", Some("description"))] }
//! ALTER TABLE new_t RENAME TO t       -> RenameTable { from: "new_t", to: "t" }
//! INSERT INTO t (a) VALUES (1)        -> None
//! ```

/// A statement that moves a table or its columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// `INSERT INTO target (c, …) SELECT e, … FROM source`: each filled
    /// column, with the source column it is a plain copy of (`None`: an
    /// expression, new data). A copy without a column list (SQLite's own
    /// 12-step example) is not read: its columns are known only by position.
    Copy {
        target: String,
        source: String,
        columns: Vec<(String, Option<String>)>,
    },
    /// `ALTER TABLE table RENAME [COLUMN] from TO to`.
    RenameColumn {
        table: String,
        from: String,
        to: String,
    },
    /// `ALTER TABLE from RENAME TO to`.
    RenameTable { from: String, to: String },
    /// `DROP TABLE [IF EXISTS] table`.
    DropTable { table: String },
}

/// A statement that bounds what a rollback undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Savepoint {
    /// `SAVEPOINT name`.
    Open(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
}

/// Whether `sql` may be one of the statements [`statement`] or
/// [`savepoint`] read, by its first word alone and without allocating:
/// what the trace callback asks of every statement before reading more.
pub fn may_matter(sql: &str) -> bool {
    let rest = sql.trim_start();
    if rest.starts_with("--") || rest.starts_with("/*") {
        return true;
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..end];
    [
        "insert",
        "replace",
        "alter",
        "drop",
        "savepoint",
        "release",
        "rollback",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// Whether `sql` is a `DROP TABLE`: its first two words, nothing more.
pub fn is_drop_table(sql: &str) -> bool {
    let mut t = lexer(sql);
    matches!(t.next(), Some(w) if keyword(&w, "drop").is_some())
        && matches!(t.next(), Some(w) if keyword(&w, "table").is_some())
}

/// The savepoint statement `sql` is, if one.
pub fn savepoint(sql: &str) -> Option<Savepoint> {
    let mut t = lexer(sql);
    let first = t.next()?;
    if keyword(&first, "savepoint").is_some() {
        return Some(Savepoint::Open(ident(t.next()?)?));
    }
    if keyword(&first, "release").is_some() {
        t.next_if(|w| keyword(w, "savepoint").is_some());
        return Some(Savepoint::Release(ident(t.next()?)?));
    }
    keyword(&first, "rollback")?;
    t.next_if(|w| keyword(w, "transaction").is_some());
    keyword(&t.next()?, "to")?;
    t.next_if(|w| keyword(w, "savepoint").is_some());
    Some(Savepoint::RollbackTo(ident(t.next()?)?))
}

fn lexer(sql: &str) -> Tokens<'_> {
    Lexer {
        chars: sql.chars().peekable(),
    }
    .peekable()
}

/// The statement `sql` is, if one of [`Statement`]'s kinds. Reads the text
/// lazily: any other statement is told from its first few tokens.
pub fn statement(sql: &str) -> Option<Statement> {
    let mut t = lexer(sql);
    match t.next()? {
        w if keyword(&w, "insert").is_some() => copy(&mut t),
        w if keyword(&w, "replace").is_some() => copy_into(&mut t),
        w if keyword(&w, "alter").is_some() => alter(&mut t),
        w if keyword(&w, "drop").is_some() => {
            keyword(&t.next()?, "table")?;
            if t.next_if(|w| keyword(w, "if").is_some()).is_some() {
                keyword(&t.next()?, "exists")?;
            }
            Some(Statement::DropTable {
                table: qualified(&mut t)?,
            })
        }
        _ => None,
    }
}

/// After `INSERT`: `[OR conflict] INTO …`.
fn copy(t: &mut Tokens) -> Option<Statement> {
    if t.next_if(|w| keyword(w, "or").is_some()).is_some() {
        t.next();
    }
    copy_into(t)
}

/// `INTO target (c, …) SELECT [ALL] e, … FROM source`, and nothing after
/// the source but an alias, a `WHERE`, an `ORDER BY` or the end (a join
/// would read columns from another table).
fn copy_into(t: &mut Tokens) -> Option<Statement> {
    keyword(&t.next()?, "into")?;
    let target = qualified(t)?;
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
    t.next_if(|w| keyword(w, "all").is_some());
    let mut sources = Vec::new();
    loop {
        let (expr, end) = expression(t)?;
        sources.push(expr);
        if end {
            break;
        }
    }
    let source = qualified(t)?;
    if !ends_plainly(t) {
        return None;
    }
    (filled.len() == sources.len()).then(|| Statement::Copy {
        target,
        source,
        columns: filled.into_iter().zip(sources).collect(),
    })
}

/// After a copy's source table: an alias at most, then the end or a
/// `WHERE`, `ORDER BY` or `LIMIT` (a join or a second table would read
/// columns from elsewhere).
fn ends_plainly(t: &mut Tokens) -> bool {
    let clause = |w: &Token| {
        ["where", "order", "limit"]
            .iter()
            .any(|k| keyword(w, k).is_some())
    };
    if t.next_if(|w| keyword(w, "as").is_some()).is_some() {
        if t.next().is_none() {
            return false;
        }
    } else if t
        .peek()
        .is_some_and(|w| matches!(w, Token::Word { .. }) && !clause(w))
    {
        t.next();
    }
    match t.next() {
        None | Some(Token::Semicolon) => true,
        Some(w) => clause(&w),
    }
}

/// After `ALTER`: `TABLE t RENAME [COLUMN] a TO b` or `TABLE t RENAME TO u`.
fn alter(t: &mut Tokens) -> Option<Statement> {
    keyword(&t.next()?, "table")?;
    let table = qualified(t)?;
    keyword(&t.next()?, "rename")?;
    let first = t.next()?;
    if keyword(&first, "to").is_some() {
        return Some(Statement::RenameTable {
            from: table,
            to: ident(t.next()?)?,
        });
    }
    let from = if keyword(&first, "column").is_some() {
        ident(t.next()?)?
    } else {
        ident(first)?
    };
    keyword(&t.next()?, "to")?;
    Some(Statement::RenameColumn {
        table,
        from,
        to: ident(t.next()?)?,
    })
}

/// A lexical token: what [`statement`] needs to tell apart.
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
    Semicolon,
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
                ';' => Token::Semicolon,
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

/// `c` or `t.c` (or `s.t.c`), possibly followed by `AS alias`: the
/// column; anything else: `None`.
fn column(mut parts: Vec<Token>) -> Option<String> {
    if parts.len() >= 3 && keyword(&parts[parts.len() - 2], "as").is_some() {
        parts.truncate(parts.len() - 2);
    }
    let last = parts.pop()?;
    if [
        "null",
        "current_timestamp",
        "current_date",
        "current_time",
        "true",
        "false",
    ]
    .iter()
    .any(|k| keyword(&last, k).is_some())
        && parts.is_empty()
    {
        return None;
    }
    let plain = parts
        .chunks(2)
        .all(|pair| matches!(pair, [Token::Word { .. }, Token::Dot]));
    (plain && parts.len().is_multiple_of(2))
        .then(|| ident(last))
        .flatten()
}

/// Whether SQLite reads a flag pragma's value as "on" (`getSafetyLevel` with
/// its default off): `on`, `yes` or `true`, or digits whose 32-bit value cut to
/// 8 bits is not zero. Everything else — `0`, `256`, `-1`, `''`, `full`, `00`,
/// eleven digits — turns the flag off, so only "on" values are allowed.
pub fn turns_on(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"');
    if ["on", "yes", "true"]
        .iter()
        .any(|on| v.eq_ignore_ascii_case(on))
    {
        return true;
    }
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 10 {
        return false;
    }
    match digits.parse::<i64>() {
        Ok(n) if n <= i64::from(i32::MAX) => (n as u8) != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(target: &str, source: &str, columns: &[(&str, Option<&str>)]) -> Option<Statement> {
        Some(Statement::Copy {
            target: target.into(),
            source: source.into(),
            columns: columns
                .iter()
                .map(|(t, s)| (t.to_string(), s.map(str::to_string)))
                .collect(),
        })
    }

    #[test]
    fn the_copy_steps_of_the_tools_are_read() {
        // Alembic's batch mode.
        assert_eq!(
            statement(
                "INSERT INTO _alembic_tmp_tags (id, uuid, summary) SELECT tags.id, tags.uuid, tags.description \nFROM tags"
            ),
            copy(
                "_alembic_tmp_tags",
                "tags",
                &[
                    ("id", Some("id")),
                    ("uuid", Some("uuid")),
                    ("summary", Some("description"))
                ]
            )
        );
        // Django's `_remake_table` and sqlite-utils `transform`.
        assert_eq!(
            statement(
                r#"INSERT INTO "new__tags" ("id", "uuid", "summary", "n") SELECT "id", "uuid", "description", coalesce("n", 0) FROM "tags""#
            ),
            copy(
                "new__tags",
                "tags",
                &[
                    ("id", Some("id")),
                    ("uuid", Some("uuid")),
                    ("summary", Some("description")),
                    ("n", None)
                ]
            )
        );
        assert_eq!(
            statement(
                "-- copy\n insert or replace into main.[t new] ([a b], `c`, d, e) select x.\"a b\", 'lit', b AS d, NULL from main.t AS x;"
            ),
            copy(
                "t new",
                "t",
                &[
                    ("a b", Some("a b")),
                    ("c", None),
                    ("d", Some("b")),
                    ("e", None)
                ]
            )
        );
        assert_eq!(
            statement("REPLACE INTO n (a) SELECT ALL a FROM t WHERE a > 0"),
            copy("n", "t", &[("a", Some("a"))])
        );
        for other in [
            "INSERT INTO t (a) VALUES (1)",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO new_X SELECT a, b FROM X",
            "INSERT INTO t (a, b) SELECT a FROM u",
            "INSERT INTO t (a) SELECT (a FROM u",
            "INSERT INTO t (a) SELECT u.a FROM u JOIN v ON u.id = v.id",
            "INSERT INTO t (a) SELECT a FROM u, v",
            "UPDATE t SET a = 1",
            "-- TRIGGER sdsync_upd_t",
            "",
        ] {
            assert_eq!(statement(other), None, "{other}");
        }
    }

    #[test]
    fn renames_and_drops_are_read() {
        assert_eq!(
            statement(r#"ALTER TABLE "tags" RENAME COLUMN "icon" TO "glyph""#),
            Some(Statement::RenameColumn {
                table: "tags".into(),
                from: "icon".into(),
                to: "glyph".into()
            })
        );
        assert_eq!(
            statement("alter table main.t rename a to b"),
            Some(Statement::RenameColumn {
                table: "t".into(),
                from: "a".into(),
                to: "b".into()
            })
        );
        assert_eq!(
            statement("ALTER TABLE new__t RENAME TO t"),
            Some(Statement::RenameTable {
                from: "new__t".into(),
                to: "t".into()
            })
        );
        assert_eq!(statement("ALTER TABLE t ADD COLUMN c"), None);
        assert_eq!(
            savepoint("SAVEPOINT \"a b\""),
            Some(Savepoint::Open("a b".into()))
        );
        assert_eq!(
            savepoint("release savepoint s"),
            Some(Savepoint::Release("s".into()))
        );
        assert_eq!(
            savepoint("ROLLBACK TRANSACTION TO SAVEPOINT s"),
            Some(Savepoint::RollbackTo("s".into()))
        );
        assert_eq!(savepoint("ROLLBACK"), None);
        assert!(may_matter("  InSeRt INTO t"));
        assert!(may_matter("-- a comment first\nDROP TABLE t"));
        assert!(!may_matter("SELECT 1"));
        assert!(!may_matter("UPDATE t SET a = 1"));
        for sql in [
            "DROP TABLE t",
            "  drop\n table if exists \"t\"",
            "-- rebuild\nDROP TABLE t",
            "/* a */ /* b */\tDrop/**/Table t",
        ] {
            assert!(is_drop_table(sql), "{sql}");
        }
        for sql in [
            "DROP INDEX i",
            "DELETE FROM t",
            "-- DROP TABLE t",
            "droptable t",
            "",
        ] {
            assert!(!is_drop_table(sql), "{sql}");
        }
    }

    #[test]
    fn only_values_sqlite_reads_as_on_are_allowed() {
        for v in [
            "0",
            "OFF",
            "off",
            "false",
            "'no'",
            " No ",
            "256",
            "512",
            "00",
            "0.5",
            "-1",
            "''",
            "full",
            "DEFAULT",
            "12345678901",
        ] {
            assert!(!turns_on(v), "{v}");
        }
        for v in ["1", "on", "ON", "yes", "true", "'true'", "257", "1abc"] {
            assert!(turns_on(v), "{v}");
        }
    }
}
