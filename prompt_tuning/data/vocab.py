"""The SentencePiece vocabulary shared by every task and by the model's embedding.

T5 1.1 was trained with `cc_all.32000` plus 100 sentinel ids (`<extra_id_0..99>`); any
other model needs the vocabulary it was trained with, so the path is a gin parameter.
`train_sentencepiece` builds small vocabularies offline (tests, the bundled demo).

The default path is on GCS; without network its first read fails within
`remote.timeout_seconds()` with one line that says to pass a local copy as
`get_vocabulary.spm_path`, instead of TensorFlow's retries and traceback.
"""

from __future__ import annotations

import io
import os
from typing import Iterable

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import remote

DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
DEFAULT_EXTRA_IDS = 100


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """seqio's vocabulary, whose first read of a `gs://` model runs under the GCS deadline.

  Loading stays lazy (tasks register with the default vocabulary at import, and jobs on
  the demo tasks never read it); only the first load checks that the file can be reached.
  """

  def _model_context(self):
    if not self._model and remote.is_gcs(self.sentencepiece_model_file):
      path = self.sentencepiece_model_file
      found = remote.call_with_deadline(
        lambda: tf.io.gfile.exists(path),
        path,
        "the SentencePiece vocabulary",
        "pass a local copy of it (`gsutil cp " + path + " DIR/`) with "
        "--gin.get_vocabulary.spm_path=\"'DIR/sentencepiece.model'\"",
      )
      if not found:
        raise FileNotFoundError(
          f"the SentencePiece vocabulary {path} does not exist; set "
          "get_vocabulary.spm_path to the model's .model file"
        )
    return super()._model_context()


@gin.configurable
def get_vocabulary(
  spm_path: str = DEFAULT_SPM_PATH, extra_ids: int = DEFAULT_EXTRA_IDS
) -> seqio.SentencePieceVocabulary:
  """The task vocabulary; override `get_vocabulary.spm_path` in gin for other models."""
  return SentencePieceVocabulary(spm_path, extra_ids=extra_ids)


def train_sentencepiece(
  texts: Iterable[str], model_path: str, vocab_size: int = 500, model_type: str = "unigram"
) -> str:
  """Trains a T5-style SentencePiece model (pad 0, eos 1, unk 2, no bos) to `model_path`.

  Ids 0/1/2 follow T5's convention so that seqio's EOS (1) and padding (0) hold.
  """
  import sentencepiece as spm  # Imported lazily: only trainers of vocabularies need it.

  model_path = os.fspath(model_path)
  prefix = model_path[: -len(".model")] if model_path.endswith(".model") else model_path
  stream = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(list(texts)),
    model_writer=stream,
    vocab_size=vocab_size,
    model_type=model_type,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    character_coverage=1.0,
    hard_vocab_limit=False,
    num_threads=1,
    minloglevel=2,
  )
  out_path = prefix + ".model"
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "wb") as f:
    f.write(stream.getvalue())
  return out_path
