//! FindCoordinator: the broker is every group's coordinator (node 0, the
//! advertised address). Transaction coordinators (key type 1) are not served:
//! COORDINATOR_NOT_AVAILABLE.

use kacrab_protocol::generated::find_coordinator_request::FindCoordinatorRequestData;
use kacrab_protocol::generated::find_coordinator_response::FindCoordinatorResponseData;
use kacrab_protocol::KafkaString;

use super::metadata::NODE_ID;
use super::{decode, respond, Context, Request, Undecodable};

const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const GROUP_KEY: i8 = 0;

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, FindCoordinatorRequestData::read)?;
    let (host, port) = cx.advertised;
    let response = if asked.key_type == GROUP_KEY {
        FindCoordinatorResponseData {
            node_id: NODE_ID,
            host: KafkaString::from(host.to_string()),
            port: i32::from(port),
            ..Default::default()
        }
    } else {
        FindCoordinatorResponseData {
            error_code: COORDINATOR_NOT_AVAILABLE,
            node_id: -1,
            port: -1,
            ..Default::default()
        }
    };
    respond(request, |out, v| response.write(out, v))
}
