//! `#[derive(Handler)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::HandlerInput;
use crate::attr::{Ordering, Timeout};
use crate::ctxt::Ctxt;
use crate::krate;
use crate::valid::{self, HandlerPlan};

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = HandlerInput::from_syn(&cx, input);
    let plan = valid::handler(&cx, &parsed);
    let path = krate::runtime_path(parsed.attrs.krate.as_ref());
    match cx.check() {
        Ok(()) => expand(&parsed, &plan, &path),
        Err(err) => {
            let mut out = err.into_compile_error();
            out.extend(fallback(&parsed, &path));
            out
        }
    }
}

fn expand(input: &HandlerInput<'_>, plan: &HandlerPlan<'_>, p: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let group = &plan.group;

    let mut settings = Vec::new();
    if let Some(n) = plan.concurrency {
        settings.push(quote!(__config.concurrency = #n;));
    }
    if let Some(ordering) = plan.ordering {
        let variant = match ordering {
            Ordering::ByKey => quote!(ByKey),
            Ordering::Unordered => quote!(Unordered),
        };
        settings.push(quote!(__config.ordering = #p::Ordering::#variant;));
    }
    if let Some(n) = plan.max_attempts {
        settings.push(quote!(__config.retry.max_attempts = #n;));
    }
    if let Some(ms) = plan.backoff_ms {
        settings.push(
            quote!(__config.retry.backoff.initial = #p::__private::Duration::from_millis(#ms);),
        );
    }
    if let Some(ms) = plan.max_backoff_ms {
        settings
            .push(quote!(__config.retry.backoff.max = #p::__private::Duration::from_millis(#ms);));
    }
    if let Some(jitter) = plan.jitter {
        settings.push(quote!(__config.retry.backoff.jitter = #jitter;));
    }
    if let Some(inbox) = plan.inbox {
        settings.push(quote!(__config.inbox = #inbox;));
    }
    match plan.timeout {
        None => {}
        Some(Timeout::Millis(ms)) => settings.push(quote!(
            __config.timeout = ::core::option::Option::Some(
                #p::__private::Duration::from_millis(#ms)
            );
        )),
        Some(Timeout::Unlimited) => {
            settings.push(quote!(__config.timeout = ::core::option::Option::None;));
        }
    }
    if let Some(n) = plan.prefetch {
        settings.push(quote!(__config.prefetch = #n;));
    }
    if let Some(n) = plan.partitions {
        settings.push(quote!(__config.partitions = #n;));
    }

    // Spanned at each event type in the attribute: "`E` is not an Event"
    // and "the trait bound `H: Handle<E>` is not satisfied" point there.
    let names = plan.events.iter().map(|ty| {
        let p = krate::respan(p, ty.span());
        quote_spanned! {ty.span()=> <#ty as #p::Event>::NAME }
    });
    // One boxed future per event, each spanned entirely at the event type:
    // a missing `Handle<E>` impl then yields one error there, not a second
    // one at the derive for the enclosing async block.
    let arms = plan.events.iter().map(|ty| {
        let p = krate::respan(p, ty.span());
        quote_spanned! {ty.span()=>
            if __cx.envelope().name == <#ty as #p::Event>::NAME {
                let __future: #p::__private::BoxFuture<'static, _> =
                    #p::__private::Box::pin(async move {
                        #p::__private::dispatch_to::<#ty, Self>(&*self, &__cx).await
                    });
                return __future;
            }
        }
    });

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_attributes, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Handler for #ident #ty_generics #where_clause {
                fn config(&self) -> #p::HandlerConfig {
                    #[allow(unused_mut)]
                    let mut __config = #p::HandlerConfig::new(#group);
                    #(#settings)*
                    __config
                }

                fn events(&self) -> #p::__private::Vec<&'static str> {
                    #p::__private::Vec::from([#(#names),*])
                }

                fn dispatch(
                    self: #p::__private::Arc<Self>,
                    __cx: #p::Context,
                ) -> #p::__private::BoxFuture<
                    'static,
                    ::core::result::Result<(), #p::HandleError>,
                > {
                    #(#arms)*
                    let __unknown = #p::HandleError::UnknownEvent(
                        #p::__private::ToString::to_string(&__cx.envelope().name),
                    );
                    #p::__private::Box::pin(async move {
                        ::core::result::Result::Err(__unknown)
                    })
                }
            }
        };
    }
}

/// Emitted next to the errors so that uses of the handler type type-check.
fn fallback(input: &HandlerInput<'_>, p: &TokenStream) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[doc(hidden)]
        #[allow(unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Handler for #ident #ty_generics #where_clause {
                fn config(&self) -> #p::HandlerConfig {
                    ::core::unreachable!()
                }
                fn events(&self) -> #p::__private::Vec<&'static str> {
                    ::core::unreachable!()
                }
                fn dispatch(
                    self: #p::__private::Arc<Self>,
                    _: #p::Context,
                ) -> #p::__private::BoxFuture<
                    'static,
                    ::core::result::Result<(), #p::HandleError>,
                > {
                    ::core::unreachable!()
                }
            }
        };
    }
}
