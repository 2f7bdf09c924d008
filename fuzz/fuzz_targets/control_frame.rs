//! Untrusted bytes from a TCP peer: the frame check and decoder must never panic
//! or over-read, and whatever decodes must re-encode to the same message.
#![no_main]

use control_protocol::frame::{check, MAX_REPLY_LEN, MAX_REQUEST_LEN};
use control_protocol::ControlFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [MAX_REQUEST_LEN, MAX_REPLY_LEN] {
        if let Ok(Some(n)) = check(data, max) {
            assert!(n <= data.len() && n <= max + 4);
            if let Ok(frame) = ControlFrame::decode(&data[..n]) {
                let again =
                    ControlFrame::decode(&frame.encode()).expect("re-encoded frame decodes");
                assert_eq!(again, frame);
            }
        }
    }
});
