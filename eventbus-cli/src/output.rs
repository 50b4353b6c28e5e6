//! What a command prints: a human table (the default) or the server's JSON
//! (`--format json`).
//!
//! The table printer is hand-written (about forty lines): a table here is a
//! handful of columns of short cell texts, padded to the widest cell, which
//! needs no terminal detection, wrapping or styling that a table crate
//! would bring along with its dependencies.

use serde_json::Value;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The server's JSON, pretty-printed, for scripts.
    Json,
}

/// A column: its heading and the JSON path (dot-separated) of its value in each row.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub heading: &'static str,
    pub path: &'static str,
}

/// Shorthand for a [`Column`].
pub const fn col(heading: &'static str, path: &'static str) -> Column {
    Column { heading, path }
}

/// The value at a dot-separated `path` (`queue.name`), if present.
pub fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(row, |value, key| value.get(key))
}

/// A cell's text: strings as they are, arrays joined with `,`, objects as compact JSON,
/// absent and `null` as empty.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(map)) if map.is_empty() => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Renders `rows` as a table of `columns`, one line per row, columns padded to their widest cell.
pub fn table(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| single_line(&cell(lookup(row, c.path))))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.heading.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let headings: Vec<String> = columns.iter().map(|c| c.heading.to_owned()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    for line in [&headings, &rule].into_iter().chain(cells.iter()) {
        let mut text = String::new();
        for (i, (value, width)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(value);
            text.extend(std::iter::repeat_n(' ', width - value.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A two-column `key  value` table of an object's fields, nested objects flattened as `a.b`.
pub fn key_values(value: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", value, &mut rows);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
        .collect();
    table(&[col("key", "key"), col("value", "value")], &rows)
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, inner, out);
            }
        }
        _ => out.push((prefix.to_owned(), value.clone())),
    }
}

/// Control characters (a newline in a payload) would break the table's lines.
fn single_line(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        text.to_owned()
    }
}

/// Pretty JSON followed by a newline.
pub fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = [
            json!({"name": "orders", "n": 12}),
            json!({"name": "a", "q": {"name": "x"}}),
        ];
        let text = table(
            &[col("name", "name"), col("n", "n"), col("queue", "q.name")],
            &rows,
        );
        assert_eq!(
            text,
            "name    n   queue\n------  --  -----\norders  12\na           x\n"
        );
    }

    #[test]
    fn cells_of_every_json_kind() {
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(
            cell(Some(&json!({"x-max-length": 3}))),
            r#"{"x-max-length":3}"#
        );
        assert_eq!(cell(Some(&json!(null))), "");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(cell(None), "");
    }

    #[test]
    fn key_values_flattens_nested_objects() {
        let text = key_values(&json!({"a": {"b": 1}, "c": "x"}));
        assert_eq!(text, "key  value\n---  -----\na.b  1\nc    x\n");
    }
}
