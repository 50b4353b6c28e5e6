//! Checks that need the whole input, turning the parsed options into the
//! plan that `expand` emits. Errors are spanned at the offending tokens.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{GenericArgument, Member, PathArguments, Type};

use crate::ast::{EventInput, HandlerInput, Shape};
use crate::attr::{KeyRef, Ordering, Timeout};
use crate::case;
use crate::ctxt::Ctxt;

/// AMQP routing keys and queue names are short strings.
const MAX_NAME_LEN: usize = 255;

/// What `#[derive(Event)]` emits.
pub struct EventPlan<'a> {
    pub name: String,
    /// The `name = "..."` literal, or the type name for a default name.
    pub name_span: Span,
    pub version: u32,
    pub key: Option<KeyPlan<'a>>,
}

/// The partition key field.
pub struct KeyPlan<'a> {
    pub member: Member,
    pub ty: &'a Type,
    /// `Option<T>`: `None` means unkeyed for this instance.
    pub optional: bool,
}

pub fn event<'a>(cx: &Ctxt, input: &EventInput<'a>) -> EventPlan<'a> {
    let (name, name_span) = match &input.attrs.name {
        Some(lit) => {
            let name = lit.value();
            if let Err(msg) = check_event_name(&name) {
                cx.error_spanned_by(lit, msg);
            }
            (name, lit.span())
        }
        None => (case::dotted(&input.ident.to_string()), input.ident.span()),
    };
    let version = input.attrs.version.map_or(1, |(v, _)| v);
    let key = match &input.shape {
        Shape::Struct(fields) => key_of_struct(cx, input, fields),
        Shape::Enum => {
            if let Some(key) = &input.attrs.key {
                cx.error_at(
                    key.span(),
                    "an enum event cannot name a key field; derive on a struct, or leave the enum unkeyed",
                );
            }
            None
        }
        Shape::Union => None,
    };
    EventPlan {
        name,
        name_span,
        version,
        key,
    }
}

fn key_of_struct<'a>(
    cx: &Ctxt,
    input: &EventInput<'a>,
    fields: &[crate::ast::Field<'a>],
) -> Option<KeyPlan<'a>> {
    let marked: Vec<_> = fields.iter().filter(|f| f.attrs.key.is_some()).collect();
    for extra in marked.iter().skip(1) {
        cx.error_at(
            extra.attrs.key.unwrap_or_else(Span::call_site),
            "only one field can be the partition key",
        );
    }
    let field = match (&input.attrs.key, marked.first()) {
        (Some(key), Some(marker)) => {
            cx.error_at(
                marker.attrs.key.unwrap_or_else(Span::call_site),
                "the key is already given by `#[event(key = ...)]` on the type; keep only one",
            );
            find_field(cx, fields, key)
        }
        (Some(key), None) => find_field(cx, fields, key),
        (None, Some(marker)) => Some(*marker),
        (None, None) => None,
    }?;
    Some(KeyPlan {
        member: field.member.clone(),
        ty: field.ty,
        optional: is_option(field.ty),
    })
}

fn find_field<'f, 'a>(
    cx: &Ctxt,
    fields: &'f [crate::ast::Field<'a>],
    key: &KeyRef,
) -> Option<&'f crate::ast::Field<'a>> {
    let found = fields.iter().find(|f| match (&f.member, key) {
        (Member::Named(a), KeyRef::Named(b)) => a == b,
        (Member::Unnamed(a), KeyRef::Index(b)) => a.index == b.index,
        _ => false,
    });
    if found.is_none() {
        let available: Vec<String> = fields
            .iter()
            .map(|f| format!("`{}`", f.member.to_token_stream()))
            .collect();
        let wanted = match key {
            KeyRef::Named(ident) => ident.to_string(),
            KeyRef::Index(index) => index.index.to_string(),
        };
        let msg = if available.is_empty() {
            format!("key field `{wanted}` does not exist: this type has no fields")
        } else {
            format!(
                "key field `{wanted}` does not exist; fields are {}",
                available.join(", ")
            )
        };
        cx.error_at(key.span(), msg);
    }
    found
}

/// `Option<T>`, `std::option::Option<T>`, `core::option::Option<T>`.
fn is_option(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident != "Option" {
        return false;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) => {
            args.args.len() == 1 && matches!(args.args[0], GenericArgument::Type(_))
        }
        _ => false,
    }
}

/// Event names are routing keys: dot-separated words of ASCII letters,
/// digits, `_`, `-`, `:` and `/` (no AMQP wildcards, no spaces).
fn check_event_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the event name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the event name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')))
    {
        return Err(format!(
            "the event name contains {bad:?}; use ASCII letters, digits and `.` `_` `-` `:` `/`"
        ));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err("the event name has an empty word: dots separate non-empty words".into());
    }
    Ok(())
}

/// What `#[derive(Handler)]` emits.
pub struct HandlerPlan<'a> {
    pub group: String,
    pub events: &'a [Type],
    pub concurrency: Option<usize>,
    pub ordering: Option<Ordering>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub jitter: Option<bool>,
    pub inbox: Option<bool>,
    pub timeout: Option<Timeout>,
    pub prefetch: Option<u16>,
    pub partitions: Option<u16>,
}

pub fn handler<'a>(cx: &Ctxt, input: &'a HandlerInput<'a>) -> HandlerPlan<'a> {
    let attrs = &input.attrs;
    let group = match &attrs.group {
        Some(lit) => {
            let group = lit.value();
            if group.is_empty() {
                cx.error_spanned_by(lit, "the group must not be empty");
            } else if group.len() > MAX_NAME_LEN {
                cx.error_spanned_by(
                    lit,
                    format!("the group name is longer than {MAX_NAME_LEN} bytes"),
                );
            } else if group.chars().any(|c| c.is_whitespace() || c.is_control()) {
                cx.error_spanned_by(
                    lit,
                    "the group name must not contain whitespace or control characters",
                );
            }
            group
        }
        None => {
            cx.error_spanned_by(
                input.ident,
                "missing `#[handler(group = \"...\")]`: the group names the queue this handler consumes from",
            );
            String::new()
        }
    };
    let events: &[Type] = match &attrs.events {
        Some(events) => {
            for (i, ty) in events.iter().enumerate() {
                let text = ty.to_token_stream().to_string();
                if events[..i]
                    .iter()
                    .any(|t| t.to_token_stream().to_string() == text)
                {
                    cx.error_spanned_by(
                        ty,
                        format!(
                            "`{}` is listed twice in `events(...)`",
                            text.replace(' ', "")
                        ),
                    );
                }
            }
            events
        }
        None => {
            cx.error_spanned_by(
                input.ident,
                "missing `#[handler(events(...))]`: list the event types this handler accepts",
            );
            &[]
        }
    };
    if let (Some((initial, _)), Some((max, max_span))) = (attrs.backoff_ms, attrs.max_backoff_ms) {
        if max < initial {
            cx.error_at(
                max_span,
                format!("`max_backoff_ms` ({max}) is smaller than `backoff_ms` ({initial})"),
            );
        }
    }
    HandlerPlan {
        group,
        events,
        concurrency: attrs.concurrency,
        ordering: attrs.ordering,
        max_attempts: attrs.max_attempts,
        backoff_ms: attrs.backoff_ms.map(|(v, _)| v),
        max_backoff_ms: attrs.max_backoff_ms.map(|(v, _)| v),
        jitter: attrs.jitter,
        inbox: attrs.inbox,
        timeout: attrs.timeout,
        prefetch: attrs.prefetch,
        partitions: attrs.partitions,
    }
}
