"""A Google Cloud Storage stand-in on 127.0.0.1 for tests: gs:// workdirs end to end, without network.

`gcp-storage-emulator` (pure Python, requirements-test.txt) serves the JSON API that both clients of a gs://
workdir speak: gcsfs (etils.epath: config.json, metrics.jsonl, TensorBoard, the probe) and TensorStore (Orbax's
arrays). TensorStore's OCDBT writes its manifest with generation preconditions, which the emulator does not
implement; `_with_generations` adds them (the `x-goog-generation` header and `ifGenerationMatch` /
`ifGenerationNotMatch` on reads, writes and deletes), as GCS does.

    with GcsEmulator(bucket="bucket") as gcs:
        subprocess.run([...], env=gcs.env())      # gs://bucket/... goes to the emulator
"""

from __future__ import annotations

import contextlib
import socket
from http import HTTPStatus

CLIENT_ENV = {
    # Anonymous credentials, and Google's metadata-server lookups sent to a closed loopback port: nothing here
    # talks to anything off this machine.
    "FSSPEC_GCS_TOKEN": "anon",
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "GCE_METADATA_ROOT": "127.0.0.1:9",
    "GOOGLE_CLOUD_PROJECT": "test",
    # gcsfs' zonal-bucket check goes to the real control-plane API (gRPC), which the emulator does not serve.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def _precondition_failed(request, generation: str | None) -> int | None:
    """The status GCS answers for the request's generation preconditions, or None when they hold."""
    match = request.query.get("ifGenerationMatch", [None])[0]
    not_match = request.query.get("ifGenerationNotMatch", [None])[0]
    if match is not None and match != (generation or "0"):
        return HTTPStatus.PRECONDITION_FAILED
    if not_match is not None and not_match == (generation or "0"):
        return HTTPStatus.NOT_MODIFIED if request.method == "GET" else HTTPStatus.PRECONDITION_FAILED
    return None


def _generation(storage, bucket: str, name: str) -> str | None:
    from gcp_storage_emulator.exceptions import NotFound

    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return None


@contextlib.contextmanager
def _with_generations():
    from gcp_storage_emulator.handlers import objects

    originals = {name: getattr(objects, name) for name in ("download", "_media_upload", "_multipart_upload")}

    def download(request, response, storage, *args, **kwargs):
        generation = _generation(storage, request.params["bucket_name"], request.params["object_id"])
        if generation is not None:
            status = _precondition_failed(request, generation)
            response["x-goog-generation"] = generation
            if status is not None:
                response.status = status
                return None
        return originals["download"](request, response, storage, *args, **kwargs)

    def upload(name):
        def wrapped(request, response, storage):
            object_id = (
                request.query["name"][0] if "name" in request.query else request.data["meta"].get("name")
            )
            status = _precondition_failed(
                request, _generation(storage, request.params["bucket_name"], object_id)
            )
            if status is not None:
                response.status = status
                return None
            return originals[name](request, response, storage)

        return wrapped

    objects.download = download
    objects._media_upload = upload("_media_upload")
    objects._multipart_upload = upload("_multipart_upload")
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(objects, name, fn)


class GcsEmulator:
    """An in-memory GCS on a free loopback port holding `bucket`; `env()` points every client at it."""

    def __init__(self, bucket: str = "bucket"):
        self.bucket = bucket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack = contextlib.ExitStack()

    def env(self) -> dict[str, str]:
        return {**CLIENT_ENV, "STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url}

    def __enter__(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        self._stack.enter_context(_with_generations())
        server = create_server("127.0.0.1", self.port, in_memory=True, default_bucket=self.bucket)
        server.start()
        self._stack.callback(server.stop)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def objects(self, prefix: str = "") -> list[str]:
        """Names of the objects in the bucket under `prefix` (read through the emulator's own HTTP API)."""
        import json
        import urllib.parse
        import urllib.request

        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            url = f"{self.url}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 - loopback only
                page = json.load(reply)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)
