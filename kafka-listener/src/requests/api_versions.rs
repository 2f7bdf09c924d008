//! ApiVersions: the APIs and versions served. A version newer than served is
//! answered in v0 with UNSUPPORTED_VERSION and the list, as Kafka does, so the
//! client can retry with one it shares.

use kacrab_protocol::generated::api_versions_response::{ApiVersion, ApiVersionsResponseData};

use super::{code, respond_with_header, served, Request, Undecodable, API_VERSIONS, SERVED};

pub fn answer(request: &Request) -> Result<Vec<u8>, Undecodable> {
    let s = served(API_VERSIONS).expect("ApiVersions is served");
    let supported = (s.min..=s.max).contains(&request.version);
    let response = ApiVersionsResponseData {
        error_code: if supported {
            code::NONE
        } else {
            code::UNSUPPORTED_VERSION
        },
        api_keys: SERVED
            .iter()
            .map(|s| ApiVersion {
                api_key: s.key,
                min_version: s.min,
                max_version: s.max,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let version = if supported { request.version } else { 0 };
    // The response header of ApiVersions is always v0 (the client cannot know
    // yet whether the broker speaks flexible headers).
    respond_with_header(request, false, version, |out, v| response.write(out, v))
}
