//! OpenAPI schemas of the types whose JSON form is written by hand (addresses, denominations,
//! decimals, signatures) and of the string forms that fields take on the wire (hex hashes and
//! bytes, amounts as decimal strings). Everything else derives `utoipa::ToSchema` where it is
//! defined, and points its hand-serialized fields here with `#[schema(value_type = ...)]`.
//!
//! Each pattern is the shape the server writes, so a client generated from a document can
//! check what it reads; the parsers accept a little more (an upper-case `0X`, numbers where a
//! string amount is expected), as the readers of older clients did.

use std::borrow::Cow;

use utoipa::openapi::schema::{Discriminator, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::address::Address;
use crate::coin::{Dec, Denom};
use crate::keys::TxSignature;

fn string(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([serde_json::Value::String(example.to_string())])
        .into()
}

impl PartialSchema for Address {
    fn schema() -> RefOr<Schema> {
        string(
            "An account: bech32 `pazar1…` (SHA-256 of an ed25519 key, first 20 bytes) or an \
             EIP-55 `0x…` Ethereum address.",
            "^(pazar1[02-9ac-hj-np-z]{38}|0x[0-9a-fA-F]{40})$",
            "pazar1qyqszqgpqyqszqgpqyqszqgpqyqszqgpx8u0qd",
        )
    }
}

impl ToSchema for Address {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Address")
    }
}

impl PartialSchema for Denom {
    fn schema() -> RefOr<Schema> {
        // The pattern's bound is MAX_DENOM_LEN, checked by the unit test below.
        string(
            "A denomination: a letter, then letters, digits or `/:._-`, 2 to 128 characters.",
            "^[A-Za-z][A-Za-z0-9/:._-]{1,127}$",
            "upzr",
        )
    }
}

impl ToSchema for Denom {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Denom")
    }
}

impl PartialSchema for Dec {
    fn schema() -> RefOr<Schema> {
        string(
            "A non-negative decimal with at most 18 fractional digits, as a string (exact: no \
             floating point).",
            r"^[0-9]+(\.[0-9]{1,18})?$",
            "0.25",
        )
    }
}

impl ToSchema for Dec {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Dec")
    }
}

impl PartialSchema for TxSignature {
    fn schema() -> RefOr<Schema> {
        let scheme = |name: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .enum_values(Some([name]))
        };
        let ed25519 = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .title(Some("Ed25519"))
            .property("scheme", scheme("ed25519"))
            .required("scheme")
            .property(
                "pubkey",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .description(Some("The 32-byte public key, hex."))
                    .pattern(Some("^[0-9a-f]{64}$")),
            )
            .required("pubkey")
            .property(
                "sig",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .description(Some("The 64-byte signature, hex."))
                    .pattern(Some("^[0-9a-f]{128}$")),
            )
            .required("sig");
        let eth = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .title(Some("Eth"))
            .property("scheme", scheme("eth"))
            .required("scheme")
            .property(
                "sig",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .description(Some("The 65-byte EIP-191 signature (r, s, v), `0x` and hex."))
                    .pattern(Some("^0x[0-9a-f]{130}$")),
            )
            .required("sig");
        OneOfBuilder::new()
            .description(Some(
                "A transaction's signature: ed25519 over the body's sign digest, or an Ethereum \
                 key's `personal_sign` of the body's readable text.",
            ))
            .item(ed25519)
            .item(eth)
            .discriminator(Some(Discriminator::new("scheme")))
            .into()
    }
}

impl ToSchema for TxSignature {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TxSignature")
    }
}

/// The schema of a 32-byte hash (`Hash32`) as it travels: 64 lower-case hex digits.
pub struct Hash;

impl PartialSchema for Hash {
    fn schema() -> RefOr<Schema> {
        string(
            "32 bytes (a SHA-256 digest or a Merkle root), lower-case hex.",
            "^[0-9a-f]{64}$",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        )
    }
}

impl ToSchema for Hash {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Hash")
    }
}

/// The schema of a byte string as it travels: lower-case hex.
pub struct HexBytes;

impl PartialSchema for HexBytes {
    fn schema() -> RefOr<Schema> {
        string("Bytes, lower-case hex.", "^([0-9a-f]{2})*$", "00ff")
    }
}

impl ToSchema for HexBytes {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("HexBytes")
    }
}

/// The schema of a `u128` amount as it travels: a decimal string, since JSON readers that use
/// double-precision numbers lose integers past 2^53.
pub struct Amount;

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        string(
            "An integer number of base units (up to 2^128 - 1), as a decimal string.",
            "^[0-9]{1,39}$",
            "1000000",
        )
    }
}

impl ToSchema for Amount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Amount")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coin::MAX_DENOM_LEN;

    fn pattern_of<T: PartialSchema>() -> String {
        let v = serde_json::to_value(T::schema()).expect("a schema serializes");
        v["pattern"].as_str().expect("a pattern").to_string()
    }

    #[test]
    fn the_denomination_pattern_allows_exactly_the_longest_denomination() {
        let p = pattern_of::<Denom>();
        assert!(p.ends_with(&format!("{{1,{}}}$", MAX_DENOM_LEN - 1)), "{p}");
    }

    #[test]
    fn the_largest_amount_fits_the_amount_pattern() {
        assert_eq!(u128::MAX.to_string().len(), 39);
        assert!(pattern_of::<Amount>().contains("{1,39}"));
    }
}
