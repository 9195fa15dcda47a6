"""Shaped like the course's download.py: `download.py NAME IP`.

Hashes the name, asks the node at IP:5057 for `find_successor` over
MessagePack-RPC, then fetches `GET http://<node>:5058/<name>` into NAME in
the current folder.
"""

import sys
import urllib.parse

import requests

from upload import HTTP_PORT, call, course_id


def main():
    name, ip = sys.argv[1], sys.argv[2]
    node_ip, _, _ = call(ip, "find_successor", course_id(name))
    url = f"http://{node_ip}:{HTTP_PORT}/{urllib.parse.quote(name)}"
    with requests.get(url, stream=True, timeout=60) as r:
        r.raise_for_status()
        with open(name, "wb") as f:
            for chunk in r.iter_content(1 << 16):
                f.write(chunk)
    print(f"downloaded {name} from {node_ip}")


if __name__ == "__main__":
    main()
