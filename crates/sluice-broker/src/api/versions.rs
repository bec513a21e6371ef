//! ApiVersions: which APIs and versions the broker speaks.

use super::SUPPORTED;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};

fn listing() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    r
}

/// The answer to a supported ApiVersions request.
pub fn handle() -> ApiVersionsResponse {
    listing()
}

/// The answer to an ApiVersions request of a version the broker does not speak.
pub fn unsupported() -> ResponseKind {
    let mut r = listing();
    r.error_code = crate::errors::UNSUPPORTED_VERSION;
    ResponseKind::ApiVersions(r)
}
