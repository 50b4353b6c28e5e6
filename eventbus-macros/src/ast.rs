//! The typed view of a derive input that the later stages work on.

use syn::{Data, DeriveInput, Fields, Generics, Ident, Member, Type};

use crate::attr::{EventAttrs, FieldAttrs, HandlerAttrs};
use crate::ctxt::Ctxt;
use crate::symbol::{EVENT, HANDLER};

/// A type deriving `Event`.
pub struct EventInput<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub attrs: EventAttrs,
    pub shape: Shape<'a>,
}

/// What kind of type the event is.
pub enum Shape<'a> {
    /// A struct (named, tuple or unit) with its fields.
    Struct(Vec<Field<'a>>),
    /// An enum: serialized by serde as a whole; no key field.
    Enum,
    /// A union: rejected.
    Union,
}

/// One field of an event struct.
pub struct Field<'a> {
    pub member: Member,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
}

impl<'a> EventInput<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = EventAttrs::from_attrs(cx, &input.attrs);
        let shape = match &input.data {
            Data::Struct(data) => Shape::Struct(fields_from_syn(cx, &data.fields)),
            Data::Enum(data) => {
                for variant in &data.variants {
                    for attr in variant.attrs.iter().filter(|a| a.path() == EVENT) {
                        cx.error_spanned_by(attr, "`#[event]` is not allowed on enum variants");
                    }
                    for field in &variant.fields {
                        for attr in field.attrs.iter().filter(|a| a.path() == EVENT) {
                            cx.error_spanned_by(
                                attr,
                                "an enum event has no key field: `#[event(key)]` works on struct fields only",
                            );
                        }
                    }
                }
                Shape::Enum
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`#[derive(Event)]` does not support unions; use a struct or an enum",
                );
                Shape::Union
            }
        };
        EventInput {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            shape,
        }
    }
}

fn fields_from_syn<'a>(cx: &Ctxt, fields: &'a Fields) -> Vec<Field<'a>> {
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| Field {
            member: match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(syn::Index::from(i)),
            },
            ty: &field.ty,
            attrs: FieldAttrs::from_attrs(cx, &field.attrs),
        })
        .collect()
}

/// A type deriving `Handler`.
pub struct HandlerInput<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub attrs: HandlerAttrs,
}

impl<'a> HandlerInput<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = HandlerAttrs::from_attrs(cx, &input.attrs);
        let misplaced = |attrs: &[syn::Attribute]| {
            for attr in attrs.iter().filter(|a| a.path() == HANDLER) {
                cx.error_spanned_by(attr, "`#[handler]` belongs on the type, not on its members");
            }
        };
        match &input.data {
            Data::Struct(data) => data.fields.iter().for_each(|f| misplaced(&f.attrs)),
            Data::Enum(data) => data.variants.iter().for_each(|v| {
                misplaced(&v.attrs);
                v.fields.iter().for_each(|f| misplaced(&f.attrs));
            }),
            Data::Union(data) => data.fields.named.iter().for_each(|f| misplaced(&f.attrs)),
        }
        HandlerInput {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
        }
    }
}
