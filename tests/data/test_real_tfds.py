"""Real prepared TFDS directories, not `tfds.testing.mock_data`: each dataset's own TFDS
builder runs `download_and_prepare` from small files the test writes (its download
manager hands back their local paths instead of fetching URLs), into a temporary
`TFDS_DATA_DIR`; then `prompt-tuning train` and `eval` read that directory as a user's
run would. Preparing is also what needs `importlib_resources` (TFDS 4.9.10 imports it to
find a builder's checksums): without that dependency `_prepare` fails. Also: a task whose
data is not prepared fails at once, in one line, and downloads nothing."""

from __future__ import annotations

import json
import os
import time
from unittest import mock

import pytest
import tensorflow_datasets as tfds

from prompt_tuning.data import demo as demo_data
from prompt_tuning.data import sources
from tests.cli_testing import run_cli, tiny_job_args

BASE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "legacy_run", "base"
)
RTE_TASK = "super_glue_rte_v102"
SQUAD_TASK = "squad_v010_allanswers"


def _write_rte(root: str) -> str:
  """SuperGLUE's RTE.zip as extracted: RTE/{train,val,test}.jsonl."""
  folder = os.path.join(root, "RTE")
  os.makedirs(folder)
  for split, n in (("train", 8), ("val", 4), ("test", 2)):
    with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
      for i in range(n):
        row = {"premise": f"The film {i} was good.", "hypothesis": "It was good.", "idx": i}
        if split != "test":
          row["label"] = "entailment" if i % 2 == 0 else "not_entailment"
        f.write(json.dumps(row) + "\n")
  return root


def _write_squad(root: str) -> dict[str, str]:
  """SQuAD 1.1's train-v1.1.json and dev-v1.1.json, two questions each."""
  os.makedirs(root)
  paths = {}
  for key, name in (("train", "train-v1.1.json"), ("dev", "dev-v1.1.json")):
    context = "Jane Austen wrote Pride and Prejudice in 1813."
    qas = [
      {
        "id": f"{key}-1",
        "question": "Who wrote it?",
        "answers": [{"text": "Jane Austen", "answer_start": 0}],
      },
      {"id": f"{key}-2", "question": "When?", "answers": [{"text": "1813", "answer_start": 41}]},
    ]
    data = {"data": [{"title": "Austen", "paragraphs": [{"context": context, "qas": qas}]}]}
    paths[key] = os.path.join(root, name)
    with open(paths[key], "w") as f:
      json.dump(data, f)
  return paths


def _prepare(name: str, data_dir: str, local) -> None:
  """`python -m prompt_tuning.data.sources NAME --data_dir=DIR` (the dataset's own builder)
  with its downloads replaced by `local` (what `download_and_extract` would have
  returned), so no checksum or URL is involved."""
  with mock.patch.object(
    tfds.download.DownloadManager, "download_and_extract", lambda self, urls: local
  ):
    assert sources.main([name, f"--data_dir={data_dir}"]) == 0
  assert tfds.builder(name, data_dir=data_dir).is_prepared()


def _job(job: str, run_file: str, task: str, lengths: str, **bindings) -> list[str]:
  settings = {
    "prompt_tuning.data.vocab.get_vocabulary.spm_path": repr(demo_data.DEMO_SPM_PATH),
    "MIXTURE_OR_TASK_NAME": repr(task),
    "TASK_FEATURE_LENGTHS": lengths,
    "BATCH_SIZE": "8",  # One example per fake CPU device.
  }
  return tiny_job_args(job, run_file, **{**settings, **bindings})


def _train_then_eval(task: str, lengths: str, model_dir: str) -> dict[str, float]:
  trained = run_cli(
    _job(
      "train",
      "prompt_finetune.gin",
      task,
      lengths,
      MODEL_DIR=repr(model_dir),
      TRAIN_STEPS="2",
      CHECKPOINT_PERIOD="2",
      EVAL_PERIOD="None",
    )
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  prompt = os.path.join(model_dir, "numpy_checkpoints", "checkpoint_2", "encoder.prompt.prompt.npy")
  assert os.path.isfile(prompt)
  evaluated = run_cli(_job("eval", "prompt_eval.gin", task, lengths, PROMPT_FILE=repr(prompt)))
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  return {
    line.split("\t")[1]: float(line.split("\t")[2])
    for line in evaluated.stdout.splitlines()
    if line.startswith(f"{task}\t")
  }


def test_rte_prepared_by_its_tfds_builder_trains_and_evaluates_from_tfds_data_dir(
  tmp_path, monkeypatch
):
  data_dir = str(tmp_path / "tfds")
  _prepare("super_glue/rte:1.0.2", data_dir, _write_rte(str(tmp_path / "download")))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  scores = _train_then_eval(RTE_TASK, "{'inputs': 32, 'targets': 8}", str(tmp_path / "run"))
  assert set(scores) == {"accuracy"}
  assert 0.0 <= scores["accuracy"] <= 100.0


def test_squad_prepared_by_its_tfds_builder_trains_and_evaluates_from_tfds_data_dir(
  tmp_path, monkeypatch
):
  data_dir = str(tmp_path / "tfds")
  _prepare("squad/v1.1:3.0.0", data_dir, _write_squad(str(tmp_path / "download")))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  scores = _train_then_eval(SQUAD_TASK, "{'inputs': 48, 'targets': 8}", str(tmp_path / "run"))
  assert set(scores) == {"em", "f1"}
  assert 0.0 <= scores["em"] <= scores["f1"] <= 100.0


def test_a_task_whose_data_is_not_prepared_fails_at_once_in_one_line_and_downloads_nothing(
  tmp_path, monkeypatch
):
  data_dir = tmp_path / "empty_tfds"
  data_dir.mkdir()
  monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  start = time.monotonic()
  result = run_cli(
    _job(
      "train",
      "prompt_finetune.gin",
      RTE_TASK,
      "{'inputs': 32, 'targets': 8}",
      MODEL_DIR=repr(str(tmp_path / "run")),
      TRAIN_STEPS="2",
      EVAL_PERIOD="None",
    )
  )
  assert time.monotonic() - start < 30
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert (
    f"TFDS dataset 'super_glue/rte:1.0.2' is not prepared in {data_dir} (TFDS_DATA_DIR);"
    in lines[0]
  )
  assert (
    f"`python -m prompt_tuning.data.sources super_glue/rte:1.0.2 --data_dir={data_dir}`" in lines[0]
  )
  assert "(needs network; `tfds build` without apache-beam)." in lines[0]
  assert list(data_dir.iterdir()) == []  # No downloads/ or incomplete dataset left behind.


def test_a_source_reads_the_tfds_data_dir_of_the_moment_not_the_one_at_import(
  tmp_path, monkeypatch
):
  source = sources.TfdsSource("super_glue/rte:1.0.2", splits=("train",))
  for name in ("first", "second"):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match=f"not prepared in {tmp_path / name} "):
      source.get_dataset("train")


def test_an_unknown_tfds_config_is_one_line_naming_it():
  source = sources.TfdsSource("super_glue/nosuch:1.0.2", splits=("train",))
  with pytest.raises(ValueError, match=r"^TFDS cannot build 'super_glue/nosuch:1\.0\.2': ") as e:
    source.get_dataset("train")
  assert "\n" not in str(e.value)


def test_preparing_a_dataset_that_cannot_be_downloaded_is_one_line_and_exit_1(tmp_path, capsys):
  def offline(self, urls):
    raise ConnectionError("Could not resolve host: dl.fbaipublicfiles.com\n  more")

  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", offline):
    code = sources.main(["super_glue/rte:1.0.2", f"--data_dir={tmp_path}"])
  assert code == 1
  err = capsys.readouterr().err.strip()
  assert err == (
    f"error: cannot prepare super_glue/rte:1.0.2 in {tmp_path}: "
    "Could not resolve host: dl.fbaipublicfiles.com more"
  )
