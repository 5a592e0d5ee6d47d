//! RFC 7386 JSON merge patch (`application/merge-patch+json`) and RFC 6902 JSON patch (`application/json-patch+json`).

use serde_json::Value;

/// Applies an RFC 7386 merge patch: objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Decodes one JSON-pointer token (`~1` is `/`, `~0` is `~`).
fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {path:?}"));
    };
    Ok(rest.split('/').map(unescape_token).collect())
}

fn array_index(tok: &str, len: usize, for_insert: bool) -> Result<usize, String> {
    if for_insert && tok == "-" {
        return Ok(len);
    }
    let i: usize = tok
        .parse()
        .map_err(|_| format!("invalid array index {tok:?}"))?;
    let max = if for_insert {
        len
    } else {
        len.saturating_sub(1)
    };
    if (for_insert && i <= len) || (!for_insert && i < len) {
        Ok(i)
    } else {
        Err(format!("array index {i} out of bounds (max {max})"))
    }
}

fn parent_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("path component {t:?} not found"))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("cannot descend into a scalar at {t:?}")),
        };
    }
    Ok(cur)
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    let toks = split_pointer(path)?;
    let mut cur = doc;
    for t in &toks {
        cur = match cur {
            Value::Object(m) => m.get(t).ok_or_else(|| format!("path {path:?} not found"))?,
            Value::Array(a) => &a[array_index(t, a.len(), false)?],
            _ => return Err(format!("path {path:?} not found")),
        };
    }
    Ok(cur.clone())
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = split_pointer(path)?;
    let Some((last, parents)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(format!("cannot add to a scalar at {path:?}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = split_pointer(path)?;
    let Some((last, parents)) = toks.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {path:?} not found")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path:?} not found")),
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations), all or nothing.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let Value::Array(ops) = ops else {
        return Err("a JSON patch must be an array of operations".into());
    };
    let mut doc = target.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{name} operation without \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{name} operation without \"from\""))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let v = get(&doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                if get(&doc, path)? != value()? {
                    return Err(format!("testing value {path:?} failed"));
                }
            }
            other => return Err(format!("unsupported JSON patch operation {other:?}")),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_appendix_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..100).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn merge_patches_are_idempotent(target in json_value(), patch in json_value()) {
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            proptest::prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"metadata":{"labels":{"a/b":"1"}},"endpoints":[{"x":1},{"x":2}]});
        let out = json_patch(
            &doc,
            &json!([
                {"op":"replace","path":"/endpoints/0/x","value":10},
                {"op":"add","path":"/endpoints/-","value":{"x":3}},
                {"op":"remove","path":"/metadata/labels/a~1b"},
                {"op":"copy","from":"/endpoints/1","path":"/first"},
                {"op":"move","from":"/first","path":"/second"},
                {"op":"test","path":"/second/x","value":2}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata":{"labels":{}},"endpoints":[{"x":10},{"x":2},{"x":3}],"second":{"x":2}})
        );
    }

    #[test]
    fn json_patch_failures_leave_no_partial_result() {
        let doc = json!({"a":1});
        assert!(json_patch(&doc, &json!([{"op":"remove","path":"/b"}])).is_err());
        assert!(json_patch(&doc, &json!([{"op":"test","path":"/a","value":2}])).is_err());
        assert!(json_patch(&doc, &json!({"op":"add"})).is_err());
        assert!(json_patch(&doc, &json!([{"op":"add","path":"/x/y","value":1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op":"frobnicate","path":"/a"}])).is_err());
    }
}
