//! Envelope ⇄ AMQP message properties.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use uuid::Uuid;

use crate::event::JSON_CONTENT_TYPE;
use crate::transport::TransportError;
use crate::{Envelope, Headers};

const VERSION: &str = "x-eb-version";
const KEY: &str = "x-eb-key";
const OCCURRED_AT: &str = "x-eb-occurred-at";
/// What a partitioned group's `x-consistent-hash` exchange hashes: the
/// envelope key, or the message id of an unkeyed envelope. Always set.
pub(super) const PARTITION_KEY: &str = "x-eb-partition-key";

/// The AMQP properties carrying `envelope`'s metadata.
pub fn properties_for(
    envelope: &Envelope,
    persistent: bool,
) -> Result<BasicProperties, TransportError> {
    let mut headers = FieldTable::default();
    headers.insert(VERSION.into(), AMQPValue::LongUInt(envelope.version));
    if let Some(key) = &envelope.key {
        headers.insert(
            KEY.into(),
            AMQPValue::LongString(LongString::from(key.as_bytes())),
        );
    }
    headers.insert(
        PARTITION_KEY.into(),
        AMQPValue::LongString(LongString::from(
            crate::transport::partition_key(envelope).as_bytes(),
        )),
    );
    headers.insert(
        OCCURRED_AT.into(),
        AMQPValue::LongString(LongString::from(
            envelope
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Nanos, true)
                .into_bytes(),
        )),
    );
    for (k, v) in envelope.headers.iter() {
        let k = ShortString::try_new(k.to_owned())
            .map_err(|_| TransportError::Rejected(format!("header name too long: {k:.40}…")))?;
        headers.insert(k, AMQPValue::LongString(LongString::from(v.as_bytes())));
    }
    let name = ShortString::try_new(envelope.name.to_string())
        .map_err(|_| TransportError::Rejected("event name longer than 255 bytes".to_owned()))?;
    let content_type = ShortString::try_new(envelope.content_type.to_string())
        .map_err(|_| TransportError::Rejected("content type longer than 255 bytes".to_owned()))?;
    let mut props = BasicProperties::default()
        .with_message_id(envelope.id.to_string().into())
        .with_type(name)
        .with_content_type(content_type)
        .with_timestamp(envelope.occurred_at.timestamp().max(0) as u64)
        .with_headers(headers);
    if persistent {
        props = props.with_delivery_mode(2);
    }
    Ok(props)
}

fn value_to_string(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        _ => return None, // tables and arrays (e.g. x-death) are not envelope headers
    })
}

/// A stable id for a message whose `message-id` is missing or not a UUID.
fn derived_id(seed: &[u8]) -> Uuid {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (seed, 0x5eed_u32).hash(&mut b);
    let bytes = ((u128::from(a.finish()) << 64) | u128::from(b.finish())).to_be_bytes();
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Rebuilds an envelope from an AMQP message. Never fails: missing metadata
/// is filled in so that a foreign or malformed message still reaches the
/// pipeline (and is dead-lettered there if it cannot be decoded).
pub fn envelope_from_amqp(routing_key: &str, props: &BasicProperties, body: &[u8]) -> Envelope {
    let mut headers = Headers::new();
    let mut version = 1;
    let mut key = None;
    let mut occurred_at = None;
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            match k.as_str() {
                VERSION => version = value_to_string(v).and_then(|s| s.parse().ok()).unwrap_or(1),
                KEY => key = value_to_string(v),
                PARTITION_KEY => {}
                OCCURRED_AT => {
                    occurred_at = value_to_string(v)
                        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                        .map(|d| d.with_timezone(&Utc))
                }
                other => {
                    if let Some(s) = value_to_string(v) {
                        headers.insert(other, s);
                    }
                }
            }
        }
    }
    let id = match props.message_id() {
        Some(m) => {
            Uuid::parse_str(m.as_str()).unwrap_or_else(|_| derived_id(m.as_str().as_bytes()))
        }
        None => derived_id(body),
    };
    let occurred_at = occurred_at
        .or_else(|| {
            props
                .timestamp()
                .and_then(|t| DateTime::from_timestamp(t as i64, 0))
        })
        .unwrap_or_else(Utc::now);
    Envelope {
        id,
        name: props
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_owned().into())
            .unwrap_or_else(|| routing_key.to_owned().into()),
        version,
        key,
        headers,
        occurred_at,
        content_type: match props.content_type() {
            Some(c) if c.as_str() == JSON_CONTENT_TYPE => Cow::Borrowed(JSON_CONTENT_TYPE),
            Some(c) => Cow::Owned(c.as_str().to_owned()),
            None => Cow::Borrowed(""),
        },
        payload: bytes::Bytes::copy_from_slice(body),
    }
}
