//! Validation of the names users choose: client ids, group names, region names.

/// Longest id or group name.
pub const MAX_NAME_LEN: usize = crate::layout::NAME_CAPACITY;

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
}

fn name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// Checks the id of a producer the broker stands in for: `<kind>:<name>`, a
/// lowercase kind (`dlq` for dead letters) and a name as [`check_name`] takes,
/// 64 characters at most in all.
pub fn check_stand_in_id(value: &str) -> Result<(), NameError> {
    let well_formed = value.split_once(':').is_some_and(|(kind, name)| {
        !kind.is_empty()
            && kind.bytes().all(|c| c.is_ascii_lowercase())
            && check_name("id", name).is_ok()
    });
    if well_formed && value.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(NameError {
            what: "stand-in producer id",
            value: value.to_string(),
        })
    }
}

/// Checks a client id or group name: 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty() && value.len() <= MAX_NAME_LEN && value.bytes().all(name_char);
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.to_string(),
        })
    }
}

/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// Why a topic name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("topic name {0:?} is invalid: use 1 to 249 characters of A-Z a-z 0-9 . _ -, other than . and ..")]
pub struct TopicNameError(pub String);

/// Checks a topic name by Kafka's rule: 1–249 characters of `A-Z a-z 0-9 . _ -`,
/// and neither `.` nor `..` (which would be directories to Kafka).
pub fn check_topic(name: &str) -> Result<(), TopicNameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name.bytes().all(name_char)
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(TopicNameError(name.to_string()))
    }
}

/// The region of topic `topic_id`'s partition `partition`, beside the control
/// region `control` (`docs/topics.md`).
pub fn partition_region(control: &str, topic_id: u32, partition: u32) -> String {
    format!("{control}.t{topic_id}.{partition}")
}

/// A POSIX shared-memory name: `/` then 1–200 name characters.
pub fn valid_shm_name(name: &str) -> bool {
    match name.strip_prefix('/') {
        Some(rest) => !rest.is_empty() && rest.len() <= 200 && rest.bytes().all(name_char),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_ids_are_a_lowercase_kind_then_a_name() {
        assert!(check_stand_in_id("dlq:g").is_ok());
        assert!(check_stand_in_id(&format!("dlq:{}", "g".repeat(60))).is_ok());
        assert!(check_stand_in_id(&format!("dlq:{}", "g".repeat(61))).is_err());
        for bad in ["dlq", "dlq:", ":g", "DLQ:g", "dlq:a b", "d1:g", "dlq:g:h"] {
            assert!(check_stand_in_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_the_documented_alphabet_and_length() {
        assert!(check_name("id", "consumer-12.a_b").is_ok());
        assert!(check_name("id", &"x".repeat(64)).is_ok());
        assert!(check_name("id", &"x".repeat(65)).is_err());
        assert!(check_name("id", "").is_err());
        assert!(check_name("id", "a b").is_err());
        assert!(check_name("id", "é").is_err());
        assert!(valid_shm_name("/minikafka-4444"));
        assert!(!valid_shm_name("minikafka"));
        assert!(!valid_shm_name("/a/b"));
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in [
            "default",
            "orders",
            "a.b_c-D9",
            ".hidden",
            "...",
            &"t".repeat(249),
        ] {
            assert_eq!(check_topic(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", "a:b", &"t".repeat(250)] {
            assert_eq!(
                check_topic(bad),
                Err(TopicNameError(bad.to_string())),
                "{bad}"
            );
        }
    }
}
