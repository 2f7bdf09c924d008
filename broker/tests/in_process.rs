//! The broker as a library: started inside a test on a listener the test bound,
//! served, asked for its status over the control port, and stopped.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use control_protocol::{ControlFrame, Role, Session};

#[test]
fn a_broker_serves_on_a_listener_bound_by_its_caller_and_stops_when_asked() {
    let data = std::env::temp_dir().join(format!("mk-in-process-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let shm = format!("/mk-in-process-{}", std::process::id());
    let cli = broker::config::Cli::parse_from([
        "broker",
        "--groups",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--shm-name",
        &shm,
    ]);
    let config = cli.serve.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = channel();
    let broker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            broker::serve(config, listener, stop, |line| {
                ready_tx.send(line.to_string()).unwrap();
            })
        })
    };
    let line = ready.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(line, format!("listening on {addr}, shm {shm}"));

    let session = Session::connect(&addr.to_string(), Role::Admin, "tester", None).unwrap();
    let reply = session.request(&ControlFrame::StatusRequest).unwrap();
    let ControlFrame::Status { json } = reply else {
        panic!("not a status: {reply:?}")
    };
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["groups"][0]["name"], "group-1", "{status}");
    drop(session);

    stop.store(true, Ordering::Release);
    broker.join().unwrap().unwrap();
    assert!(
        shm_layout::Region::open(&shm).is_err(),
        "a clean stop unlinks the region"
    );
    let _ = std::fs::remove_dir_all(&data);
}
