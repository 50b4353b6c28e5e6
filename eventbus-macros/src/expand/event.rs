//! `#[derive(Event)]`.

use std::fmt::Write as _;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, Member};

use crate::ast::{EventInput, Shape};
use crate::ctxt::Ctxt;
use crate::krate;
use crate::valid::{self, EventPlan};

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = EventInput::from_syn(&cx, input);
    let plan = valid::event(&cx, &parsed);
    let path = krate::runtime_path(parsed.attrs.krate.as_ref());
    match cx.check() {
        Ok(()) => expand(&parsed, &plan, &path),
        Err(err) => {
            let mut out = err.into_compile_error();
            if !matches!(parsed.shape, Shape::Union) {
                out.extend(fallback(&parsed, &plan, &path));
            }
            out
        }
    }
}

fn expand(input: &EventInput<'_>, plan: &EventPlan<'_>, p: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let where_clause = where_clause(input, p);
    let name = &plan.name;
    let version = plan.version;
    let key = match &plan.key {
        None => quote!(::core::option::Option::None),
        Some(key) => {
            // Spanned at the field so "`T` doesn't implement `Display`"
            // points at the key field.
            let span = match &key.member {
                Member::Named(ident) => ident.span(),
                Member::Unnamed(_) => key.ty.span(),
            };
            let member = match &key.member {
                Member::Named(ident) => Member::Named(Ident::new(&ident.to_string(), span)),
                Member::Unnamed(index) => Member::Unnamed(syn::Index {
                    index: index.index,
                    span,
                }),
            };
            let p = krate::respan(p, span);
            if key.optional {
                quote_spanned! {span=>
                    #p::__private::opt_key_to_string(&self.#member)
                }
            } else {
                quote_spanned! {span=>
                    ::core::option::Option::Some(#p::__private::key_to_string(&self.#member))
                }
            }
        }
    };
    // typetag registers one concrete type per name: generic types are not
    // `AnyEvent`s.
    let register = input
        .generics
        .params
        .is_empty()
        .then(|| any_event(ident, name, p));
    let marker = duplicate_name_marker(&plan.name, plan.name_span);
    quote! {
        #marker

        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_attributes, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Event for #ident #ty_generics #where_clause {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;

                #[inline]
                fn partition_key(&self) -> ::core::option::Option<#p::__private::String> {
                    #key
                }
            }

            #register
        };
    }
}

/// `impl AnyEvent`, registered with typetag under the event name.
///
/// typetag's attribute expands to paths that start with `typetag::`
/// (relative, not `::typetag`), so the runtime crate's re-export brought into
/// scope here is the crate they name: the user needs no typetag dependency.
/// The `use` lives in the derive's `const _` block and shadows nothing
/// outside it.
fn any_event(ident: &Ident, name: &str, p: &TokenStream) -> TokenStream {
    quote_spanned! {ident.span()=>
        use #p::__private::typetag;

        #[automatically_derived]
        #[typetag::serde(name = #name)]
        impl #p::AnyEvent for #ident {
            #[inline]
            fn name(&self) -> &'static str {
                <Self as #p::Event>::NAME
            }
            #[inline]
            fn version(&self) -> u32 {
                <Self as #p::Event>::VERSION
            }
            #[inline]
            fn partition_key(&self) -> ::core::option::Option<#p::__private::String> {
                <Self as #p::Event>::partition_key(self)
            }
            fn to_json(&self) -> #p::__private::JsonValue {
                #p::__private::payload_json(self)
            }
            #[inline]
            fn as_any(&self) -> &dyn ::core::any::Any {
                self
            }
        }
    }
}

/// The user's where clause, plus — for generic types — the bounds `Event`
/// needs, so `struct Wrapped<T>` works without spelling them out (as serde
/// adds `T: Serialize` for its derives).
fn where_clause(input: &EventInput<'_>, p: &TokenStream) -> TokenStream {
    let mut predicates: Vec<TokenStream> = input
        .generics
        .where_clause
        .iter()
        .flat_map(|w| w.predicates.iter())
        .map(|pred| quote!(#pred))
        .collect();
    if !input.generics.params.is_empty() {
        let ident = input.ident;
        let (_, ty_generics, _) = input.generics.split_for_impl();
        predicates.push(quote! {
            #ident #ty_generics: #p::__private::serde::Serialize
                + #p::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static
        });
    }
    if predicates.is_empty() {
        TokenStream::new()
    } else {
        quote!(where #(#predicates),*)
    }
}

/// A private unit struct named after the event name, at the derive site.
///
/// Two events with the same name in one module then fail with E0428 ("the
/// name `__eventbus_event_name_…` is defined multiple times"), pointing at
/// both `name = "..."` literals. Events in different modules or crates
/// cannot be compared at compile time; `EventRegistry::check()` reports
/// those at run time.
fn duplicate_name_marker(name: &str, span: Span) -> TokenStream {
    let ident = Ident::new(&marker_name(name), span);
    quote_spanned! {span=>
        #[doc(hidden)]
        #[allow(dead_code, non_camel_case_types)]
        struct #ident;
    }
}

/// `user.registered` → `__eventbus_event_name_user_registered`. Dots become
/// `_`; a name with any other punctuation also gets a hash suffix so that
/// different names never map to the same identifier.
fn marker_name(name: &str) -> String {
    let mut out = String::from("__eventbus_event_name_");
    let mut lossy = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
            lossy |= c != '.';
        }
    }
    if lossy {
        // FNV-1a: stable across compilers, unlike `DefaultHasher`.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let _ = write!(out, "_{hash:016x}");
    }
    out
}

/// Emitted next to the errors: an impl that satisfies the trait so that the
/// mistake in the attribute is the only error the user sees.
fn fallback(input: &EventInput<'_>, plan: &EventPlan<'_>, p: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let name = &plan.name;
    let version = plan.version;
    quote! {
        #[doc(hidden)]
        #[allow(unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Event for #ident #ty_generics #where_clause {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                fn partition_key(&self) -> ::core::option::Option<#p::__private::String> {
                    ::core::unreachable!()
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::marker_name;

    #[test]
    fn marker_names_are_readable_and_distinct() {
        assert_eq!(
            marker_name("user.registered"),
            "__eventbus_event_name_user_registered"
        );
        assert_ne!(
            marker_name("user_registered"),
            marker_name("user.registered")
        );
        assert_ne!(marker_name("a-b"), marker_name("a_b"));
        assert_eq!(marker_name("a-b"), marker_name("a-b"));
    }
}
