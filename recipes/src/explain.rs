//! What each recipe key means, for `rlvr show --explain KEY`: the spec's own doc comments,
//! carried into a JSON schema of [`Recipe`] by `schemars`, looked up by dotted key. A table
//! lists its keys; a map of named entries (`rlvr.verifiers.NAME`) takes any name.

use serde_json::{Map, Value};

use crate::spec::Recipe;
use crate::{RecipeError, Result};

/// One key's documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDoc {
    /// The dotted key.
    pub key: String,
    /// Its type: `number`, `integer`, `string`, `boolean`, `array of …`, `table`, a map, or the
    /// values it may take.
    pub kind: String,
    /// Its doc comment.
    pub doc: String,
    /// For a table: its keys, each with the first sentence of its doc.
    pub keys: Vec<(String, String)>,
}

/// The documentation of `key` (dotted, e.g. `rlvr.beta`; empty for the top level). An unknown
/// key is an error naming the keys of the deepest table it reached.
pub fn explain(key: &str) -> Result<KeyDoc> {
    let root = serde_json::to_value(schemars::schema_for!(Recipe)).unwrap_or_default();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut node = resolve(&root, &defs);
    let mut doc = description(&root);
    let mut at = String::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let props = properties(&node);
        let (next, next_doc) = match (props.get(part), entries(&node, &defs)) {
            (Some(child), _) => (resolve(child, &defs), description(child)),
            (None, Some(entry)) => (entry.clone(), description(&entry)),
            (None, None) => {
                let known: Vec<String> = props.keys().map(|k| join(&at, k)).collect();
                return Err(RecipeError::UnknownKey {
                    key: key.to_string(),
                    hint: match known.is_empty() {
                        true => format!("`{at}` has no keys under it"),
                        false => format!("keys there: {}", known.join(", ")),
                    },
                });
            }
        };
        at = join(&at, part);
        node = next;
        // A field's own doc says more than its type's.
        doc = if next_doc.is_empty() {
            description(&node)
        } else {
            next_doc
        };
    }
    let keys = properties(&node)
        .iter()
        .map(|(k, v)| (join(&at, k), first_sentence(&description(v))))
        .collect();
    Ok(KeyDoc {
        key: at,
        kind: kind(&node, &defs),
        doc,
        keys,
    })
}

fn join(at: &str, key: &str) -> String {
    match at.is_empty() {
        true => key.to_string(),
        false => format!("{at}.{key}"),
    }
}

/// `node` with a `$ref`, or an optional's `anyOf [X, null]`, followed to its definition.
fn resolve(node: &Value, defs: &Map<String, Value>) -> Value {
    if let Some(name) = node.get("$ref").and_then(Value::as_str) {
        let name = name.rsplit('/').next().unwrap_or_default();
        return defs.get(name).map_or(Value::Null, |d| resolve(d, defs));
    }
    if let Some(alternatives) = node.get("anyOf").and_then(Value::as_array) {
        let real: Vec<&Value> = alternatives
            .iter()
            .filter(|a| a.get("type") != Some(&"null".into()))
            .collect();
        if let [only] = real[..] {
            return resolve(only, defs);
        }
    }
    node.clone()
}

fn properties(node: &Value) -> Map<String, Value> {
    node.get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The schema of a map's entries (`additionalProperties`), when `node` is a map.
fn entries(node: &Value, defs: &Map<String, Value>) -> Option<Value> {
    let entry = node.get("additionalProperties")?;
    entry.is_object().then(|| resolve(entry, defs))
}

/// `node`'s doc comment, its rustdoc links (`[`x`]`) as plain code.
fn description(node: &Value) -> String {
    let doc = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    doc.replace("[`", "`").replace("`]", "`")
}

fn first_sentence(doc: &str) -> String {
    let line = doc.split("\n\n").next().unwrap_or_default().replace('\n', " ");
    match line.find(". ") {
        Some(end) => line[..=end].to_string(),
        None => line,
    }
}

/// A readable type of `node`.
fn kind(node: &Value, defs: &Map<String, Value>) -> String {
    let choices: Vec<String> = node
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            node.get("oneOf")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("const")),
        )
        .map(|v| v.to_string())
        .collect();
    if !choices.is_empty() {
        return format!("one of {}", choices.join(", "));
    }
    if node.get("properties").is_some() {
        return "table".into();
    }
    if let Some(entry) = entries(node, defs) {
        return format!("table of NAME = {}", kind(&entry, defs));
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["array"] => match node.get("items") {
            Some(items) => format!("array of {}", kind(&resolve(items, defs), defs)),
            None => "array".into(),
        },
        [] => "any".into(),
        ts => ts.join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_doc_comments_and_types() {
        let beta = explain("rlvr.beta").unwrap();
        assert_eq!(beta.kind, "number");
        assert!(beta.doc.contains("KL coefficient"), "{beta:?}");
        let algorithm = explain("rlvr.algorithm").unwrap();
        assert!(algorithm.kind.contains("\"grpo\""), "{algorithm:?}");
        let timeout = explain("rlvr.verifiers.judge.timeout_s").unwrap();
        assert_eq!(timeout.key, "rlvr.verifiers.judge.timeout_s");
        assert!(timeout.doc.contains("plug-in call"), "{timeout:?}");
        let rlvr = explain("rlvr").unwrap();
        assert_eq!(rlvr.kind, "table");
        assert!(rlvr
            .keys
            .iter()
            .any(|(k, d)| k == "rlvr.length_penalty" && !d.is_empty()));
        let top = explain("").unwrap();
        assert!(top.keys.iter().any(|(k, _)| k == "train"));
        let err = explain("rlvr.betta").unwrap_err().to_string();
        assert!(err.contains("rlvr.beta"), "{err}");
    }

    #[test]
    fn every_key_has_a_doc() {
        fn walk(key: &str, missing: &mut Vec<String>) {
            let doc = explain(key).unwrap();
            for (child, _) in &doc.keys {
                if explain(child).unwrap().doc.is_empty() {
                    missing.push(child.clone());
                }
                walk(child, missing);
            }
        }
        let mut missing = Vec::new();
        walk("", &mut missing);
        assert!(missing.is_empty(), "keys without a doc comment: {missing:?}");
    }
}
