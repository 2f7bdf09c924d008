//! SPEC §7: bad input on the TCP port costs only the offending connection, with
//! bounded memory, while real clients carry on.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use control_protocol::{ControlFrame, Role};
use e2e::{json_lines, read_until_closed, Broker, DEADLINE};

#[test]
fn every_attack_at_once_costs_only_its_own_connection() {
    let broker = Broker::start(&["--groups", "1"]);
    let addr = broker.addr.clone();
    let (consumer, _) = broker.consumer(&["--count", "20000", "--format", "json"]);

    let rss = e2e::PeakRss::watch(broker.proc.pid);

    let mut attacks = Vec::new();
    // Garbage bytes.
    let a = addr.clone();
    attacks.push(std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        let garbage: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = s.write_all(&garbage);
        read_until_closed(s);
    }));
    // A length prefix of 4 GiB: refused before any allocation.
    let a = addr.clone();
    attacks.push(std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        let reply = read_until_closed(s);
        let n = control_protocol::frame::check(&reply, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(matches!(
            ControlFrame::decode(&reply[..n]),
            Ok(ControlFrame::Refused { .. })
        ));
    }));
    // A truncated frame that never completes: closed at the registration deadline.
    let a = addr.clone();
    attacks.push(std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        let hello = ControlFrame::Hello {
            role: Role::Producer,
        }
        .encode();
        s.write_all(&hello[..hello.len() - 1]).unwrap();
        read_until_closed(s);
    }));
    // Hundreds of idle connections.
    let a = addr.clone();
    attacks.push(std::thread::spawn(move || {
        let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&a).unwrap()).collect();
        for s in idle {
            read_until_closed(s);
        }
    }));
    // A client writing one byte every 100 ms.
    let a = addr.clone();
    attacks.push(std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        let started = Instant::now();
        let hello = ControlFrame::Hello {
            role: Role::Consumer,
        }
        .encode();
        for b in hello.iter().cycle() {
            if s.write_all(&[*b]).is_err() || started.elapsed() > DEADLINE {
                break;
            }
            std::thread::sleep(Duration::from_millis(100)); // the attack's own pace
        }
        read_until_closed(s);
    }));

    let input: String = (0..20_000).map(|i| format!("payload {i}\n")).collect();
    let p = broker.producer(&[], Some(input.into_bytes())).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let got = json_lines(&consumer.wait_exit().stdout);
    assert_eq!(got.len(), 20_000);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["offset"], i as u64);
        assert_eq!(v["payload"], format!("payload {i}").as_str());
    }
    for a in attacks {
        a.join().expect("attack thread saw its connection closed");
    }
    let peak_mib = rss.stop();
    println!("broker peak RSS during the attacks: {peak_mib} MiB");
    assert!(peak_mib < 256, "broker RSS reached {peak_mib} MiB");
    // And a fresh client still works.
    let (c, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(
        broker
            .producer(&["after the storm"], None)
            .wait_exit()
            .code(),
        Some(0)
    );
    assert_eq!(c.wait_exit().stdout_text(), "after the storm\n");
}
