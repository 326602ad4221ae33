//! Request bodies of the node's RPC, parsed at the boundary into bounded values: a node never
//! holds more than these bounds allow for a client's request, whatever the body says. Pure
//! functions, so the fuzz target `rpc_request` runs exactly what the node runs.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use pazar_types::tx::MAX_TX_BYTES;

/// Most transactions in one batch submission.
pub const MAX_BATCH_TXS: usize = 5_000;

/// When a submission is answered.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubmitMode {
    /// Once the transaction is in the mempool.
    #[default]
    Sync,
    /// Once it is committed in a block (or dropped), with its receipt.
    Commit,
}

/// `POST /txs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// The signed transaction's bytes (not yet decoded: the node decodes and checks them).
    pub tx: Vec<u8>,
    pub mode: SubmitMode,
}

/// `POST /txs/batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    pub txs: Vec<Vec<u8>>,
    pub mode: SubmitMode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON for this call: {0}")]
    Json(String),
    #[error("transaction {index} is not hex: {reason}")]
    NotHex { index: usize, reason: String },
    #[error("transaction {index} is {bytes} bytes, more than the {MAX_TX_BYTES}-byte limit")]
    TxTooLarge { index: usize, bytes: usize },
    #[error("more than {MAX_BATCH_TXS} transactions in one batch")]
    TooManyTxs,
    #[error("Last-Event-ID must be a block height (a decimal u64)")]
    BadLastEventId,
}

impl RequestError {
    /// The stable error code the node answers with (and so its HTTP status).
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            RequestError::Json(_) | RequestError::NotHex { .. } => ErrorCode::BadRequest,
            RequestError::TxTooLarge { .. } => ErrorCode::TooLarge,
            RequestError::TooManyTxs => ErrorCode::BatchTooLarge,
            RequestError::BadLastEventId => ErrorCode::BadLastEventId,
        }
    }
}

/// A hex string of at most one transaction's size, decoded as it is read.
struct HexTx(Result<Vec<u8>, (usize, String)>);

impl<'de> Deserialize<'de> for HexTx {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let s = s.strip_prefix("0x").unwrap_or(&s);
        if s.len() > 2 * MAX_TX_BYTES {
            return Ok(HexTx(Err((s.len() / 2, String::new()))));
        }
        Ok(HexTx(hex::decode(s).map_err(|e| (0, e.to_string()))))
    }
}

fn hex_tx(index: usize, h: HexTx) -> Result<Vec<u8>, RequestError> {
    h.0.map_err(|(bytes, reason)| {
        if reason.is_empty() {
            RequestError::TxTooLarge { index, bytes }
        } else {
            RequestError::NotHex { index, reason }
        }
    })
}

/// A JSON array of at most [`MAX_BATCH_TXS`] hex transactions; the parser stops at the first
/// element past the bound instead of building an unbounded list.
struct BoundedTxs(Vec<HexTx>);

impl<'de> Deserialize<'de> for BoundedTxs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BoundedTxs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_BATCH_TXS} hex-encoded transactions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedTxs, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(t) = seq.next_element::<HexTx>()? {
                    if out.len() == MAX_BATCH_TXS {
                        return Err(de::Error::custom(TOO_MANY));
                    }
                    out.push(t);
                }
                Ok(BoundedTxs(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Marker in a serde error that the batch bound was hit.
const TOO_MANY: &str = "pazar: too many transactions";

fn json_error(e: serde_json::Error) -> RequestError {
    if e.to_string().contains(TOO_MANY) {
        RequestError::TooManyTxs
    } else {
        RequestError::Json(e.to_string())
    }
}

/// Parses `POST /txs`: a JSON body `{"tx": hex, "mode"?}` when `json`, else the raw bytes.
pub fn parse_submit(json: bool, body: &[u8]) -> Result<SubmitRequest, RequestError> {
    if !json {
        if body.len() > MAX_TX_BYTES {
            return Err(RequestError::TxTooLarge {
                index: 0,
                bytes: body.len(),
            });
        }
        return Ok(SubmitRequest {
            tx: body.to_vec(),
            mode: SubmitMode::Sync,
        });
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        tx: HexTx,
        #[serde(default)]
        mode: SubmitMode,
    }
    let r: Req = serde_json::from_slice(body).map_err(json_error)?;
    Ok(SubmitRequest {
        tx: hex_tx(0, r.tx)?,
        mode: r.mode,
    })
}

/// Parses `POST /txs/batch`: `{"txs": [hex, ...], "mode"?}`.
pub fn parse_batch(body: &[u8]) -> Result<BatchRequest, RequestError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        txs: BoundedTxs,
        #[serde(default)]
        mode: SubmitMode,
    }
    let r: Req = serde_json::from_slice(body).map_err(json_error)?;
    let txs = r
        .txs
        .0
        .into_iter()
        .enumerate()
        .map(|(i, h)| hex_tx(i, h))
        .collect::<Result<_, _>>()?;
    Ok(BatchRequest { txs, mode: r.mode })
}

/// Parses a `Last-Event-ID` header value: a block height.
pub fn parse_last_event_id(value: &[u8]) -> Result<u64, RequestError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or(RequestError::BadLastEventId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_bounded_while_it_is_parsed_and_each_element_is_checked() {
        let ok = parse_batch(br#"{"txs": ["00ff", "0x01"], "mode": "commit"}"#).expect("valid");
        assert_eq!(ok.txs, vec![vec![0, 255], vec![1]]);
        assert_eq!(ok.mode, SubmitMode::Commit);
        let many = format!("{{\"txs\": [{}\"00\"]}}", "\"00\",".repeat(MAX_BATCH_TXS));
        assert_eq!(parse_batch(many.as_bytes()), Err(RequestError::TooManyTxs));
        let big = format!("{{\"txs\": [\"{}\"]}}", "00".repeat(MAX_TX_BYTES + 1));
        assert!(matches!(
            parse_batch(big.as_bytes()),
            Err(RequestError::TxTooLarge { index: 0, .. })
        ));
        assert!(matches!(
            parse_batch(br#"{"txs": ["00", "zz"]}"#),
            Err(RequestError::NotHex { index: 1, .. })
        ));
        assert!(matches!(
            parse_batch(br#"{"txs": [], "extra": 1}"#),
            Err(RequestError::Json(_))
        ));
    }

    #[test]
    fn a_last_event_id_is_a_height_or_refused() {
        assert_eq!(parse_last_event_id(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_last_event_id(b"18446744073709551616"),
            Err(RequestError::BadLastEventId)
        );
        assert_eq!(parse_last_event_id(b"-1"), Err(RequestError::BadLastEventId));
        assert_eq!(parse_last_event_id(b"\xff"), Err(RequestError::BadLastEventId));
    }
}
