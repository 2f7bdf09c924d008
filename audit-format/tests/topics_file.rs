//! `topics.txt`, the directory of topics: what is saved loads back, and a damaged
//! file is refused naming its line.

mod support;

use audit_format::topics::{load, save, TopicRecord, TopicsFileError, TOPICS_FILE, TOPICS_HEADER};
use support::Scratch;

fn orders() -> TopicRecord {
    TopicRecord {
        id: 1,
        name: "orders".into(),
        partitions: 4,
        slots: 256,
        slot_size: 128,
        max_message: 16384,
    }
}

#[test]
fn saved_topics_load_back_and_an_absent_file_means_none() {
    let s = Scratch::new("topics-round");
    assert_eq!(load(&s.0).unwrap(), Vec::new());
    let logs = TopicRecord {
        id: 2,
        name: "logs.v2_a-b".into(),
        partitions: 1,
        ..orders()
    };
    save(&s.0, &[orders(), logs.clone()]).unwrap();
    assert_eq!(load(&s.0).unwrap(), [orders(), logs]);
    let text = std::fs::read_to_string(s.0.join(TOPICS_FILE)).unwrap();
    assert_eq!(
        text,
        format!(
            "{TOPICS_HEADER}1\torders\t4\t256\t128\t16384\n2\tlogs.v2_a-b\t1\t256\t128\t16384\n"
        )
    );
    assert!(!s.0.join("topics.txt.tmp").exists());
}

#[test]
fn a_damaged_file_is_refused_naming_the_line() {
    let s = Scratch::new("topics-bad");
    for (body, why) in [
        ("1\torders\t4\n", "expected 6 fields"),
        ("1\torders\tfour\t1\t1\t1\n", "not a number"),
        (
            "0\tdefault\t1\t1\t1\t1\n",
            "the topic default is not listed",
        ),
        (
            "1\ta\t1\t1\t1\t1\n1\tb\t1\t1\t1\t1\n",
            "a topic id or name listed twice",
        ),
        ("1\ta\t0\t1\t1\t1\n", "a topic has at least one partition"),
    ] {
        std::fs::write(s.0.join(TOPICS_FILE), format!("{TOPICS_HEADER}{body}")).unwrap();
        let e = load(&s.0).unwrap_err();
        assert!(
            matches!(e, TopicsFileError::Bad { why: w, .. } if w == why),
            "{body:?}: {e}"
        );
    }
}
