#!/usr/bin/env python3
"""A kubelet stand-in for testing DRA plugins, built on grpcio (an independent gRPC stack).

It dials the plugin's sockets the way the kubelet does, including the `:authority` the kubelet
sends on the registration socket: the socket path itself (older grpc-go) or its percent-encoded
form (newer grpc-go), and `localhost` (kubelet >= 1.34 on the DRA socket). It prints one JSON
object per call on stdout; the calling test asserts on them.

usage: kubelet_peer.py --proto-dir DIR --registration-socket PATH [--authority FORM ...]
                       [--prepare NS/NAME/UID ...] [--unprepare NS/NAME/UID ...] [--version v1 ...]
                       [--health VERSION ...]
       FORM is one of: path, percent, localhost, default
       --health opens the device health stream NodeWatchResources of VERSION (v1, v1alpha1) as the
       kubelet does and prints its first message (or the error it ends with).
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

import grpc

PROTOS = [
    "pluginregistration/v1/api.proto",
    "dra/v1/api.proto",
    "dra/v1beta1/api.proto",
    "dra_health/v1/api.proto",
    "dra_health/v1alpha1/api.proto",
]


def compile_protos(proto_dir):
    """Generates the Python stubs from the project's own .proto files, keeping their relative
    paths so the api.proto files stay distinct in the protobuf descriptor pool. The health protos
    are copied under `dra_health/`: a Python module path cannot hold the directory's hyphen."""
    out = tempfile.mkdtemp(prefix="kubelet-peer-")
    src = os.path.join(out, "src")
    shutil.copytree(proto_dir, src, ignore=shutil.ignore_patterns("wire"))
    shutil.copytree(os.path.join(src, "dra-health"), os.path.join(src, "dra_health"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={out}",
         f"--grpc_python_out={out}", *PROTOS],
        check=True,
    )
    sys.path.insert(0, out)
    mods = {}
    for proto in PROTOS:
        module = proto[: -len(".proto")].replace("/", ".")
        key = proto.rsplit("/", 1)[0].replace("/", "_")
        mods[key] = (importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc"))
    return mods


def authority(form, socket_path):
    if form == "path":
        return socket_path
    if form == "percent":
        return urllib.parse.quote(socket_path, safe="")
    if form == "localhost":
        return "localhost"
    return None


def channel(socket_path, form):
    options = []
    value = authority(form, socket_path)
    if value is not None:
        options.append(("grpc.default_authority", value))
    return grpc.insecure_channel("unix://" + socket_path, options=options)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def call(what, fn, **context):
    try:
        emit(call=what, ok=True, result=fn(), **context)
    except grpc.RpcError as e:
        emit(call=what, ok=False, code=e.code().name, details=e.details(), **context)


def claim_triple(text):
    ns, name, uid = text.split("/")
    return ns, name, uid


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto-dir", required=True)
    p.add_argument("--registration-socket", required=True)
    p.add_argument("--authority", action="append", default=[])
    p.add_argument("--version", action="append", default=[])
    p.add_argument("--prepare", action="append", default=[])
    p.add_argument("--unprepare", action="append", default=[])
    p.add_argument("--health", action="append", default=[])
    args = p.parse_args()
    mods = compile_protos(args.proto_dir)
    reg_pb2, reg_grpc = mods["pluginregistration_v1"]
    forms = args.authority or ["path", "percent", "localhost"]
    versions = args.version or ["v1", "v1beta1"]

    endpoint = None
    for form in forms:
        with channel(args.registration_socket, form) as ch:
            stub = reg_grpc.RegistrationStub(ch)

            def get_info():
                info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=5)
                return {"type": info.type, "name": info.name, "endpoint": info.endpoint,
                        "supported_versions": list(info.supported_versions)}

            def notify():
                stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=True), timeout=5)
                return {}

            try:
                info = get_info()
                endpoint = info["endpoint"]
                emit(call="GetInfo", ok=True, result=info, authority=form)
            except grpc.RpcError as e:
                emit(call="GetInfo", ok=False, code=e.code().name, details=e.details(), authority=form)
            call("NotifyRegistrationStatus", notify, authority=form)

    if endpoint is None:
        return
    for version in versions:
        pb2, grpc_mod = mods["dra_" + version]
        for form in forms:
            with channel(endpoint, form) as ch:
                stub = grpc_mod.DRAPluginStub(ch)
                claims = [pb2.Claim(namespace=ns, name=n, uid=u) for ns, n, u in map(claim_triple, args.prepare)]
                if claims:
                    def prepare():
                        r = stub.NodePrepareResources(pb2.NodePrepareResourcesRequest(claims=claims), timeout=45)
                        return {uid: {"error": c.error, "devices": [
                            {"request_names": list(d.request_names), "pool": d.pool_name, "device": d.device_name,
                             "cdi_device_ids": list(d.cdi_device_ids)} for d in c.devices]}
                            for uid, c in r.claims.items()}
                    call("NodePrepareResources", prepare, authority=form, version=version)
                un = [pb2.Claim(namespace=ns, name=n, uid=u) for ns, n, u in map(claim_triple, args.unprepare)]
                if un:
                    def unprepare():
                        r = stub.NodeUnprepareResources(pb2.NodeUnprepareResourcesRequest(claims=un), timeout=45)
                        return {uid: {"error": c.error} for uid, c in r.claims.items()}
                    call("NodeUnprepareResources", unprepare, authority=form, version=version)

    for version in args.health:
        pb2, grpc_mod = mods["dra_health_" + version]
        for form in forms:
            with channel(endpoint, form) as ch:
                stub = grpc_mod.DRAResourceHealthStub(ch)

                def first_message():
                    stream = stub.NodeWatchResources(pb2.NodeWatchResourcesRequest(), timeout=10)
                    for message in stream:
                        stream.cancel()
                        return [{"pool": d.device.pool_name, "device": d.device.device_name,
                                 "health": pb2.HealthStatus.Name(d.health),
                                 "last_updated_time": d.last_updated_time,
                                 "health_check_timeout_seconds": d.health_check_timeout_seconds,
                                 "message": d.message} for d in message.devices]
                    return None
                call("NodeWatchResources", first_message, authority=form, version=version)


if __name__ == "__main__":
    main()
