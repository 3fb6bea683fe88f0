//! Object keys as S3 Inventory writes them in CSV reports: URL-encoded in form style, so that a
//! key with commas, quotes or newlines still fits on one CSV line. Decoding turns `+` into a
//! space and then `%XX` into a byte. Encoding is the inverse used for bundle manifests: letters,
//! digits and `-_.*/` stay, a space becomes `+`, every other byte becomes `%XX`.
//!
//! Requests name a key in their path (GetObject) or in `x-amz-copy-source` (copies) in S3's
//! URI encoding instead: see [`request_path_key`].

use std::borrow::Cow;

/// Why a key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the URL-decoded key is not valid UTF-8")]
pub struct KeyDecodeError;

/// Percent-encodes a key for a request path or a copy source: everything but the unreserved
/// characters and `/`, so that S3 sees the key byte for byte and nothing is normalised
/// (`a/../b` stays).
pub fn request_path_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes a form-style URL-encoded key. A `%` not followed by two hex digits is kept as it is,
/// as the original tools (Python's `unquote_plus`) did.
pub fn decode_key(encoded: &[u8]) -> Result<Cow<'_, str>, KeyDecodeError> {
    if !encoded.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(encoded)
            .map(Cow::Borrowed)
            .map_err(|_| KeyDecodeError);
    }
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        match encoded[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < encoded.len() => {
                match (hex_value(encoded[i + 1]), hex_value(encoded[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| KeyDecodeError)
}

/// Bytes a key keeps as they are: letters, digits and `-_.*/`. A table, because every key of
/// every selected row is scanned.
const KEPT: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'/');
        byte += 1;
    }
    table
};

fn is_kept(byte: u8) -> bool {
    KEPT[usize::from(byte)]
}

/// Encodes a key so that it has no CSV or line-breaking characters left.
pub fn encode_key(key: &str) -> Cow<'_, str> {
    if key.bytes().all(is_kept) {
        return Cow::Borrowed(key);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len() + key.len() / 2);
    for byte in key.bytes() {
        if is_kept(byte) {
            out.push(byte as char);
        } else if byte == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_slashes_and_dots_and_encode_everything_else() {
        assert_eq!(request_path_key("a/../b c+d%e"), "a/../b%20c%2Bd%25e");
        assert_eq!(request_path_key("ü/~x_y-z"), "%C3%BC/~x_y-z");
        assert_eq!(request_path_key("?versionId=1&x"), "%3FversionId%3D1%26x");
    }

    fn decoded(text: &str) -> String {
        decode_key(text.as_bytes())
            .map(Cow::into_owned)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn decodes_form_style() {
        assert_eq!(decoded("inventory-test/key1"), "inventory-test/key1");
        assert_eq!(decoded("a+b%2Bc%25d"), "a b+c%d");
        assert_eq!(decoded("caf%C3%A9%0Aline"), "café\nline");
        assert_eq!(decoded("100%"), "100%");
        assert_eq!(decoded("50%zz"), "50%zz");
        assert_eq!(decoded("%4"), "%4");
    }

    #[test]
    fn rejects_keys_that_decode_to_invalid_utf8() {
        assert_eq!(decode_key(b"%FF%FE"), Err(KeyDecodeError));
        assert_eq!(decode_key(&[0xff, b'a']), Err(KeyDecodeError));
    }

    #[test]
    fn encoding_leaves_no_csv_or_line_characters() {
        let key = "dir/sub dir/a,b\"c'd\ne\tf+g%h&i=j;k\u{e9}\u{1F600}~";
        let encoded = encode_key(key);
        assert!(
            !encoded.contains([',', '"', '\n', '\r', ' ', '\t']),
            "{encoded}"
        );
        assert_eq!(decoded(&encoded), key);
        assert!(matches!(encode_key("plain/key-1_2.txt"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_byte_round_trips() {
        let all: String = (1u32..=0x2FF).filter_map(char::from_u32).collect();
        assert_eq!(decoded(&encode_key(&all)), all);
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, odd_text};

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn garbage_keys_never_panic_to_decode(bytes in garbage()) {
            let _ = decode_key(&bytes);
        }

        #[test]
        fn any_key_round_trips_and_leaves_no_csv_characters(key in any::<String>(), odd in odd_text()) {
            for key in [key, odd] {
                let encoded = encode_key(&key);
                prop_assert!(!encoded.contains([',', '"', '\n', '\r', ' ']), "{}", encoded);
                let decoded = decode_key(encoded.as_bytes()).map(Cow::into_owned);
                prop_assert_eq!(decoded, Ok(key));
            }
        }

        #[test]
        fn mutated_encoded_keys_never_panic(bytes in mutated(odd_text().prop_map(|k| encode_key(&k).into_owned().into_bytes()))) {
            let _ = decode_key(&bytes);
        }
    }
}
