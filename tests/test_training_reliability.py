"""Training that scales and survives: two-worker MultiWorkerMirroredStrategy, kill -9 and
--resume, mixed precision. Each test runs train.py in subprocesses on a tiny GOPRO tree."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tests.test_training import write_gopro_tree

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cmd(root, out, *extra):
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--model",
        "lcnet",
        "--model-preset",
        "tiny",
        "--train-preset",
        "demo",
        "--data",
        str(root),
        "--output-dir",
        str(out),
        "--patch-size",
        "32",
        "--verbose",
        "0",
        *extra,
    ]


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    env.update(extra)
    return env


def _run_cluster(cluster, out, root, timeout=600):
    """Run train.py once per task of ``cluster`` (a TF_CONFIG cluster on loopback), each
    with the global batch 4 for 2 epochs of 2 steps; returns ``{(type, index): stdout}``
    once all exit 0. Every process is killed when one fails or the time runs out."""
    procs = {}
    try:
        for kind, hosts in cluster.items():
            for index in range(len(hosts)):
                tf_config = {"cluster": cluster, "task": {"type": kind, "index": index}}
                cmd = _train_cmd(
                    root, out, "--strategy", "multi_worker", "--batch-size", "4",
                    "--epochs", "2", "--steps-per-epoch", "2",
                )  # fmt: skip
                procs[(kind, index)] = subprocess.Popen(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=_env(TF_CONFIG=json.dumps(tf_config)),
                )
        deadline = time.monotonic() + timeout
        outputs = {}
        for task, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"{task}: {stderr[-3000:]}"
            outputs[task] = stdout
        return outputs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _digest(stdout):
    return next(
        line.split()[-1] for line in stdout.splitlines() if line.startswith("Final weights sha256")
    )


def test_two_worker_multi_worker_mirrored_training(tmp_path):
    """Two workers (no chief: worker 0 writes) end identical, and follow the trajectory
    of MirroredStrategy over this process's two logical CPUs with the same global batch."""
    from tfdeblur.train.loop import TrainConfig, train

    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "mw"
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    outputs = _run_cluster({"worker": workers}, out, root)
    digests = {_digest(stdout) for stdout in outputs.values()}
    assert len(digests) == 1  # both workers end with identical weights
    finals = sorted(
        str(p.relative_to(out)) for p in out.rglob("*.keras") if p.name == "final.keras"
    )
    assert finals == ["final.keras"]  # only the chief writes the final model
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicas"] == 2 and len(summary["history"]["loss"]) == 2

    # The same run under MirroredStrategy (2 replicas in one process, see conftest.py).
    mirrored = train(
        TrainConfig(
            model="lcnet",
            model_preset="tiny",
            train_preset="demo",
            data=str(root),
            output_dir=str(tmp_path / "mirrored"),
            strategy="mirrored",
            batch_size=4,
            patch_size=32,
            epochs=2,
            steps_per_epoch=2,
            verbose=0,
        )  # fmt: skip
    )
    assert mirrored["replicas"] == 2 and mirrored["optimizer_iterations"] == 4
    np.testing.assert_allclose(summary["history"]["loss"], mirrored["history"]["loss"], rtol=1e-4)
    multi_worker = keras.models.load_model(out / "final.keras", safe_mode=True)
    one_process = keras.models.load_model(tmp_path / "mirrored" / "final.keras", safe_mode=True)
    for a, b in zip(multi_worker.get_weights(), one_process.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_cluster_with_a_chief_task(tmp_path):
    """A ``chief`` task trains as one of the two replicas and is the one that writes."""
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "chief"
    cluster = {"chief": [f"127.0.0.1:{_free_port()}"], "worker": [f"127.0.0.1:{_free_port()}"]}
    outputs = _run_cluster(cluster, out, root)
    assert _digest(outputs[("chief", 0)]) == _digest(outputs[("worker", 0)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["final_model"] == str(out / "final.keras")
    assert [p.name for p in out.rglob("final.keras")] == ["final.keras"]
    # The chief saved; worker 0, the writer of a cluster without a chief, did not.
    assert f"Saved {out / 'final.keras'}." in outputs[("chief", 0)]
    assert "Saved nothing (not the chief worker)" in outputs[("worker", 0)]


def test_kill_minus_9_then_resume_continues(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "run"
    cmd = _train_cmd(
        root,
        out,
        "--strategy",
        "one_device",
        "--batch-size",
        "2",
        "--epochs",
        "200",
        "--steps-per-epoch",
        "2",
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env()
    )
    ckpt_dir = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
        if latest and int(latest.rsplit("-", 1)[1]) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch, possibly mid-save
    proc.wait(timeout=60)
    killed_at = int(tf.train.latest_checkpoint(str(ckpt_dir)).rsplit("-", 1)[1])
    assert not (out / "final.keras").exists()

    total = killed_at + 2

    def run_for_total_epochs(folder, *extra):
        command = _train_cmd(
            root, folder, "--strategy", "one_device", "--batch-size", "2",
            "--epochs", str(total), "--steps-per-epoch", "2", *extra,
        )  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)

    resume = run_for_total_epochs(out, "--resume")
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "Resumed from" in resume.stdout and f"(epoch {killed_at})" in resume.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["history"]["loss"]) == total  # the whole history, across the resume
    assert np.isfinite(summary["history"]["loss"]).all()
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    assert latest.endswith(f"-{total}")
    # The optimizer's step count went on from the checkpoint (the killed epoch's partial
    # steps are redone): exactly epochs x steps, in the summary and the checkpoint.
    assert summary["initial_epoch"] == killed_at
    assert summary["optimizer_iterations"] == total * 2
    assert tf.train.load_variable(latest, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == (
        total * 2
    )
    assert abs(summary["learning_rate"] - 1e-3) < 1e-9  # the demo recipe's constant rate

    # Bit for bit where an uninterrupted run of as many epochs ends (same seed, data
    # position and optimizer state restored; the digest train.py prints).
    whole = run_for_total_epochs(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert _digest(resume.stdout) == _digest(whole.stdout) == summary["weights_sha256"]


def test_mixed_precision_trains_and_saves_float32(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "mp"
    result = subprocess.run(
        _train_cmd(
            root,
            out,
            "--strategy",
            "one_device",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--mixed-precision",
        ),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["history"]["loss"]).all()
    model = keras.models.load_model(out / "final.keras", safe_mode=True)
    assert all(w.dtype == "float32" for w in model.weights)
    y = model(np.random.default_rng(0).uniform(size=(1, 24, 24, 3)).astype("float32"))
    assert y.dtype == "float32" and np.isfinite(np.asarray(y)).all()
