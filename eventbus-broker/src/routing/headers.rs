//! Headers-exchange matching (`x-match` = `all` | `any` | `all-with-x` | `any-with-x`).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::protocol::method::header_value_eq;

/// Whether message `headers` match a binding's `args`.
///
/// Keys starting with `x-` in the binding are ignored unless `x-match` ends in `-with-x`.
/// A binding value of type void matches on key presence only.
pub fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = match args.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "all".to_owned(),
    };
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    let mut considered = 0usize;
    let mut matched = 0usize;
    for (k, v) in args {
        if k.as_str() == "x-match" || (!with_x && k.as_str().starts_with("x-")) {
            continue;
        }
        considered += 1;
        let ok = match headers.inner().get(k.as_str()) {
            None => false,
            Some(hv) => matches!(v, AMQPValue::Void) || header_value_eq(v, hv),
        };
        if ok {
            matched += 1;
            if any {
                return true;
            }
        } else if !any {
            return false;
        }
    }
    if any {
        matched > 0
    } else {
        let _ = considered;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        t
    }

    #[test]
    fn all_and_any() {
        let all = t(&[("x-match", "all"), ("a", "1"), ("b", "2")]);
        let any = t(&[("x-match", "any"), ("a", "1"), ("b", "2")]);
        assert!(headers_match(
            &all,
            Some(&t(&[("a", "1"), ("b", "2"), ("c", "3")]))
        ));
        assert!(!headers_match(&all, Some(&t(&[("a", "1")]))));
        assert!(headers_match(&any, Some(&t(&[("a", "1")]))));
        assert!(!headers_match(&any, Some(&t(&[("a", "2")]))));
        assert!(!headers_match(&any, None));
        assert!(headers_match(&t(&[("x-match", "all")]), None));
    }

    #[test]
    fn values_compare_like_rabbitmq() {
        let one = |v: AMQPValue| {
            let mut b = FieldTable::default();
            b.insert("v".into(), v);
            b
        };
        let binding = one(AMQPValue::LongInt(1));
        for h in [
            AMQPValue::ShortShortInt(1),
            AMQPValue::LongLongInt(1),
            AMQPValue::Timestamp(1),
            AMQPValue::Float(1.0),
            AMQPValue::Double(1.0),
        ] {
            assert!(headers_match(&binding, Some(&one(h.clone()))), "{h:?}");
        }
        for h in [
            AMQPValue::LongString("1".into()),
            AMQPValue::Boolean(true),
            AMQPValue::Double(1.5),
        ] {
            assert!(!headers_match(&binding, Some(&one(h.clone()))), "{h:?}");
        }
        let s = one(AMQPValue::LongString("1".into()));
        assert!(headers_match(
            &s,
            Some(&one(AMQPValue::ByteArray(b"1".to_vec().into())))
        ));
    }
}
