//! POSIX pax tar framing: each member is a pax extended header (its records: the path when it
//! does not fit ustar, the size when it does not fit 11 octal digits, and the S3 attributes as
//! `SCHILY.xattr.user.s3.*`), a ustar header, the data, and padding to 512 bytes.

use tar::{EntryType, Header};

pub const BLOCK: u64 = 512;

/// Two zero blocks end an archive.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// Bytes of padding after `size` bytes of data.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// `%` and `=` escaped so that the name can stand before a pax record's `=`.
pub fn escape_attribute_name(name: &str) -> String {
    name.replace('%', "%25").replace('=', "%3D")
}

/// The pax record `"<len> <key>=<value>\n"`, whose length counts its own digits.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut length = body + 1;
    while length != body + length.to_string().len() {
        length = body + length.to_string().len();
    }
    let mut record = Vec::with_capacity(length);
    record.extend_from_slice(length.to_string().as_bytes());
    record.push(b' ');
    record.extend_from_slice(key.as_bytes());
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// The largest size the 11 octal digits of a ustar header hold.
const USTAR_MAX_SIZE: u64 = 0o77777777777;

fn ustar_header(name: &[u8], size: u64, mtime: u64, entry_type: EntryType) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_size(size.min(USTAR_MAX_SIZE));
    header.set_uid(0);
    header.set_gid(0);
    if let Some(ustar) = header.as_ustar_mut() {
        let n = name.len().min(ustar.name.len());
        ustar.name[..n].copy_from_slice(&name[..n]);
    }
    header.set_cksum();
    header
}

/// A name that fits the ustar field: ASCII without NUL (which ends the field), at most 100
/// bytes. Otherwise a pax `path` record carries the real name and this is a readable stand-in.
fn ustar_name(name: &str) -> (Vec<u8>, bool) {
    if name.is_ascii() && name.len() <= 100 && !name.is_empty() && !name.contains('\0') {
        return (name.as_bytes().to_vec(), true);
    }
    let stand_in: Vec<u8> = name
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'_'
            }
        })
        .take(100)
        .collect();
    (stand_in, false)
}

/// The header blocks of one member: pax extended header, its records, and the ustar header.
/// `attributes` are (field, value) pairs written as `SCHILY.xattr.user.s3.<field>`.
pub fn member_header(
    name: &str,
    size: u64,
    mtime: u64,
    attributes: &[(String, String)],
) -> Vec<u8> {
    let (short_name, fits) = ustar_name(name);
    let mut records = Vec::new();
    if !fits {
        records.extend(pax_record("path", name.as_bytes()));
    }
    if size > USTAR_MAX_SIZE {
        records.extend(pax_record("size", size.to_string().as_bytes()));
    }
    for (field, value) in attributes {
        records.extend(pax_record(
            &format!("SCHILY.xattr.user.s3.{}", escape_attribute_name(field)),
            value.as_bytes(),
        ));
    }
    let mut out = Vec::with_capacity(3 * BLOCK as usize + records.len());
    if !records.is_empty() {
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&short_name[..short_name.len().min(100 - pax_name.len())]);
        let pax = ustar_header(&pax_name, records.len() as u64, mtime, EntryType::XHeader);
        out.extend_from_slice(pax.as_bytes());
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }
    out.extend_from_slice(ustar_header(&short_name, size, mtime, EntryType::Regular).as_bytes());
    out
}

/// `%3D` and `%25` decoded back, as GNU tar does when it restores the attribute.
pub fn unescape_attribute_name(name: &str) -> String {
    name.replace("%3D", "=").replace("%25", "%")
}

/// Pax records prefix of the S3 attributes.
pub const S3_ATTRIBUTE_PREFIX: &str = "SCHILY.xattr.user.s3.";

/// A member's header blocks as read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberHeader {
    /// The member name: the pax `path` record, else the ustar prefix and name.
    pub name: String,
    pub size: u64,
    /// The `SCHILY.xattr.user.s3.<field>` records as (field, value), the field unescaped.
    pub attributes: Vec<(String, String)>,
    /// Bytes of header blocks: the member's data starts this far after its first header block.
    pub length: u64,
}

impl MemberHeader {
    /// The value of attribute `field` (`content-type`, `meta.owner`, …).
    pub fn attribute(&self, field: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_str())
    }
}

/// Why bytes are not a member header this tool can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(String);

fn header_block(bytes: &[u8], at: usize) -> Result<&Header, HeaderError> {
    let block = bytes
        .get(at..at + BLOCK as usize)
        .ok_or_else(|| HeaderError(format!("header cut short at byte {at}")))?;
    if block.iter().all(|&b| b == 0) {
        return Err(HeaderError(format!(
            "a zero block (end of archive) at byte {at}, not a header"
        )));
    }
    let header = Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|e| HeaderError(format!("header checksum field at byte {at}: {e}")))?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(HeaderError(format!(
            "header checksum at byte {at} is {stored}, the block sums to {computed}: not a tar header"
        )));
    }
    Ok(header)
}

/// Parses pax records `"<len> <key>=<value>\n"`.
fn pax_records(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, HeaderError> {
    let mut records = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let bad = || HeaderError("malformed pax record".to_string());
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let length: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        if length <= space + 2 || length > data.len() || data[length - 1] != b'\n' {
            return Err(bad());
        }
        let body = &data[space + 1..length - 1];
        let equals = body.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = String::from_utf8_lossy(&body[..equals]).into_owned();
        records.push((key, body[equals + 1..].to_vec()));
        data = &data[length..];
    }
    Ok(records)
}

/// Reads a member's header blocks (an optional pax extended header, then a ustar header for
/// a regular file) from the start of `bytes`.
pub fn parse_member_header(bytes: &[u8]) -> Result<MemberHeader, HeaderError> {
    let mut at = 0usize;
    let mut member = MemberHeader::default();
    let (mut path, mut size) = (None, None);
    let mut header = header_block(bytes, at)?;
    if header.entry_type() == EntryType::XHeader {
        let length = header
            .size()
            .map_err(|e| HeaderError(format!("pax header size: {e}")))?;
        let start = at + BLOCK as usize;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| HeaderError(format!("pax records of {length} bytes cut short")))?;
        for (key, value) in pax_records(&bytes[start..end])? {
            let text = String::from_utf8_lossy(&value).into_owned();
            match key.as_str() {
                "path" => path = Some(text),
                "size" => {
                    size =
                        Some(text.parse::<u64>().map_err(|_| {
                            HeaderError(format!("pax size `{text}` is not a number"))
                        })?)
                }
                _ => {
                    if let Some(field) = key.strip_prefix(S3_ATTRIBUTE_PREFIX) {
                        member
                            .attributes
                            .push((unescape_attribute_name(field), text));
                    }
                }
            }
        }
        at = end + padding(length) as usize;
        header = header_block(bytes, at)?;
    }
    if !header.entry_type().is_file() {
        return Err(HeaderError(format!(
            "member at byte {at} is not a regular file (type {:?})",
            header.entry_type()
        )));
    }
    member.name = match path {
        Some(path) => path,
        None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
    };
    member.size = match size {
        Some(size) => size,
        None => header
            .size()
            .map_err(|e| HeaderError(format!("member size: {e}")))?,
    };
    member.length = (at + BLOCK as usize) as u64;
    Ok(member)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        assert_eq!(pax_record("k", &[b'v'; 93]).len(), 99);
        // 100 cannot be a record length: 98 bytes of body need 3 digits, making 101.
        let edge = pax_record("k", &[b'v'; 94]);
        assert_eq!((edge.len(), &edge[..4]), (101, &b"101 "[..]));
        assert_eq!(pax_record("k", &[b'v'; 95]).len(), 102);
    }

    #[test]
    fn attribute_names_escape_percent_and_equals() {
        assert_eq!(escape_attribute_name("tag.a=b%c"), "tag.a%3Db%25c");
    }

    /// (name, data, attributes) of a member.
    type Member<'a> = (&'a str, &'a [u8], Vec<(String, String)>);

    fn archive(members: &[Member<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, attributes) in members {
            out.extend(member_header(
                name,
                data.len() as u64,
                1_700_000_000,
                attributes,
            ));
            out.extend_from_slice(data);
            out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    #[test]
    fn the_tar_crate_reads_names_data_and_attributes_back() {
        let long_name = format!("src/{}", "d/".repeat(80) + "file");
        let attributes = vec![
            ("etag".to_string(), "abc".to_string()),
            // tar-rs splits pax records at newlines, so this reader gets none in values.
            ("meta.x=y".to_string(), "caf\u{e9} value".to_string()),
        ];
        let bytes = archive(&[
            ("src/plain.txt", b"hello", attributes.clone()),
            (&long_name, b"", vec![]),
            ("src/caf\u{e9}/\u{65e5}.txt", &[7u8; 513], vec![]),
        ]);
        assert_eq!(bytes.len() % 512, 0);
        let mut reader = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in reader.entries().unwrap_or_else(|e| panic!("{e}")) {
            let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let path = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut pax = Vec::new();
            if let Ok(Some(extensions)) = entry.pax_extensions() {
                for ext in extensions.flatten() {
                    pax.push((
                        ext.key().unwrap_or("").to_string(),
                        ext.value().unwrap_or("").to_string(),
                    ));
                }
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(entry.header().mtime().ok(), Some(1_700_000_000));
            seen.push((path, data.len(), pax));
        }
        assert_eq!(seen[0].0, "src/plain.txt", "{seen:?}");
        assert_eq!(seen[0].1, 5);
        assert!(seen[0]
            .2
            .contains(&("SCHILY.xattr.user.s3.etag".into(), "abc".into())));
        assert!(
            seen[0].2.contains(&(
                "SCHILY.xattr.user.s3.meta.x%3Dy".into(),
                "caf\u{e9} value".into()
            )),
            "{seen:?}"
        );
        assert_eq!(seen[1].0, long_name);
        assert_eq!(seen[2].0, "src/caf\u{e9}/\u{65e5}.txt");
        assert_eq!(seen[2].1, 513);
    }

    #[test]
    fn huge_sizes_get_a_pax_size_record() {
        let header = member_header("src/big", 9 << 30, 0, &[]);
        let text = String::from_utf8_lossy(&header);
        assert!(text.contains(&format!("size={}\n", 9u64 << 30)), "{text}");
    }

    #[test]
    fn headers_parse_back_with_names_sizes_and_attributes() {
        let long_name = format!("src/{}", "d/".repeat(80) + "caf\u{e9}");
        let attributes = vec![
            ("content-type".to_string(), "text/plain".to_string()),
            ("meta.a=b%c".to_string(), "v".to_string()),
        ];
        for (name, size, attributes) in [
            ("src/plain", 5u64, vec![]),
            (long_name.as_str(), 513, attributes.clone()),
            ("src/huge", 9 << 30, vec![]),
        ] {
            let header = member_header(name, size, 7, &attributes);
            let mut bytes = header.clone();
            bytes.extend_from_slice(&[1u8; 600]);
            let parsed = parse_member_header(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.name, name);
            assert_eq!(parsed.size, size);
            assert_eq!(parsed.length, header.len() as u64);
            assert_eq!(parsed.attributes, attributes);
        }
        let parsed = parse_member_header(&member_header("src/x", 1, 0, &attributes))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.attribute("content-type"), Some("text/plain"));
        assert_eq!(parsed.attribute("meta.a=b%c"), Some("v"));
    }

    /// Found by `member_headers_round_trip`: a key with a NUL went into the ustar name field,
    /// which NUL ends, so the member read back as `src/` and `verify` called a sound archive
    /// damaged. Such names now go in a pax `path` record.
    #[test]
    fn names_with_nul_survive() {
        for name in ["\0", "src/a\0b", "src/\0"] {
            let parsed = parse_member_header(&member_header(name, 0, 0, &[]))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.name, name);
        }
    }

    #[test]
    fn damaged_headers_are_refused() {
        let good = member_header("src/plain", 5, 0, &[("etag".into(), "e".into())]);
        assert!(parse_member_header(&good[..700]).is_err(), "cut short");
        assert!(parse_member_header(&[0u8; 1024]).is_err(), "end of archive");
        assert!(parse_member_header(&[b'x'; 1024]).is_err(), "garbage");
        let mut flipped = good.clone();
        flipped[512] ^= 0x55; // the first pax record's length
        assert!(parse_member_header(&flipped).is_err());
        let mut renamed = good;
        renamed[1024] ^= 1; // the ustar name, checksum now wrong
        assert!(parse_member_header(&renamed).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, odd_text};

    /// (name, size, attributes) of a member.
    fn member() -> impl Strategy<Value = (String, u64, Vec<(String, String)>)> {
        let size = prop_oneof![0u64..2048, any::<u64>()];
        (odd_text(), size, vec((odd_text(), odd_text()), 0..3))
    }

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn member_headers_round_trip((name, size, attributes) in member()) {
            let bytes = member_header(&name, size, 7, &attributes);
            let parsed = parse_member_header(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.name, name);
            prop_assert_eq!(parsed.size, size);
            prop_assert_eq!(parsed.attributes, attributes);
            prop_assert_eq!(parsed.length, bytes.len() as u64);
        }

        #[test]
        fn garbage_tar_headers_never_panic(bytes in garbage()) {
            let _ = parse_member_header(&bytes);
        }

        #[test]
        fn mutated_tar_headers_never_panic(bytes in mutated(member().prop_map(|(n, s, a)| member_header(&n, s, 7, &a)))) {
            if let Ok(parsed) = parse_member_header(&bytes) {
                prop_assert!(parsed.length <= bytes.len() as u64);
            }
        }
    }
}
