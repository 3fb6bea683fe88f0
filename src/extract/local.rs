//! Writing members under a local folder: no write goes through a symlink (folders are created
//! one level at a time and each existing level is checked; files are opened with O_NOFOLLOW),
//! no existing file is replaced unless asked (files are created with O_EXCL), and the S3
//! attributes become `user.s3.*` extended attributes where the filesystem has them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::path::LocalPath;
use crate::error::{Error, Result};

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        location: path.display().to_string(),
        source,
    }
}

fn symlink_error(path: &Path) -> Error {
    Error::bad_input(
        path.display().to_string(),
        "is a symlink; extract refuses to write through symlinks: remove it or extract elsewhere",
    )
}

/// Creates `root/relative` folder by folder, refusing symlinks on the way.
pub fn create_folders(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for part in relative.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(symlink_error(&path)),
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::bad_input(
                    path.display().to_string(),
                    "is a file where a folder is needed",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&path) {
                    Ok(()) => {}
                    // Created by a concurrent member meanwhile: checked on the next pass.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if std::fs::symlink_metadata(&path)
                            .map(|m| !m.is_dir())
                            .unwrap_or(true)
                        {
                            return Err(symlink_error(&path));
                        }
                    }
                    Err(e) => return Err(io_error(&path, e)),
                }
            }
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    Ok(path)
}

/// What [`open`] found at a member's path.
pub enum Opened {
    /// A folder marker: the folder exists now.
    Folder,
    /// A file to write the member's bytes to.
    File(std::fs::File),
    /// Something is already there and was left alone.
    Exists,
}

/// Opens the file for `target` under `root` for writing, never following a symlink: a new
/// file only (`O_EXCL`), or with `replace` an existing one truncated. Folder markers are
/// created.
pub fn open(root: &Path, target: &LocalPath, replace: bool) -> Result<(PathBuf, Opened)> {
    match target {
        LocalPath::Folder(relative) => Ok((create_folders(root, relative)?, Opened::Folder)),
        LocalPath::File(relative) => {
            let parent = relative.parent().unwrap_or(Path::new(""));
            let folder = create_folders(root, parent)?;
            let path = folder.join(relative.file_name().unwrap_or_default());
            let mut options = std::fs::OpenOptions::new();
            options.write(true);
            if replace {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            let opened = options
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&path);
            match opened {
                Ok(file) => Ok((path, Opened::File(file))),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(symlink_error(&path)),
                // O_EXCL refuses a symlink as it refuses a file: not one to report as kept.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match std::fs::symlink_metadata(&path) {
                        Ok(meta) if meta.file_type().is_symlink() => Err(symlink_error(&path)),
                        _ => Ok((path, Opened::Exists)),
                    }
                }
                Err(e) => Err(io_error(&path, e)),
            }
        }
    }
}

/// Whether `path` is a file of `size` bytes with MD5 `md5` (hex), read without following a
/// symlink; anything unreadable is not.
pub fn holds(path: &Path, size: u64, md5: &str) -> bool {
    use md5::{Digest, Md5};
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    let is_it = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == size);
    let mut hasher = Md5::new();
    is_it
        && !md5.is_empty()
        && std::io::copy(&mut file, &mut hasher).is_ok()
        && hex::encode(hasher.finalize()).eq_ignore_ascii_case(md5)
}

/// Set once a filesystem refused user xattrs, so the warning is given once.
static XATTRS_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Writes `user.s3.<field>` = value for each attribute. A filesystem without user xattrs gets
/// one warning and no attributes; the file itself stays.
pub fn write_xattrs(path: &Path, attributes: &[(String, String)]) {
    if XATTRS_UNSUPPORTED.load(Ordering::Relaxed) {
        return;
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    for (field, value) in attributes {
        let Ok(name) = CString::new(format!("user.s3.{field}")) else {
            continue;
        };
        // SAFETY: both strings are NUL-terminated and live across the call; the value pointer
        // and length describe one live buffer.
        let result = unsafe {
            libc::setxattr(
                c_path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENOTSUP) {
                if !XATTRS_UNSUPPORTED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the filesystem of {} does not support user extended attributes; S3 metadata and tags are not written beside the files",
                        path.display()
                    );
                }
                return;
            }
            tracing::warn!(
                "could not set user.s3.{field} on {}: {error}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_on_the_way_are_refused() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(outside.path(), root.path().join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let through = open(root.path(), &LocalPath::File("link/x".into()), false);
        assert!(
            through.is_err_and(|e| e.to_string().contains("symlink")),
            "wrote through a linked folder"
        );
        std::os::unix::fs::symlink(outside.path().join("f"), root.path().join("file"))
            .unwrap_or_else(|e| panic!("{e}"));
        for replace in [false, true] {
            let opened = open(root.path(), &LocalPath::File("file".into()), replace);
            assert!(opened.is_err_and(|e| e.to_string().contains("symlink")));
        }
        assert!(!outside.path().join("f").exists());
        assert!(!outside.path().join("x").exists());
        let (path, file) = open(root.path(), &LocalPath::File("a/b/c".into()), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(file, Opened::File(_)) && path.ends_with("a/b/c"));
        let (folder, marker) = open(root.path(), &LocalPath::Folder("a/d".into()), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(marker, Opened::Folder) && folder.is_dir());
    }

    #[test]
    fn an_existing_file_is_left_alone_unless_replaced() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = LocalPath::File("f".into());
        std::fs::write(root.path().join("f"), b"mine").unwrap_or_else(|e| panic!("{e}"));
        let (path, opened) = open(root.path(), &file, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(opened, Opened::Exists));
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"mine");
        assert!(!holds(&path, 4, "0e4b7ae1b4c1f8d2a9c6ac7d4eee3dd1"));
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(b"mine"));
        assert!(holds(&path, 4, &md5) && !holds(&path, 5, &md5) && !holds(&path, 4, ""));
        let (_, opened) = open(root.path(), &file, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(opened, Opened::File(_)));
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"");
    }
}
