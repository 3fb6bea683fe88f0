//! What an SQS message asks a bundle worker to do. Pure: no I/O.
//!
//! Accepted bodies (SPEC section 4, queue mode): an S3 event notification (`Records[]`, keys
//! URL-encoded), the same inside an SNS envelope (`"Type":"Notification"`, the event as the
//! `Message` string), and `{"Bucket":…,"Key":…}` as `group --queue` sends. An `s3:TestEvent`,
//! sent when a notification is configured, asks for nothing.

use serde_json::Value;

use crate::key_encoding::decode_key;
use crate::s3uri::S3Uri;

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Bundle these manifests, in order.
    Bundle(Vec<S3Uri>),
    /// S3's `s3:TestEvent`: delete the message, nothing to do.
    TestEvent,
    /// A well-formed S3 event that creates no manifest (e.g. `ObjectRemoved:*`): delete the
    /// message, nothing to do; the string says why.
    Nothing(String),
}

/// Why a body is none of the accepted shapes. The message is left for the queue's redrive
/// policy to move to its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    #[error("the body is JSON but neither an S3 event, an SNS notification of one, nor {{\"Bucket\":…,\"Key\":…}}")]
    UnknownShape,
    #[error("S3 event record {index} {problem}")]
    BadRecord { index: usize, problem: String },
    #[error("the SNS notification's Message is not an accepted body: {0}")]
    BadSnsMessage(Box<MessageError>),
}

/// Reads a message body.
pub fn parse_message(body: &str) -> Result<Request, MessageError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
    parse_value(&value)
}

fn parse_value(value: &Value) -> Result<Request, MessageError> {
    let object = value.as_object().ok_or(MessageError::UnknownShape)?;
    if object.get("Type").and_then(Value::as_str) == Some("Notification") {
        let message = object
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(MessageError::UnknownShape)?;
        return parse_message(message).map_err(|e| MessageError::BadSnsMessage(Box::new(e)));
    }
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Request::TestEvent);
    }
    if let Some(records) = object.get("Records") {
        return parse_records(records);
    }
    match (
        object.get("Bucket").and_then(Value::as_str),
        object.get("Key").and_then(Value::as_str),
    ) {
        (Some(bucket), Some(key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok(Request::Bundle(vec![S3Uri::new(bucket, key)]))
        }
        _ => Err(MessageError::UnknownShape),
    }
}

fn parse_records(records: &Value) -> Result<Request, MessageError> {
    let records = records.as_array().ok_or(MessageError::UnknownShape)?;
    let mut manifests = Vec::new();
    let mut ignored = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let bad = |problem: &str| MessageError::BadRecord {
            index,
            problem: problem.to_string(),
        };
        let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
        if text("/eventSource") != Some("aws:s3") {
            return Err(bad("is not from aws:s3"));
        }
        let event = text("/eventName").ok_or_else(|| bad("has no eventName"))?;
        if !event.starts_with("ObjectCreated:") {
            ignored.push(event.to_string());
            continue;
        }
        let bucket = text("/s3/bucket/name").ok_or_else(|| bad("has no s3.bucket.name"))?;
        let encoded = text("/s3/object/key").ok_or_else(|| bad("has no s3.object.key"))?;
        let key = decode_key(encoded.as_bytes())
            .map_err(|e| bad(&format!("has a key that does not decode: {e}")))?;
        manifests.push(S3Uri::new(bucket, key.into_owned()));
    }
    if manifests.is_empty() {
        return Ok(Request::Nothing(if ignored.is_empty() {
            "the S3 event has no records".to_string()
        } else {
            format!("the S3 event creates no object ({})", ignored.join(", "))
        }));
    }
    Ok(Request::Bundle(manifests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventSource": "aws:s3", "eventName": name,
            "s3": {"bucket": {"name": "mb"}, "object": {"key": key, "size": 10}}
        }]})
        .to_string()
    }

    #[test]
    fn s3_event_keys_are_url_decoded_form_style() {
        let request = parse_message(&event("ObjectCreated:Copy", "m/a%2Fb+c%2B.0.index")).unwrap();
        assert_eq!(
            request,
            Request::Bundle(vec![S3Uri::new("mb", "m/a/b c+.0.index")])
        );
    }

    #[test]
    fn several_records_give_several_manifests_in_order() {
        let body = serde_json::json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "one.index"}}},
            {"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "gone.index"}}},
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:CompleteMultipartUpload",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "two.index"}}}
        ]});
        assert_eq!(
            parse_message(&body.to_string()).unwrap(),
            Request::Bundle(vec![
                S3Uri::new("b", "one.index"),
                S3Uri::new("b", "two.index")
            ])
        );
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let body = serde_json::json!({
            "Type": "Notification", "MessageId": "x",
            "Message": event("ObjectCreated:Put", "k%3D1.index")
        });
        assert_eq!(
            parse_message(&body.to_string()).unwrap(),
            Request::Bundle(vec![S3Uri::new("mb", "k=1.index")])
        );
    }

    #[test]
    fn bucket_key_body_keeps_the_key_literal() {
        let body = r#"{"Bucket":"b","Key":"a+b%2F.index"}"#;
        assert_eq!(
            parse_message(body).unwrap(),
            Request::Bundle(vec![S3Uri::new("b", "a+b%2F.index")])
        );
    }

    #[test]
    fn test_event_and_removals_ask_for_nothing() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert_eq!(parse_message(test).unwrap(), Request::TestEvent);
        assert!(matches!(
            parse_message(&event("ObjectRemoved:Delete", "a.index")).unwrap(),
            Request::Nothing(why) if why.contains("ObjectRemoved:Delete")
        ));
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert!(matches!(
            parse_message("not json"),
            Err(MessageError::NotJson(_))
        ));
        for body in [
            "[]",
            "{}",
            r#"{"Bucket":"b"}"#,
            r#"{"Bucket":"","Key":"k"}"#,
            r#"{"Records":{}}"#,
        ] {
            assert_eq!(
                parse_message(body),
                Err(MessageError::UnknownShape),
                "{body}"
            );
        }
        let not_s3 = r#"{"Records":[{"eventSource":"aws:sqs","body":"{}"}]}"#;
        assert!(matches!(
            parse_message(not_s3),
            Err(MessageError::BadRecord { index: 0, .. })
        ));
        let no_key = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#;
        assert!(matches!(
            parse_message(no_key),
            Err(MessageError::BadRecord { index: 0, problem }) if problem.contains("s3.object.key")
        ));
        let sns_of_garbage =
            r#"{"Type":"Notification","Message":"{\"message\": \"hello world\"}"}"#;
        assert!(matches!(
            parse_message(sns_of_garbage),
            Err(MessageError::BadSnsMessage(_))
        ));
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::fuzzing::{cases, garbage_text, mutated_text, odd_text};

    fn s3_event(name: &str, bucket: &str, key: &str) -> Value {
        json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}
        }]})
    }

    /// Valid bodies of every accepted shape, with odd buckets and keys.
    fn valid_body() -> impl Strategy<Value = Vec<u8>> {
        let names = proptest::sample::select(vec![
            "ObjectCreated:Put",
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectRemoved:Delete",
        ]);
        (0u8..4, names, odd_text(), odd_text()).prop_map(|(shape, name, bucket, key)| {
            let encoded = crate::key_encoding::encode_key(&key).into_owned();
            let body = match shape {
                0 => s3_event(name, &bucket, &encoded),
                1 => json!({"Type": "Notification", "MessageId": "m",
                    "Message": s3_event(name, &bucket, &encoded).to_string()}),
                2 => json!({"Bucket": bucket, "Key": key}),
                _ => json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}),
            };
            body.to_string().into_bytes()
        })
    }

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn garbage_queue_bodies_never_panic(body in garbage_text()) {
            let _ = parse_message(&body);
        }

        #[test]
        fn mutated_queue_bodies_never_panic(body in mutated_text(valid_body())) {
            let _ = parse_message(&body);
        }

        #[test]
        fn odd_keys_in_queue_bodies_come_through(bucket in odd_text(), key in odd_text()) {
            let encoded = crate::key_encoding::encode_key(&key).into_owned();
            let want = Ok(Request::Bundle(vec![S3Uri::new(bucket.clone(), key.clone())]));
            let event = s3_event("ObjectCreated:Put", &bucket, &encoded);
            prop_assert_eq!(parse_message(&event.to_string()), want.clone());
            let sns = json!({"Type": "Notification", "Message": event.to_string()});
            prop_assert_eq!(parse_message(&sns.to_string()), want.clone());
            let direct = json!({"Bucket": bucket, "Key": key});
            prop_assert_eq!(parse_message(&direct.to_string()), want);
        }
    }

    /// JSON nested past serde_json's recursion limit, and SNS envelopes nested in each other, are
    /// refused rather than overflowing the stack.
    #[test]
    fn deeply_nested_bodies_are_refused() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_message(&deep),
            Err(MessageError::NotJson(_))
        ));
        let mut body = r#"{"Bucket":"b","Key":"k"}"#.to_string();
        for _ in 0..12 {
            body = json!({"Type": "Notification", "Message": body}).to_string();
        }
        assert!(parse_message(&body).is_ok());
    }
}
