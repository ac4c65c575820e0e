"""Local directories and `gs://` buckets behind one small interface.

Released T5X checkpoints live on GCS; tests and most users have local copies. Reading
both through tensorstore's key-value stores (the `file` and `gcs` drivers) means the
code path exercised by local tests is the one that reads buckets.
"""

from __future__ import annotations

import os
import posixpath
import re

import tensorstore as ts

_GCS = re.compile(r"^gs://([^/]+)/?(.*)$", re.DOTALL)


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


def kvstore_spec(path: str) -> dict:
  """The tensorstore kvstore spec of a directory (trailing "/" included)."""
  match = _GCS.match(path)
  if match:
    bucket, prefix = match.group(1), match.group(2).strip("/")
    spec = {"driver": "gcs", "bucket": bucket}
    if prefix:
      spec["path"] = prefix + "/"
    return spec
  return {"driver": "file", "path": os.path.abspath(path) + os.sep}


class Directory:
  """Read-only view of one directory: file contents and the (recursive) key listing."""

  def __init__(self, path: str):
    self.path = path.rstrip("/") if is_gcs(path) else os.path.abspath(path)
    self._store: ts.KvStore | None = None
    self._keys: list[str] | None = None

  def _kv(self) -> ts.KvStore:
    if self._store is None:
      self._store = ts.KvStore.open(kvstore_spec(self.path)).result()
    return self._store

  def read(self, name: str) -> bytes | None:
    """Contents of the file `name` (relative), or None when it does not exist."""
    if not is_gcs(self.path):
      full = os.path.join(self.path, name)
      if not os.path.isfile(full):
        return None
      with open(full, "rb") as f:
        return f.read()
    result = self._kv().read(name.encode()).result()
    return bytes(result.value) if result.state == "value" else None

  def keys(self) -> list[str]:
    """Every file below the directory, as relative names with "/" separators."""
    if self._keys is None:
      if is_gcs(self.path):
        self._keys = sorted(k.decode() for k in self._kv().list().result())
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
