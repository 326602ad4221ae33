//! How a failed request is answered: an [`ErrorEnvelope`] with the HTTP status of its
//! [`ErrorCode`], whatever failed (a submission, a query string, a body, a path parameter), so
//! clients read every error the same way and never axum's plain-text rejections.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use pazar_api::request::RequestError;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_types::Hash32;

use crate::SubmitError;

/// A failed request: an [`ErrorEnvelope`] and the HTTP status it is answered with.
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) envelope: ErrorEnvelope,
}

impl ApiError {
    /// An error answered with its code's own status ([`ErrorCode::http_status`]).
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            envelope: ErrorEnvelope::new(code, message),
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
    pub(crate) fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.envelope)).into_response()
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        ApiError::new(e.reason(), e.to_string())
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

/// A query string that does not parse (an unknown field, a malformed address or number) is the
/// client's error and is answered as every other error is, not with axum's plain-text rejection.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad(format!("invalid query: {}", e.body_text()))
    }
}

/// A body over [`MAX_BODY_BYTES`] (or one that breaks off) gets the envelope too.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> ApiError {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("request body: {}", e.body_text()))
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;
pub(crate) type Q<T> = Result<Query<T>, QueryRejection>;
pub(crate) type Body = Result<Bytes, BytesRejection>;

pub(crate) fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| ApiError::bad(format!("invalid {what} {s:?}: {e}")))
}

pub(crate) fn parse_hash(s: &str) -> Result<Hash32, ApiError> {
    let v = hex::decode(s).map_err(|_| ApiError::bad(format!("invalid hash {s:?}: not hex")))?;
    v.try_into()
        .map_err(|_| ApiError::bad(format!("invalid hash {s:?}: must be 32 bytes")))
}

pub(crate) fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("request body is not valid JSON for this call: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_submission_error_is_answered_with_its_code_s_status() {
        use crate::mempool::MempoolError;
        let cases = [
            (SubmitError::TooLarge(70_000), 413, "too_large"),
            (SubmitError::Decode("x".into()), 400, "decode"),
            (SubmitError::Committed(3), 409, "duplicate"),
            (SubmitError::Mempool(MempoolError::Duplicate), 409, "duplicate"),
            (
                SubmitError::Mempool(MempoolError::Full { txs: 1, bytes: 1 }),
                503,
                "mempool_full",
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.envelope.error.code.as_str()), (status, code));
        }
    }
}
