"""The ten reliability holes of issue #14, each reproduced with a real damaged file, a real
finished run folder or a real killed/absent worker, and refused or handled clearly.

Training runs in-process (``train.main``) where the exit status is what matters, in
subprocesses for the multi-worker cases (each with a hard timeout so a regression cannot
hang CI)."""

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from tests.test_training import write_gopro_tree
from tests.test_training_reliability import _env, _free_port, _train_cmd
from tfdeblur import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train as train_script  # noqa: E402

TRAIN_ARGS = ["--model", "lcnet", "--model-preset", "tiny", "--train-preset", "demo"]
TRAIN_ARGS += ["--patch-size", "32", "--verbose", "0", "--strategy", "one_device"]
TRAIN_ARGS += ["--batch-size", "2", "--steps-per-epoch", "2"]


def _train(root, out, *extra) -> int:
    return train_script.main([*TRAIN_ARGS, "--data", str(root), "--output-dir", str(out), *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real finished 2-epoch run: ``(data root, run folder, its summary)``."""
    base = tmp_path_factory.mktemp("finished")
    root = write_gopro_tree(base / "gopro")
    out = base / "run"
    assert _train(root, out, "--epochs", "2") == 0
    return root, out, json.loads((out / "summary.json").read_text())


def _copy_run(finished_run, tmp_path):
    root, out, summary = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return root, copy, summary


def _snapshot(folder: pathlib.Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _corrupt_png_data(path: pathlib.Path) -> None:
    """Scribble over the compressed data of a PNG; chunk lengths and IEND stay intact."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 40 : start + 200] = bytes(160)
    path.write_bytes(bytes(data))


# 1 -------------------------------------------------------------------------------------


def test_corrupt_png_is_named_before_training_and_nothing_is_written(tmp_path, capsys):
    root = write_gopro_tree(tmp_path / "gopro")
    bad = root / "train" / "GOPR0001_train" / "blur" / "000002.png"
    _corrupt_png_data(bad)
    out = tmp_path / "run"
    assert _train(root, out, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot be decoded" in err and "Traceback" not in err
    assert not out.exists()  # nothing written, not even train_config.json


# 2 -------------------------------------------------------------------------------------


def _worker(root, out, workers, index, log, *extra, tmpdir=None):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    env = _env(TF_CONFIG=json.dumps(tf_config))
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    cmd = _train_cmd(root, out, "--strategy", "multi_worker", "--batch-size", "4", *extra)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)


def _wait_for(predicate, timeout, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    for p in procs:
        p.kill()
    return False


@pytest.mark.slow
def test_absent_worker_ends_the_wait_with_one_line(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    log = open(tmp_path / "w0.log", "w+")  # noqa: SIM115
    start = time.time()
    proc = _worker(root, tmp_path / "run", workers, 0, log, "--cluster-timeout", "3")
    try:
        proc.wait(timeout=120)
    finally:
        proc.kill()
    seconds = time.time() - start
    text = (tmp_path / "w0.log").read_text()
    assert proc.returncode == 1, text[-3000:]
    assert "worker:1 of TF_CONFIG's cluster did not start within --cluster-timeout 3 s" in text
    assert "Traceback" not in text and seconds < 90
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_ends_a_worker_waiting_for_its_cluster(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    log = open(tmp_path / "w1.log", "w+")  # noqa: SIM115
    proc = _worker(root, tmp_path / "run", workers, 1, log)  # default 300 s wait
    waiting = _wait_for(lambda: "waiting up to" in (tmp_path / "w1.log").read_text(), 120, [proc])
    assert waiting, (tmp_path / "w1.log").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    finally:
        proc.kill()
    text = (tmp_path / "w1.log").read_text()
    assert proc.returncode == 130, text[-3000:]
    assert "interrupted" in text and "Traceback" not in text


def _two_workers_training(tmp_path):
    """Two workers of a long run on loopback, returned once the chief's first checkpoint is
    written: ``(out, tmpdir, procs, logs)``. The caller kills ``procs`` in a ``finally``."""
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "run"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    logs = [open(tmp_path / f"w{i}.log", "w+") for i in range(2)]  # noqa: SIM115
    extra = ("--epochs", "500", "--steps-per-epoch", "2")
    procs = [_worker(root, out, workers, i, logs[i], *extra, tmpdir=tmpdir) for i in range(2)]
    try:
        started = _wait_for(
            lambda: tf.train.latest_checkpoint(str(out / "checkpoints")) is not None, 300, procs
        )
        assert started, (tmp_path / "w0.log").read_text()[-3000:]
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return out, tmpdir, procs, logs


@pytest.mark.slow
def test_sigterm_mid_run_stops_a_worker_and_its_peer_reports_the_loss(tmp_path):
    out, tmpdir, procs, logs = _two_workers_training(tmp_path)
    try:
        assert list(tmpdir.glob("tfdeblur-worker-*"))  # the non-chief's private folder
        procs[1].send_signal(signal.SIGTERM)  # the non-chief, mid-training
        procs[1].wait(timeout=30)
        procs[0].wait(timeout=120)  # the chief finds its peer gone
    finally:
        for p in procs:
            p.kill()
    texts = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert procs[1].returncode == 128 + signal.SIGTERM, texts[1][-3000:]
    assert "stopped by SIGTERM" in texts[1] and "--resume" in texts[1]
    assert not list(tmpdir.glob("tfdeblur-worker-*"))  # cleaned before it exited
    assert procs[0].returncode == 1, texts[0][-3000:]
    assert "was lost during training" in texts[0] and "--resume" in texts[0]
    assert "Traceback" not in texts[0] + texts[1]


# 3 -------------------------------------------------------------------------------------


def test_a_finished_run_folder_is_refused_then_replaced_only_on_overwrite(
    finished_run, tmp_path, capsys
):
    root, out, summary = _copy_run(finished_run, tmp_path)
    before = _snapshot(out)
    assert _train(root, out, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before  # nothing touched

    (out / "notes.txt").write_text("mine")
    assert _train(root, out, "--epochs", "1", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept
    new = json.loads((out / "summary.json").read_text())
    assert new["epochs"] == 1 and len(new["history"]["loss"]) == 1
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.index"))
    assert checkpoints == ["ckpt-1.index"]  # the old run's ckpt-2 is gone
    assert (out / "best.keras").read_bytes() != before["best.keras"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    assert _train(root, other, "--epochs", "1", "--overwrite") == 2
    assert "not a run folder" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["data.csv"]


# 4 -------------------------------------------------------------------------------------


def _write_video(path, frames=12, fps=10):
    import imageio.v2 as imageio

    rng = np.random.default_rng(0)
    writer = imageio.get_writer(
        str(path), format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )  # fmt: skip
    for _ in range(frames):
        writer.append_data((rng.uniform(size=(32, 48, 3)) * 255).astype(np.uint8))
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lcnet_tiny.keras"
    tfdeblur.build_model("lcnet", "tiny").save(path)
    return path


def test_truncated_video_is_reported_and_fails(tmp_path, tiny_keras, capsys):
    full = _write_video(tmp_path / "full.mp4")
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the header (faststart) survives

    assert cli.main(["deblur-video", str(full), "-o", str(tmp_path / "ok.mp4"),
                     "--model", str(tiny_keras)]) == 0  # fmt: skip
    assert "Wrote 12 frames" in capsys.readouterr().out

    target = tmp_path / "out.mp4"
    assert cli.main(["deblur-video", str(cut), "-o", str(target),
                     "--model", str(tiny_keras), "-q"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "declares 12 frames but only" in err and str(cut) in err
    assert not target.exists()
    assert cli.main(["deblur", str(cut), "-o", str(target), "--model", str(tiny_keras), "-q"]) == 1
    assert "declares 12 frames" in capsys.readouterr().err and not target.exists()


def test_a_failed_video_prints_no_ffmpeg_banner(tmp_path, tiny_keras, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    code = cli.main(["deblur-video", str(bad), "-o", str(tmp_path / "o.mp4"),
                     "--model", str(tiny_keras), "-q"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and str(bad) in captured.err and "Invalid data" in captured.err
    assert (captured.out + captured.err).count("ffmpeg version") == 0
    code = cli.main(["deblur", str(bad), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_keras)])
    captured = capsys.readouterr()
    assert code == 1 and str(bad) in captured.err
    assert (captured.out + captured.err).count("ffmpeg version") == 0


# 5 -------------------------------------------------------------------------------------


def test_damaged_keras_files_are_named_not_reported_missing(tmp_path, tiny_keras, capsys):
    data = tiny_keras.read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) - 20000 : len(data) - 19900] = bytes(100)  # inside model.weights.h5
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(flipped))
    image = tmp_path / "in.png"
    tfdeblur.data.image_io.write_image(image, np.full((16, 16, 3), 0.5, np.float32))
    expected = {truncated: "not a readable .keras archive", damaged: "fails its CRC check"}
    for path, what in expected.items():
        commands = [
            ["deblur", str(image), "-o", str(tmp_path / "o.png"), "--model", str(path), "-q"],
            ["eval", "--model", str(path), "--data", str(write_gopro_tree(tmp_path / "g")),
             "--csv", str(tmp_path / "e.csv"), "-q"],
            ["export", "--model", str(path), "--format", "keras", "-o",
             str(tmp_path / "x.keras"), "--no-verify"],
        ]  # fmt: skip
        for argv in commands:
            assert cli.main(argv) == 2, argv
            err = capsys.readouterr().err
            assert str(path) in err and what in err and "not found" not in err, (argv, err)


# 6 -------------------------------------------------------------------------------------


def test_resume_skips_a_damaged_latest_checkpoint(finished_run, tmp_path, capsys):
    root, out, _ = _copy_run(finished_run, tmp_path)
    ckpt = out / "checkpoints"
    data = ckpt / "ckpt-2.data-00000-of-00001"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    data.write_bytes(bytes(blob))
    assert _train(root, out, "--epochs", "3", "--resume") == 0
    text = capsys.readouterr().out
    assert f"checkpoint {ckpt / 'ckpt-2'}" in text and "cannot be read" in text
    assert f"resuming from {ckpt / 'ckpt-1'}" in text and "(epoch 1)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initial_epoch"] == 1 and summary["optimizer_iterations"] == 3 * 2

    for index in ckpt.glob("ckpt-*.index"):  # now every checkpoint is damaged
        index.write_bytes(index.read_bytes()[:10])
    assert _train(root, out, "--epochs", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "can be read" in err and "ckpt-3" in err
    assert "Traceback" not in err


# 7 -------------------------------------------------------------------------------------


def test_outputs_under_an_existing_file_are_refused_up_front(tmp_path, tiny_keras, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    root = write_gopro_tree(tmp_path / "gopro")
    assert _train(root, blocker / "run", "--epochs", "1") == 2
    assert f"{str(blocker)!r} is a file" in capsys.readouterr().err
    image = tmp_path / "in.png"
    tfdeblur.data.image_io.write_image(image, np.full((16, 16, 3), 0.5, np.float32))
    runs = [
        ["deblur", str(image), "-o", str(blocker / "out.png"), "--model", str(tiny_keras)],
        ["export", "--model", str(tiny_keras), "--format", "keras", "-o",
         str(blocker / "m.keras"), "--no-verify"],
    ]  # fmt: skip
    for argv in runs:
        assert cli.main(argv) == 2
        assert f"{str(blocker)!r} is a file" in capsys.readouterr().err
    assert blocker.read_text() == "a file"


# 8 -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_temporaries_of_a_killed_run_are_removed_on_its_next_start(finished_run, tmp_path):
    root, out, _ = _copy_run(finished_run, tmp_path)
    # A writer killed inside tfdeblur.fileio.atomic_path leaves its temporary behind,
    # and a killed non-chief task its private folder.
    code = textwrap.dedent(
        f"""
        import os, pathlib
        from tfdeblur.fileio import atomic_path
        from tfdeblur.train.run_folder import worker_temp_dir
        worker_temp_dir({str(out)!r}, "worker1")
        with atomic_path(pathlib.Path({str(out)!r}) / "summary.json") as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), 9)
        """
    )
    for name in ("best", "final"):  # the names atomic_path gives model files
        (out / f".{name}.0123456789ab.tmp.keras").write_bytes(b"half")
    env = {**_env(), "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    (out / "checkpoints" / "ckpt-3_temp").mkdir()
    (out / "checkpoints" / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(
        b"x"
    )
    (out / "checkpoints" / "checkpoint.tmp5c1f0e2a9b7d4c3e8f6a1b2c3d4e5f60").write_text("x")
    left = sorted(p.name for p in out.iterdir() if ".tmp." in p.name)
    assert len(left) == 3 and any(n.startswith(".summary.") for n in left)
    workers = list(tmp_path.glob("tfdeblur-worker-*"))
    assert len(workers) == 1

    assert _train(root, out, "--epochs", "3", "--resume") == 0
    assert not [p for p in out.iterdir() if ".tmp." in p.name]
    assert not (out / "checkpoints" / "ckpt-3_temp").exists()
    assert not list((out / "checkpoints").glob("checkpoint.tmp*"))
    # The non-chief task of the same run removes its own left-over folder when it starts.
    code = (
        "from tfdeblur.train.run_folder import worker_temp_dir; "
        f"print(worker_temp_dir({str(out)!r}, 'worker1'))"
    )
    new = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    ).stdout.strip()
    assert not workers[0].exists() and pathlib.Path(new).is_dir()
    other = subprocess.run(  # another run's folder is left alone
        [sys.executable, "-c", code.replace(str(out), str(tmp_path / "else"))],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pathlib.Path(new).is_dir() and other.returncode == 0


# 9 -------------------------------------------------------------------------------------


def test_summary_keeps_the_untrained_psnr_and_the_whole_history(finished_run, tmp_path, capsys):
    root, out, first = _copy_run(finished_run, tmp_path)
    assert _train(root, out, "--epochs", "3", "--resume") == 0
    assert "untrained" in capsys.readouterr().out
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["val_psnr_untrained"] == first["val_psnr_untrained"]
    assert resumed["val_psnr_start"] != first["val_psnr_untrained"]  # trained 2 epochs
    assert len(resumed["history"]["loss"]) == 3
    assert resumed["history"]["loss"][:2] == first["history"]["loss"]

    assert _train(root, out, "--epochs", "3", "--resume") == 0  # nothing left to train
    again = json.loads((out / "summary.json").read_text())
    assert again["val_psnr_untrained"] == first["val_psnr_untrained"]
    assert again["history"]["loss"] == resumed["history"]["loss"]


# 10 ------------------------------------------------------------------------------------


def test_loading_without_import_tfdeblur_names_the_module_to_import(tmp_path, tiny_keras):
    # Keras 3 imports a class's saved ``module`` only for its own packages (keras,
    # keras_hub, ...), so a fresh process must import the layers itself; its error names
    # the registered package and the module, and importing that module is enough.
    load = f"import keras; keras.models.load_model({str(tiny_keras)!r}, safe_mode=True)"
    env = {**_env(), "PYTHONPATH": str(REPO)}
    bare = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300
    )
    assert bare.returncode != 0
    assert "'tfdeblur>PadToMultiple'" in bare.stderr and "keras_layers.padding" in bare.stderr
    named = subprocess.run(
        [sys.executable, "-c", "import keras_layers; " + load],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert named.returncode == 0, named.stderr[-3000:]


@pytest.mark.slow
def test_a_killed_chief_ends_its_peer_with_one_line_and_no_temporary_left(tmp_path):
    out, tmpdir, procs, logs = _two_workers_training(tmp_path)
    try:
        procs[0].kill()  # the chief dies mid-run
        procs[1].wait(timeout=120)
    finally:
        for p in procs:
            p.kill()
    text = (tmp_path / "w1.log").read_text()
    assert procs[1].returncode == 1, text[-3000:]
    assert "was lost during training" in text and "--resume" in text
    assert "Traceback" not in text
    assert not list(tmpdir.glob("tfdeblur-worker-*"))  # its private folder is removed


@pytest.mark.slow
def test_ctrl_c_mid_run_ends_with_one_line(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "run"
    cmd = _train_cmd(root, out, "--strategy", "one_device", "--batch-size", "2")
    cmd += ["--epochs", "500", "--steps-per-epoch", "2"]
    log = open(tmp_path / "run.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), text=True)
    try:
        started = _wait_for(
            lambda: tf.train.latest_checkpoint(str(out / "checkpoints")) is not None, 300, [proc]
        )
        assert started, (tmp_path / "run.log").read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    text = (tmp_path / "run.log").read_text()
    assert proc.returncode == 130, text[-3000:]
    assert "interrupted; rerun with --resume" in text and "Traceback" not in text
