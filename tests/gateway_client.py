#!/usr/bin/env python3
"""Drives the HTTP gateway the way the seed's test_upload.py / test_download.py
scripts do, with `requests`.

Usage: gateway_client.py UPLOAD_BASE DOWNLOAD_BASE LOCAL_FILE

Uploads LOCAL_FILE through UPLOAD_BASE (field `files`, named after the local
file), downloads it through DOWNLOAD_BASE, and compares the bytes. Exit code 0
and a last line "ok" on success; non-zero with a one-line reason otherwise.
"""

import os
import sys
import urllib.parse

import requests

TIMEOUT = 60  # seconds per request; the Rust test bounds the whole run too


def fail(reason):
    print(f"FAIL: {reason}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 4:
        fail("usage: gateway_client.py UPLOAD_BASE DOWNLOAD_BASE LOCAL_FILE")
    upload_base, download_base, path = sys.argv[1:]
    name = os.path.basename(path)
    with open(path, "rb") as f:
        want = f.read()

    with open(path, "rb") as f:
        r = requests.post(f"{upload_base}/upload", files={"files": f}, timeout=TIMEOUT)
    if r.status_code != 200:
        fail(f"upload: HTTP {r.status_code}: {r.text.strip()}")

    url = f"{download_base}/{urllib.parse.quote(name)}"
    r = requests.get(url, timeout=TIMEOUT)
    if r.status_code != 200:
        fail(f"download: HTTP {r.status_code}: {r.text.strip()}")
    if r.headers.get("Content-Length") != str(len(want)):
        fail(f"download: Content-Length {r.headers.get('Content-Length')}, want {len(want)}")
    if r.content != want:
        fail(f"download: {len(r.content)} bytes differ from the {len(want)} uploaded")

    r = requests.get(f"{download_base}/no-such-file-{os.getpid()}", timeout=TIMEOUT)
    if r.status_code != 404:
        fail(f"missing file: HTTP {r.status_code}, want 404")

    r = requests.get(f"{download_base}/", params={"json": ""}, timeout=TIMEOUT)
    if r.status_code != 200 or name not in [f["name"] for f in r.json()]:
        fail(f"listing: HTTP {r.status_code}, {name!r} not in {r.text.strip()}")

    print("ok")


if __name__ == "__main__":
    main()
