//! `#[derive(Trace)]` for `mallard_gc`.
//!
//! The derived `trace` visits every field in declaration order. Two attributes change that:
//!
//! - `#[trace(skip)]` on a field: the field is not visited (and need not implement `Trace`).
//!   Any `Gc` inside it stays a root, so skipping is always sound; it can only keep objects
//!   alive longer.
//! - `#[trace(leaf)]` on the type: no field is visited, and the type may implement `Drop`.
//!
//! A type whose derived `trace` visits fields must not implement `Drop`: a collected object's
//! `Drop` would run while the objects it points to may already be gone. The derive enforces
//! this at compile time with a marker trait that a `Drop` impl would make conflict.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Fields, Index};

#[proc_macro_derive(Trace, attributes(trace))]
pub fn derive_trace(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What `#[trace(...)]` says on a type or a field.
fn trace_flag(attrs: &[syn::Attribute], allowed: &str) -> syn::Result<bool> {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("trace")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(allowed) {
                found = true;
                Ok(())
            } else {
                Err(meta.error(format!("expected `#[trace({allowed})]`")))
            }
        })?;
    }
    Ok(found)
}

fn expand(mut input: DeriveInput) -> syn::Result<Tokens> {
    let leaf = trace_flag(&input.attrs, "leaf")?;
    let name = &input.ident;

    let mut drops = Vec::new();
    let body = if leaf {
        quote! {}
    } else {
        match &input.data {
            Data::Struct(s) => {
                let (pattern, visits, d) = fields(&s.fields, quote!(Self))?;
                drops.extend(d);
                quote! { let #pattern = self; #(#visits)* }
            }
            Data::Enum(e) => {
                let mut arms = Vec::new();
                for v in &e.variants {
                    if let Some(attr) = v.attrs.iter().find(|a| a.path().is_ident("trace")) {
                        return Err(syn::Error::new(
                            attr.span(),
                            "`#[trace(...)]` goes on a field or on the type, not on a variant",
                        ));
                    }
                    let ident = &v.ident;
                    let (pattern, visits, d) = fields(&v.fields, quote!(Self::#ident))?;
                    drops.extend(d);
                    arms.push(quote! { #pattern => { #(#visits)* } });
                }
                if e.variants.is_empty() {
                    quote! { match *self {} }
                } else {
                    quote! { match self { #(#arms)* } }
                }
            }
            Data::Union(u) => {
                return Err(syn::Error::new(
                    u.union_token.span(),
                    "Trace cannot be derived for a union: which field holds handles is unknown",
                ))
            }
        }
    };

    // Every type parameter must be `Trace` for the fields that use it to be visited.
    if !leaf {
        for param in input.generics.type_params_mut() {
            param.bounds.push(parse_quote!(::mallard_gc::Trace));
        }
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    let no_drop = if leaf {
        quote! {}
    } else {
        // Coherence refuses the second impl if the type implements `Drop`.
        quote! {
            const _: () = {
                #[allow(dead_code)]
                trait MustNotImplementDropBecauseItIsTraced {}
                #[allow(drop_bounds)]
                impl<T: ::core::ops::Drop + ?Sized> MustNotImplementDropBecauseItIsTraced for T {}
                impl #impl_generics MustNotImplementDropBecauseItIsTraced for #name #ty_generics #where_clause {}
            };
        }
    };

    // A leaf keeps the default (its drop glue); a traced type has no `Drop` of its own, so its
    // drop glue is its fields'.
    let drop_in_sweep = if leaf {
        quote! {}
    } else {
        quote! { const DROP_IN_SWEEP: bool = false #(|| #drops)*; }
    };
    Ok(quote! {
        // SAFETY: visits exactly the fields the value owns, the same ones on every call.
        unsafe impl #impl_generics ::mallard_gc::Trace for #name #ty_generics #where_clause {
            #drop_in_sweep
            #[inline]
            #[allow(unused_variables)]
            fn trace(&self, __mallard_gc_visitor: &mut ::mallard_gc::Visitor) {
                #body
            }
        }
        #no_drop
    })
}

/// A pattern binding the fields by reference, one `trace` call per visited field, and per
/// field whether the sweep must drop it (`DROP_IN_SWEEP` if visited, drop glue if skipped).
fn fields(fields: &Fields, path: Tokens) -> syn::Result<(Tokens, Vec<Tokens>, Vec<Tokens>)> {
    let mut visits = Vec::new();
    let mut drops = Vec::new();
    for f in fields.iter() {
        let ty = &f.ty;
        drops.push(if trace_flag(&f.attrs, "skip")? {
            quote! { ::core::mem::needs_drop::<#ty>() }
        } else {
            quote! { <#ty as ::mallard_gc::Trace>::DROP_IN_SWEEP }
        });
    }
    let pattern = match fields {
        Fields::Named(named) => {
            let mut binds = Vec::new();
            for f in &named.named {
                let ident = f.ident.as_ref().expect("named field");
                if trace_flag(&f.attrs, "skip")? {
                    binds.push(quote! { #ident: _ });
                } else {
                    binds.push(quote! { #ident });
                    visits.push(quote! { ::mallard_gc::Trace::trace(#ident, __mallard_gc_visitor); });
                }
            }
            quote! { #path { #(#binds),* } }
        }
        Fields::Unnamed(unnamed) => {
            let mut binds = Vec::new();
            for (i, f) in unnamed.unnamed.iter().enumerate() {
                let index = Index::from(i);
                if trace_flag(&f.attrs, "skip")? {
                    binds.push(quote! { #index: _ });
                } else {
                    let bind = format_ident!("field{}", i);
                    binds.push(quote! { #index: #bind });
                    visits.push(quote! { ::mallard_gc::Trace::trace(#bind, __mallard_gc_visitor); });
                }
            }
            quote! { #path { #(#binds),* } }
        }
        Fields::Unit => quote! { #path },
    };
    Ok((pattern, visits, drops))
}
