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

/// A name that fits the ustar field: ASCII, at most 100 bytes. Otherwise a pax `path` record
/// carries the real name and this is a readable stand-in.
fn ustar_name(name: &str) -> (Vec<u8>, bool) {
    if name.is_ascii() && name.len() <= 100 && !name.is_empty() {
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
}
