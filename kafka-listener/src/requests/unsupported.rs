//! Requests the listener does not serve (an API or a version outside
//! [`super::SERVED`]): answered with Kafka's UNSUPPORTED_VERSION in the
//! request's own response shape, so that the client hears why and the
//! connection stays open. An API whose response shape carries no error code at
//! its top cannot be answered that way: its connection is closed.

use bytes::BytesMut;
use kacrab_protocol::generated::{
    find_coordinator_response::FindCoordinatorResponseData,
    heartbeat_response::HeartbeatResponseData,
    init_producer_id_response::InitProducerIdResponseData,
    join_group_response::JoinGroupResponseData, leave_group_response::LeaveGroupResponseData,
    list_groups_response::ListGroupsResponseData,
    sasl_handshake_response::SaslHandshakeResponseData, sync_group_response::SyncGroupResponseData,
};
use kacrab_protocol::version::{request_header_version, response_header_version};

use super::{code, respond_with_header, Request, Undecodable};

/// Whether the request header of `api_key` at `version` is the flexible one.
pub fn is_flexible(api_key: i16, version: i16) -> bool {
    request_header_version(api_key, version) >= 2
}

macro_rules! refusal {
    ($ty:ident) => {
        |out: &mut BytesMut, v: i16| {
            let r = $ty {
                error_code: code::UNSUPPORTED_VERSION,
                ..Default::default()
            };
            r.write(out, v)
        }
    };
}

pub fn answer(request: &Request) -> Result<Vec<u8>, Undecodable> {
    let flexible = response_header_version(request.api_key, request.version) >= 1;
    let (v, api) = (request.version, request.api_key);
    let respond = |write: &dyn Fn(&mut BytesMut, i16) -> kacrab_protocol::Result<()>| {
        respond_with_header(request, flexible, v, write)
    };
    match api {
        10 => respond(&refusal!(FindCoordinatorResponseData)),
        11 => respond(&refusal!(JoinGroupResponseData)),
        12 => respond(&refusal!(HeartbeatResponseData)),
        13 => respond(&refusal!(LeaveGroupResponseData)),
        14 => respond(&refusal!(SyncGroupResponseData)),
        16 => respond(&refusal!(ListGroupsResponseData)),
        17 => respond(&refusal!(SaslHandshakeResponseData)),
        22 => respond(&refusal!(InitProducerIdResponseData)),
        _ => Err(Undecodable(format!(
            "API key {api} version {v} is not served (docs/kafka.md lists what is)"
        ))),
    }
}
