#!/usr/bin/env python3
"""Independent readers for the tests: what Python's tarfile sees in an archive, and the
extended attributes of files that GNU tar or bsdtar extracted.

  tarcheck.py members ARCHIVE   -> JSON list of {name, size, mtime, mode, type, pax, md5}
  tarcheck.py xattrs DIR        -> JSON {relative path: {attribute: value}}
"""
import hashlib
import json
import os
import sys
import tarfile


def members(path):
    out = []
    with tarfile.open(path, "r:*", errorlevel=2) as archive:
        for member in archive:
            data = archive.extractfile(member).read() if member.isfile() else b""
            out.append({
                "name": member.name,
                "size": member.size,
                "mtime": int(member.mtime),
                "mode": member.mode,
                "type": member.type.decode("latin-1"),
                "pax": member.pax_headers,
                "md5": hashlib.md5(data).hexdigest(),
            })
    return out


def xattrs(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = {
                attr: os.getxattr(path, attr).decode("utf-8") for attr in os.listxattr(path)
            }
    return out


if __name__ == "__main__":
    command, target = sys.argv[1], sys.argv[2]
    result = members(target) if command == "members" else xattrs(target)
    json.dump(result, sys.stdout, ensure_ascii=False)
