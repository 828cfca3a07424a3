#!/usr/bin/env python3
"""Builds a single-layer OCI image-layout tarball from local files; no registry, no docker.

usage: mkimage.py OUT.tar NAME:TAG ENTRYPOINT SRC:DST [SRC:DST ...]
`ctr images import` accepts the result; the io.containerd.image.name annotation names it.
"""
import hashlib
import io
import json
import sys
import tarfile

out, ref, entry, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
    for spec in files:
        src, dst = spec.split(":", 1)
        info = layer_tar.gettarinfo(src, arcname=dst.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with open(src, "rb") as f:
            layer_tar.addfile(info, f)
layer_digest, layer = blob(layer_buf.getvalue())

config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Entrypoint": [entry], "WorkingDir": "/", "User": "0:0"},
    "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    "history": [{"created_by": "netdra tests/e2e/mkimage.py"}],
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
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
    }],
}
with tarfile.open(out, "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        t.addfile(info, io.BytesIO(data))

    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", json.dumps(index).encode())
    for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
        add("blobs/sha256/" + digest.split(":")[1], data)
