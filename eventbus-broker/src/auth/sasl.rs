//! SASL responses: PLAIN (`\0user\0pass`) and AMQPLAIN (a field table without its length).

use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

use crate::protocol::frame::check_nesting;

/// Mechanisms we advertise in `connection.start`.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// Extract `(username, password)` from a SASL response, or `None` if malformed.
pub fn parse_response(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            if parts.next().is_some() {
                return None;
            }
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        "AMQPLAIN" => {
            let mut buf = (response.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(response);
            check_nesting(Some(0), &buf).ok()?;
            let (_, table) = parse_field_table(&buf[..]).ok()?;
            let get = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials, SASLMechanism};

    #[test]
    fn plain_and_amqplain() {
        let c = Credentials::new("bob".into(), "s3cret".into());
        for (m, name) in [
            (SASLMechanism::Plain, "PLAIN"),
            (SASLMechanism::AMQPlain, "AMQPLAIN"),
        ] {
            let resp = c.sasl_auth_string(m);
            assert_eq!(
                parse_response(name, resp.as_bytes()),
                Some(("bob".to_owned(), "s3cret".to_owned()))
            );
        }
        assert_eq!(parse_response("PLAIN", b"garbage"), None);
    }
}
