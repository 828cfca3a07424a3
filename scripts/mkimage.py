#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (an image layout, tarred) from local files: no
registry, no Docker daemon. `ctr images import` and `docker load` accept the result; the
io.containerd.image.name annotation names it.

usage: mkimage.py OUT.tar NAME:TAG ENTRYPOINT SRC:DST [SRC:DST ...] [--cmd ARG]... [--user USER]

The archive is reproducible: the same files give the same digests (owners root, times zero,
entries in the order given). The pause image of tests/e2e and netdra's image (scripts/image.sh)
are written by it.
"""
import argparse
import hashlib
import io
import json
import tarfile

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("ref", help="NAME:TAG, as containerd will name the image")
parser.add_argument("entrypoint")
parser.add_argument("files", nargs="+", metavar="SRC:DST")
parser.add_argument("--cmd", action="append", default=[], help="an argument of the image's CMD")
parser.add_argument("--user", default="0:0")
args = parser.parse_args()
if ":" not in args.ref.rsplit("/", 1)[-1]:
    parser.error(f"{args.ref}: the reference needs a tag (NAME:TAG)")


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
    for spec in args.files:
        src, sep, dst = spec.partition(":")
        if not sep or not dst.startswith("/"):
            parser.error(f"{spec}: expected SRC:/absolute/destination")
        info = layer_tar.gettarinfo(src, arcname=dst.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with open(src, "rb") as f:
            layer_tar.addfile(info, f)
layer_digest, layer = blob(layer_buf.getvalue())

image_config = {"Entrypoint": [args.entrypoint], "WorkingDir": "/", "User": args.user}
if args.cmd:
    image_config["Cmd"] = args.cmd
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": image_config,
    "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    "history": [{"created_by": "netdra scripts/mkimage.py"}],
}
config_digest, config_bytes = blob(json.dumps(config, sort_keys=True).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
               "size": len(config_bytes)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
}
manifest_digest, manifest_bytes = blob(json.dumps(manifest, sort_keys=True).encode())
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": len(manifest_bytes),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": args.ref,
                        "org.opencontainers.image.ref.name": args.ref.rsplit(":", 1)[1]},
    }],
}
with tarfile.open(args.out, "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        t.addfile(info, io.BytesIO(data))

    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", json.dumps(index).encode())
    for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
        add("blobs/sha256/" + digest.split(":")[1], data)
print(f"{args.out}: {args.ref} {manifest_digest}")
