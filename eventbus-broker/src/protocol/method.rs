//! Method helpers: ids, names, and typed access to field-table arguments.

use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable};

/// `(class_id, method_id)` of a method.
pub fn ids(m: &AMQPClass) -> (u16, u16) {
    (m.get_amqp_class_id(), m.get_amqp_method_id())
}

/// Read an integer-valued argument (any integer width, as clients differ).
pub fn value_as_i64(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(x) => *x as i64,
        AMQPValue::ShortShortUInt(x) => *x as i64,
        AMQPValue::ShortInt(x) => *x as i64,
        AMQPValue::ShortUInt(x) => *x as i64,
        AMQPValue::LongInt(x) => *x as i64,
        AMQPValue::LongUInt(x) => *x as i64,
        AMQPValue::LongLongInt(x) => *x,
        AMQPValue::Timestamp(x) => *x as i64,
        _ => return None,
    })
}

/// Read any numeric value as a float.
pub fn value_as_f64(v: &AMQPValue) -> Option<f64> {
    match v {
        AMQPValue::Float(f) => Some(*f as f64),
        AMQPValue::Double(d) => Some(*d),
        other => value_as_i64(other).map(|i| i as f64),
    }
}

/// Read a string-valued argument (short or long string).
pub fn value_as_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Look up `key` in a table.
pub fn arg<'a>(t: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    t.inner().get(key)
}

/// Long-string value helper.
pub fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Semantic equality of two argument values (integer widths and string kinds are normalised).
///
/// Used for declare/bind argument equivalence, where RabbitMQ compares type classes too: an
/// integer never equals a float (`x-message-ttl` 1000 vs 1000.0 is "inequivalent arg").
/// Headers-exchange matching uses [`header_value_eq`] instead.
pub fn value_eq(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_as_i64(a), value_as_i64(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_as_str(a), value_as_str(b)) {
        return x == y;
    }
    a == b
}

/// Raw bytes of a string-like value (short string, long string, byte array).
fn value_as_bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

/// Equality of a headers-exchange binding value and a message header value, as RabbitMQ
/// (3.10) compares them with Erlang's `==`: numbers by value across every integer width,
/// timestamp, float and double (`1` == `1.0`); strings and byte arrays by their bytes; a
/// number never equals a string, boolean or decimal; anything else structurally.
pub fn header_value_eq(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_as_i64(a), value_as_i64(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_as_f64(a), value_as_f64(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_as_bytes(a), value_as_bytes(b)) {
        return x == y;
    }
    a == b
}

/// Human-readable value, as RabbitMQ prints it in error messages.
pub fn value_display(v: &AMQPValue) -> String {
    if let Some(i) = value_as_i64(v) {
        return i.to_string();
    }
    if let Some(s) = value_as_str(v) {
        return s;
    }
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}
