//! Parsing of `#[event(...)]` and `#[handler(...)]` into typed options.
//!
//! Each option is checked for form (literal type, range, duplicates) here;
//! checks that need the whole input (does the key field exist?) live in
//! `valid.rs`. Errors go to the [`Ctxt`] so parsing continues with the next
//! attribute.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitBool, LitInt, LitStr, Path, Token, Type};

use crate::ctxt::Ctxt;
use crate::symbol::*;

/// Stores `value` unless the option was already given.
fn set_once<T>(cx: &Ctxt, slot: &mut Option<T>, value: T, meta: &ParseNestedMeta<'_>, sym: Symbol) {
    if slot.is_some() {
        cx.error_spanned_by(&meta.path, format!("duplicate `{sym}` option"));
    } else {
        *slot = Some(value);
    }
}

/// `option = "a::path"`.
fn parse_crate_path(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let lit: LitStr = meta.value()?.parse()?;
    lit.parse::<Path>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!(
                "`crate` expects a path such as \"::eventbus\", found {:?}",
                lit.value()
            ),
        )
    })
}

/// `option = N` as an integer in `min..=T::MAX`, with the literal's span.
fn parse_int<T>(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    sym: Symbol,
    min: u64,
) -> syn::Result<Option<(T, Span)>>
where
    T: TryFrom<u64> + Bounded,
{
    parse_int_in(cx, meta, sym, min, T::MAX)
}

/// `option = N` as an integer in `min..=max`, with the literal's span.
fn parse_int_in<T>(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    sym: Symbol,
    min: u64,
    max: u64,
) -> syn::Result<Option<(T, Span)>>
where
    T: TryFrom<u64>,
{
    let lit: LitInt = meta.value()?.parse()?;
    let value = lit
        .base10_parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v));
    match value.and_then(|v| T::try_from(v).ok()) {
        Some(v) => Ok(Some((v, lit.span()))),
        None => {
            cx.error_spanned_by(&lit, format!("`{sym}` must be between {min} and {max}"));
            Ok(None)
        }
    }
}

/// Most partitions of one group (`partitions = N`).
const MAX_PARTITIONS: u64 = 1024;

/// Integer types with a maximum, for range messages.
trait Bounded {
    const MAX: u64;
}

impl Bounded for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Bounded for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

impl Bounded for usize {
    // Concurrency is a worker count; keep it portable and sane.
    const MAX: u64 = u16::MAX as u64;
}

/// Error for an option that is not known.
fn unknown(meta: &ParseNestedMeta<'_>, what: &str, options: &[Symbol]) -> syn::Error {
    let path = meta.path.to_token_stream_string();
    meta.error(format!(
        "unknown {what} option `{path}`; expected {}",
        one_of(options)
    ))
}

trait PathString {
    fn to_token_stream_string(&self) -> String;
}

impl PathString for Path {
    fn to_token_stream_string(&self) -> String {
        let s = quote::ToTokens::to_token_stream(self).to_string();
        s.replace(' ', "")
    }
}

// ---------------------------------------------------------------------------
// #[event(...)]
// ---------------------------------------------------------------------------

/// Which field is the partition key, as written by the user.
#[derive(Clone)]
pub enum KeyRef {
    /// `key = "user_id"` or `key = user_id`.
    Named(Ident),
    /// `key = 0` or `key = "0"` (tuple structs).
    Index(syn::Index),
}

impl KeyRef {
    pub fn span(&self) -> Span {
        match self {
            KeyRef::Named(ident) => ident.span(),
            KeyRef::Index(index) => index.span,
        }
    }
}

/// Options of `#[event(...)]` on the type.
#[derive(Default)]
pub struct EventAttrs {
    pub name: Option<LitStr>,
    pub version: Option<(u32, Span)>,
    pub key: Option<KeyRef>,
    pub krate: Option<Path>,
}

fn parse_key_ref(meta: &ParseNestedMeta<'_>) -> syn::Result<KeyRef> {
    let input = meta.value()?;
    let lookahead = input.lookahead1();
    if lookahead.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let text = lit.value();
        if let Ok(index) = text.parse::<u32>() {
            return Ok(KeyRef::Index(syn::Index {
                index,
                span: lit.span(),
            }));
        }
        match syn::parse_str::<Ident>(&text) {
            Ok(ident) => Ok(KeyRef::Named(Ident::new(&ident.to_string(), lit.span()))),
            Err(_) => Err(syn::Error::new(
                lit.span(),
                format!("`key` expects a field name, found {text:?}"),
            )),
        }
    } else if lookahead.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        Ok(KeyRef::Index(syn::Index {
            index: lit.base10_parse()?,
            span: lit.span(),
        }))
    } else if lookahead.peek(Ident) {
        Ok(KeyRef::Named(input.parse()?))
    } else {
        Err(lookahead.error())
    }
}

impl EventAttrs {
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = EventAttrs::default();
        for attr in attrs.iter().filter(|a| a.path() == EVENT) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path == NAME {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(cx, &mut out.name, lit, &meta, NAME);
                } else if meta.path == VERSION {
                    if let Some(v) = parse_int::<u32>(cx, &meta, VERSION, 1)? {
                        set_once(cx, &mut out.version, v, &meta, VERSION);
                    }
                } else if meta.path == KEY {
                    if !meta.input.peek(Token![=]) {
                        return Err(meta.error(
                            "expected `key = \"field\"` here; a bare `#[event(key)]` marks a field, not the type",
                        ));
                    }
                    let key = parse_key_ref(&meta)?;
                    set_once(cx, &mut out.key, key, &meta, KEY);
                } else if meta.path == CRATE {
                    let path = parse_crate_path(&meta)?;
                    set_once(cx, &mut out.krate, path, &meta, CRATE);
                } else {
                    return Err(unknown(&meta, "`#[event]`", EVENT_OPTIONS));
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }
        out
    }
}

/// Options of `#[event(...)]` on a field.
#[derive(Default)]
pub struct FieldAttrs {
    /// Span of a `#[event(key)]` marker.
    pub key: Option<Span>,
}

impl FieldAttrs {
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = FieldAttrs::default();
        for attr in attrs.iter().filter(|a| a.path() == EVENT) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path == KEY {
                    if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                        return Err(
                            meta.error("on a field, `key` takes no value: write `#[event(key)]`")
                        );
                    }
                    set_once(cx, &mut out.key, meta.path.span(), &meta, KEY);
                } else {
                    return Err(unknown(&meta, "field `#[event]`", &[KEY]));
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// #[handler(...)]
// ---------------------------------------------------------------------------

/// `ordering = "key" | "unordered"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    ByKey,
    Unordered,
}

/// `timeout_ms = N` or `timeout = "none"`.
#[derive(Clone, Copy)]
pub enum Timeout {
    Millis(u64),
    Unlimited,
}

/// Options of `#[handler(...)]`.
#[derive(Default)]
pub struct HandlerAttrs {
    pub group: Option<LitStr>,
    pub events: Option<Vec<Type>>,
    pub concurrency: Option<usize>,
    pub ordering: Option<Ordering>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<(u64, Span)>,
    pub max_backoff_ms: Option<(u64, Span)>,
    pub jitter: Option<bool>,
    pub inbox: Option<bool>,
    pub timeout: Option<Timeout>,
    pub prefetch: Option<u16>,
    pub partitions: Option<u16>,
    pub krate: Option<Path>,
}

fn parse_ordering(meta: &ParseNestedMeta<'_>) -> syn::Result<Ordering> {
    let input = meta.value()?;
    let (text, span) = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        (lit.value(), lit.span())
    } else {
        let ident: Ident = input.parse().map_err(|_| {
            input.error("expected `ordering = \"key\"` or `ordering = \"unordered\"`")
        })?;
        (ident.to_string(), ident.span())
    };
    match text.as_str() {
        "key" | "by_key" | "by-key" | "keyed" => Ok(Ordering::ByKey),
        "unordered" | "none" => Ok(Ordering::Unordered),
        other => Err(syn::Error::new(
            span,
            format!("unknown ordering `{other}`; expected \"key\" or \"unordered\""),
        )),
    }
}

impl HandlerAttrs {
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = HandlerAttrs::default();
        for attr in attrs.iter().filter(|a| a.path() == HANDLER) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path == GROUP {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(cx, &mut out.group, lit, &meta, GROUP);
                } else if meta.path == EVENTS {
                    if !meta.input.peek(syn::token::Paren) {
                        return Err(meta.error(
                            "expected a parenthesized list: `events(EventA, EventB)`",
                        ));
                    }
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let list = Punctuated::<Type, Token![,]>::parse_terminated(&content)?;
                    if list.is_empty() {
                        cx.error_spanned_by(&meta.path, "`events(...)` lists no event; name at least one event type");
                    }
                    set_once(cx, &mut out.events, list.into_iter().collect(), &meta, EVENTS);
                } else if meta.path == CONCURRENCY {
                    if let Some((v, _)) = parse_int::<usize>(cx, &meta, CONCURRENCY, 1)? {
                        set_once(cx, &mut out.concurrency, v, &meta, CONCURRENCY);
                    }
                } else if meta.path == ORDERING {
                    let ordering = parse_ordering(&meta)?;
                    set_once(cx, &mut out.ordering, ordering, &meta, ORDERING);
                } else if meta.path == MAX_ATTEMPTS {
                    if let Some((v, _)) = parse_int::<u32>(cx, &meta, MAX_ATTEMPTS, 1)? {
                        set_once(cx, &mut out.max_attempts, v, &meta, MAX_ATTEMPTS);
                    }
                } else if meta.path == BACKOFF_MS {
                    if let Some(v) = parse_int::<u64>(cx, &meta, BACKOFF_MS, 0)? {
                        set_once(cx, &mut out.backoff_ms, v, &meta, BACKOFF_MS);
                    }
                } else if meta.path == MAX_BACKOFF_MS {
                    if let Some(v) = parse_int::<u64>(cx, &meta, MAX_BACKOFF_MS, 0)? {
                        set_once(cx, &mut out.max_backoff_ms, v, &meta, MAX_BACKOFF_MS);
                    }
                } else if meta.path == INBOX {
                    // `inbox` alone means `inbox = true`.
                    let value = if meta.input.peek(syn::Token![=]) {
                        let lit: LitBool = meta.value()?.parse()?;
                        lit.value
                    } else {
                        true
                    };
                    set_once(cx, &mut out.inbox, value, &meta, INBOX);
                } else if meta.path == JITTER {
                    let lit: LitBool = meta.value()?.parse()?;
                    set_once(cx, &mut out.jitter, lit.value, &meta, JITTER);
                } else if meta.path == TIMEOUT_MS {
                    if let Some((v, _)) = parse_int::<u64>(cx, &meta, TIMEOUT_MS, 1)? {
                        if out.timeout.is_some() {
                            cx.error_spanned_by(&meta.path, "the timeout is already set: use either `timeout_ms = N` or `timeout = \"none\"`, once");
                        } else {
                            out.timeout = Some(Timeout::Millis(v));
                        }
                    }
                } else if meta.path == TIMEOUT {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value() != "none" {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`timeout` only accepts \"none\" (no time limit); for a limit write `timeout_ms = N`",
                        ));
                    }
                    if out.timeout.is_some() {
                        cx.error_spanned_by(&meta.path, "the timeout is already set: use either `timeout_ms = N` or `timeout = \"none\"`, once");
                    } else {
                        out.timeout = Some(Timeout::Unlimited);
                    }
                } else if meta.path == PREFETCH {
                    if let Some((v, _)) = parse_int::<u16>(cx, &meta, PREFETCH, 1)? {
                        set_once(cx, &mut out.prefetch, v, &meta, PREFETCH);
                    }
                } else if meta.path == PARTITIONS {
                    if let Some((v, _)) = parse_int_in::<u16>(cx, &meta, PARTITIONS, 1, MAX_PARTITIONS)? {
                        set_once(cx, &mut out.partitions, v, &meta, PARTITIONS);
                    }
                } else if meta.path == CRATE {
                    let path = parse_crate_path(&meta)?;
                    set_once(cx, &mut out.krate, path, &meta, CRATE);
                } else {
                    return Err(unknown(&meta, "`#[handler]`", HANDLER_OPTIONS));
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }
        out
    }
}
