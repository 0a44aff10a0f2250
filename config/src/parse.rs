//! Parsing TOML text into a configuration type ([`Config`](crate::Config),
//! [`SignalConfig`](crate::SignalConfig)), collecting every error with its position.
//!
//! The text is parsed once into `toml`'s spanned document ([`DeTable`]), whose spans are byte
//! offsets into the text. Deserialization stops at the first unknown key or wrong type, so after
//! each such error the offending entry is removed from the document and deserialization is
//! retried: every entry is reported once, and the spans stay those of the original text. The
//! final config is then validated, and each violation is located by looking its key path up in
//! the document.

use std::collections::HashMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::errors::{ConfigError, ConfigErrors, LineIndex};
use crate::path::{KeyPath, Segment};

/// Report at most this many errors: a file this broken needs fixing from the top anyway, and
/// the retry loop stays cheap.
const MAX_ERRORS: usize = 100;

/// An error before its offset is turned into a line and column.
struct Found {
    offset: Option<usize>,
    key: String,
    message: String,
}

/// Parses `text` into a `T` and checks it with `rules`, which returns every violation as
/// (key path, message).
pub(crate) fn from_toml_str<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    rules: impl Fn(&T) -> Vec<(KeyPath, String)>,
) -> Result<T, ConfigErrors> {
    let lines = LineIndex::new(text);
    let (mut document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // The recovered document is a guess; checking its contents would mostly report noise.
        let mut found: Vec<Found> = syntax_errors
            .iter()
            .map(|e| Found {
                offset: e.span().map(|s| s.start),
                key: String::new(),
                message: format!("TOML syntax error: {}", e.message()),
            })
            .collect();
        sort(&mut found);
        // After an error the parser resynchronises at the next line; later errors on the same
        // line are mostly consequences of the first.
        found.dedup_by_key(|f| f.offset.map(|o| lines.line(o)));
        return Err(finish(found, &lines, origin));
    }

    let entries = entries(document.get_ref());
    let mut found = Vec::new();
    let mut removed: Vec<KeyPath> = Vec::new();
    let config = loop {
        let deserializer = toml::de::Deserializer::from(document.clone());
        let error = match T::deserialize(deserializer) {
            Ok(config) => break Some(config),
            Err(error) => error,
        };
        let path = error.span().and_then(|span| locate(&entries, &span));
        found.push(Found {
            offset: error.span().map(|s| s.start),
            key: path.as_ref().map(ToString::to_string).unwrap_or_default(),
            message: humanize(error.message()),
        });
        // Remove what the error is about, and try again without it.
        let Some(target) = path.map(|p| p.up_to_last_key()) else {
            break None;
        };
        if found.len() > MAX_ERRORS || !remove(document.get_mut(), &target.0) {
            break None;
        }
        removed.push(target);
    };

    if let Some(config) = &config {
        let value_starts: HashMap<&KeyPath, usize> =
            entries.iter().map(|e| (&e.path, e.value.start)).collect();
        for (path, message) in rules(config) {
            // A removed entry took its default, which may violate a rule only because something
            // around it was removed too (an ice server without its `urls`); already reported.
            if removed.iter().any(|r| r.overlaps(&path)) {
                continue;
            }
            // Point at the value, or at the nearest enclosing one present in the text.
            let mut at = path.clone();
            let offset = loop {
                if let Some(&offset) = value_starts.get(&at) {
                    break Some(offset);
                }
                if at.0.is_empty() {
                    break None;
                }
                at = at.parent();
            };
            found.push(Found {
                offset,
                key: path.to_string(),
                message,
            });
        }
    }

    match config {
        Some(config) if found.is_empty() => Ok(config),
        _ => {
            sort(&mut found);
            Err(finish(found, &lines, origin))
        }
    }
}

/// Sort by position, errors without one last; stable, so errors at the same place keep the
/// order they were found in.
fn sort(found: &mut [Found]) {
    found.sort_by_key(|f| (f.offset.is_none(), f.offset));
}

/// Turn offsets into lines and columns, keeping at most [`MAX_ERRORS`].
fn finish(mut found: Vec<Found>, lines: &LineIndex<'_>, origin: &str) -> ConfigErrors {
    let truncated = found.len() > MAX_ERRORS;
    found.truncate(MAX_ERRORS);
    let mut errors: Vec<ConfigError> = found
        .into_iter()
        .map(|f| {
            let (line, column) = f.offset.map(|o| lines.position(o)).unzip();
            ConfigError {
                origin: origin.to_owned(),
                line,
                column,
                key: f.key,
                message: f.message,
            }
        })
        .collect();
    if truncated {
        errors.push(ConfigError {
            origin: origin.to_owned(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("too many errors, only the first {MAX_ERRORS} are shown"),
        });
    }
    ConfigErrors(errors)
}

/// One key or array element of the document, with its spans in the text.
struct Entry {
    path: KeyPath,
    /// Span of the key (`None` for array elements).
    key: Option<Range<usize>>,
    /// Span of the value (for a `[table]`, its header).
    value: Range<usize>,
}

/// Every key and array element in `table`, depth first.
fn entries(table: &DeTable<'_>) -> Vec<Entry> {
    fn table_entries(table: &DeTable<'_>, path: &KeyPath, out: &mut Vec<Entry>) {
        for (key, value) in table.iter() {
            let path = path.key(key.get_ref());
            out.push(Entry {
                path: path.clone(),
                key: Some(key.span()),
                value: value.span(),
            });
            value_entries(value, &path, out);
        }
    }
    fn value_entries(value: &Spanned<DeValue<'_>>, path: &KeyPath, out: &mut Vec<Entry>) {
        match value.get_ref() {
            DeValue::Table(table) => table_entries(table, path, out),
            DeValue::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    let path = path.index(i);
                    out.push(Entry {
                        path: path.clone(),
                        key: None,
                        value: element.span(),
                    });
                    value_entries(element, &path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    table_entries(table, &KeyPath::default(), &mut out);
    out
}

/// The path of the entry an error span points at: a key with exactly that span, else the
/// innermost value containing it.
fn locate(entries: &[Entry], span: &Range<usize>) -> Option<KeyPath> {
    if let Some(entry) = entries.iter().find(|e| e.key.as_ref() == Some(span)) {
        return Some(entry.path.clone());
    }
    entries
        .iter()
        .filter(|e| e.value.start <= span.start && span.end <= e.value.end)
        .min_by_key(|e| (e.value.len(), usize::MAX - e.path.0.len()))
        .map(|e| e.path.clone())
}

/// Remove the table entry at `path` (which ends with a key). Returns whether it was there.
fn remove(table: &mut DeTable<'_>, path: &[Segment]) -> bool {
    match path {
        [Segment::Key(key)] => table.remove(key.as_str()).is_some(),
        [Segment::Key(key), rest @ ..] => table
            .get_mut(key.as_str())
            .is_some_and(|value| remove_in_value(value.get_mut(), rest)),
        _ => false,
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Segment]) -> bool {
    match (value, path) {
        (DeValue::Table(table), _) => remove(table, path),
        (DeValue::Array(array), [Segment::Index(i), rest @ ..]) => array
            .get_mut(*i)
            .is_some_and(|element| remove_in_value(element.get_mut(), rest)),
        _ => false,
    }
}

/// Reword serde's messages for people editing a TOML file.
fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde: "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`" /
        // "expected `a`" / "there are no fields".
        let expected = rest
            .split_once("`, expected ")
            .map(|(_, list)| list.strip_prefix("one of ").unwrap_or(list))
            .map(|list| {
                list.split(", ")
                    .flat_map(|item| item.split(" or "))
                    .map(|item| item.trim_matches('`'))
                    .collect::<Vec<_>>()
            });
        return match expected {
            Some(list) if list.len() > 1 => {
                format!("unknown key (expected one of: {})", list.join(", "))
            }
            Some(list) => format!("unknown key (expected: {})", list.join(", ")),
            None => "unknown key".to_owned(),
        };
    }
    // serde derive names the Rust type ("expected struct Video"); the file has a table.
    if let Some((head, _)) = message.split_once("expected struct ") {
        return format!("{head}expected a table");
    }
    message.to_owned()
}
