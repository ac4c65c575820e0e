"""Local directories and `gs://` buckets behind one small interface.

Released T5X checkpoints live on GCS; tests and most users have local copies. Reading
both through tensorstore's key-value stores (the `file` and `gcs` drivers) means the
code path exercised by local tests is the one that reads buckets.

Every bucket operation waits at most `remote.timeout_seconds()` (tensorstore's GCS listing
has no deadline of its own, so without network it would wait forever) and fails with one
line that says what could not be reached and to pass a local copy instead.

The reads after that first touch (the zarr arrays of a T5X checkpoint, opened by
tensorstore from `kvstore_spec`) have no future to wait on with a deadline, and
tensorstore's defaults retry a failed GCS request 32 times with delays up to 32 s, and
put no time limit on a request that gets no answer (tried: still waiting after 15 s). So
every GCS kvstore spec carries `gcs_request_retries` bounded by the deadline, and
`bound_gcs_requests` sets tensorstore's curl timeouts (a connection not made, or a
transfer stalled below 1 byte/s, for the deadline fails the request): a link that dies
midway fails a read after about (GCS_MAX_RETRIES + 1) deadlines instead of hanging.
"""

from __future__ import annotations

import math
import os
import posixpath
import re

import tensorstore as ts

from prompt_tuning.data import remote

_GCS = re.compile(r"^gs://([^/]+)/?(.*)$", re.DOTALL)

# Retries of one failed GCS request (tensorstore's default is 32, delays up to 32 s):
# enough for a transient 429 / 503, few enough that a dead link fails within a few deadlines.
GCS_MAX_RETRIES = 2
# tensorstore's curl transport reads these when it makes its first HTTP request.
_CURL_DEADLINES = (
  "TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS",
  "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS",
)
_CURL_LOW_SPEED_LIMIT = "TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES"


def absolute(path: str) -> str:
  """`path` as orbax takes it: orbax refuses relative local paths ("Checkpoint path
  should be absolute"), which users pass all the time; gs:// paths are left as they are."""
  return path if is_gcs(path) else os.path.abspath(path)


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def join(path: str, *parts: str) -> str:
  if is_gcs(path):
    return posixpath.join(path, *parts)
  return os.path.join(path, *parts)


def dirname(path: str) -> str:
  if is_gcs(path):
    return posixpath.dirname(path.rstrip("/"))
  return os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
  return (
    posixpath.basename(path.rstrip("/"))
    if is_gcs(path)
    else os.path.basename(os.path.abspath(path))
  )


def bound_gcs_requests() -> dict:
  """The tensorstore context of a GCS kvstore: retries bounded by the deadline. Also
  sets tensorstore's curl timeouts to the deadline unless the environment sets them.

  They are environment variables because tensorstore has no context option for them;
  they are read once, at the process's first HTTP request, so the deadline in force
  then is the one that holds. They apply only to tensorstore's own requests (orbax's
  reads of gs:// included), where a stall of a whole deadline means a dead link."""
  deadline = remote.timeout_seconds()
  for name in _CURL_DEADLINES:
    os.environ.setdefault(name, str(max(1, math.ceil(deadline))))
  os.environ.setdefault(_CURL_LOW_SPEED_LIMIT, "1")
  return {
    "gcs_request_retries": {
      "max_retries": GCS_MAX_RETRIES,
      "initial_delay": f"{min(1.0, deadline):g}s",
      "max_delay": f"{deadline:g}s",
    }
  }


def kvstore_spec(path: str) -> dict:
  """The tensorstore kvstore spec of a directory (trailing "/" included); a `gs://` one
  carries the bounded retries of `bound_gcs_requests`, for every read through it."""
  match = _GCS.match(path)
  if match:
    bucket, prefix = match.group(1), match.group(2).strip("/")
    spec = {"driver": "gcs", "bucket": bucket, "context": bound_gcs_requests()}
    if prefix:
      spec["path"] = prefix + "/"
    return spec
  return {"driver": "file", "path": os.path.abspath(path) + os.sep}


def _instead(path: str) -> str:
  return f"copy it to a local directory (`gsutil -m cp -r {path} DIR`) and pass DIR instead"


def _gcs_result(future, path: str):
  """The future's result, or one line naming `path` once the deadline passes or it fails."""
  try:
    return future.result(timeout=remote.timeout_seconds())
  except TimeoutError:
    message = remote.unreachable_message(path, "the checkpoint location", _instead(path))
    raise remote.UnreachableError(message) from None
  except ValueError as e:  # tensorstore's errors (permission, bad bucket name, ...)
    message = remote.unreachable_message(
      path, "the checkpoint location", _instead(path), remote.first_line(e)
    )
    raise remote.UnreachableError(message) from None


class Directory:
  """Read-only view of one directory: file contents and the (recursive) key listing."""

  def __init__(self, path: str):
    self.path = path.rstrip("/") if is_gcs(path) else os.path.abspath(path)
    self._store: ts.KvStore | None = None
    self._keys: list[str] | None = None

  def _kv(self) -> ts.KvStore:
    if self._store is None:
      self._store = _gcs_result(ts.KvStore.open(kvstore_spec(self.path)), self.path)
    return self._store

  def read(self, name: str) -> bytes | None:
    """Contents of the file `name` (relative), or None when it does not exist."""
    if not is_gcs(self.path):
      full = os.path.join(self.path, name)
      if not os.path.isfile(full):
        return None
      with open(full, "rb") as f:
        return f.read()
    result = _gcs_result(self._kv().read(name.encode()), join(self.path, name))
    return bytes(result.value) if result.state == "value" else None

  def keys(self) -> list[str]:
    """Every file below the directory, as relative names with "/" separators."""
    if self._keys is None:
      if is_gcs(self.path):
        self._keys = sorted(k.decode() for k in _gcs_result(self._kv().list(), self.path))
      else:
        self._keys = sorted(
          os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/")
          for root, _, files in os.walk(self.path)
          for f in files
        )
    return self._keys

  def has(self, name: str) -> bool:
    if not is_gcs(self.path):
      return os.path.exists(os.path.join(self.path, name))
    prefix = name.rstrip("/") + "/"
    return any(k == name or k.startswith(prefix) for k in self.keys())

  def exists(self) -> bool:
    if not is_gcs(self.path):
      return os.path.isdir(self.path)
    return bool(self.keys())
