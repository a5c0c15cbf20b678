//! Every error the store's own code answers is JSON, in the one shape of
//! [`crate::error::ErrorBody`]: `{"error": {"code": ..., "message": ...}}`.
//!
//! Handlers return [`crate::ApiError`], which is JSON already. What is not:
//! the rejections of axum's extractors (a path that is not UTF-8, a query or
//! JSON body that does not parse, a missing content type, a body over the
//! limit), tower-http's body limit and time limit, and any other plain-text
//! or empty error a layer may answer. Rather than wrap each extractor in
//! every handler (and miss the next one), one layer around every router
//! rewrites an error answer that is not JSON: same status, same headers
//! (`Allow` stays on a 405), a code from the status (`payload_too_large`)
//! and the original text as the message.
//!
//! What hyper answers itself, before any of the store's code runs (a request
//! it cannot parse, a URI over 64 KiB, a head over ~400 KiB), has an empty
//! body; the README lists those cases.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{code_for_status, error_response};

/// The longest part of a plain-text error kept as the JSON message; axum's
/// rejection texts are one sentence, well under this.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Axum middleware (`middleware::from_fn(json_errors::rewrite)`): gives an
/// error answer that is not JSON the shared JSON error body.
pub async fn rewrite(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !needs_json_body(response.status(), response.headers().get(CONTENT_TYPE)) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = read_message(body).await;
    let message = message_for(parts.status, &text);
    let mut rewritten = error_response(parts.status, &code_for_status(parts.status), message);
    keep_other_headers(parts.headers, rewritten.headers_mut());
    rewritten
}

/// True for an error status (4xx, 5xx) whose body is not JSON.
pub fn needs_json_body(status: StatusCode, content_type: Option<&HeaderValue>) -> bool {
    let is_json = content_type
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    (status.is_client_error() || status.is_server_error()) && !is_json
}

/// The message of a rewritten error: the original text (bytes that are not
/// UTF-8 replaced), or the status's reason when there was no text.
pub fn message_for(status: StatusCode, text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned();
    }
    text.to_owned()
}

/// The error body's text, if it is at most [`MAX_ERROR_MESSAGE_BYTES`]
/// (a longer one, or one that fails, counts as none).
async fn read_message(body: Body) -> Vec<u8> {
    axum::body::to_bytes(body, MAX_ERROR_MESSAGE_BYTES)
        .await
        .map(Vec::from)
        .unwrap_or_default()
}

/// The original answer's headers, but for the ones that describe its body.
fn keep_other_headers(original: HeaderMap, into: &mut HeaderMap) {
    for (name, value) in original.iter() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            into.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::Router;
    use axum::extract::{Form, Path, Query};
    use axum::http::Method;
    use axum::routing::{get, post};
    use axum::{Json, body::Bytes};
    use serde::Deserialize;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::ApiError;
    use crate::http::{MAX_PUBLIC_BODY_BYTES, Port, always_ready, port_router};
    use crate::metrics::Metrics;

    #[derive(Debug, Deserialize)]
    struct Buy {
        #[allow(dead_code)]
        item_number: u64,
    }

    /// A router with one route per kind of extractor, served as a public port.
    fn app() -> Router {
        let routes = Router::new()
            .route("/orders/{n}", get(|Path(_): Path<String>| async { "ok" }))
            .route("/number/{n}", get(|Path(_): Path<u64>| async { "ok" }))
            .route("/query", get(|Query(_): Query<Buy>| async { "ok" }))
            .route(
                "/params",
                get(|Query(_): Query<HashMap<String, String>>| async { "ok" }),
            )
            .route("/json", post(|Json(_): Json<Buy>| async { "ok" }))
            .route("/form", post(|Form(_): Form<Buy>| async { "ok" }))
            .route("/bytes", post(|_: Bytes| async { "ok" }))
            .route(
                "/missing",
                get(|| async { ApiError::NotFound("no order 7".into()) }),
            )
            .route("/slow", get(std::future::pending::<&'static str>));
        port_router(Port::Public, routes, Metrics::new("test"), always_ready())
    }

    fn request(method: Method, uri: &str, content_type: Option<&str>, body: Body) -> Request {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        builder.body(body).expect("a valid request")
    }

    /// The status and JSON error of an answer, asserting its shape.
    async fn error_of(request: Request) -> (StatusCode, String, String) {
        let response = app().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body");
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{status}: {body:?}"
        );
        let json: Value = serde_json::from_slice(&body).expect("a JSON body");
        let code = json["error"]["code"].as_str().expect("a code").to_owned();
        let message = json["error"]["message"]
            .as_str()
            .expect("a message")
            .to_owned();
        assert!(!message.is_empty(), "{json}");
        (status, code, message)
    }

    async fn get_error(uri: &str) -> (StatusCode, String, String) {
        error_of(request(Method::GET, uri, None, Body::empty())).await
    }

    async fn post_error(uri: &str, content_type: Option<&str>, body: &str) -> (StatusCode, String) {
        let (status, code, _) = error_of(request(
            Method::POST,
            uri,
            content_type,
            Body::from(body.to_owned()),
        ))
        .await;
        (status, code)
    }

    #[tokio::test]
    async fn a_path_that_is_not_utf8_or_not_a_number_is_a_json_400() {
        let (status, code, message) = get_error("/orders/%FF").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        assert!(
            message.contains("%FF") || message.contains("UTF-8"),
            "{message}"
        );
        let (status, _, _) = get_error("/number/abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_query_that_does_not_parse_is_a_json_400() {
        for uri in ["/query", "/query?item_number=abc", "/query?item_number=%FF"] {
            let (status, code, _) = get_error(uri).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "bad_request"),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn json_bodies_are_rejected_in_json_with_axums_statuses() {
        let json = Some("application/json");
        assert_eq!(
            post_error("/json", None, r#"{"item_number": 1}"#).await,
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type".into()
            )
        );
        assert_eq!(
            post_error("/json", json, "{not json").await,
            (StatusCode::BAD_REQUEST, "bad_request".into())
        );
        assert_eq!(
            post_error("/json", json, r#"{"item_number": "one"}"#).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity".into()
            )
        );
        assert_eq!(
            post_error("/json", json, "\u{fffd}\u{0}").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn form_bodies_are_rejected_in_json() {
        let form = Some("application/x-www-form-urlencoded");
        let (status, _) = post_error("/form", form, "item_number=one").await;
        assert!(status.is_client_error(), "{status}");
        let (status, _) = post_error("/form", Some("text/plain"), "item_number=1").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn a_body_over_the_ports_limit_is_a_json_413_with_or_without_a_length() {
        let big = "x".repeat(MAX_PUBLIC_BODY_BYTES + 1);
        // With a Content-Length: refused before the body is read.
        let (status, code) = post_error("/bytes", None, &big).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        // A streamed body of unknown length is cut at the limit.
        let (status, code, _) = error_of(request(
            Method::POST,
            "/bytes",
            None,
            streamed(big.into_bytes()),
        ))
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        // Under the limit is fine, with axum's 2 MB default switched off.
        let small = app()
            .oneshot(request(
                Method::POST,
                "/bytes",
                None,
                Body::from("x".repeat(1000)),
            ))
            .await
            .expect("infallible");
        assert_eq!(small.status(), StatusCode::OK);
    }

    /// A body that arrives in pieces and announces no length.
    fn streamed(bytes: Vec<u8>) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(1024)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods_are_json() {
        let (status, code, _) = get_error("/no/such/path").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let (status, code, _) =
            error_of(request(Method::DELETE, "/json", None, Body::empty())).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_time_limit_is_a_json_408() {
        let (status, code, _) = get_error("/slow").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::REQUEST_TIMEOUT, "request_timeout")
        );
    }

    #[tokio::test]
    async fn the_handlers_own_json_errors_and_successes_pass_unchanged() {
        let (status, code, message) = get_error("/missing").await;
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (StatusCode::NOT_FOUND, "not_found", "no order 7")
        );
        let metrics = app()
            .oneshot(request(Method::GET, "/metrics", None, Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(
            metrics.headers()[CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain")
        );
    }

    #[test]
    fn only_error_answers_without_json_are_rewritten() {
        let json = HeaderValue::from_static("application/json");
        let json_utf8 = HeaderValue::from_static("application/json; charset=utf-8");
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        assert!(needs_json_body(StatusCode::BAD_REQUEST, Some(&text)));
        assert!(needs_json_body(StatusCode::PAYLOAD_TOO_LARGE, None));
        assert!(needs_json_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&text)
        ));
        assert!(!needs_json_body(StatusCode::BAD_REQUEST, Some(&json)));
        assert!(!needs_json_body(StatusCode::CONFLICT, Some(&json_utf8)));
        assert!(!needs_json_body(StatusCode::OK, Some(&text)));
        assert!(!needs_json_body(StatusCode::NO_CONTENT, None));
    }

    #[test]
    fn the_message_is_the_original_text_or_the_reason() {
        assert_eq!(
            message_for(StatusCode::BAD_REQUEST, b" bad query \n"),
            "bad query"
        );
        assert_eq!(
            message_for(StatusCode::REQUEST_TIMEOUT, b""),
            "Request Timeout"
        );
        assert_eq!(
            message_for(StatusCode::BAD_REQUEST, b"a\xffb"),
            "a\u{fffd}b"
        );
    }
}
