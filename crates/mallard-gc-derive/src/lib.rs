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
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Fields, Index, Member};

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
    let name = &input.ident;
    if trace_flag(&input.attrs, "leaf")? {
        // Visits nothing; may implement `Drop` (keeps the default `DROP_IN_SWEEP`, its drop glue).
        let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
        return Ok(quote! {
            // SAFETY: visits nothing, which is always sound (handles inside stay roots).
            unsafe impl #impl_generics ::mallard_gc::Trace for #name #ty_generics #where_clause {
                #[inline]
                fn trace(&self, _: &mut ::mallard_gc::Visitor) {}
            }
        });
    }

    let mut drops = Vec::new();
    let body = match &input.data {
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
    };

    // Every type parameter must be `Trace` for the fields that use it to be visited.
    for param in input.generics.type_params_mut() {
        param.bounds.push(parse_quote!(::mallard_gc::Trace));
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    Ok(quote! {
        // SAFETY: visits exactly the fields the value owns, the same ones on every call.
        unsafe impl #impl_generics ::mallard_gc::Trace for #name #ty_generics #where_clause {
            // The type has no `Drop` of its own (below), so its drop glue is its fields'.
            const DROP_IN_SWEEP: bool = false #(|| #drops)*;
            #[inline]
            #[allow(unused_variables)]
            fn trace(&self, __mallard_gc_visitor: &mut ::mallard_gc::Visitor) {
                #body
            }
        }
        // Coherence refuses the second impl if the type implements `Drop`.
        const _: () = {
            #[allow(dead_code)]
            trait MustNotImplementDropBecauseItIsTraced {}
            #[allow(drop_bounds)]
            impl<T: ::core::ops::Drop + ?Sized> MustNotImplementDropBecauseItIsTraced for T {}
            impl #impl_generics MustNotImplementDropBecauseItIsTraced for #name #ty_generics #where_clause {}
        };
    })
}

/// A pattern binding the fields by reference, one `trace` call per visited field, and per
/// field whether the sweep must drop it (`DROP_IN_SWEEP` if visited, drop glue if skipped).
fn fields(fields: &Fields, path: Tokens) -> syn::Result<(Tokens, Vec<Tokens>, Vec<Tokens>)> {
    let (mut binds, mut visits, mut drops) = (Vec::new(), Vec::new(), Vec::new());
    for (i, f) in fields.iter().enumerate() {
        let ty = &f.ty;
        let member = match &f.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(Index::from(i)),
        };
        if trace_flag(&f.attrs, "skip")? {
            binds.push(quote! { #member: _ });
            drops.push(quote! { ::core::mem::needs_drop::<#ty>() });
        } else {
            let bind = format_ident!("__field{}", i);
            binds.push(quote! { #member: #bind });
            visits.push(quote! { ::mallard_gc::Trace::trace(#bind, __mallard_gc_visitor); });
            drops.push(quote! { <#ty as ::mallard_gc::Trace>::DROP_IN_SWEEP });
        }
    }
    // `Path { .. }` with braces matches named, tuple and unit shapes alike.
    Ok((quote! { #path { #(#binds),* } }, visits, drops))
}
