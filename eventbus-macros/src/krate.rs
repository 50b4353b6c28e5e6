//! Which path the generated code uses to reach the runtime crate.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;
use syn::{Ident, Path};

/// The runtime crate as seen from the crate being compiled:
///
/// 1. `#[event(crate = "...")]` / `#[handler(crate = "...")]` if given;
/// 2. the facade `eventbus` if the user's `Cargo.toml` depends on it
///    (under whatever name it was renamed to);
/// 3. otherwise `eventbus-core`. Inside eventbus-core itself this is
///    `::eventbus_core`, which works because core declares
///    `extern crate self as eventbus_core;`;
/// 4. `::eventbus` if neither is found, so the error names the facade.
pub fn runtime_path(override_path: Option<&Path>) -> TokenStream {
    if let Some(path) = override_path {
        return quote!(#path);
    }
    if let Some(path) = lookup("eventbus", "eventbus") {
        return path;
    }
    if let Some(path) = lookup("eventbus-core", "eventbus_core") {
        return path;
    }
    quote!(::eventbus)
}

fn lookup(package: &str, own_name: &str) -> Option<TokenStream> {
    let name = match crate_name(package).ok()? {
        FoundCrate::Itself => own_name.to_owned(),
        FoundCrate::Name(name) => name,
    };
    let ident = Ident::new(&name, Span::call_site());
    Some(quote!(::#ident))
}

/// `tokens` with every span set to `span`, so that errors about generated
/// code built from a crate path point at the user's tokens rather than at
/// the derive.
pub fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    use proc_macro2::{Group, TokenTree};
    tokens
        .clone()
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), respan(&group.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
