//! Label and field selectors as the API server parses and applies them (`labelSelector=`, `fieldSelector=`).

use crate::store::is_dns_subdomain;
use serde_json::Value;
use std::fmt;

/// A selector that could not be parsed; becomes a 400 BadRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector: all requirements must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        match c {
            '=' if next == Some('=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Tok::Not);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"=!(),<>".contains(chars[i])
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                });
            }
        }
    }
    out
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    if ok {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() || is_name_part(v) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

fn err(msg: &str) -> SelectorError {
    SelectorError(format!("unable to parse requirement: {msg}"))
}

impl LabelSelector {
    /// Parses the text of a `labelSelector` query parameter (already form-decoded).
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        if toks.is_empty() {
            return Ok(LabelSelector::default());
        }
        loop {
            let req = match toks.get(i) {
                Some(Tok::Not) => {
                    i += 1;
                    match toks.get(i) {
                        Some(Tok::Ident(k)) => {
                            i += 1;
                            Requirement {
                                key: k.clone(),
                                op: Op::DoesNotExist,
                                values: vec![],
                            }
                        }
                        _ => return Err(err("expected a label key after '!'")),
                    }
                }
                Some(Tok::Ident(k)) => {
                    i += 1;
                    let key = k.clone();
                    match toks.get(i) {
                        None | Some(Tok::Comma) => Requirement {
                            key,
                            op: Op::Exists,
                            values: vec![],
                        },
                        Some(t @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq | Tok::Gt | Tok::Lt)) => {
                            let op = match t {
                                Tok::NotEq => Op::NotEquals,
                                Tok::Gt => Op::GreaterThan,
                                Tok::Lt => Op::LessThan,
                                _ => Op::Equals,
                            };
                            i += 1;
                            let value = match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    i += 1;
                                    v.clone()
                                }
                                None | Some(Tok::Comma) => String::new(),
                                Some(Tok::In) => {
                                    i += 1;
                                    "in".into()
                                }
                                Some(Tok::NotIn) => {
                                    i += 1;
                                    "notin".into()
                                }
                                Some(_) => return Err(err("expected a value")),
                            };
                            if matches!(op, Op::GreaterThan | Op::LessThan)
                                && value.parse::<i64>().is_err()
                            {
                                return Err(err(&format!("for 'Gt', 'Lt' operators, the value must be an integer: {value:?}")));
                            }
                            Requirement {
                                key,
                                op,
                                values: vec![value],
                            }
                        }
                        Some(t @ (Tok::In | Tok::NotIn)) => {
                            let op = if *t == Tok::In { Op::In } else { Op::NotIn };
                            i += 1;
                            if toks.get(i) != Some(&Tok::Open) {
                                return Err(err("found no '(' after 'in'/'notin'"));
                            }
                            i += 1;
                            let mut values = Vec::new();
                            let mut expect_value = true;
                            loop {
                                match toks.get(i) {
                                    Some(Tok::Close) => {
                                        if expect_value && !values.is_empty() {
                                            values.push(String::new());
                                        }
                                        i += 1;
                                        break;
                                    }
                                    Some(Tok::Comma) => {
                                        if expect_value {
                                            values.push(String::new());
                                        }
                                        expect_value = true;
                                        i += 1;
                                    }
                                    Some(Tok::Ident(v)) if expect_value => {
                                        values.push(v.clone());
                                        expect_value = false;
                                        i += 1;
                                    }
                                    Some(Tok::In) if expect_value => {
                                        values.push("in".into());
                                        expect_value = false;
                                        i += 1;
                                    }
                                    Some(Tok::NotIn) if expect_value => {
                                        values.push("notin".into());
                                        expect_value = false;
                                        i += 1;
                                    }
                                    _ => {
                                        return Err(err("malformed value set: expected ',' or ')'"))
                                    }
                                }
                            }
                            if values.is_empty() {
                                return Err(err(
                                    "for 'in', 'notin' operators, values set can't be empty",
                                ));
                            }
                            Requirement { key, op, values }
                        }
                        Some(_) => {
                            return Err(err(&format!("found unexpected token after key {key:?}")))
                        }
                    }
                }
                Some(_) => return Err(err("expected a label key")),
                None => return Err(err("found '', expected: identifier")),
            };
            check_key(&req.key)?;
            if !matches!(req.op, Op::GreaterThan | Op::LessThan) {
                for v in &req.values {
                    check_value(v)?;
                }
            }
            reqs.push(req);
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                }
                Some(_) => return Err(err("expected ',' between requirements")),
            }
        }
        Ok(LabelSelector { reqs })
    }

    /// True when the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Applies the selector to `metadata.labels` of `obj` (missing labels count as none; non-string values are ignored).
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| {
            let v = get(&r.key);
            match r.op {
                Op::Equals => v == Some(r.values[0].as_str()),
                Op::NotEquals => v != Some(r.values[0].as_str()),
                Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::GreaterThan | Op::LessThan => {
                    let (Some(have), Ok(want)) = (
                        v.and_then(|v| v.parse::<i64>().ok()),
                        r.values[0].parse::<i64>(),
                    ) else {
                        return false;
                    };
                    if r.op == Op::GreaterThan {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: Field,
    negate: bool,
    value: String,
}

/// A parsed field selector over `metadata.name` and `metadata.namespace` (the fields these resources support).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on `sep` outside backslash escapes, unescaping `\,` `\=` `\\`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                if let Some(p) = parts.last_mut() {
                    p.push('\\');
                    p.push(n);
                }
            }
        } else if c == sep {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses the text of a `fieldSelector` query parameter (already form-decoded).
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in split_escaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (key, negate, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = match unescape(key.trim()).as_str() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(SelectorError(format!("field label not supported: {other}"))),
            };
            terms.push(FieldTerm {
                field,
                negate,
                value: unescape(value),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The name this selector pins with `metadata.name=X`, if any (used for watches on one object).
    pub fn with_name(name: &str) -> FieldSelector {
        FieldSelector {
            terms: vec![FieldTerm {
                field: Field::Name,
                negate: false,
                value: name.to_string(),
            }],
        }
    }

    /// Adds the terms of `other` (both must hold).
    pub fn and(mut self, other: FieldSelector) -> FieldSelector {
        self.terms.extend(other.terms);
        self
    }

    /// Applies the selector to `obj`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let ptr = match t.field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let have = obj.pointer(ptr).and_then(Value::as_str).unwrap_or("");
            (have == t.value) != t.negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a-1", "namespace": "loco", "labels": labels}})
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equality_operators() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        assert!(sel("app=web").matches(&o));
        assert!(sel("app==web").matches(&o));
        assert!(!sel("app!=web").matches(&o));
        assert!(sel("app=web,tier=fe").matches(&o));
        assert!(!sel("app=web,tier=be").matches(&o));
        assert!(sel("missing!=x").matches(&o), "!= matches an absent label");
        assert!(sel("").matches(&o));
    }

    #[test]
    fn set_operators_with_spaces_from_form_decoding() {
        let o = obj(json!({"app": "b"}));
        assert!(sel("app in (a, b)").matches(&o));
        assert!(!sel("app notin (a, b)").matches(&o));
        assert!(sel("other notin (a)").matches(&o));
        assert!(!sel("other in (a)").matches(&o));
        assert!(sel("app").matches(&o));
        assert!(!sel("!app").matches(&o));
        assert!(sel("!other").matches(&o));
        assert!(sel("kubernetes.io/service-name notin (x),app").matches(&o));
    }

    #[test]
    fn numeric_comparisons() {
        let o = obj(json!({"n": "5"}));
        assert!(sel("n>3").matches(&o));
        assert!(!sel("n<3").matches(&o));
        assert!(LabelSelector::parse("n>x").is_err());
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "app in",
            "app in (a",
            "app in ()",
            "=x",
            "app=a=b",
            "a b",
            "!",
            "-bad-=x",
            "app=(x)",
            "app=a,",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn empty_value_is_legal() {
        let o = obj(json!({"app": ""}));
        assert!(sel("app=").matches(&o));
    }

    #[test]
    fn non_string_labels_never_match_values() {
        let o = obj(json!({"app": 5}));
        assert!(!sel("app=5").matches(&o));
        assert!(!sel("app").matches(&o));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s).map(|l| l.matches(&obj(json!({"a": "b"}))));
            let _ = FieldSelector::parse(&s).map(|f| f.matches(&obj(json!({}))));
        }

        #[test]
        fn equality_selector_matches_exactly_its_value(k in "[a-z][a-z0-9]{0,8}", v in "[a-z0-9]{0,8}", other in "[a-z0-9]{1,8}") {
            let sel = LabelSelector::parse(&format!("{k}={v}")).unwrap();
            let same = obj(json!({k.clone(): v.clone()}));
            proptest::prop_assert!(sel.matches(&same));
            if other != v {
                let different = obj(json!({k: other}));
                proptest::prop_assert!(!sel.matches(&different));
            }
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let f = |s: &str| FieldSelector::parse(s).unwrap();
        assert!(f("metadata.name=a-1").matches(&o));
        assert!(f("metadata.name==a-1,metadata.namespace=loco").matches(&o));
        assert!(!f("metadata.name!=a-1").matches(&o));
        assert!(!f("metadata.namespace=default").matches(&o));
        assert!(f("").matches(&o));
        assert!(FieldSelector::parse("spec.x=1").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::with_name("a-1")
            .and(f("metadata.namespace=loco"))
            .matches(&o));
    }
}
